"""HTTP API keys: created, listed and revoked with ``wanotify keys``; checked on every request.

- Only a key's SHA-256 is stored (the key is 256 random bits, so a plain digest is enough:
  there is nothing to brute-force). ``wanotify keys create`` prints the key once.
- A key may be scoped to senders: it can send only from them, and sees only their
  notifications and campaigns (another sender's are answered 404, as if they did not exist).
  A job or campaign without ``sender`` sent with a scoped key uses the key's first sender.
- A key may have a request rate limit (GCRA in Redis, shared by every web process): one Redis
  call per request of a limited key, 429 with ``Retry-After`` past it.
- ``WANOTIFY_API_KEYS`` (stable) still works: those keys are unscoped and unlimited.

No Postgres query per request: each web process keeps the live keys in memory, keyed by
digest, and reloads them (one small query) when a request comes with a stored key and the copy
is older than ``REFRESH_S``, or with an unknown key and the copy is older than
``MISS_REFRESH_S``. So a revoked key is refused by every web process at most ``REFRESH_S``
(plus one reload query) after ``wanotify keys revoke`` returns, and a new key works at once.
While Postgres cannot be reached the last loaded keys stay in force. ``last_used_at`` is
written with those reloads (one UPDATE for all keys used since the last one), not per request.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import re
import secrets
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from wanotify.config import get_settings
from wanotify.db import session_scope
from wanotify.redis import async_client

log = logging.getLogger("wanotify.accounts.api_keys")

KEY_PREFIX = "wn_live_"
SHOWN_CHARS = len(KEY_PREFIX) + 4  # what `wanotify keys list` shows of a key
REFRESH_S = 1.0  # the revocation bound (see the module docstring)
MISS_REFRESH_S = 0.1  # an unknown key reloads at most this often (negative caching)
ENV_KEY_ID = "env"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@/-]{0,99}$")
_UNITS = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0,
          "h": 3600.0, "hour": 3600.0}
_RATE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:/\s*([a-z]+))?\s*$")


# --- pure parts -----------------------------------------------------------------------------


def generate() -> str:
    """A new key: a recognisable prefix and 256 random bits."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyInputError(ValueError):
    """Bad input to create/revoke, naming the field (CLI option) at fault."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.field, self.reason = field, reason


@dataclass(frozen=True)
class Rate:
    """Requests per second, with ``burst`` requests allowed at once."""

    per_s: float
    burst: int

    @classmethod
    def parse(cls, spec: str, burst: int | None = None) -> Rate:
        """``50/s``, ``50`` (per second), ``600/min``, ``1000/h``; burst defaults to one
        second's worth (at least 1)."""
        m = _RATE_RE.match(spec.lower())
        if m is None or (m.group(2) is not None and m.group(2) not in _UNITS):
            raise KeyInputError("--rate", f"{spec!r} is not a rate: write e.g. 50/s, 600/min or 1000/h")
        per_s = float(m.group(1)) / _UNITS[m.group(2) or "s"]
        if not 0 < per_s <= 1_000_000:
            raise KeyInputError("--rate", "must be more than 0 and at most 1000000/s")
        if burst is None:
            burst = max(1, math.ceil(per_s))
        if not 1 <= burst <= 1_000_000:
            raise KeyInputError("--burst", "must be between 1 and 1000000")
        return cls(per_s, burst)

    def __str__(self) -> str:
        for unit, seconds in (("s", 1.0), ("min", 60.0), ("h", 3600.0)):
            n = self.per_s * seconds
            if abs(n - round(n)) < 1e-9 and round(n) >= 1:
                return f"{round(n)}/{unit}"
        return f"{self.per_s:g}/s"


@dataclass(frozen=True)
class KeyRecord:
    """What a request's key allows."""

    id: str
    name: str
    digest: str
    senders: tuple[str, ...] | None = None  # None: every sender
    rate: Rate | None = None  # None: unlimited

    @property
    def scoped(self) -> bool:
        return self.senders is not None

    def allows(self, sender: str) -> bool:
        return self.senders is None or sender in self.senders

    @property
    def default_sender(self) -> str | None:
        """The sender a job or campaign without one gets (None: the configuration's first)."""
        return self.senders[0] if self.senders else None


