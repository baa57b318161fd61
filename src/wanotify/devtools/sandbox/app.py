"""The sandbox ASGI app: a local double of Meta's WhatsApp Cloud API (and of an SMS provider).

Graph API (what client libraries and the worker call)
    ``POST /{version}/{phone_number_id}/messages``   send (or mark as read)
    ``GET  /{version}/{phone_number_id}``            the phone number object
    ``GET  /{version}/{waba_id}``                    the WhatsApp Business Account object
    ``GET  /{version}/{waba_id}/message_templates``  the approved templates (the catalogue)
    ``GET  /{version}/{waba_id}/phone_numbers``      the senders of that account
    ``GET  /{version}/debug_token?input_token=…``    token introspection

Fake Twilio-style SMS provider
    ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json``

Control and observation (tests, the demo, benchmarks)
    ``GET  /_sandbox/healthz``, ``GET /_sandbox/stats``,
    ``GET  /_sandbox/messages?after=SEQ&limit=N`` (every /messages request, in order),
    ``GET  /_sandbox/sms?after=SEQ&limit=N``,
    ``GET|POST /_sandbox/failures`` (POST replaces the rules: a JSON list),
    ``GET|POST /_sandbox/config`` (latency_ms, webhook_delay_ms, read_ratio,
    duplicate_ratio, reorder_ratio, service_window, webhook_url),
    ``POST /_sandbox/reset`` (clear logs, stats, limits, rule counters, pending webhooks),
    ``POST /_sandbox/inbound`` (``{"from": "+91…", "text": "STOP"}`` → Meta's inbound
    message webhook; it also opens the 24-hour customer service window),
    ``POST /_sandbox/flush`` (post every scheduled webhook now and wait for it),
    ``GET|POST /_sandbox/tokens`` (each sender's current token by fingerprint and expiry;
    POST ``{"sender" | "fingerprint", "expires_at" | "expires_in_s"}`` expires a token:
    Meta's 190/463 from then on).

Known senders, their tokens and limits come from ``WANOTIFY_SENDERS`` (a sender's
``access_token_file`` is re-read when it changes, so rotating it serves both sides; old
tokens stay valid until they expire, as on Meta; ``WANOTIFY_SANDBOX_TOKEN_EXPIRY`` sets
expiry times); the approved templates
from ``WANOTIFY_TEMPLATES``; webhooks are signed with ``WANOTIFY_APP_SECRET``.

Non-template messages (text, media, …) to a user who has not written in the last 24 hours
are accepted and then fail with a ``131047`` (Re-engagement message) status webhook, as on
Meta; ``POST /_sandbox/inbound`` opens the window, and ``service_window: false`` in
``/_sandbox/config`` turns the check off.

The hot path (``/messages``) is plain Starlette with orjson, with no awaits between the
limit check and the commit, so everything runs in one asyncio process.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import os
import random
import re
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import orjson
import phonenumbers
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from wanotify.config import SenderConfig, Settings, get_settings
from wanotify.core.phones import mask_phone
from wanotify.core.templates import Catalogue, load_catalogue
from wanotify.devtools.sandbox import errors as E
from wanotify.devtools.sandbox.failures import (
    FailureInjector,
    FailureRule,
    RuleError,
    default_rules,
    parse_rules,
)
from wanotify.devtools.sandbox.limits import LimitRegistry
from wanotify.devtools.sandbox.templates import check_send, graph_templates
from wanotify.devtools.sandbox.webhooks import Target, WebhookDispatcher, twilio_signature
from wanotify.providers import tokens

log = logging.getLogger("wanotify.devtools.sandbox")

DEFAULT_WEBHOOK_URL = "http://127.0.0.1:8000/webhooks/whatsapp"
MAX_LOG = 1_000_000
MAX_SMS_LOG = 100_000
MAX_WINDOWS = 200_000
SERVICE_WINDOW_S = 24 * 3600.0
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

_VERSION = re.compile(r"^v\d{1,3}\.\d{1,2}$")
_PHONE_STRIP = str.maketrans("", "", " +-().")
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_ALNUM_SENDER = re.compile(r"^[A-Za-z0-9 ]{1,11}$")
_JSON = "application/json"


def _json(status: int, body: bytes, headers: dict[str, str] | None = None) -> Response:
    return Response(body, status_code=status, media_type=_JSON, headers=headers)


def _ok(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type=_JSON)


def _bad(reason: str, status: int = 400) -> Response:
    return _ok({"error": reason}, status)


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


def _display(number: str | None, pnid: str) -> tuple[str, str]:
    """(digits as in webhook metadata, human format as in GET /{phone_number_id})."""
    if number:
        digits = "".join(c for c in number if c.isdigit())
        try:
            formatted = phonenumbers.format_number(
                phonenumbers.parse("+" + digits), phonenumbers.PhoneNumberFormat.INTERNATIONAL
            )
        except phonenumbers.NumberParseException:
            formatted = "+" + digits
        return digits, formatted
    digits = "1555" + pnid[-7:].rjust(7, "0")
    return digits, f"+1 555-{digits[4:7]}-{digits[7:]}"


class _Reject(Exception):
    """A Graph API error answer (raised on the validation path)."""

    def __init__(self, status: int, body: bytes, code: int) -> None:
        super().__init__(code)
        self.status = status
        self.body = body
        self.code = code


def _reject(
    code: int,
    *,
    details: str | None = None,
    message: str | None = None,
    http_status: int | None = None,
) -> _Reject:
    status, body = E.graph_error(code, details=details, message=message, http_status=http_status)
    return _Reject(status, body, code)


def _required(param: str) -> _Reject:
    return _reject(100, message=f"(#100) The parameter {param} is required.")


def _invalid(details: str) -> _Reject:
    return _reject(100, details=details)


@dataclass(frozen=True, slots=True)
class SandboxSender:
    config: SenderConfig
    phone_number_id: str
    waba_id: str
    token: str
    display_digits: str
    display_formatted: str


@dataclass(slots=True)
class RuntimeConfig:
    latency_ms: float
    webhook_delay_ms: float
    read_ratio: float
    duplicate_ratio: float
    reorder_ratio: float
    service_window: bool = True


@dataclass(frozen=True, slots=True)
class _Send:
    """A validated send request."""

    to: str
    wa_id: str
    type: str
    template: str | None
    category: str  # utility | marketing | authentication | service
    biz: str | None


class Sandbox:
    """State and handlers of one sandbox server."""

    def __init__(
        self,
        settings: Settings,
        webhook_url: str | None,
        *,
        catalogue: Catalogue | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.wall = wall
        self.rng = rng or random.Random()
        self.catalogue = (
            catalogue if catalogue is not None else load_catalogue(settings.templates_path)
        )
        self.config = RuntimeConfig(
            latency_ms=settings.sandbox_latency_ms,
            webhook_delay_ms=settings.sandbox_webhook_delay_ms,
            read_ratio=settings.sandbox_read_ratio,
            duplicate_ratio=settings.sandbox_duplicate_ratio,
            reorder_ratio=settings.sandbox_reorder_ratio,
        )
        secret = settings.app_secret.get_secret_value() if settings.app_secret else None
        self.dispatcher = WebhookDispatcher(
            webhook_url or None,
            secret,
            delay_ms=self.config.webhook_delay_ms,
            read_ratio=self.config.read_ratio,
            duplicate_ratio=self.config.duplicate_ratio,
            reorder_ratio=self.config.reorder_ratio,
            rng=self.rng,
            clock=clock,
            wall=wall,
        )
        self.limits = LimitRegistry(clock)
        self.senders: dict[str, SandboxSender] = {}
        self.wabas: dict[str, list[SandboxSender]] = {}
        self._tokens: dict[str, set[str]] = {}  # token -> ids it may use
        # Tokens: each sender's current one (its secret file is re-read when it changes, as
        # the worker does), and every one seen before (valid until it expires, as on Meta).
        self._token_sources: list[tuple[SandboxSender, tokens.StaticSource | tokens.FileSource]] = []
        self._expires: dict[str, float] = {}  # token -> unix time it expires
        self._expiry_by_fp: dict[str, float] = {}
        self._fps: dict[str, str] = {}  # token -> fingerprint
        self._tokens_checked = 0.0
        for sc in settings.sender_list:
            digits, formatted = _display(sc.display_phone_number, sc.phone_number_id)
            try:
                first = tokens.current(sc).value
            except tokens.TokenUnavailable as exc:
                raise ValueError(f"sandbox: sender {sc.name}: {exc}") from None
            s = SandboxSender(
                sc,
                sc.phone_number_id,
                sc.waba_id,
                first,
                digits,
                formatted,
            )
            self._token_sources.append((s, tokens.source(sc)))
            self.senders[s.phone_number_id] = s
            self.wabas.setdefault(s.waba_id, []).append(s)
            self._tokens.setdefault(s.token, set()).update((s.phone_number_id, s.waba_id))
            self.limits.configure(s.phone_number_id, sc.mps, sc.pair_burst, sc.pair_interval_s)
            self.dispatcher.register(Target(s.phone_number_id, s.waba_id, digits))
        self.default_sender = next(iter(self.senders.values()))
        self._load_expiry(settings.sandbox_token_expiry)
        self._graph_templates: dict[str, list[dict[str, Any]]] = {
            waba: graph_templates(self.catalogue, waba) for waba in self.wabas
        }
        self.categories: dict[tuple[str, str], str] = {}
        for t in next(iter(self._graph_templates.values())):
            self.categories[(t["name"], t["language"])] = str(t.get("category", "UTILITY")).lower()
        raw_rules = settings.sandbox_failure_rules()
        rules = default_rules() if raw_rules is None else parse_rules(raw_rules)
        self.failures = FailureInjector(rules, self.rng)
        self._log: deque[tuple[Any, ...]] = deque(maxlen=MAX_LOG)
        self._seq = 0
        self._sms: deque[dict[str, Any]] = deque(maxlen=MAX_SMS_LOG)
        self._sms_seq = 0
        self._windows: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._boot = os.urandom(4).hex().upper()
        self._counter = 0
        self._started = wall()
        self._reset_stats()

    # ---- bookkeeping ----------------------------------------------------------------

    def _reset_stats(self) -> None:
        self._stats: dict[str, dict[str, Any]] = {}
        self._by_code: dict[int, int] = {}
        self._sms_by_code: dict[int, int] = {}

    def _record(
        self,
        t: float,
        pnid: str,
        to: Any,
        mtype: str | None,
        template: str | None,
        code: int,
        http_status: int,
        wamid: str | None = None,
        biz: str | None = None,
    ) -> None:
        self._seq += 1
        to_s = to if isinstance(to, str) or to is None else str(to)
        self._log.append((self._seq, t, pnid, to_s, mtype, template, code, http_status, wamid, biz))
        key = pnid if pnid in self.senders else "unknown"
        st = self._stats.get(key)
        if st is None:
            st = self._stats[key] = {"requests": 0, "accepted": 0, "rejected": 0, "by_code": {}}
        st["requests"] += 1
        if code == 0:
            st["accepted"] += 1
        else:
            st["rejected"] += 1
        by_code = st["by_code"]
        by_code[code] = by_code.get(code, 0) + 1
        self._by_code[code] = self._by_code.get(code, 0) + 1

    def _wamid(self, wa_id: str) -> str:
        """A unique id shaped like Meta's (base64 of a small protobuf-like blob)."""
        self._counter += 1
        tail = f"{self._boot}{self._counter:010X}".encode("ascii")
        raw = (
            b"\x1c\x18"
            + bytes((len(wa_id),))
            + wa_id.encode("ascii")
            + b"\x15\x02\x00\x11\x18\x12"
            + tail
            + b"\x00"
        )
        return "wamid." + base64.b64encode(raw).decode("ascii")

    def _window_open(self, pnid: str, wa_id: str, now: float) -> bool:
        expires = self._windows.get((pnid, wa_id))
        return expires is not None and expires > now

    def _open_window(self, pnid: str, wa_id: str, now: float) -> None:
        key = (pnid, wa_id)
        self._windows[key] = now + SERVICE_WINDOW_S
        self._windows.move_to_end(key)
        while len(self._windows) > MAX_WINDOWS:
            self._windows.popitem(last=False)

    def _token(self, request: Request) -> str | None:
        auth = request.headers.get("authorization")
        if auth:
            scheme, _, token = auth.partition(" ")
            if scheme.lower() in ("bearer", "oauth") and token.strip():
                return token.strip()
            return None
        return request.query_params.get("access_token") or None

    # ---- tokens: rotation and expiry --------------------------------------------------

    def _learn(self, s: SandboxSender, token: str) -> None:
        if token in self._fps:
            return
        fp = tokens.fingerprint(token)
        self._fps[token] = fp
        self._tokens.setdefault(token, set()).update((s.phone_number_id, s.waba_id))
        if fp in self._expiry_by_fp:
            self._expires[token] = self._expiry_by_fp[fp]

    def _refresh_tokens(self, force: bool = False) -> None:
        """Learn senders' new tokens (their secret files), at most once a second unless forced."""
        now = time.monotonic()
        if not force and now - self._tokens_checked < 1.0:
            return
        self._tokens_checked = now
        for s, src in self._token_sources:
            try:
                self._learn(s, src.get(force).value)
            except tokens.TokenUnavailable:
                continue

    def _current_token(self, s: SandboxSender) -> str | None:
        src = next(src for x, src in self._token_sources if x is s)
        try:
            return src.get(force=True).value
        except tokens.TokenUnavailable:
            return None

    def _load_expiry(self, raw: str | None) -> None:
        if not raw:
            return
        from wanotify.config import load_ref

        data = load_ref(raw)
        if not isinstance(data, dict):
            raise ValueError("WANOTIFY_SANDBOX_TOKEN_EXPIRY must map sender names or token fingerprints to times")
        by_name = {s.config.name: s for s in self.senders.values()}
        for key, when in data.items():
            at = _parse_time(when)
            if key in by_name:
                self._set_expiry(tokens.fingerprint(by_name[key].token), at)
            elif str(key).startswith("sha256:"):
                self._set_expiry(str(key), at)
            else:
                raise ValueError(f"WANOTIFY_SANDBOX_TOKEN_EXPIRY: {key!r} is neither a sender nor a fingerprint")

    def _set_expiry(self, fp: str, at: float | None) -> None:
        if at is None:
            self._expiry_by_fp.pop(fp, None)
        else:
            self._expiry_by_fp[fp] = at
        for token, tfp in self._fps.items():
            if tfp == fp:
                if at is None:
                    self._expires.pop(token, None)
                else:
                    self._expires[token] = at

    def _check_token(self, token: str | None) -> _Reject | None:
        """None when the token may be used; else Meta's 190 (missing, unknown or expired)."""
        if token is None:
            status, body = E.invalid_token(missing=True)
            return _Reject(status, body, 190)
        self._refresh_tokens()
        if token not in self._tokens:
            self._refresh_tokens(force=True)  # a secret file rewritten this very second
        if token not in self._tokens:
            status, body = E.invalid_token(missing=False)
            return _Reject(status, body, 190)
        exp = self._expires.get(token)
        if exp is not None and exp <= self.wall():
            status, body = E.token_expired(exp, self.wall())
            return _Reject(status, body, 190)
        return None

    def _auth(self, request: Request, method: str, object_id: str) -> _Reject | None:
        token = self._token(request)
        denied = self._check_token(token)
        if denied is not None:
            return denied
        allowed = self._tokens[token] if token is not None else set()
        if object_id not in allowed:
            status, body = E.unsupported_request(method, object_id)
            return _Reject(status, body, 100)
        return None

    # ---- POST /{version}/{phone_number_id}/messages ------------------------------------

    async def messages(self, request: Request) -> Response:
        t = self.wall()
        latency = self.config.latency_ms
        if latency:
            await asyncio.sleep(latency / 1000.0)
        pp = request.path_params
        pnid: str = pp["object_id"]
        version: str = pp["version"]
        to: Any = None
        biz: Any = None
        mtype: str | None = None
        template: str | None = None
        try:
            if not _VERSION.match(version):
                raise _reject(
                    2500,
                    message=f"Unknown path components: /{version}/{pnid}/messages",
                    http_status=400,
                )
            denied = self._auth(request, "post", pnid)
            if denied is not None:
                raise denied
            sender = self.senders.get(pnid)
            if sender is None:  # a WABA id: it has no /messages edge
                status, err = E.unsupported_request("post", pnid)
                raise _Reject(status, err, 100)
            raw = await request.body()
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                raise _invalid("The request body is not valid JSON.") from None
            if not isinstance(body, dict):
                raise _invalid("The request body must be a JSON object.")
            to = body.get("to")
            biz = body.get("biz_opaque_callback_data")
            mtype = body.get("type", "text") if "status" not in body else "read"
            if isinstance(body.get("template"), dict):
                name = body["template"].get("name")
                template = name if isinstance(name, str) else None
            if mtype == "read":
                self._validate_read(body)
                self._record(t, pnid, to, "read", None, 0, 200)
                return _json(200, b'{"success":true}')
            send = self._validate(sender, body, version)
            return await self._accept(t, sender, send, version)
        except _Reject as rej:
            self._record(
                t,
                pnid,
                to,
                mtype if isinstance(mtype, str) else None,
                template,
                rej.code,
                rej.status,
                None,
                biz if isinstance(biz, str) else None,
            )
            return _json(rej.status, rej.body)

    def _validate_read(self, body: dict[str, Any]) -> None:
        mp = body.get("messaging_product")
        if mp is None:
            raise _required("messaging_product")
        if mp != "whatsapp":
            raise _reject(
                100,
                message=f'(#100) Param messaging_product must be one of {{WHATSAPP}} - got "{mp}".',
            )
        status = body.get("status")
        if status != "read":
            raise _reject(
                100, message=f'(#100) Param status must be one of {{READ}} - got "{status}".'
            )
        message_id = body.get("message_id")
        if not isinstance(message_id, str) or not message_id:
            raise _required("message_id")
        if not message_id.startswith("wamid."):
            raise _invalid(f"Invalid message_id: {message_id}")

    def _validate(self, sender: SandboxSender, body: dict[str, Any], version: str) -> _Send:
        mp = body.get("messaging_product")
        if mp is None:
            raise _required("messaging_product")
        if mp != "whatsapp":
            raise _reject(
                100,
                message=f'(#100) Param messaging_product must be one of {{WHATSAPP}} - got "{mp}".',
            )
        recipient_type = body.get("recipient_type", "individual")
        if recipient_type != "individual":
            if recipient_type == "group":
                raise _invalid("Group messaging is not available for this phone number.")
            raise _reject(
                100,
                message=f'(#100) Param recipient_type must be one of {{INDIVIDUAL, GROUP}} - got "{recipient_type}".',
            )
        to = body.get("to")
        if to is None or to == "":
            raise _required("to")
        wa_id = wa_id_of(to)
        if wa_id is None:
            raise _reject(
                131009,
                details="The phone number is malformed: use the international format with the "
                "country code, e.g. +16505551234.",
            )
        if wa_id == sender.display_digits:
            raise _reject(131021)
        mtype = body.get("type", "text")
        if not isinstance(mtype, str) or mtype not in _TYPE_SET:
            raise _reject(
                100, message=f'(#100) Param type must be one of {_TYPES_ENUM} - got "{mtype}".'
            )
        obj = body.get(mtype)
        if obj is None:
            raise _required(mtype)
        biz = body.get("biz_opaque_callback_data")
        if biz is not None:
            if not isinstance(biz, str):
                raise _invalid("Param biz_opaque_callback_data must be a string.")
            if len(biz) > MAX_CALLBACK_DATA:
                raise _invalid(
                    f"Param biz_opaque_callback_data must be at most {MAX_CALLBACK_DATA} characters long."
                )
        context = body.get("context")
        if context is not None and (not isinstance(context, dict) or not context.get("message_id")):
            raise _required("context['message_id']")
        template: str | None = None
        category = "service"
        if mtype == "text":
            if not isinstance(obj, dict):
                raise _invalid("Param text must be an object.")
            text = obj.get("body")
            if not isinstance(text, str) or not text:
                raise _required("text['body']")
            if len(text) > MAX_TEXT:
                raise _invalid(f"Param text['body'] must be at most {MAX_TEXT} characters long.")
        elif mtype == "template":
            template, category = self._validate_template(obj)
        elif mtype in MEDIA_TYPES:
            if not isinstance(obj, dict):
                raise _invalid(f"Param {mtype} must be an object.")
            if not obj.get("id") and not obj.get("link"):
                raise _invalid(f"Param {mtype} must contain either 'id' or 'link'.")
            if obj.get("id") and obj.get("link"):
                raise _invalid(f"Param {mtype} must contain only one of 'id' or 'link'.")
        elif mtype == "location":
            if not isinstance(obj, dict):
                raise _invalid("Param location must be an object.")
            for key in ("latitude", "longitude"):
                if obj.get(key) is None:
                    raise _required(f"location['{key}']")
                try:
                    float(obj[key])
                except (TypeError, ValueError):
                    raise _invalid(f"Param location['{key}'] must be a number.") from None
        elif mtype == "contacts":
            if not isinstance(obj, list) or not obj:
                raise _invalid("Param contacts must be a non-empty array.")
            for i, c in enumerate(obj):
                name = c.get("name") if isinstance(c, dict) else None
                if not isinstance(name, dict) or not name.get("formatted_name"):
                    raise _required(f"contacts[{i}]['name']['formatted_name']")
        elif mtype == "interactive":
            if not isinstance(obj, dict):
                raise _invalid("Param interactive must be an object.")
            itype = obj.get("type")
            if itype is None:
                raise _required("interactive['type']")
            if itype not in INTERACTIVE_TYPES:
                raise _invalid(f"Param interactive['type'] is not a supported type: {itype}.")
            if itype != "location_request_message" and not isinstance(obj.get("action"), dict):
                raise _required("interactive['action']")
        elif mtype == "reaction":
            if not isinstance(obj, dict):
                raise _invalid("Param reaction must be an object.")
            if not obj.get("message_id"):
                raise _required("reaction['message_id']")
            if "emoji" not in obj:
                raise _required("reaction['emoji']")
        return _Send(
            to=str(to), wa_id=wa_id, type=mtype, template=template, category=category, biz=biz
        )

    def _validate_template(self, obj: Any) -> tuple[str, str]:
        if not isinstance(obj, dict):
            raise _invalid("Param template must be an object.")
        name = obj.get("name")
        if not isinstance(name, str) or not name:
            raise _required("template['name']")
        language = obj.get("language")
        if not isinstance(language, dict):
            raise _required("template['language']")
        code = language.get("code")
        if not isinstance(code, str) or not code:
            raise _required("template['language']['code']")
        components = obj.get("components")
        if components is not None and not isinstance(components, list):
            raise _invalid("Param template['components'] must be an array.")
        problem = check_send(self.catalogue, name, code, components)
        if problem is not None:
            err_code, details, status = problem
            raise _reject(err_code, details=details, http_status=status)
        return name, self.categories.get((name, code), "utility")

    async def _accept(self, t: float, sender: SandboxSender, send: _Send, version: str) -> Response:
        pnid = sender.phone_number_id
        now = self.clock()
        limits = self.limits.get(pnid)
        limited = limits.check(send.wa_id, now)
        if limited is not None:
            raise _reject(limited)
        rule: FailureRule | None = None
        if self.failures.rules:
            rule = self.failures.decide("+" + send.wa_id, "whatsapp")
        delay = rule.latency_ms / 1000.0 if rule is not None else 0.0
        if rule is not None and rule.fails and rule.mode == "sync":
            assert rule.code is not None
            if delay:
                await asyncio.sleep(delay)
            raise _reject(rule.code, details=rule.details, http_status=rule.http_status)
        # accepted: from here to the answer nothing can fail
        limits.commit(send.wa_id, now)
        wamid = self._wamid(send.wa_id)
        self._record(t, pnid, send.to, send.type, send.template, 0, 200, wamid, send.biz)
        if self.dispatcher.enabled:
            failure: tuple[int, str | None] | None = None
            sent_first = True
            window = self._window_open(pnid, send.wa_id, now)
            if rule is not None and rule.fails:
                assert rule.code is not None
                failure = (rule.code, rule.details)
                sent_first = rule.sent_first
            elif send.template is None and self.config.service_window and not window:
                failure = (131047, None)
                sent_first = False
            if send.template is None:
                billable, pricing_type = False, "free_customer_service"
            elif send.category == "utility" and window:
                billable, pricing_type = False, "free_customer_service"
            else:
                billable, pricing_type = True, "regular"
            self.dispatcher.schedule_message(
                pnid,
                wamid,
                send.wa_id,
                category=send.category,
                billable=billable,
                pricing_type=pricing_type,
                biz_opaque_callback_data=send.biz,
                with_conversation=_major(version) < 24,
                failure=failure,
                sent_first=sent_first,
            )
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
        return _json(200, body)

    # ---- Graph API reads --------------------------------------------------------------

    async def get_object(self, request: Request) -> Response:
        if not _VERSION.match(request.path_params["version"]):
            return await self.fallback(request)
        oid: str = request.path_params["object_id"]
        denied = self._auth(request, "get", oid)
        if denied is not None:
            return _json(denied.status, denied.body)
        sender = self.senders.get(oid)
        if sender is not None:
            obj = self._phone_object(sender)
        else:
            first = self.wabas[oid][0]
            obj = {
                "id": oid,
                "name": f"{first.config.name} (wanotify sandbox)",
                "currency": "USD",
                "timezone_id": "1",
                "message_template_namespace": f"sandbox_{oid}",
                "account_review_status": "APPROVED",
                "business_verification_status": "verified",
            }
        return _ok(_select_fields(obj, request.query_params.get("fields")))

    def _phone_object(self, s: SandboxSender) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "verified_name": s.config.name,
            "code_verification_status": "VERIFIED",
            "display_phone_number": s.display_formatted,
            "quality_rating": "GREEN",
            "platform_type": "CLOUD_API",
            "throughput": {"level": "HIGH" if s.config.mps > 80 else "STANDARD"},
            "name_status": "APPROVED",
            "messaging_limit_tier": "TIER_UNLIMITED"
            if s.config.daily_unique_limit is None
            else f"TIER_{s.config.daily_unique_limit // 1000}K",
        }
        if self.dispatcher.url:
            obj["webhook_configuration"] = {"application": self.dispatcher.url}
        obj["id"] = s.phone_number_id
        return obj

    async def message_templates(self, request: Request) -> Response:
        if not _VERSION.match(request.path_params["version"]):
            return await self.fallback(request)
        waba: str = request.path_params["object_id"]
        denied = self._auth(request, "get", waba)
        if denied is None and waba not in self.wabas:
            status, body = E.unsupported_request("get", waba)
            denied = _Reject(status, body, 100)
        if denied is not None:
            return _json(denied.status, denied.body)
        q = request.query_params
        data = self._graph_templates[waba]
        for key in ("name", "language", "status", "category"):
            want = q.get(key)
            if want:
                if key == "name":
                    data = [t for t in data if want.lower() in str(t.get("name", "")).lower()]
                else:
                    data = [t for t in data if str(t.get(key, "")).lower() == want.lower()]
        return self._page(request, data, q.get("fields"))

    async def phone_numbers(self, request: Request) -> Response:
        if not _VERSION.match(request.path_params["version"]):
            return await self.fallback(request)
        waba: str = request.path_params["object_id"]
        denied = self._auth(request, "get", waba)
        if denied is None and waba not in self.wabas:
            status, body = E.unsupported_request("get", waba)
            denied = _Reject(status, body, 100)
        if denied is not None:
            return _json(denied.status, denied.body)
        data = [self._phone_object(s) for s in self.wabas[waba]]
        return self._page(request, data, request.query_params.get("fields"))

    def _page(self, request: Request, data: list[dict[str, Any]], fields: str | None) -> Response:
        q = request.query_params
        try:
            limit = max(1, min(int(q.get("limit", "25")), 1000))
        except ValueError:
            limit = 25
        start = 0
        after = q.get("after")
        if after:
            try:
                start = int(base64.urlsafe_b64decode(after.encode() + b"==").decode()) + 1
            except (ValueError, binascii.Error):
                start = 0
        page = data[start : start + limit]
        out: dict[str, Any] = {"data": [_select_fields(item, fields) for item in page]}
        if page:
            paging: dict[str, Any] = {
                "cursors": {"before": _cursor(start), "after": _cursor(start + len(page) - 1)}
            }
            if start + limit < len(data):
                paging["next"] = str(
                    request.url.include_query_params(after=_cursor(start + len(page) - 1))
                )
            out["paging"] = paging
        return _ok(out)

    async def debug_token(self, request: Request) -> Response:
        if not _VERSION.match(request.path_params["version"]):
            return await self.fallback(request)
        denied = self._check_token(self._token(request))
        if denied is not None:
            return _json(denied.status, denied.body)
        input_token = request.query_params.get("input_token")
        if not input_token:
            return _json(
                *E.graph_error(100, message="(#100) The parameter input_token is required")
            )
        ids = self._tokens.get(input_token)
        if ids is None:
            return _ok(
                {
                    "data": {
                        "error": {"code": 190, "message": "Invalid OAuth access token."},
                        "is_valid": False,
                        "scopes": [],
                    }
                }
            )
        wabas = sorted(i for i in ids if i in self.wabas)
        exp = self._expires.get(input_token)
        data: dict[str, Any] = {
            "app_id": "100000000000001",
            "type": "SYSTEM_USER",
            "application": "wanotify sandbox",
            "data_access_expires_at": 0,
            "expires_at": int(exp) if exp is not None else 0,
            "is_valid": True,
            "issued_at": int(self._started),
            "scopes": ["whatsapp_business_management", "whatsapp_business_messaging"],
            "granular_scopes": [
                {"scope": "whatsapp_business_management", "target_ids": wabas},
                {"scope": "whatsapp_business_messaging", "target_ids": wabas},
            ],
            "user_id": "100000000000002",
        }
        if exp is not None and exp <= self.wall():
            data["is_valid"] = False
            data["error"] = {
                "code": 190,
                "message": E.expired_message(exp, self.wall()),
                "subcode": 463,
            }
        return _ok({"data": data})

    # ---- /_sandbox/tokens: expire or extend tokens (tests, demos) -----------------------

    def _token_rows(self) -> list[dict[str, Any]]:
        now = self.wall()
        rows = []
        for s, _src in self._token_sources:
            cur = self._current_token(s)
            if cur is not None:
                self._learn(s, cur)
            exp = self._expires.get(cur) if cur is not None else None
            rows.append({
                "sender": s.config.name,
                "phone_number_id": s.phone_number_id,
                "fingerprint": self._fps.get(cur) if cur is not None else None,
                "expires_at": int(exp) if exp is not None else 0,
                "expired": exp is not None and exp <= now,
            })
        return rows

    async def tokens_get(self, request: Request) -> Response:
        return _ok({"data": self._token_rows()})

    async def tokens_set(self, request: Request) -> Response:
        """``{"sender": NAME | "fingerprint": "sha256:…", "expires_at": ISO | unix | null}``
        (or ``"expires_in_s": N``): set when a token expires (null: never). ``sender`` names
        that sender's current token; a token written to its file later is a new token."""
        try:
            raw = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return _bad("body must be a JSON object")
        if not isinstance(raw, dict) or set(raw) - {"sender", "fingerprint", "expires_at", "expires_in_s"}:
            return _bad("body must be {sender | fingerprint, expires_at | expires_in_s}")
        if "sender" in raw:
            s = next((x for x, _ in self._token_sources if x.config.name == raw["sender"]), None)
            cur = self._current_token(s) if s is not None else None
            if s is None or cur is None:
                return _bad(f"unknown sender {raw['sender']!r} (or its token cannot be read)")
            self._learn(s, cur)
            fp = self._fps[cur]
        elif isinstance(raw.get("fingerprint"), str):
            fp = raw["fingerprint"]
        else:
            return _bad("sender or fingerprint is required")
        try:
            if "expires_in_s" in raw:
                at: float | None = self.wall() + float(raw["expires_in_s"])
            else:
                at = _parse_time(raw.get("expires_at"))
        except (TypeError, ValueError) as exc:
            return _bad(f"expires_at: {exc}")
        self._set_expiry(fp, at)
        from datetime import UTC, datetime

        when = "never" if at is None else datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds")
        log.info("sandbox: token %s expires %s", fp, when)
        return _ok({"data": self._token_rows()})

    async def fallback(self, request: Request) -> Response:
        parts = [p for p in request.url.path.split("/") if p]
        if len(parts) >= 2 and _VERSION.match(parts[0]):
            status, body = E.unsupported_request(request.method, parts[1])
            return _json(status, body)
        return _json(
            *E.graph_error(
                2500, message=f"Unknown path components: {request.url.path}", http_status=400
            )
        )

    # ---- the fake SMS provider --------------------------------------------------------

    async def sms_send(self, request: Request) -> Response:
        t = self.wall()
        account_sid: str = request.path_params["account_sid"]
        auth = _basic_auth(request.headers.get("authorization"))
        if auth is None:
            status, body = E.twilio_error(20003)
            return _json(status, body, {"WWW-Authenticate": 'Basic realm="Twilio API"'})
        _user, password = auth
        raw = (await request.body()).decode("utf-8", "replace")
        form = dict(parse_qsl(raw, keep_blank_values=True))
        to = form.get("To", "").strip()
        from_ = form.get("From", "").strip()
        text = form.get("Body", "")
        entry: dict[str, Any] = {
            "t": t,
            "account_sid": account_sid,
            "to": to,
            "from": from_,
            "body": text,
        }
        code = 0
        if not to:
            code = 21604
        elif not _E164.match(to):
            code = 21211
        elif not from_ and not form.get("MessagingServiceSid"):
            code = 21603
        elif from_ and not (_E164.match(from_) or _ALNUM_SENDER.match(from_)):
            code = 21212
        elif not text and not form.get("MediaUrl"):
            code = 21602
        elif len(text) > 1600:
            code = 21617
        if code:
            status, body = E.twilio_error(code, to=to, from_=from_)
            self._sms_record(entry, None, "rejected", code, status)
            return _json(status, body)
        rule = self.failures.decide(to, "sms") if self.failures.rules else None
        delay = rule.latency_ms / 1000.0 if rule is not None else 0.0
        if delay:
            await asyncio.sleep(delay)
        if rule is not None and rule.fails and rule.mode == "sync":
            assert rule.code is not None
            status, body = E.twilio_error(
                rule.code, to=to, from_=from_, http_status=rule.http_status
            )
            self._sms_record(entry, None, "rejected", rule.code, status)
            return _json(status, body)
        sid = "SM" + os.urandom(16).hex()
        failed_code = rule.code if rule is not None and rule.fails else None
        final = "undelivered" if failed_code is not None else "delivered"
        self._sms_record(entry, sid, final, failed_code or 0, 201)
        created = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(t))
        callback = form.get("StatusCallback")
        if callback:
            self._sms_callbacks(callback, password, account_sid, sid, to, from_, failed_code)
        return _ok(
            {
                "account_sid": account_sid,
                "api_version": "2010-04-01",
                "body": text,
                "date_created": created,
                "date_sent": None,
                "date_updated": created,
                "direction": "outbound-api",
                "error_code": None,
                "error_message": None,
                "from": from_ or None,
                "messaging_service_sid": form.get("MessagingServiceSid"),
                "num_media": "0",
                "num_segments": str(max(1, (len(text) + 152) // 153)),
                "price": None,
                "price_unit": "USD",
                "sid": sid,
                "status": "queued",
                "subresource_uris": {
                    "media": f"/2010-04-01/Accounts/{account_sid}/Messages/{sid}/Media.json"
                },
                "to": to,
                "uri": f"/2010-04-01/Accounts/{account_sid}/Messages/{sid}.json",
            },
            201,
        )

    def _sms_record(
        self, entry: dict[str, Any], sid: str | None, status: str, code: int, http_status: int
    ) -> None:
        self._sms_seq += 1
        entry.update(seq=self._sms_seq, sid=sid, status=status, code=code, http_status=http_status)
        self._sms.append(entry)
        self._sms_by_code[code] = self._sms_by_code.get(code, 0) + 1

    def _sms_callbacks(
        self,
        url: str,
        auth_token: str,
        account_sid: str,
        sid: str,
        to: str,
        from_: str,
        failed_code: int | None,
    ) -> None:
        delay = self.config.webhook_delay_ms / 1000.0
        steps: list[tuple[str, int | None]] = [("sent", None)]
        steps.append(
            ("undelivered", failed_code) if failed_code is not None else ("delivered", None)
        )
        for i, (status, err) in enumerate(steps, start=1):
            params = {
                "AccountSid": account_sid,
                "ApiVersion": "2010-04-01",
                "From": from_,
                "MessageSid": sid,
                "MessageStatus": status,
                "SmsSid": sid,
                "SmsStatus": status,
                "To": to,
            }
            if err is not None:
                params["ErrorCode"] = str(err)
            headers = {"X-Twilio-Signature": twilio_signature(url, params, auth_token)}
            self.dispatcher.schedule_form(url, params, headers, delay * i)

    # ---- control and observation --------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        return _ok({"status": "ok", "senders": len(self.senders), "templates": len(self.catalogue)})

    async def stats(self, request: Request) -> Response:
        accepted = self._by_code.get(0, 0)
        total = sum(self._by_code.values())
        sms_total = sum(self._sms_by_code.values())
        sms_ok = sum(1 for e in self._sms if e["sid"] is not None)
        return _ok(
            {
                "requests": total,
                "accepted": accepted,
                "rejected": total - accepted,
                "by_code": {str(k): v for k, v in sorted(self._by_code.items())},
                "by_phone_number_id": {
                    pnid: {**st, "by_code": {str(k): v for k, v in sorted(st["by_code"].items())}}
                    for pnid, st in self._stats.items()
                },
                "sms": {
                    "requests": sms_total,
                    "accepted": sms_ok,
                    "by_code": {str(k): v for k, v in sorted(self._sms_by_code.items())},
                },
                "webhooks": {
                    "enabled": self.dispatcher.enabled,
                    "url": self.dispatcher.url,
                    "pending": self.dispatcher.pending,
                    **self.dispatcher.stats.as_dict(),
                },
                "last_seq": self._seq,
                "uptime_s": round(self.wall() - self._started, 3),
            }
        )

    async def message_log(self, request: Request) -> Response:
        after, limit = _after_limit(request)
        items = _slice_after(self._log, after, limit)
        data = [
            {
                "seq": e[0],
                "t": e[1],
                "phone_number_id": e[2],
                "to": e[3],
                "type": e[4],
                "template": e[5],
                "code": e[6],
                "http_status": e[7],
                "wamid": e[8],
                "biz_opaque_callback_data": e[9],
            }
            for e in items
        ]
        return _ok({"data": data, "last_seq": self._seq})

    async def sms_log(self, request: Request) -> Response:
        after, limit = _after_limit(request)
        items = [e for e in self._sms if e["seq"] > after][:limit]
        return _ok({"data": items, "last_seq": self._sms_seq})

    async def failures_get(self, request: Request) -> Response:
        return _ok([r.as_dict() for r in self.failures.rules])

    async def failures_set(self, request: Request) -> Response:
        try:
            raw = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return _bad("body must be a JSON list of failure rules")
        try:
            rules = parse_rules(raw)
        except RuleError as exc:
            return _bad(str(exc))
        self.failures.replace(rules)
        log.info("sandbox: %d failure rule(s) installed", len(rules))
        return _ok([r.as_dict() for r in self.failures.rules])

    def _config_dict(self) -> dict[str, Any]:
        return {
            "latency_ms": self.config.latency_ms,
            "webhook_delay_ms": self.config.webhook_delay_ms,
            "read_ratio": self.config.read_ratio,
            "duplicate_ratio": self.config.duplicate_ratio,
            "reorder_ratio": self.config.reorder_ratio,
            "service_window": self.config.service_window,
            "webhook_url": self.dispatcher.url,
            "signed": self.settings.app_secret is not None,
        }

    async def config_get(self, request: Request) -> Response:
        return _ok(self._config_dict())

    async def config_set(self, request: Request) -> Response:
        try:
            raw = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return _bad("body must be a JSON object")
        if not isinstance(raw, dict):
            return _bad("body must be a JSON object")
        unknown = set(raw) - {
            "latency_ms",
            "webhook_delay_ms",
            "read_ratio",
            "duplicate_ratio",
            "reorder_ratio",
            "service_window",
            "webhook_url",
        }
        if unknown:
            return _bad(f"unknown setting(s): {', '.join(sorted(unknown))}")
        new: dict[str, Any] = {}
        for key in ("latency_ms", "webhook_delay_ms"):
            if key in raw:
                v = raw[key]
                if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
                    return _bad(f"{key} must be a non-negative number")
                new[key] = float(v)
        for key in ("read_ratio", "duplicate_ratio", "reorder_ratio"):
            if key in raw:
                v = raw[key]
                if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v <= 1:
                    return _bad(f"{key} must be a number from 0 to 1")
                new[key] = float(v)
        if "service_window" in raw:
            if not isinstance(raw["service_window"], bool):
                return _bad("service_window must be true or false")
            new["service_window"] = raw["service_window"]
        if "webhook_url" in raw:
            url = raw["webhook_url"]
            if url is not None and not isinstance(url, str):
                return _bad("webhook_url must be a string or null")
            if url and not url.startswith(("http://", "https://")):
                return _bad("webhook_url must be an http(s) URL, or null/empty to disable webhooks")
            self.dispatcher.set_url(url or None)
        for key, value in new.items():
            setattr(self.config, key, value)
        d = self.dispatcher
        d.delay_ms = self.config.webhook_delay_ms
        d.read_ratio = self.config.read_ratio
        d.duplicate_ratio = self.config.duplicate_ratio
        d.reorder_ratio = self.config.reorder_ratio
        return _ok(self._config_dict())

    async def reset(self, request: Request) -> Response:
        self.reset_state()
        return _ok({"reset": True, "last_seq": self._seq})

    def reset_state(self) -> None:
        """Clear logs, stats, limits, rule counters, service windows and pending webhooks.

        Sequence numbers keep counting, so ``?after=`` cursors stay valid.
        """
        self._log.clear()
        self._sms.clear()
        self._reset_stats()
        self.limits.reset()
        self.failures.reset_counters()
        self._windows.clear()
        self.dispatcher.clear()

    async def inbound(self, request: Request) -> Response:
        try:
            raw = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return _bad("body must be a JSON object")
        if not isinstance(raw, dict):
            return _bad("body must be a JSON object")
        wa = wa_id_of(raw.get("from"))
        if wa is None:
            return _bad("from must be the user's phone number, e.g. +919876543210")
        pnid = raw.get("phone_number_id") or self.default_sender.phone_number_id
        sender = self.senders.get(str(pnid))
        if sender is None:
            return _bad(f"unknown phone_number_id {pnid}", 404)
        text = raw.get("text")
        button = raw.get("button")
        context_id = raw.get("context_id")
        if text is None and button is None:
            return _bad("give text (a text message) or button (a quick-reply button press)")
        wamid = self._wamid(wa)
        message: dict[str, Any] = {"from": wa, "id": wamid, "timestamp": str(int(self.wall()))}
        if context_id:
            message["context"] = {"from": sender.display_digits, "id": str(context_id)}
        if button is not None:
            label = button if isinstance(button, str) else str(button.get("text", ""))
            payload = button if isinstance(button, str) else str(button.get("payload", label))
            message["type"] = "button"
            message["button"] = {"payload": payload, "text": label}
        else:
            message["type"] = "text"
            message["text"] = {"body": str(text)}
        self._open_window(sender.phone_number_id, wa, self.clock())
        name = str(raw.get("name") or "Sandbox User")
        self.dispatcher.schedule_inbound(sender.phone_number_id, wa, name, message)
        log.info("sandbox: inbound message from %s", mask_phone("+" + wa))
        return _ok(
            {
                "id": wamid,
                "from": wa,
                "phone_number_id": sender.phone_number_id,
                "webhook": self.dispatcher.enabled,
            }
        )

    async def flush(self, request: Request) -> Response:
        try:
            timeout = float(request.query_params.get("timeout", "10"))
        except ValueError:
            timeout = 10.0
        result = await self.dispatcher.flush(max(0.1, min(timeout, 120.0)))
        return _ok(result)

    # ---- wiring -------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        return [
            Route("/{version}/{object_id}/messages", self.messages, methods=["POST"]),
            Route("/_sandbox/healthz", self.healthz, methods=["GET"]),
            Route("/_sandbox/stats", self.stats, methods=["GET"]),
            Route("/_sandbox/messages", self.message_log, methods=["GET"]),
            Route("/_sandbox/sms", self.sms_log, methods=["GET"]),
            Route("/_sandbox/failures", self.failures_get, methods=["GET"]),
            Route("/_sandbox/failures", self.failures_set, methods=["POST", "PUT"]),
            Route("/_sandbox/config", self.config_get, methods=["GET"]),
            Route("/_sandbox/config", self.config_set, methods=["POST", "PATCH"]),
            Route("/_sandbox/reset", self.reset, methods=["POST"]),
            Route("/_sandbox/inbound", self.inbound, methods=["POST"]),
            Route("/_sandbox/flush", self.flush, methods=["POST"]),
            Route("/_sandbox/tokens", self.tokens_get, methods=["GET"]),
            Route("/_sandbox/tokens", self.tokens_set, methods=["POST"]),
            Route(
                "/2010-04-01/Accounts/{account_sid}/Messages.json", self.sms_send, methods=["POST"]
            ),
            Route("/{version}/debug_token", self.debug_token, methods=["GET"]),
            Route(
                "/{version}/{object_id}/message_templates", self.message_templates, methods=["GET"]
            ),
            Route("/{version}/{object_id}/phone_numbers", self.phone_numbers, methods=["GET"]),
            Route("/{version}/{object_id}", self.get_object, methods=["GET"]),
            Route(
                "/{path:path}",
                self.fallback,
                methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            ),
        ]


def _major(version: str) -> int:
    try:
        return int(version[1:].split(".", 1)[0])
    except ValueError:
        return 0


def _parse_time(value: Any) -> float | None:
    """ISO 8601 (naive: UTC) or unix seconds to unix seconds; None, 0 or "never": never."""
    if value is None or value == 0 or value == "never":
        return None
    if isinstance(value, bool):
        raise ValueError("expected an ISO time or unix seconds")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        from datetime import UTC, datetime

        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return dt.timestamp()
    raise ValueError("expected an ISO time or unix seconds")


def _cursor(index: int) -> str:
    return base64.urlsafe_b64encode(str(index).encode()).decode().rstrip("=")


def _select_fields(obj: dict[str, Any], fields: str | None) -> dict[str, Any]:
    if not fields:
        return obj
    wanted = {f.strip() for f in fields.split(",") if f.strip()}
    wanted.add("id")
    return {k: v for k, v in obj.items() if k in wanted}


def _basic_auth(header: str | None) -> tuple[str, str] | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (ValueError, binascii.Error):
        return None
    user, sep, password = decoded.partition(":")
    if not sep or not user or not password:
        return None
    return user, password


def _after_limit(request: Request) -> tuple[int, int]:
    q = request.query_params
    try:
        after = int(q.get("after", "0"))
    except ValueError:
        after = 0
    try:
        limit = max(1, min(int(q.get("limit", "1000")), 100_000))
    except ValueError:
        limit = 1000
    return after, limit


def _slice_after(entries: deque[tuple[Any, ...]], after: int, limit: int) -> list[tuple[Any, ...]]:
    """Entries with seq > after (seqs are consecutive within the deque)."""
    if not entries:
        return []
    first = entries[0][0]
    start = max(0, after - first + 1)
    end = min(len(entries), start + limit)
    return [entries[i] for i in range(start, end)]


def create_app(settings: Settings | None = None, *, webhook_url: str | None = None) -> Starlette:
    """The sandbox ASGI app.

    ``webhook_url`` is where status webhooks go; None or "" sends none (the ``wanotify
    sandbox`` command passes :data:`DEFAULT_WEBHOOK_URL` unless told otherwise). The
    :class:`Sandbox` behind the app is ``app.state.sandbox``.
    """
    settings = settings if settings is not None else get_settings()
    sandbox = Sandbox(settings, webhook_url)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await sandbox.dispatcher.start()
        log.info(
            "sandbox: %d sender(s), %d template(s), %d failure rule(s), webhooks %s",
            len(sandbox.senders),
            len(sandbox.catalogue),
            len(sandbox.failures.rules),
            sandbox.dispatcher.url or "off",
        )
        try:
            yield
        finally:
            await sandbox.dispatcher.stop()

    app = Starlette(routes=sandbox.routes(), lifespan=lifespan)
    app.state.sandbox = sandbox
    return app
