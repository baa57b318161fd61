"""Access tokens as Meta checks them: which objects a token may use, rotation and expiry,
and ``GET /{version}/debug_token``.

Each sender's current token is read from its configuration (a secret file is re-read when
it changes, as the worker does); every token seen before stays valid until it expires, as
on Meta. ``WANOTIFY_SANDBOX_TOKEN_EXPIRY`` (sender names or fingerprints to times) and
``POST /_sandbox/tokens`` set expiry times; an expired token gets Meta's 190/463.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from wanotify.config import load_ref
from wanotify.devtools.sandbox import errors as E
from wanotify.devtools.sandbox.graph import (
    VERSION,
    Reject,
    fallback,
    json_response,
    ok,
    unsupported,
)
from wanotify.devtools.sandbox.state import SandboxSender, SandboxState
from wanotify.providers import tokens as provider_tokens

TokenSource = provider_tokens.StaticSource | provider_tokens.FileSource


def bearer_token(request: Request) -> str | None:
    """The request's token: ``Authorization: Bearer|OAuth …``, else ``?access_token=``."""
    auth = request.headers.get("authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() in ("bearer", "oauth") and token.strip():
            return token.strip()
        return None
    return request.query_params.get("access_token") or None


def parse_time(value: Any) -> float | None:
    """ISO 8601 (naive: UTC) or unix seconds to unix seconds; None, 0 or "never": never."""
    if value is None or value == 0 or value == "never":
        return None
    if isinstance(value, bool):
        raise ValueError("expected an ISO time or unix seconds")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return dt.timestamp()
    raise ValueError("expected an ISO time or unix seconds")


class TokenBook:
    """The tokens the sandbox accepts, the ids each may use, and when each expires."""

    def __init__(self, state: SandboxState) -> None:
        self.state = state
        self._ids: dict[str, set[str]] = {}  # token -> ids it may use
        self._sources: list[tuple[SandboxSender, TokenSource]] = []
        self._expires: dict[str, float] = {}  # token -> unix time it expires
        self._expiry_by_fp: dict[str, float] = {}
        self._fps: dict[str, str] = {}  # token -> fingerprint
        self._checked = 0.0
        for s in state.sender_list:
            self._sources.append((s, provider_tokens.source(s.config)))
            self._ids.setdefault(s.token, set()).update((s.phone_number_id, s.waba_id))
        self._load_expiry(state.settings.sandbox_token_expiry)

    # ---- rotation and expiry ----------------------------------------------------------

    def _learn(self, s: SandboxSender, token: str) -> None:
        if token in self._fps:
            return
        fp = provider_tokens.fingerprint(token)
        self._fps[token] = fp
        self._ids.setdefault(token, set()).update((s.phone_number_id, s.waba_id))
        if fp in self._expiry_by_fp:
            self._expires[token] = self._expiry_by_fp[fp]

    def _refresh(self, force: bool = False) -> None:
        """Learn senders' new tokens (their secret files), at most once a second unless forced."""
        now = time.monotonic()
        if not force and now - self._checked < 1.0:
            return
        self._checked = now
        for s, src in self._sources:
            try:
                self._learn(s, src.get(force).value)
            except provider_tokens.TokenUnavailable:
                continue

    def _current(self, s: SandboxSender) -> str | None:
        src = next(src for x, src in self._sources if x is s)
        try:
            return src.get(force=True).value
        except provider_tokens.TokenUnavailable:
            return None

    def _load_expiry(self, raw: str | None) -> None:
        if not raw:
            return
        data = load_ref(raw)
        if not isinstance(data, dict):
            raise ValueError(
                "WANOTIFY_SANDBOX_TOKEN_EXPIRY must map sender names or token fingerprints to times"
            )
        by_name = {s.config.name: s for s in self.state.senders.values()}
        for key, when in data.items():
            at = parse_time(when)
            if key in by_name:
                self.set_expiry(provider_tokens.fingerprint(by_name[key].token), at)
            elif str(key).startswith("sha256:"):
                self.set_expiry(str(key), at)
            else:
                raise ValueError(
                    f"WANOTIFY_SANDBOX_TOKEN_EXPIRY: {key!r} is neither a sender nor a fingerprint"
                )

    def set_expiry(self, fp: str, at: float | None) -> None:
        """Make the token with this fingerprint expire at ``at`` (unix time; None: never)."""
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

    def fingerprint_of(self, sender_name: Any) -> str | None:
        """The fingerprint of that sender's current token (None: no such sender, or unreadable)."""
        s = next((x for x, _ in self._sources if x.config.name == sender_name), None)
        cur = self._current(s) if s is not None else None
        if s is None or cur is None:
            return None
        self._learn(s, cur)
        return self._fps[cur]

    def rows(self) -> list[dict[str, Any]]:
        """Each sender's current token: fingerprint and expiry (``/_sandbox/tokens``)."""
        now = self.state.wall()
        rows = []
        for s, _src in self._sources:
            cur = self._current(s)
            if cur is not None:
                self._learn(s, cur)
            exp = self._expires.get(cur) if cur is not None else None
            rows.append(
                {
                    "sender": s.config.name,
                    "phone_number_id": s.phone_number_id,
                    "fingerprint": self._fps.get(cur) if cur is not None else None,
                    "expires_at": int(exp) if exp is not None else 0,
                    "expired": exp is not None and exp <= now,
                }
            )
        return rows

    # ---- checks -----------------------------------------------------------------------

    def check(self, token: str | None) -> Reject | None:
        """None when the token may be used; else Meta's 190 (missing, unknown or expired)."""
        if token is None:
            status, body = E.invalid_token(missing=True)
            return Reject(status, body, 190)
        self._refresh()
        if token not in self._ids:
            self._refresh(force=True)  # a secret file rewritten this very second
        if token not in self._ids:
            status, body = E.invalid_token(missing=False)
            return Reject(status, body, 190)
        exp = self._expires.get(token)
        if exp is not None and exp <= self.state.wall():
            status, body = E.token_expired(exp, self.state.wall())
            return Reject(status, body, 190)
        return None

    def auth(self, request: Request, method: str, object_id: str) -> Reject | None:
        """None when the request's token may use ``object_id``; else Meta's 190 or 100."""
        token = bearer_token(request)
        denied = self.check(token)
        if denied is not None:
            return denied
        allowed = self._ids[token] if token is not None else set()
        if object_id not in allowed:
            return unsupported(method, object_id)
        return None

    # ---- GET /{version}/debug_token --------------------------------------------------

    async def debug_token(self, request: Request) -> Response:
        if not VERSION.match(request.path_params["version"]):
            return await fallback(request)
        denied = self.check(bearer_token(request))
        if denied is not None:
            return json_response(denied.status, denied.body)
        input_token = request.query_params.get("input_token")
        if not input_token:
            return json_response(
                *E.graph_error(100, message="(#100) The parameter input_token is required")
            )
        ids = self._ids.get(input_token)
        if ids is None:
            return ok(
                {
                    "data": {
                        "error": {"code": 190, "message": "Invalid OAuth access token."},
                        "is_valid": False,
                        "scopes": [],
                    }
                }
            )
        wabas = sorted(i for i in ids if i in self.state.wabas)
        exp = self._expires.get(input_token)
        data: dict[str, Any] = {
            "app_id": "100000000000001",
            "type": "SYSTEM_USER",
            "application": "wanotify sandbox",
            "data_access_expires_at": 0,
            "expires_at": int(exp) if exp is not None else 0,
            "is_valid": True,
            "issued_at": int(self.state.started),
            "scopes": ["whatsapp_business_management", "whatsapp_business_messaging"],
            "granular_scopes": [
                {"scope": "whatsapp_business_management", "target_ids": wabas},
                {"scope": "whatsapp_business_messaging", "target_ids": wabas},
            ],
            "user_id": "100000000000002",
        }
        if exp is not None and exp <= self.state.wall():
            data["is_valid"] = False
            data["error"] = {
                "code": 190,
                "message": E.expired_message(exp, self.state.wall()),
                "subcode": 463,
            }
        return ok({"data": data})
