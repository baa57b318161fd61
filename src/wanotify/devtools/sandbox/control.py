"""The control and observation plane, ``/_sandbox/*`` (tests, the demo, benchmarks).

Its own errors are ``{"error": reason}`` with 400 (or 404), not Graph errors.
"""

from __future__ import annotations

import logging
from collections import deque
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from wanotify.core.phones import mask_phone
from wanotify.devtools.sandbox.failures import RuleError, parse_rules
from wanotify.devtools.sandbox.graph import ok
from wanotify.devtools.sandbox.messages import wa_id_of
from wanotify.devtools.sandbox.state import SandboxState
from wanotify.devtools.sandbox.tokens import TokenBook, parse_time

log = logging.getLogger("wanotify.devtools.sandbox")

_RATIOS = ("read_ratio", "duplicate_ratio", "reorder_ratio")
_SETTINGS = frozenset({"latency_ms", "webhook_delay_ms", *_RATIOS, "service_window", "webhook_url"})


def _bad(reason: str, status: int = 400) -> Response:
    return ok({"error": reason}, status)


async def _json_body(request: Request) -> Any:
    """The parsed body; raises orjson.JSONDecodeError."""
    return orjson.loads(await request.body())


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


def _by_code(counts: dict[int, int]) -> dict[str, int]:
    return {str(k): v for k, v in sorted(counts.items())}


