"""``wanotify senders check``: each sender's token and phone number, asked of the Graph API.

Per sender, two calls as Meta documents them (the sandbox serves the same endpoints):

* ``GET /{version}/{phone_number_id}?fields=display_phone_number,verified_name,quality_rating,
  code_verification_status,platform_type,throughput`` with the sender's token: the number
  exists, the token reaches it, and it is the number configured;
* ``GET /{version}/debug_token?input_token=…`` (the token debugs itself): valid, when it
  expires (``expires_at``, unix seconds, 0 = never), its scopes.

Problems (the exit code is 1): a refused, invalid or expired token, a number the token cannot
reach or that is not the configured ``display_phone_number``, no ``whatsapp_business_messaging``
scope (or one that does not cover the sender's WABA). Warnings: the token expires within
``warn_days``, a RED quality rating, an unverified number. The token itself is never printed:
only its fingerprint.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from wanotify.config import SenderConfig, Settings
from wanotify.providers import tokens
from wanotify.providers.policy import token_refused

PHONE_FIELDS = "display_phone_number,verified_name,quality_rating,code_verification_status,platform_type,throughput"
MESSAGING_SCOPE = "whatsapp_business_messaging"


@dataclass
class SenderCheck:
    sender: str
    phone_number_id: str
    token_source: str
    token_fingerprint: str | None = None
    token_valid: bool | None = None
    token_type: str | None = None
    expires_at: str | None = None  # ISO; None: never expires (or unknown when not valid)
    expires_in_days: float | None = None
    scopes: list[str] = field(default_factory=list)
    messaging_scope: bool | None = None
    display_phone_number: str | None = None  # as the Graph API reports it
    configured_display_phone_number: str | None = None
    number_matches: bool | None = None
    verified_name: str | None = None
    quality_rating: str | None = None
    code_verification_status: str | None = None
    platform_type: str | None = None
    throughput: str | None = None
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def _graph_error(resp: httpx.Response) -> tuple[int | None, int | None, str]:
    try:
        err = resp.json().get("error") or {}
    except (ValueError, AttributeError):
        err = {}
    if not isinstance(err, dict):
        err = {}
    code = err.get("code") if isinstance(err.get("code"), int) else None
    sub = err.get("error_subcode") if isinstance(err.get("error_subcode"), int) else None
    return code, sub, str(err.get("message") or f"HTTP {resp.status_code}")


def digits(number: str) -> str:
    return "".join(c for c in number if c.isdigit())


def _scrub(text: str, secret: str) -> str:
    return text.replace(secret, "***") if secret else text


def check_sender(
    client: httpx.Client, settings: Settings, sender: SenderConfig, warn_days: float, now: float | None = None
) -> SenderCheck:
    now = time.time() if now is None else now
    src = tokens.source(sender)
    out = SenderCheck(sender.name, sender.phone_number_id, src.describe,
                      configured_display_phone_number=sender.display_phone_number)
    try:
        tok = src.get(force=True)
    except tokens.TokenUnavailable as exc:
        out.token_valid = False
        out.problems.append(str(exc))
        return out
    out.token_fingerprint = tok.fingerprint
    headers = {"Authorization": f"Bearer {tok.value}"}
    base = settings.graph_base
    try:
        phone = client.get(f"{base}/{sender.phone_number_id}", params={"fields": PHONE_FIELDS}, headers=headers)
        if not _phone_number(out, sender, phone, tok.value):
            return out  # the token was refused: debug_token with it would say the same
        debug = client.get(f"{base}/debug_token", params={"input_token": tok.value}, headers=headers)
    except httpx.HTTPError as exc:
        out.problems.append(f"Graph API unreachable: {type(exc).__name__}: {_scrub(str(exc), tok.value)}")
        return out
    _token(out, sender, debug, tok.value, warn_days, now)
    return out


def _phone_number(out: SenderCheck, sender: SenderConfig, r: httpx.Response, secret: str) -> bool:
    """What ``GET /{phone_number_id}`` says; False when it refused the token."""
    if r.status_code != 200:
        code, sub, msg = _graph_error(r)
        if token_refused(code, r.status_code):
            out.token_valid = False
            out.problems.append(f"token refused: {tokens.describe_error(code, sub, r.status_code)}:"
                                f" {_scrub(msg, secret)}")
            return False
        out.problems.append(f"phone number id {sender.phone_number_id} not reachable with this token"
                            f" ({code}{'/' + str(sub) if sub else ''}): {_scrub(msg, secret)}")
        return True
    obj = r.json()
    out.display_phone_number = obj.get("display_phone_number")
    out.verified_name = obj.get("verified_name")
    out.quality_rating = obj.get("quality_rating")
    out.code_verification_status = obj.get("code_verification_status")
    out.platform_type = obj.get("platform_type")
    tp = obj.get("throughput")
    out.throughput = tp.get("level") if isinstance(tp, dict) else None
    if sender.display_phone_number and out.display_phone_number:
        out.number_matches = digits(sender.display_phone_number) == digits(out.display_phone_number)
        if not out.number_matches:
            out.problems.append(
                f"phone number id {sender.phone_number_id} is {out.display_phone_number},"
                f" not the configured {sender.display_phone_number}")
    if out.quality_rating == "RED":
        out.warnings.append("quality rating RED: Meta may lower this number's limits")
    if out.code_verification_status not in (None, "VERIFIED"):
        out.warnings.append(f"code verification status {out.code_verification_status}")
    return True


def _token(out: SenderCheck, sender: SenderConfig, r: httpx.Response, secret: str, warn_days: float,
           now: float) -> None:
    """What ``GET /debug_token`` says of the token: valid, its expiry, its permissions."""
    if r.status_code != 200:
        code, sub, msg = _graph_error(r)
        out.token_valid = False if token_refused(code, r.status_code) else out.token_valid
        out.problems.append(f"debug_token failed ({code}{'/' + str(sub) if sub else ''}): {_scrub(msg, secret)}")
        return
    data = r.json().get("data") or {}
    out.token_valid = bool(data.get("is_valid"))
    out.token_type = data.get("type")
    out.scopes = [str(s) for s in data.get("scopes") or []]
    exp = data.get("expires_at")
    if isinstance(exp, int) and exp > 0:
        out.expires_at = datetime.fromtimestamp(exp, UTC).isoformat()
        out.expires_in_days = round((exp - now) / 86400, 2)
    if not out.token_valid:
        err: dict[str, Any] = data["error"] if isinstance(data.get("error"), dict) else {}
        what = tokens.describe_error(190, err.get("subcode"), None) if err else "access token invalid"
        out.problems.append(f"token invalid: {what}: {_scrub(str(err.get('message') or ''), secret)}".rstrip(": "))
    elif out.expires_in_days is not None:
        if out.expires_in_days <= 0:
            out.problems.append(f"token expired at {out.expires_at}")
        elif out.expires_in_days <= warn_days:
            out.warnings.append(f"token expires in {out.expires_in_days:.1f} days ({out.expires_at})")
    out.messaging_scope = MESSAGING_SCOPE in out.scopes
    if out.token_valid and not out.messaging_scope:
        out.problems.append(f"token lacks the {MESSAGING_SCOPE} permission")
    elif out.token_valid:
        targets = next((g.get("target_ids") for g in data.get("granular_scopes") or []
                        if isinstance(g, dict) and g.get("scope") == MESSAGING_SCOPE), None)
        if targets and sender.waba_id not in targets and sender.phone_number_id not in targets:
            out.messaging_scope = False
            out.problems.append(f"token's {MESSAGING_SCOPE} permission does not cover WABA {sender.waba_id}")


def check_all(
    settings: Settings, names: list[str] | None = None, warn_days: float = 7.0,
    client: httpx.Client | None = None,
) -> list[SenderCheck]:
    # httpx logs request URLs at INFO, and debug_token carries the token in its query string.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    senders = [settings.sender_map[n] for n in names] if names else settings.sender_list
    own = client is None
    http = client or httpx.Client(timeout=settings.http_timeout_s)
    try:
        return [check_sender(http, settings, s, warn_days) for s in senders]
    finally:
        if own:
            http.close()
