"""Access tokens: where they come from, how they rotate, what happens when Meta refuses one.

A sender's token comes from exactly one of ``access_token`` (inline, usually from the
environment), ``access_token_env`` (the name of an environment variable) or
``access_token_file`` (a secret file, e.g. ``/run/secrets/wa_token``). A file is re-read when
it changes (inode, mtime or size), checked at most once a second: the send path pays a clock
read and a dict lookup per message, never a ``stat``.

Tokens are never logged or stored: logs, Redis and ``wanotify senders …`` show only a
fingerprint (``sha256:`` and the first 12 hex digits of the token's SHA-256).

When Meta refuses a token (190, 102, an ``AuthException`` or any HTTP 401) the dispatcher
pauses the sender with ``kind: "token"`` and the refused token's fingerprint in the pause
reason (Redis, shared by every worker). A watcher thread in every worker compares that
fingerprint with the sender's current token once a second: when a different token appears
(the secret file was rewritten, or a worker started with a new one), it resumes the sender
and kicks its dispatcher. Jobs wait meanwhile; none is failed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from wanotify.core.errors import WanotifyError
from wanotify.ops.metrics import SENDER_PAUSES, TOKEN_ROTATIONS

if TYPE_CHECKING:
    from wanotify.config import SenderConfig, Settings
    from wanotify.delivery.lanes import Lanes
    from wanotify.providers.whatsapp import SendResult

log = logging.getLogger("wanotify.providers.tokens")

CHECK_INTERVAL_S = 1.0

# Meta's OAuthException subcodes (error.error_subcode) that come with code 190.
SUBCODES: dict[int, str] = {
    458: "app not installed",
    459: "user checkpointed",
    460: "session invalidated (password changed)",
    463: "expired",
    464: "user not confirmed",
    467: "invalid (logged out or revoked)",
    492: "invalid session",
}
# Codes that mean "this token cannot be used": a new token resumes the sender.
TOKEN_CODES = frozenset({0, 102, 190})


class TokenUnavailable(WanotifyError):
    """No token could be read for a sender (its secret file is missing, unreadable or empty)."""


def fingerprint(value: str) -> str:
    """A short, non-reversible name for a token, safe to log and store."""
    return "sha256:" + hashlib.sha256(value.encode("utf-8")).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class Token:
    value: str = field(repr=False)
    fingerprint: str

    def __str__(self) -> str:  # never the value, whatever formats it
        return self.fingerprint


class StaticSource:
    """An inline token (``access_token`` or ``access_token_env``): fixed for the process."""

    def __init__(self, value: str, describe: str = "inline") -> None:
        self.token = Token(value, fingerprint(value))
        self.describe = describe

    def get(self, force: bool = False) -> Token:
        return self.token


class FileSource:
    """A secret file, re-read when its inode, mtime or size changes (checked at most every
    second; ``force`` checks now). The last good token is kept while the file is missing,
    empty (being rewritten) or unreadable."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(os.path.expanduser(path))
        self.describe = f"file {path}"
        self._token: Token | None = None
        self._sig: tuple[int, int, int, int] | None = None
        self._checked = float("-inf")
        self.error: str | None = None

    def get(self, force: bool = False) -> Token:
        now = time.monotonic()
        if force or now - self._checked >= CHECK_INTERVAL_S:
            self._refresh(now)
        tok = self._token
        if tok is None:
            raise TokenUnavailable(f"access token file {self.path}: {self.error or 'not read'}")
        return tok

    def _refresh(self, now: float) -> None:
        self._checked = now
        try:
            st = os.stat(self.path)  # follows symlinks: Kubernetes swaps ..data atomically
            sig = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
            if sig == self._sig and self._token is not None:
                return
            with open(self.path, encoding="utf-8") as f:
                value = f.read().strip()
            if not value:
                raise ValueError("the file is empty")
            if any(c.isspace() for c in value):
                raise ValueError("the file holds more than one word")
        except (OSError, ValueError) as exc:
            error = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            if error != self.error:
                log.warning("cannot read access token file %s: %s%s", self.path, error,
                            "; keeping the last token read" if self._token else "")
            self.error = error
            return
        self.error = None
        self._sig = sig
        if self._token is None or value != self._token.value:
            old = self._token
            self._token = Token(value, fingerprint(value))
            if old is not None:
                log.warning("access token file %s changed: now token %s (was %s)", self.path,
                            self._token.fingerprint, old.fingerprint,
                            extra={"token_fingerprint": self._token.fingerprint})


_sources: dict[tuple[str, str], StaticSource | FileSource] = {}
_lock = threading.Lock()


def source(sender: SenderConfig) -> StaticSource | FileSource:
    """The token source of a sender (shared by every sender naming the same file)."""
    if sender.access_token_file is not None:
        key = ("file", sender.access_token_file)  # as written: no getcwd() per send
    else:
        assert sender.access_token is not None  # the config validator guarantees one source
        key = ("value", sender.access_token.get_secret_value())
    src = _sources.get(key)
    if src is None:
        with _lock:
            src = _sources.get(key)
            if src is None:
                if key[0] == "file":
                    src = FileSource(key[1])
                else:
                    env = sender.access_token_env
                    src = StaticSource(key[1], f"env {env}" if env else "inline")
                _sources[key] = src
    return src


def current(sender: SenderConfig, force: bool = False) -> Token:
    """The sender's token right now (raises :class:`TokenUnavailable`)."""
    return source(sender).get(force)


def current_fingerprint(sender: SenderConfig) -> str | None:
    try:
        return current(sender).fingerprint
    except TokenUnavailable:
        return None


# ---- refused tokens: pause, alert, resume ------------------------------------------------


def is_token_error(code: int | None, http_status: int | None) -> bool:
    return code in TOKEN_CODES or http_status == 401


def describe_error(code: int | None, subcode: int | None, http_status: int | None) -> str:
    if code == 190:
        what = SUBCODES.get(subcode or -1, "invalid")
        return f"access token {what} (190{'/' + str(subcode) if subcode else ''})"
    if code is None:
        return f"access token refused (HTTP {http_status})"
    return f"access token refused ({code})"


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
    from wanotify.delivery.lanes import paused_key

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
        from wanotify.intake.service import kick

        log.warning("sender %s resumed: new access token %s (the refused one was %s)",
                    sender.name, now_fp, reason.get("token_fingerprint") or "none",
                    extra={"sender": sender.name, "token_fingerprint": now_fp})
        TOKEN_ROTATIONS.labels(sender.name).inc()
        kick(sender.name, "otp")  # the dispatcher drains every lane, OTP first
        resumed.append(sender.name)
    return resumed


class TokenWatcher(threading.Thread):
    """Runs :func:`resume_rotated` every second in a worker process."""

    def __init__(self, interval_s: float = CHECK_INTERVAL_S) -> None:
        super().__init__(name="wanotify-tokens", daemon=True)
        self.interval_s = interval_s
        self.stop_event = threading.Event()

    def run(self) -> None:
        from wanotify.config import get_settings
        from wanotify.delivery.lanes import Lanes
        from wanotify.intake.service import get_redis

        while not self.stop_event.wait(self.interval_s):
            try:
                resume_rotated(get_settings(), Lanes(get_redis()))
            except Exception:
                log.exception("token watcher failed; will try again")

    def stop(self) -> None:
        self.stop_event.set()
