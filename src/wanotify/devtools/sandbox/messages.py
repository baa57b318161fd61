"""``POST /{version}/{phone_number_id}/messages``: send (or mark as read), as Meta does.

The request is validated as the Graph API validates it (every message type), checked
against Meta's throughput and pair limits and the failure rules, recorded, answered, and
its status webhooks are scheduled.

Non-template messages (text, media, …) to a user who has not written in the last 24 hours
are accepted and then fail with a ``131047`` (Re-engagement message) status webhook, as on
Meta; ``POST /_sandbox/inbound`` opens the window, and ``service_window: false`` in
``/_sandbox/config`` turns the check off.

This is the hot path: plain Starlette with orjson, and no awaits between the limit check
and the commit, so everything runs in one asyncio process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from wanotify.devtools.sandbox.failures import FailureRule
from wanotify.devtools.sandbox.graph import (
    VERSION,
    Reject,
    invalid,
    json_response,
    major,
    reject,
    required,
    unsupported,
)
from wanotify.devtools.sandbox.state import SandboxSender, SandboxState
from wanotify.devtools.sandbox.templates import Templates
from wanotify.devtools.sandbox.tokens import TokenBook

MAX_TEXT = 4096
MAX_CALLBACK_DATA = 512

MESSAGE_TYPES = (
    "audio",
    "contacts",
    "document",
    "image",
    "interactive",
    "location",
    "reaction",
    "sticker",
    "template",
    "text",
    "video",
)
_TYPE_SET = frozenset(MESSAGE_TYPES)
_TYPES_ENUM = "{" + ", ".join(t.upper() for t in MESSAGE_TYPES) + "}"
MEDIA_TYPES = frozenset({"audio", "document", "image", "sticker", "video"})
INTERACTIVE_TYPES = frozenset(
    {
        "button",
        "list",
        "cta_url",
        "product",
        "product_list",
        "catalog_message",
        "flow",
        "location_request_message",
        "address_message",
        "call_permission_request",
        "voice_call",
    }
)

_PHONE_STRIP = str.maketrans("", "", " +-().")


def wa_id_of(to: Any) -> str | None:
    """The WhatsApp id (digits) of a ``to`` value, or None when Meta would call it invalid."""
    if isinstance(to, bool) or not isinstance(to, str | int):
        return None
    s = str(to).strip()
    digits = s.translate(_PHONE_STRIP)
    if not digits.isascii() or not digits.isdigit() or not 7 <= len(digits) <= 15:
        return None
    if digits[0] == "0":
        return None
    return digits


@dataclass(frozen=True, slots=True)
class Send:
    """A validated send request."""

    to: str
    wa_id: str
    type: str
    template: str | None
    category: str  # utility | marketing | authentication | service
    biz: str | None


class Messages:
    """The messages edge of the senders' phone numbers."""

    def __init__(self, state: SandboxState, tokens: TokenBook, templates: Templates) -> None:
        self.state = state
        self.tokens = tokens
        self.templates = templates

    async def post(self, request: Request) -> Response:
        state = self.state
        t = state.wall()
        latency = state.config.latency_ms
        if latency:
            await asyncio.sleep(latency / 1000.0)
        peer = request.client.host if request.client is not None else None
        pp = request.path_params
        pnid: str = pp["object_id"]
        version: str = pp["version"]
        to: Any = None
        biz: Any = None
        mtype: str | None = None
        template: str | None = None
        try:
            if not VERSION.match(version):
                raise reject(
                    2500,
                    message=f"Unknown path components: /{version}/{pnid}/messages",
                    http_status=400,
                )
            denied = self.tokens.auth(request, "post", pnid)
            if denied is not None:
                raise denied
            sender = state.senders.get(pnid)
            if sender is None:  # a WABA id: it has no /messages edge
                raise unsupported("post", pnid)
            raw = await request.body()
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                raise invalid("The request body is not valid JSON.") from None
            if not isinstance(body, dict):
                raise invalid("The request body must be a JSON object.")
            to = body.get("to")
            biz = body.get("biz_opaque_callback_data")
            mtype = body.get("type", "text") if "status" not in body else "read"
            if isinstance(body.get("template"), dict):
                name = body["template"].get("name")
                template = name if isinstance(name, str) else None
            if mtype == "read":
                _validate_read(body)
                state.record(t, pnid, to, "read", None, 0, 200, peer=peer)
                return json_response(200, b'{"success":true}')
            send = self._validate(sender, body)
            return await self._accept(t, sender, send, version, peer)
        except Reject as rej:
            state.record(
                t,
                pnid,
                to,
                mtype if isinstance(mtype, str) else None,
                template,
                rej.code,
                rej.status,
                None,
                biz if isinstance(biz, str) else None,
                peer,
            )
            return json_response(rej.status, rej.body)

    def _validate(self, sender: SandboxSender, body: dict[str, Any]) -> Send:
        _check_product(body)
        recipient_type = body.get("recipient_type", "individual")
        if recipient_type != "individual":
            if recipient_type == "group":
                raise invalid("Group messaging is not available for this phone number.")
            raise reject(
                100,
                message=f'(#100) Param recipient_type must be one of {{INDIVIDUAL, GROUP}} - got "{recipient_type}".',
            )
        to = body.get("to")
        if to is None or to == "":
            raise required("to")
        wa_id = wa_id_of(to)
        if wa_id is None:
            raise reject(
                131009,
                details="The phone number is malformed: use the international format with the "
                "country code, e.g. +16505551234.",
            )
        if wa_id == sender.display_digits:
            raise reject(131021)
        mtype = body.get("type", "text")
        if not isinstance(mtype, str) or mtype not in _TYPE_SET:
            raise reject(
                100, message=f'(#100) Param type must be one of {_TYPES_ENUM} - got "{mtype}".'
            )
        obj = body.get(mtype)
        if obj is None:
            raise required(mtype)
        biz = body.get("biz_opaque_callback_data")
        if biz is not None:
            if not isinstance(biz, str):
                raise invalid("Param biz_opaque_callback_data must be a string.")
            if len(biz) > MAX_CALLBACK_DATA:
                raise invalid(
                    f"Param biz_opaque_callback_data must be at most {MAX_CALLBACK_DATA} characters long."
                )
        context = body.get("context")
        if context is not None and (not isinstance(context, dict) or not context.get("message_id")):
            raise required("context['message_id']")
        template: str | None = None
        category = "service"
        if mtype == "template":
            template, category = self.templates.check(obj)
        else:
            _CONTENT[mtype](mtype, obj)
        return Send(
            to=str(to), wa_id=wa_id, type=mtype, template=template, category=category, biz=biz
        )

    async def _accept(self, t: float, sender: SandboxSender, send: Send, version: str,
                      peer: str | None = None) -> Response:
        state = self.state
        pnid = sender.phone_number_id
        now = state.clock()
        limits = state.limits.get(pnid)
        limited = limits.check(send.wa_id, now)
        if limited is not None:
            raise reject(limited)
        rule: FailureRule | None = None
        if state.failures.rules:
            rule = state.failures.decide("+" + send.wa_id, "whatsapp")
        delay = rule.latency_ms / 1000.0 if rule is not None else 0.0
        if rule is not None and rule.fails and rule.mode == "sync":
            assert rule.code is not None
            if delay:
                await asyncio.sleep(delay)
            raise reject(rule.code, details=rule.details, http_status=rule.http_status)
        # accepted: from here to the answer nothing can fail
        limits.commit(send.wa_id, now)
        wamid = state.wamid(send.wa_id)
        state.record(t, pnid, send.to, send.type, send.template, 0, 200, wamid, send.biz, peer)
        if state.dispatcher.enabled:
            self._schedule(pnid, wamid, send, version, rule, now)
        if send.template is not None:
            body = orjson.dumps(
                {
                    "messaging_product": "whatsapp",
                    "contacts": [{"input": send.to, "wa_id": send.wa_id}],
                    "messages": [{"id": wamid, "message_status": "accepted"}],
                }
            )
        else:
            body = orjson.dumps(
                {
                    "messaging_product": "whatsapp",
                    "contacts": [{"input": send.to, "wa_id": send.wa_id}],
                    "messages": [{"id": wamid}],
                }
            )
        if delay:
            await asyncio.sleep(delay)
        return json_response(200, body)

    def _schedule(
        self,
        pnid: str,
        wamid: str,
        send: Send,
        version: str,
        rule: FailureRule | None,
        now: float,
    ) -> None:
        """The status webhooks of an accepted send (pricing as Meta bills it)."""
        state = self.state
        failure: tuple[int, str | None] | None = None
        sent_first = True
        window = state.window_open(pnid, send.wa_id, now)
        if rule is not None and rule.fails:
            assert rule.code is not None
            failure = (rule.code, rule.details)
            sent_first = rule.sent_first
        elif send.template is None and state.config.service_window and not window:
            failure = (131047, None)
            sent_first = False
        if send.template is None:
            billable, pricing_type = False, "free_customer_service"
        elif send.category == "utility" and window:
            billable, pricing_type = False, "free_customer_service"
        else:
            billable, pricing_type = True, "regular"
        state.dispatcher.schedule_message(
            pnid,
            wamid,
            send.wa_id,
            category=send.category,
            billable=billable,
            pricing_type=pricing_type,
            biz_opaque_callback_data=send.biz,
            with_conversation=major(version) < 24,
            failure=failure,
            sent_first=sent_first,
        )