class KeyRejected(Exception):
    """A request refused for its key: 401, 403 or 429 (fields name what is wrong)."""

    def __init__(self, status: int, code: str, message: str, fields: list[dict[str, str]],
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.fields, self.headers = status, code, message, fields, headers


def out_of_scope(record: KeyRecord, sender: Any) -> KeyRejected:
    return KeyRejected(403, "forbidden", f"this API key may not use sender {str(sender)[:64]!r}",
                       [{"field": "sender", "reason": "outside this API key's senders"}])


def scope_job(record: KeyRecord, data: Any) -> Any:
    """A job body as a scoped key may send it: without ``sender``, the key's first sender;
    with a sender outside the key's scope, KeyRejected (403 naming ``sender``). Bodies that
    are not objects are left for validation to refuse."""
    if not record.scoped or not isinstance(data, dict):
        return data
    sender = data.get("sender")
    if sender is None:
        return {**data, "sender": record.default_sender}
    if not isinstance(sender, str) or not record.allows(sender):
        raise out_of_scope(record, sender)
    return data


def _bearer(headers: Mapping[str, str]) -> str:
    scheme, _, key = headers.get("authorization", "").partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        raise KeyRejected(401, "unauthorized", "missing API key: send 'Authorization: Bearer <key>'",
                          [{"field": "Authorization", "reason": "missing bearer API key"}],
                          {"WWW-Authenticate": "Bearer"})
    return key


def _unknown() -> KeyRejected:
    return KeyRejected(401, "unauthorized", "unknown or revoked API key",
                       [{"field": "Authorization", "reason": "API key not accepted"}],
                       {"WWW-Authenticate": "Bearer"})


# --- storage (sync; the CLI and the web's reloads) ------------------------------------------


@dataclass
class Created:
    id: str
    name: str
    prefix: str
    key: str = field(repr=False)
    senders: list[str] | None
    rate: Rate | None


def create_key(name: str, senders: Iterable[str] = (), rate: Rate | None = None,
               known_senders: Iterable[str] | None = None) -> Created:
    """Store a new key (only its digest) and return it, the one time it is ever visible."""
    if not NAME_RE.match(name):
        raise KeyInputError("--name", "1 to 100 letters, digits or _.:@/- (starting with a letter or digit)")
    wanted = list(dict.fromkeys(senders)) or None
    if wanted is not None:
        if known_senders is None:
            known_senders = get_settings().sender_map
        known = list(known_senders)
        for name_ in wanted:
            if name_ not in known:
                raise KeyInputError("--sender", f"unknown sender {name_!r} (known: {', '.join(known)})")
    key = generate()
    kid = uuid.uuid4()
    with session_scope() as s:
        taken = s.execute(text("SELECT 1 FROM api_keys WHERE name = :n AND revoked_at IS NULL"),
                          {"n": name}).first()
        if taken:
            raise KeyInputError("--name", f"a live key named {name!r} exists (revoke it first)")
        s.execute(text(
            "INSERT INTO api_keys (id, name, prefix, hash, senders, rate_per_s, burst)"
            " VALUES (:id, :name, :prefix, :hash, :senders, :rate, :burst)"),
            {"id": kid, "name": name, "prefix": key[:SHOWN_CHARS], "hash": digest(key), "senders": wanted,
             "rate": rate.per_s if rate else None, "burst": rate.burst if rate else None})
    return Created(str(kid), name, key[:SHOWN_CHARS], key, wanted, rate)


def list_keys(include_revoked: bool = True) -> list[dict[str, Any]]:
    """Every key's record: never the key nor its digest."""
    with session_scope() as s:
        rows = s.execute(text(
            "SELECT id, name, prefix, senders, rate_per_s, burst, created_at, last_used_at, revoked_at"
            " FROM api_keys" + ("" if include_revoked else " WHERE revoked_at IS NULL")
            + " ORDER BY created_at, name")).all()
    return [{
        "id": str(r.id), "name": r.name, "prefix": r.prefix, "senders": r.senders,
        "rate": str(Rate(r.rate_per_s, r.burst or 1)) if r.rate_per_s else None,
        "burst": r.burst if r.rate_per_s else None,
        "created_at": r.created_at, "last_used_at": r.last_used_at, "revoked_at": r.revoked_at,
    } for r in rows]


def revoke_key(name_or_id: str) -> dict[str, Any]:
    """Revoke the live key with this name (or id). Web processes refuse it within REFRESH_S."""
    try:
        kid: uuid.UUID | None = uuid.UUID(name_or_id)
    except ValueError:
        kid = None
    with session_scope() as s:
        where = "id = :id" if kid is not None else "name = :name"
        rows = s.execute(text(f"SELECT id, name, revoked_at FROM api_keys WHERE {where} ORDER BY revoked_at NULLS FIRST"),
                         {"id": kid, "name": name_or_id}).all()
        if not rows:
            raise KeyInputError("NAME_OR_ID", f"no API key {name_or_id!r}")
        row = rows[0]
        if row.revoked_at is not None:
            return {"id": str(row.id), "name": row.name, "revoked_at": row.revoked_at, "already": True}
        at = s.execute(text("UPDATE api_keys SET revoked_at = now() WHERE id = :id RETURNING revoked_at"),
                       {"id": row.id}).scalar_one()
    return {"id": str(row.id), "name": row.name, "revoked_at": at, "already": False}


def load_live(touch: Iterable[str] = ()) -> list[KeyRecord]:
    """The live keys (one query), after recording ``last_used_at`` for the keys in ``touch``."""
    used = [uuid.UUID(k) for k in touch]
    with session_scope() as s:
        if used:
            s.execute(text("UPDATE api_keys SET last_used_at = now() WHERE id = ANY(:ids)"), {"ids": used})
        rows = s.execute(text(
            "SELECT id, name, hash, senders, rate_per_s, burst FROM api_keys WHERE revoked_at IS NULL")).all()
    return [KeyRecord(str(r.id), r.name, r.hash, tuple(r.senders) if r.senders is not None else None,
                      Rate(r.rate_per_s, r.burst or 1) if r.rate_per_s else None) for r in rows]


# --- rate limits ----------------------------------------------------------------------------

RATE_SCRIPT = resources.files("wanotify").joinpath("lua/api_key_rate.lua").read_text(encoding="utf-8")


@dataclass(frozen=True)
class Verdict:
    admitted: bool
    limit: int
    remaining: int
    reset_s: int
    retry_after_s: int

    def headers(self) -> dict[str, str]:
        h = {"RateLimit-Limit": str(self.limit), "RateLimit-Remaining": str(self.remaining),
             "RateLimit-Reset": str(self.reset_s)}
        if not self.admitted:
            h["Retry-After"] = str(self.retry_after_s)
        return h


def verdict(rate: Rate, reply: list[Any]) -> Verdict:
    """Read the Lua script's reply: {admitted, retry_after_us, remaining, reset_us}."""
    admitted, retry_us, remaining, reset_us = (int(x) for x in reply)
    return Verdict(bool(admitted), rate.burst, max(0, remaining),
                   max(0, math.ceil(reset_us / 1e6)), max(1, math.ceil(retry_us / 1e6)))


class RateLimiter:
    """One atomic Redis call per request of a rate-limited key. If Redis cannot be reached
    the request is let through (the limit protects the service; it is not an entitlement)."""

    def __init__(self, redis_url: str):
        self.redis_url = redis_url
        self._client: Any = None
        self._script: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._warned = 0.0

    def _redis(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:  # async clients belong to one loop

            self._client = async_client(self.redis_url, socket_timeout=2, socket_connect_timeout=2)
            self._script = self._client.register_script(RATE_SCRIPT)
            self._loop = loop
        return self._script

    async def hit(self, record: KeyRecord) -> Verdict | None:
        rate = record.rate
        if rate is None:
            return None
        script = self._redis()
        try:
            reply = await script(keys=[f"wn:apikey:{{{record.id}}}:tat"],
                                 args=[f"{1e6 / rate.per_s:.3f}", rate.burst])
        except Exception as exc:
            now = time.monotonic()
            if now - self._warned > 10:
                self._warned = now
                log.warning("API key rate limit unavailable (requests let through): %s", type(exc).__name__)
            return None
        return verdict(rate, reply)


# --- the web's authenticator ----------------------------------------------------------------


class Authenticator:
    """Who is calling: ``await authenticate(headers)`` → the key's record, or KeyRejected."""

    def __init__(self, env_keys: Iterable[str], redis_url: str,
                 loader: Callable[[Iterable[str]], list[KeyRecord]] = load_live,
                 clock: Callable[[], float] = time.monotonic):
        self._env = {
            d: KeyRecord(ENV_KEY_ID, "WANOTIFY_API_KEYS", d) for d in (digest(k) for k in env_keys if k)
        }
        self._keys: dict[str, KeyRecord] = {}
        self._loaded_at = -math.inf
        self._used: set[str] = set()
        self._warned = -math.inf
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None
        self._loader = loader
        self._clock = clock
        self.limiter = RateLimiter(redis_url)

    async def authenticate(self, headers: Mapping[str, str]) -> KeyRecord:
        d = digest(_bearer(headers))
        record = self._env.get(d)
        if record is None:
            record = await self._stored(d)
        if record is None or not hmac.compare_digest(record.digest, d):
            raise _unknown()
        if record.rate is not None:
            v = await self.limiter.hit(record)
            if v is not None and not v.admitted:
                raise KeyRejected(
                    429, "rate_limited",
                    f"API key {record.name!r} is over its limit of {record.rate} (burst {record.rate.burst});"
                    f" retry after {v.retry_after_s} s",
                    [{"field": "Authorization", "reason": f"rate limit {record.rate} exceeded"}],
                    v.headers())
        return record

    async def _stored(self, d: str) -> KeyRecord | None:
        record = self._keys.get(d)
        bound = REFRESH_S if record is not None else MISS_REFRESH_S
        if self._clock() - self._loaded_at > bound:
            await self._reload(bound)
            record = self._keys.get(d)
        if record is not None:
            self._used.add(record.id)
        return record

    async def _reload(self, bound: float) -> None:
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            self._lock, self._lock_loop = asyncio.Lock(), loop
        async with self._lock:
            started = self._clock()
            if started - self._loaded_at <= bound:
                return  # another request reloaded while this one waited
            used, self._used = self._used, set()

            try:
                records = await run_in_threadpool(self._loader, used)
            except Exception as exc:
                self._used |= used
                self._loaded_at = started  # try again after the bound, not on every request
                if started - self._warned > 10:
                    self._warned = started
                    log.warning("cannot reload API keys (the last loaded stay in force): %s", type(exc).__name__)
                return
            self._keys = {r.digest: r for r in records}
            self._loaded_at = started


def campaign_sender(cid: uuid.UUID) -> str | None:
    """A campaign's sender (None: no such campaign), for scope checks."""
    with session_scope() as s:
        return s.execute(text("SELECT sender FROM campaigns WHERE id = :id"), {"id": cid}).scalar_one_or_none()
