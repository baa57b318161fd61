"""Parse Meta's WhatsApp Business Account webhooks into typed events.

Pure logic: no database, no network. The web app verifies the signature
(``inbound.signature``) over the exact raw body, stores it and enqueues an
ingest task; the ingest task calls :func:`parse_webhook` and writes the result.

Shape of every body Meta sends for the WhatsApp Business Account object::

    {"object": "whatsapp_business_account",
     "entry": [{"id": "<WABA_ID>", "time": <unix>?,
                "changes": [{"field": "<FIELD>", "value": {...}}]}]}

``field`` decides the shape of ``value``:

- ``messages`` (and ``user_preferences``): ``metadata`` (our phone number),
  ``contacts``, ``messages`` (inbound), ``statuses`` (delivery receipts of what
  we sent), ``errors`` (value-level errors) and ``user_preferences``;
- ``message_template_status_update`` / ``message_template_quality_update`` /
  ``template_category_update``: template lifecycle events;
- ``phone_number_quality_update``, ``account_update``, ``account_alerts``,
  ``account_review_update``, ``business_capability_update``, ...: account
  events, kept generic;
- anything else: kept verbatim as an :class:`OtherChange`.

Robustness contract: :class:`WebhookError` is raised only for a body that is
not a WhatsApp webhook at all (not JSON, not an object, wrong ``object``, no
``entry`` list). Inside a valid body, a malformed item (a status without
``id``, a message with a non-numeric timestamp, a change whose value is not an
object, ...) is skipped and reported in :attr:`ParsedWebhook.problems` as
``"<json path>: <reason>"``; the rest of the body is still parsed. No other
exception escapes :func:`parse_webhook`.

Speed: statuses dominate the traffic, so each status is checked by hand
(only the fields we rely on: id, status, timestamp) and flattened into one
small frozen model; Meta's nested objects (pricing, conversation, the status
itself as ``raw``) are kept as plain dicts rather than built into nested
models. About 150,000 statuses/s from raw bytes on one core (see the tests).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import orjson

from wanotify.inbound.events import (
    ACCOUNT_FIELDS,
    KNOWN_STATUSES,
    STATUS_RANK,
    TEMPLATE_FIELDS,
    WABA_OBJECT,
    AccountEvent,
    ErrorDetail,
    InboundMessage,
    OtherChange,
    ParsedWebhook,
    PreferenceEvent,
    StatusUpdate,
    TemplateEvent,
    ValueLevelError,
    WebhookError,
)
from wanotify.inbound.values import Bad, as_id, as_str, unix, unix_or_none

__all__ = [
    "ACCOUNT_FIELDS",
    "KNOWN_STATUSES",
    "STATUS_RANK",
    "TEMPLATE_FIELDS",
    "WABA_OBJECT",
    "AccountEvent",
    "ErrorDetail",
    "InboundMessage",
    "OtherChange",
    "ParsedWebhook",
    "PreferenceEvent",
    "StatusUpdate",
    "TemplateEvent",
    "ValueLevelError",
    "WebhookError",
    "parse_webhook",
]

# Fields whose ``value`` has the messaging shape (metadata, contacts, lists).
_MESSAGING_FIELDS = frozenset({"messages", "user_preferences"})
_MESSAGING_KEYS = ("statuses", "messages", "errors", "user_preferences")
_MEDIA_TYPES = frozenset({"image", "video", "audio", "document", "sticker"})
# --------------------------------------------------------------------------- helpers


def _required_str(obj: dict[str, Any], key: str) -> str:
    value = obj.get(key)
    if type(value) is not str or not value:
        if value is None:
            raise Bad(f"missing {key!r}", f".{key}")
        raise Bad(f"{key!r} is not a non-empty string", f".{key}")
    return value


def _e164(value: object) -> str:
    """Meta's user number (digits, no '+') as E.164 with '+'."""
    if type(value) is str:
        digits = value[1:] if value.startswith("+") else value
        if 0 < len(digits) <= 20 and digits.isascii() and digits.isdigit():
            return "+" + digits
    shown = repr(value[:40]) if type(value) is str else f"a {type(value).__name__}"
    raise Bad(f"'from' is not a phone number: {shown}", ".from")


def _dict_or_none(value: object) -> dict[str, Any] | None:
    return value if type(value) is dict else None


