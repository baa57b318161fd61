"""Access tokens: where they come from, how they rotate, what happens when Meta refuses one.

A sender's token comes from exactly one of ``access_token`` (inline, usually from the
environment), ``access_token_env`` (the name of an environment variable) or
``access_token_file`` (a secret file, e.g. ``/run/secrets/wa_token``). A file is re-read when
it changes (inode, mtime or size), checked at most once a second: the send path pays a clock
read and a dict lookup per message, never a ``stat``.

Tokens are never logged or stored: logs, Redis and ``wanotify senders …`` show only a
fingerprint (``sha256:`` and the first 12 hex digits of the token's SHA-256).

What happens when Meta refuses a token (pause, alert, resume on a new token) is in
``delivery.token_watch``; which answers mean "refused" is in ``providers.policy``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from dataclasses import dataclass, field

from wanotify.config import SenderConfig
from wanotify.core.errors import WanotifyError

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


def describe_error(code: int | None, subcode: int | None, http_status: int | None) -> str:
    if code == 190:
        what = SUBCODES.get(subcode or -1, "invalid")
        return f"access token {what} (190{'/' + str(subcode) if subcode else ''})"
    if code is None:
        return f"access token refused (HTTP {http_status})"
    return f"access token refused ({code})"