# ---- validation of the request body -----------------------------------------------------


def _check_product(body: dict[str, Any]) -> None:
    mp = body.get("messaging_product")
    if mp is None:
        raise required("messaging_product")
    if mp != "whatsapp":
        raise reject(
            100,
            message=f'(#100) Param messaging_product must be one of {{WHATSAPP}} - got "{mp}".',
        )


def _validate_read(body: dict[str, Any]) -> None:
    """A mark-as-read request (``"status": "read"``)."""
    _check_product(body)
    status = body.get("status")
    if status != "read":
        raise reject(100, message=f'(#100) Param status must be one of {{READ}} - got "{status}".')
    message_id = body.get("message_id")
    if not isinstance(message_id, str) or not message_id:
        raise required("message_id")
    if not message_id.startswith("wamid."):
        raise invalid(f"Invalid message_id: {message_id}")


def _text(mtype: str, obj: Any) -> None:
    if not isinstance(obj, dict):
        raise invalid("Param text must be an object.")
    text = obj.get("body")
    if not isinstance(text, str) or not text:
        raise required("text['body']")
    if len(text) > MAX_TEXT:
        raise invalid(f"Param text['body'] must be at most {MAX_TEXT} characters long.")


def _media(mtype: str, obj: Any) -> None:
    if not isinstance(obj, dict):
        raise invalid(f"Param {mtype} must be an object.")
    if not obj.get("id") and not obj.get("link"):
        raise invalid(f"Param {mtype} must contain either 'id' or 'link'.")
    if obj.get("id") and obj.get("link"):
        raise invalid(f"Param {mtype} must contain only one of 'id' or 'link'.")