# --------------------------------------------------------------------------- parser


class _Parser:
    __slots__ = (
        "account",
        "messages",
        "other",
        "preferences",
        "problems",
        "statuses",
        "templates",
        "ts_cache",
        "value_errors",
    )

    def __init__(self) -> None:
        self.statuses: list[StatusUpdate] = []
        self.messages: list[InboundMessage] = []
        self.templates: list[TemplateEvent] = []
        self.preferences: list[PreferenceEvent] = []
        self.account: list[AccountEvent] = []
        self.other: list[OtherChange] = []
        self.value_errors: list[ValueLevelError] = []
        self.problems: list[str] = []
        # Statuses of one batch share few distinct timestamps.
        self.ts_cache: dict[str, datetime] = {}

    def result(self) -> ParsedWebhook:
        return ParsedWebhook(
            statuses=self.statuses,
            messages=self.messages,
            templates=self.templates,
            preferences=self.preferences,
            account=self.account,
            other=self.other,
            value_errors=self.value_errors,
            problems=self.problems,
        )

    def problem(self, path: str, reason: str) -> None:
        self.problems.append(f"{path}: {reason}")

    # ------------------------------------------------------------------ envelope

    def body(self, doc: dict[str, Any]) -> None:
        entries = doc["entry"]
        for i, entry in enumerate(entries):
            path = f"$.entry[{i}]"
            if type(entry) is not dict:
                self.problem(path, f"entry is not an object ({type(entry).__name__})")
                continue
            waba_id = as_id(entry.get("id"))
            if waba_id is None:
                self.problem(f"{path}.id", "missing WhatsApp Business Account id")
            time = unix_or_none(entry.get("time")) if "time" in entry else None
            changes = entry.get("changes")
            if type(changes) is not list:
                self.problem(f"{path}.changes", "missing or not an array")
                continue
            for j, change in enumerate(changes):
                cpath = f"{path}.changes[{j}]"
                if type(change) is not dict:
                    self.problem(cpath, f"change is not an object ({type(change).__name__})")
                    continue
                try:
                    self.change(change, cpath, waba_id, time)
                except Exception as exc:  # never let one change sink the body
                    self.problem(cpath, f"unexpected {type(exc).__name__}: {exc}"[:300])

    def change(
        self, change: dict[str, Any], path: str, waba_id: str | None, time: datetime | None
    ) -> None:
        field = change.get("field")
        value = change.get("value")
        if type(field) is not str:
            self.problem(f"{path}.field", "missing or not a string; kept as other")
            self.other.append(_other(None, waba_id, time, value))
            return
        if field in _MESSAGING_FIELDS:
            if type(value) is not dict:
                self.problem(f"{path}.value", f"{field} value is not an object")
                return
            self.messaging(value, f"{path}.value", field, waba_id, time)
        elif field in TEMPLATE_FIELDS:
            self.template(TEMPLATE_FIELDS[field], value, path, field, waba_id, time)
        elif field in ACCOUNT_FIELDS:
            self.account_event(value, path, field, waba_id, time)
        else:
            self.other.append(_other(field, waba_id, time, value))

    # ------------------------------------------------------------------ messaging

    def messaging(
        self,
        value: dict[str, Any],
        path: str,
        field: str,
        waba_id: str | None,
        time: datetime | None,
    ) -> None:
        metadata = value.get("metadata")
        if type(metadata) is dict:
            phone_number_id = as_id(metadata.get("phone_number_id"))
            display = as_id(metadata.get("display_phone_number"))
        else:
            phone_number_id = display = None
        ctx = (phone_number_id, display, waba_id)

        if not any(key in value for key in _MESSAGING_KEYS):
            # e.g. a future list we do not model: keep it rather than drop it.
            self.other.append(_other(field, waba_id, time, value))
            return

        statuses = value.get("statuses")
        if statuses is not None:
            if type(statuses) is list:
                self.status_list(statuses, f"{path}.statuses", ctx)
            else:
                self.problem(f"{path}.statuses", "not an array")

        messages = value.get("messages")
        if messages is not None:
            if type(messages) is list:
                self.message_list(messages, f"{path}.messages", ctx, value.get("contacts"))
            else:
                self.problem(f"{path}.messages", "not an array")

        errors = value.get("errors")
        if errors is not None:
            for err in self.errors(errors, f"{path}.errors"):
                self.value_errors.append(
                    ValueLevelError(
                        **dict(err),
                        phone_number_id=phone_number_id,
                        display_phone_number=display,
                        waba_id=waba_id,
                    )
                )

        prefs = value.get("user_preferences")
        if prefs is not None:
            if type(prefs) is list:
                self.preference_list(prefs, f"{path}.user_preferences", ctx)
            else:
                self.problem(f"{path}.user_preferences", "not an array")

    def errors(self, errors: object, path: str) -> list[ErrorDetail]:
        """Parse an ``errors`` array; a malformed element is reported and dropped."""
        if type(errors) is not list:
            self.problem(path, "not an array")
            return []
        out: list[ErrorDetail] = []
        for k, err in enumerate(errors):
            if type(err) is not dict:
                self.problem(f"{path}[{k}]", "error is not an object")
                continue
            code = err.get("code")
            if type(code) is str and code.isascii() and code.isdigit() and len(code) <= 12:
                code = int(code)
            if type(code) is not int:
                self.problem(f"{path}[{k}].code", "missing or not an integer")
                continue
            data = err.get("error_data")
            details = as_str(data.get("details")) if type(data) is dict else None
            out.append(
                ErrorDetail(
                    code=code,
                    title=as_str(err.get("title")),
                    message=as_str(err.get("message")),
                    details=details,
                    href=as_str(err.get("href")),
                )
            )
        return out

    def status_list(
        self, statuses: list[Any], path: str, ctx: tuple[str | None, str | None, str | None]
    ) -> None:
        append = self.statuses.append
        status = self.status
        for k, st in enumerate(statuses):
            try:
                append(status(st, path, k, ctx))
            except Bad as bad:
                self.problem(f"{path}[{k}]{bad.sub}", bad.reason)
            except Exception as exc:
                self.problem(f"{path}[{k}]", f"unexpected {type(exc).__name__}: {exc}"[:300])

    def status(
        self, st: object, path: str, k: int, ctx: tuple[str | None, str | None, str | None]
    ) -> StatusUpdate:
        if type(st) is not dict:
            raise Bad(f"status is not an object ({type(st).__name__})")
        wamid = st.get("id")
        if type(wamid) is not str or not wamid:
            wamid = _required_str(st, "id")  # raises with the precise reason
        status = st.get("status")
        if type(status) is not str or not status:
            status = _required_str(st, "status")
        raw_ts = st.get("timestamp")
        timestamp = self.ts_cache.get(raw_ts) if type(raw_ts) is str else None
        if timestamp is None:
            timestamp = unix(raw_ts, "timestamp")
            if type(raw_ts) is str:
                self.ts_cache[raw_ts] = timestamp
        errors = st.get("errors")
        pricing = st.get("pricing")
        conversation = st.get("conversation")
        return StatusUpdate(
            wamid=wamid,
            status=status,
            timestamp=timestamp,
            recipient_id=as_id(st.get("recipient_id")),
            recipient_user_id=as_str(st.get("recipient_user_id")),
            phone_number_id=ctx[0],
            display_phone_number=ctx[1],
            waba_id=ctx[2],
            errors=[] if errors is None else self.errors(errors, f"{path}[{k}].errors"),
            pricing=pricing if type(pricing) is dict else None,
            conversation=conversation if type(conversation) is dict else None,
            biz_opaque_callback_data=as_str(st.get("biz_opaque_callback_data")),
            raw=st,
        )

    def message_list(
        self,
        messages: list[Any],
        path: str,
        ctx: tuple[str | None, str | None, str | None],
        contacts: object,
    ) -> None:
        names: dict[str, str] = {}
        sole: str | None = None
        if type(contacts) is list:
            for contact in contacts:
                if type(contact) is not dict:
                    continue
                profile = contact.get("profile")
                name = as_str(profile.get("name")) if type(profile) is dict else None
                if name is None:
                    continue
                for key in ("wa_id", "user_id"):
                    ident = as_str(contact.get(key))
                    if ident:
                        names[ident] = name
            if len(contacts) == 1 and names:
                sole = next(iter(names.values()))
        for k, msg in enumerate(messages):
            try:
                self.messages.append(self.message(msg, f"{path}[{k}]", ctx, names, sole))
            except Bad as bad:
                self.problem(f"{path}[{k}]{bad.sub}", bad.reason)
            except Exception as exc:
                self.problem(f"{path}[{k}]", f"unexpected {type(exc).__name__}: {exc}"[:300])

    def message(
        self,
        msg: object,
        path: str,
        ctx: tuple[str | None, str | None, str | None],
        names: dict[str, str],
        sole: str | None,
    ) -> InboundMessage:
        if type(msg) is not dict:
            raise Bad(f"message is not an object ({type(msg).__name__})")
        wamid = _required_str(msg, "id")
        timestamp = unix(msg.get("timestamp"), "timestamp")
        mtype = _required_str(msg, "type")
        raw_from = msg.get("from")
        from_number = None if raw_from is None else _e164(raw_from)
        from_user_id = as_str(msg.get("from_user_id"))
        profile_name = (
            (names.get(raw_from) if type(raw_from) is str else None)
            or (names.get(from_user_id) if from_user_id else None)
            or sole
        )

        text: str | None = None
        payload: str | None = None
        media_id: str | None = None
        reacted: str | None = None
        body = _dict_or_none(msg.get(mtype))
        if body is not None:
            if mtype == "text":
                text = as_str(body.get("body"))
            elif mtype == "button":  # quick-reply button of a template
                text = as_str(body.get("text"))
                payload = as_str(body.get("payload"))
            elif mtype == "interactive":
                itype = body.get("type")
                reply = _dict_or_none(body.get(itype)) if type(itype) is str else None
                if reply is not None:
                    if itype == "nfm_reply":  # WhatsApp Flows response
                        text = as_str(reply.get("body"))
                        payload = as_str(reply.get("response_json"))
                    else:  # button_reply, list_reply
                        text = as_str(reply.get("title"))
                        payload = as_id(reply.get("id"))
            elif mtype == "reaction":
                text = as_str(body.get("emoji"))
                reacted = as_str(body.get("message_id"))
            elif mtype in _MEDIA_TYPES:
                text = as_str(body.get("caption"))
                media_id = as_id(body.get("id"))
            elif mtype == "system" or mtype == "order":
                text = as_str(body.get("body" if mtype == "system" else "text"))

        context = _dict_or_none(msg.get("context"))
        context_wamid = as_str(context.get("id")) if context is not None else None

        errors = msg.get("errors")
        return InboundMessage(
            wamid=wamid,
            from_number=from_number,
            from_user_id=from_user_id,
            profile_name=profile_name,
            timestamp=timestamp,
            type=mtype,
            text=text,
            payload=payload,
            context_wamid=context_wamid or reacted,
            media_id=media_id,
            phone_number_id=ctx[0],
            display_phone_number=ctx[1],
            waba_id=ctx[2],
            errors=[] if errors is None else self.errors(errors, f"{path}.errors"),
            raw=msg,
        )

    def preference_list(
        self, prefs: list[Any], path: str, ctx: tuple[str | None, str | None, str | None]
    ) -> None:
        for k, pref in enumerate(prefs):
            ppath = f"{path}[{k}]"
            try:
                if type(pref) is not dict:
                    raise Bad(f"preference is not an object ({type(pref).__name__})")
                wa_id = as_str(pref.get("wa_id"))
                user_id = as_str(pref.get("user_id"))
                if not wa_id and not user_id:
                    raise Bad("missing 'wa_id' (and 'user_id')", ".wa_id")
                self.preferences.append(
                    PreferenceEvent(
                        wa_id=wa_id,
                        phone_number=_e164(wa_id) if wa_id else None,
                        user_id=user_id,
                        category=as_str(pref.get("category")),
                        value=_required_str(pref, "value"),
                        detail=as_str(pref.get("detail")),
                        timestamp=unix(pref.get("timestamp"), "timestamp"),
                        phone_number_id=ctx[0],
                        display_phone_number=ctx[1],
                        waba_id=ctx[2],
                        raw=pref,
                    )
                )
            except Bad as bad:
                sub = ".wa_id" if bad.sub == ".from" else bad.sub
                self.problem(f"{ppath}{sub}", bad.reason.replace("'from'", "'wa_id'"))
            except Exception as exc:
                self.problem(ppath, f"unexpected {type(exc).__name__}: {exc}"[:300])

    # ------------------------------------------------------------------ templates

    def template(
        self,
        kind: Literal["status", "quality", "category"],
        value: object,
        path: str,
        field: str,
        waba_id: str | None,
        time: datetime | None,
    ) -> None:
        vpath = f"{path}.value"
        if type(value) is not dict:
            self.problem(vpath, f"{field} value is not an object; kept as other")
            self.other.append(_other(field, waba_id, time, value))
            return
        previous = reason = category = detail = None
        try:
            if kind == "status":
                event = _required_str(value, "event")
                reason = as_str(value.get("reason"))
                category = as_str(value.get("message_template_category"))
                other_info = _dict_or_none(value.get("other_info"))
                rejection = _dict_or_none(value.get("rejection_info"))
                if other_info is not None:
                    detail = as_str(other_info.get("title"))
                elif rejection is not None:
                    detail = as_str(rejection.get("reason"))
            elif kind == "quality":
                event = _required_str(value, "new_quality_score")
                previous = as_str(value.get("previous_quality_score"))
            else:
                event = _required_str(value, "new_category")
                previous = as_str(value.get("previous_category"))
                category = as_str(value.get("correct_category"))
        except Bad as bad:
            self.problem(f"{vpath}{bad.sub}", f"{bad.reason}; kept as other")
            self.other.append(_other(field, waba_id, time, value))
            return
        self.templates.append(
            TemplateEvent(
                kind=kind,
                template_id=as_id(value.get("message_template_id")),
                name=as_str(value.get("message_template_name")),
                language=as_str(value.get("message_template_language")),
                event=event,
                previous=previous,
                reason=reason,
                category=category,
                detail=detail,
                waba_id=waba_id,
                timestamp=time,
                raw=value,
            )
        )

    # ------------------------------------------------------------------ account

    def account_event(
        self, value: object, path: str, field: str, waba_id: str | None, time: datetime | None
    ) -> None:
        if type(value) is not dict:
            self.problem(f"{path}.value", f"{field} value is not an object; kept as other")
            self.other.append(_other(field, waba_id, time, value))
            return
        event = as_str(value.get("event"))
        if event is None:
            alert = _dict_or_none(value.get("alert_info"))
            if alert is not None:
                event = as_str(alert.get("alert_type"))
            else:
                event = as_str(value.get("decision"))
        self.account.append(
            AccountEvent(
                field=field,
                event=event,
                display_phone_number=as_id(value.get("display_phone_number")),
                entity_id=as_id(value.get("entity_id")),
                waba_id=waba_id,
                timestamp=time,
                raw=value,
            )
        )


