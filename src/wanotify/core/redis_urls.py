"""``sentinel://`` URLs (kombu's form), parsed with no I/O: the settings check them at start."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

SENTINEL_SCHEME = "sentinel"


class RedisUrlError(ValueError):
    """A ``WANOTIFY_REDIS_URL`` that cannot be used (the message names the part)."""


@dataclass(frozen=True)
class SentinelTarget:
    """The sentinels to ask, and what to open on the master they name."""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int = 0
    username: str | None = None
    password: str | None = None

    def master_kwargs(self) -> dict[str, Any]:
        out: dict[str, Any] = {"db": self.db}
        if self.username:
            out["username"] = self.username
        if self.password:
            out["password"] = self.password
        return out


def is_sentinel(url: str) -> bool:
    return url.strip().lower().startswith(f"{SENTINEL_SCHEME}://")


def parse_sentinel_url(url: str, master: str) -> SentinelTarget:
    """``sentinel://[user:pass@]host:port[/db][;sentinel://host:port…]`` → a target."""
    hosts: list[tuple[str, int]] = []
    db, username, password = 0, None, None
    for i, part in enumerate(p for p in url.strip().split(";") if p.strip()):
        try:
            u = urlsplit(part.strip())
            host = u.hostname
        except ValueError as exc:  # e.g. "Invalid IPv6 URL"
            raise RedisUrlError(f"part {i + 1}: {exc}") from None
        if u.scheme.lower() != SENTINEL_SCHEME:
            raise RedisUrlError(f"part {i + 1} ({u.scheme or 'no'} scheme): every part must be sentinel://host:port")
        try:
            port = u.port or 26379
        except ValueError:
            raise RedisUrlError(f"part {i + 1}: the port is not a number") from None
        if not host:
            raise RedisUrlError(f"part {i + 1}: no host")
        hosts.append((host, port))
        if u.password and password is None:
            password = unquote(u.password)
            username = unquote(u.username) if u.username else None
        path = u.path.strip("/")
        if path:
            if not path.isdigit():
                raise RedisUrlError(f"part {i + 1}: the database must be a number, not {path!r}")
            db = int(path)
    if not hosts:
        raise RedisUrlError("no sentinel given")
    if not master:
        raise RedisUrlError("WANOTIFY_REDIS_SENTINEL_MASTER is empty")
    return SentinelTarget(tuple(hosts), master, db, username, password)