def _location(mtype: str, obj: Any) -> None:
    if not isinstance(obj, dict):
        raise invalid("Param location must be an object.")
    for key in ("latitude", "longitude"):
        if obj.get(key) is None:
            raise required(f"location['{key}']")
        try:
            float(obj[key])
        except (TypeError, ValueError):
            raise invalid(f"Param location['{key}'] must be a number.") from None


def _contacts(mtype: str, obj: Any) -> None:
    if not isinstance(obj, list) or not obj:
        raise invalid("Param contacts must be a non-empty array.")
    for i, c in enumerate(obj):
        name = c.get("name") if isinstance(c, dict) else None
        if not isinstance(name, dict) or not name.get("formatted_name"):
            raise required(f"contacts[{i}]['name']['formatted_name']")


def _interactive(mtype: str, obj: Any) -> None:
    if not isinstance(obj, dict):
        raise invalid("Param interactive must be an object.")
    itype = obj.get("type")
    if itype is None:
        raise required("interactive['type']")
    if itype not in INTERACTIVE_TYPES:
        raise invalid(f"Param interactive['type'] is not a supported type: {itype}.")
    if itype != "location_request_message" and not isinstance(obj.get("action"), dict):
        raise required("interactive['action']")


def _reaction(mtype: str, obj: Any) -> None:
    if not isinstance(obj, dict):
        raise invalid("Param reaction must be an object.")
    if not obj.get("message_id"):
        raise required("reaction['message_id']")
    if "emoji" not in obj:
        raise required("reaction['emoji']")


# The content check of every type but ``template`` (the catalogue checks that one).
_CONTENT: dict[str, Callable[[str, Any], None]] = {
    "text": _text,
    **dict.fromkeys(MEDIA_TYPES, _media),
    "location": _location,
    "contacts": _contacts,
    "interactive": _interactive,
    "reaction": _reaction,
}
assert _TYPE_SET == {*_CONTENT, "template"}
