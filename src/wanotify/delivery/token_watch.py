"""Refused access tokens: pause the sender, alert, and resume it when a new token appears.

When Meta refuses a token (``providers.policy.token_refused``: 190, 102, an
``AuthException`` or any HTTP 401) the dispatcher pauses the sender with ``kind: "token"``
and the refused token's fingerprint in the pause reason (Redis, shared by every worker). A
watcher thread in every worker compares that fingerprint with the sender's current token
once a second: when a different token appears (the secret file was rewritten, or a worker
started with a new one), it resumes the sender and kicks its dispatcher. Jobs wait
meanwhile; none is failed.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from wanotify.config import SenderConfig, Settings, get_settings
from wanotify.metrics import SENDER_PAUSES, TOKEN_ROTATIONS
from wanotify.pacing.lanes import Lanes, paused_key
from wanotify.providers.tokens import (
    CHECK_INTERVAL_S,
    FileSource,
    TokenUnavailable,
    current_fingerprint,
    describe_error,
    source,
)
from wanotify.providers.whatsapp import SendResult
from wanotify.queues import enqueue
from wanotify.redis import get_redis

log = logging.getLogger("wanotify.delivery.token_watch")


def pause_reason(result: SendResult, sender: SenderConfig) -> dict[str, Any]:
    """The Redis pause reason for a refused token (never the token itself)."""
    return {
        "kind": "token",
        "error_code": result.error_code,
        "error_subcode": result.error_subcode,
        "http_status": result.http_status,
        "error": describe_error(result.error_code, result.error_subcode, result.http_status),
        "message": (result.error_message or "")[:300],
        "token_fingerprint": result.token_fp,
        "token_source": source(sender).describe,
        "at": time.time(),
    }


def unavailable_reason(sender: SenderConfig, exc: TokenUnavailable) -> dict[str, Any]:
    return {
        "kind": "token",
        "error_code": None,
        "error": "access token unavailable",
        "message": str(exc),
        "token_fingerprint": None,
        "token_source": source(sender).describe,
        "at": time.time(),
    }


def pause_text(p: dict[str, Any] | None) -> str:
    """One line for ``wanotify senders list`` and ``wanotify status``."""
    if not p:
        return "no"
    if p.get("kind") == "token":
        fp = p.get("token_fingerprint") or "none"
        return (f"yes: {p.get('error')} (token {fp}, {p.get('token_source', '?')});"
                " resumes when a new token appears")
    return f"yes: {p.get('error_code')} {p.get('error')}"


def alert(sender: SenderConfig, reason: dict[str, Any]) -> None:
    """The ERROR log line operators page on (``"alert": true``)."""
    src = source(sender)
    how = (f"write a new token to {sender.access_token_file} (picked up within seconds, no restart)"
           if isinstance(src, FileSource) else "restart the workers with a new token")
    log.error(
        "sender %s paused: %s, token %s; its jobs wait. To resume: %s, or run"
        " `wanotify senders resume %s`",
        sender.name, reason.get("error"), reason.get("token_fingerprint") or "none", how, sender.name,
        extra={"sender": sender.name, "error_code": reason.get("error_code"),
               "error_subcode": reason.get("error_subcode"),
               "token_fingerprint": reason.get("token_fingerprint"), "alert": True},
    )
    SENDER_PAUSES.labels(sender.name, "token").inc()


_RESUME_IF_SAME = (
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
)


def resume_rotated(settings: Settings, lanes: Lanes) -> list[str]:
    """Resume every sender paused for a token whose current token is a different one."""
    resumed: list[str] = []
    for sender in settings.sender_list:
        raw = lanes.r.get(paused_key(sender.name))
        if not raw:
            continue
        try:
            reason = json.loads(raw)
        except ValueError:
            continue
        if not isinstance(reason, dict) or reason.get("kind") != "token":
            continue
        now_fp = current_fingerprint(sender)
        if now_fp is None or now_fp == reason.get("token_fingerprint"):
            continue
        # Only the pause we read: a newer one (the new token refused too) stays.
        if not lanes.r.eval(_RESUME_IF_SAME, 1, paused_key(sender.name), raw):
            continue
        log.warning("sender %s resumed: new access token %s (the refused one was %s)",
                    sender.name, now_fp, reason.get("token_fingerprint") or "none",
                    extra={"sender": sender.name, "token_fingerprint": now_fp})
        TOKEN_ROTATIONS.labels(sender.name).inc()
        enqueue.dispatch(sender.name, "otp")  # the dispatcher drains every lane, OTP first
        resumed.append(sender.name)
    return resumed


class TokenWatcher(threading.Thread):
    """Runs :func:`resume_rotated` every second in a worker process."""

    def __init__(self, interval_s: float = CHECK_INTERVAL_S) -> None:
        super().__init__(name="wanotify-tokens", daemon=True)
        self.interval_s = interval_s
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.wait(self.interval_s):
            try:
                resume_rotated(get_settings(), Lanes(get_redis()))
            except Exception:
                log.exception("token watcher failed; will try again")

    def stop(self) -> None:
        self.stop_event.set()