class Control:
    """Handlers of ``/_sandbox/*``."""

    def __init__(self, state: SandboxState, tokens: TokenBook) -> None:
        self.state = state
        self.tokens = tokens

    # ---- observation ------------------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        st = self.state
        return ok({"status": "ok", "senders": len(st.senders), "templates": len(st.catalogue)})

    async def stats(self, request: Request) -> Response:
        st = self.state
        accepted = st.by_code.get(0, 0)
        total = sum(st.by_code.values())
        sms_total = sum(st.sms_by_code.values())
        sms_ok = sum(1 for e in st.sms_log if e["sid"] is not None)
        return ok(
            {
                "requests": total,
                "accepted": accepted,
                "rejected": total - accepted,
                "by_code": _by_code(st.by_code),
                "by_phone_number_id": {
                    pnid: {**s, "by_code": _by_code(s["by_code"])}
                    for pnid, s in st.per_sender.items()
                },
                "sms": {
                    "requests": sms_total,
                    "accepted": sms_ok,
                    "by_code": _by_code(st.sms_by_code),
                },
                "webhooks": {
                    "enabled": st.dispatcher.enabled,
                    "url": st.dispatcher.url,
                    "pending": st.dispatcher.pending,
                    **st.dispatcher.stats.as_dict(),
                },
                "last_seq": st.seq,
                "uptime_s": round(st.wall() - st.started, 3),
            }
        )

    async def message_log(self, request: Request) -> Response:
        """``GET /_sandbox/messages?after=SEQ&limit=N``: every /messages request, in order."""
        after, limit = _after_limit(request)
        items = _slice_after(self.state.log, after, limit)
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
                "peer": e[10],
            }
            for e in items
        ]
        return ok({"data": data, "last_seq": self.state.seq})

    async def sms_log(self, request: Request) -> Response:
        after, limit = _after_limit(request)
        items = [e for e in self.state.sms_log if e["seq"] > after][:limit]
        return ok({"data": items, "last_seq": self.state.sms_seq})

    # ---- failure rules and runtime configuration ---------------------------------------

    async def failures_get(self, request: Request) -> Response:
        return ok([r.as_dict() for r in self.state.failures.rules])

    async def failures_set(self, request: Request) -> Response:
        """Replace the rules (a JSON list)."""
        try:
            raw = await _json_body(request)
        except orjson.JSONDecodeError:
            return _bad("body must be a JSON list of failure rules")
        try:
            rules = parse_rules(raw)
        except RuleError as exc:
            return _bad(str(exc))
        self.state.failures.replace(rules)
        log.info("sandbox: %d failure rule(s) installed", len(rules))
        return ok([r.as_dict() for r in self.state.failures.rules])

    def _config_dict(self) -> dict[str, Any]:
        config = self.state.config
        return {
            "latency_ms": config.latency_ms,
            "webhook_delay_ms": config.webhook_delay_ms,
            "read_ratio": config.read_ratio,
            "duplicate_ratio": config.duplicate_ratio,
            "reorder_ratio": config.reorder_ratio,
            "service_window": config.service_window,
            "webhook_url": self.state.dispatcher.url,
            "signed": self.state.settings.app_secret is not None,
        }

    async def config_get(self, request: Request) -> Response:
        return ok(self._config_dict())

    async def config_set(self, request: Request) -> Response:
        try:
            raw = await _json_body(request)
        except orjson.JSONDecodeError:
            return _bad("body must be a JSON object")
        if not isinstance(raw, dict):
            return _bad("body must be a JSON object")
        new, problem = _config_changes(raw)
        if problem is not None:
            return _bad(problem)
        d = self.state.dispatcher
        if "webhook_url" in raw:
            url = raw["webhook_url"]
            if url is not None and not isinstance(url, str):
                return _bad("webhook_url must be a string or null")
            if url and not url.startswith(("http://", "https://")):
                return _bad("webhook_url must be an http(s) URL, or null/empty to disable webhooks")
            d.set_url(url or None)
        config = self.state.config
        for key, value in new.items():
            setattr(config, key, value)
        d.delay_ms = config.webhook_delay_ms
        d.read_ratio = config.read_ratio
        d.duplicate_ratio = config.duplicate_ratio
        d.reorder_ratio = config.reorder_ratio
        return ok(self._config_dict())

    # ---- actions ----------------------------------------------------------------------

    async def reset(self, request: Request) -> Response:
        self.state.reset()
        return ok({"reset": True, "last_seq": self.state.seq})

    async def inbound(self, request: Request) -> Response:
        """A user's message: Meta's inbound webhook; it opens the customer service window."""
        try:
            raw = await _json_body(request)
        except orjson.JSONDecodeError:
            return _bad("body must be a JSON object")
        if not isinstance(raw, dict):
            return _bad("body must be a JSON object")
        wa = wa_id_of(raw.get("from"))
        if wa is None:
            return _bad("from must be the user's phone number, e.g. +919876543210")
        st = self.state
        pnid = raw.get("phone_number_id") or st.default_sender.phone_number_id
        sender = st.senders.get(str(pnid))
        if sender is None:
            return _bad(f"unknown phone_number_id {pnid}", 404)
        text = raw.get("text")
        button = raw.get("button")
        context_id = raw.get("context_id")
        if text is None and button is None:
            return _bad("give text (a text message) or button (a quick-reply button press)")
        wamid = st.wamid(wa)
        message: dict[str, Any] = {"from": wa, "id": wamid, "timestamp": str(int(st.wall()))}
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
        st.open_window(sender.phone_number_id, wa, st.clock())
        name = str(raw.get("name") or "Sandbox User")
        st.dispatcher.schedule_inbound(sender.phone_number_id, wa, name, message)
        log.info("sandbox: inbound message from %s", mask_phone("+" + wa))
        return ok(
            {
                "id": wamid,
                "from": wa,
                "phone_number_id": sender.phone_number_id,
                "webhook": st.dispatcher.enabled,
            }
        )

    async def flush(self, request: Request) -> Response:
        """Post every scheduled webhook now and wait for it (``?timeout=`` seconds)."""
        try:
            timeout = float(request.query_params.get("timeout", "10"))
        except ValueError:
            timeout = 10.0
        result = await self.state.dispatcher.flush(max(0.1, min(timeout, 120.0)))
        return ok(result)

    # ---- tokens -----------------------------------------------------------------------

    async def tokens_get(self, request: Request) -> Response:
        return ok({"data": self.tokens.rows()})

    async def tokens_set(self, request: Request) -> Response:
        """``{"sender": NAME | "fingerprint": "sha256:…", "expires_at": ISO | unix | null}``
        (or ``"expires_in_s": N``): set when a token expires (null: never). ``sender`` names
        that sender's current token; a token written to its file later is a new token."""
        try:
            raw = await _json_body(request)
        except orjson.JSONDecodeError:
            return _bad("body must be a JSON object")
        if not isinstance(raw, dict) or set(raw) - {
            "sender",
            "fingerprint",
            "expires_at",
            "expires_in_s",
        }:
            return _bad("body must be {sender | fingerprint, expires_at | expires_in_s}")
        if "sender" in raw:
            found = self.tokens.fingerprint_of(raw["sender"])
            if found is None:
                return _bad(f"unknown sender {raw['sender']!r} (or its token cannot be read)")
            fp = found
        elif isinstance(raw.get("fingerprint"), str):
            fp = raw["fingerprint"]
        else:
            return _bad("sender or fingerprint is required")
        try:
            if "expires_in_s" in raw:
                at: float | None = self.state.wall() + float(raw["expires_in_s"])
            else:
                at = parse_time(raw.get("expires_at"))
        except (TypeError, ValueError) as exc:
            return _bad(f"expires_at: {exc}")
        self.tokens.set_expiry(fp, at)
        when = (
            "never" if at is None else datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds")
        )
        log.info("sandbox: token %s expires %s", fp, when)
        return ok({"data": self.tokens.rows()})


def _config_changes(raw: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """The settings a ``POST /_sandbox/config`` body changes, or what is wrong with it."""
    unknown = set(raw) - _SETTINGS
    if unknown:
        return {}, f"unknown setting(s): {', '.join(sorted(unknown))}"
    new: dict[str, Any] = {}
    for key in ("latency_ms", "webhook_delay_ms"):
        if key in raw:
            v = raw[key]
            if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
                return {}, f"{key} must be a non-negative number"
            new[key] = float(v)
    for key in _RATIOS:
        if key in raw:
            v = raw[key]
            if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v <= 1:
                return {}, f"{key} must be a number from 0 to 1"
            new[key] = float(v)
    if "service_window" in raw:
        if not isinstance(raw["service_window"], bool):
            return {}, "service_window must be true or false"
        new["service_window"] = raw["service_window"]
    return new, None