def _other(
    field: str | None, waba_id: str | None, time: datetime | None, value: object
) -> OtherChange:
    return OtherChange(field=field, waba_id=waba_id, timestamp=time, value=value)


# --------------------------------------------------------------------------- API


def _load(body: bytes | bytearray | memoryview | str | dict[str, Any]) -> dict[str, Any]:
    if isinstance(body, dict):
        doc: object = body
    elif isinstance(body, bytes | bytearray | memoryview | str):
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise WebhookError(f"body is not valid JSON: {exc}") from None
    else:
        raise WebhookError(f"body must be bytes, str or dict, not {type(body).__name__}")
    if type(doc) is not dict:
        raise WebhookError(f"body is not a JSON object ({type(doc).__name__})")
    obj = doc.get("object")
    if obj != WABA_OBJECT:
        shown = (
            "missing"
            if obj is None
            else repr(obj[:60])
            if isinstance(obj, str)
            else f"a {type(obj).__name__}"
        )
        raise WebhookError(f"expected {WABA_OBJECT!r}, got {shown}", "$.object")
    entries = doc.get("entry")
    if type(entries) is not list:
        raise WebhookError(
            "missing" if entries is None else f"not an array ({type(entries).__name__})",
            "$.entry",
        )
    return doc


def parse_webhook(body: bytes | bytearray | memoryview | str | dict[str, Any]) -> ParsedWebhook:
    """Parse one webhook body (raw bytes as received, text, or decoded JSON).

    Raises :class:`WebhookError` only when the body is not a WhatsApp Business
    Account webhook at all; malformed items inside are reported in
    :attr:`ParsedWebhook.problems` and skipped. ``raw`` fields are shallow
    copies of the items as received (nested objects are shared).
    """
    doc = _load(body)
    parser = _Parser()
    parser.body(doc)
    return parser.result()
