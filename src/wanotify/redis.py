"""The process's Redis clients, direct or through Redis Sentinel, made from the settings.

``WANOTIFY_REDIS_URL`` is a ``redis://``/``rediss://``/``unix://`` URL, or
``sentinel://host:port[;sentinel://host:port…]`` (kombu's form: the password and database
may be given in the first part, ``sentinel://:secret@host:26379/0``) with the master's name
in ``WANOTIFY_REDIS_SENTINEL_MASTER``. Every Redis use follows the current master: the sync
client (:func:`get_redis`), the asyncio clients (:func:`async_client`: the send loop, the
API-key limiter) and Celery's broker (:func:`broker_options`, kombu's sentinel transport).
After a failover, a client's next command finds the new master through the sentinels;
redis-py's ``Script`` objects load a script again when the new master answers NOSCRIPT.

Redis Cluster is not supported: Celery's Redis broker keeps a queue's list, its unacked
index and its fanout keys under different keys with no hash tag, which a cluster would put
on different shards (celery/kombu document the broker as single-node or Sentinel).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import kombu.exceptions
import redis
import redis.asyncio as aredis
import redis.asyncio.sentinel as asentinel
import redis.sentinel

from wanotify.config import get_settings
from wanotify.core.redis_urls import SentinelTarget, is_sentinel, parse_sentinel_url

# What "Redis is away" looks like to callers, directly or through Celery's publisher (a
# Sentinel with no master to name is one too, during a failover).
REDIS_DOWN: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
    kombu.exceptions.OperationalError,
)

def _target(url: str) -> SentinelTarget | None:
    return parse_sentinel_url(url, get_settings().redis_sentinel_master) if is_sentinel(url) else None


def _sentinel_kwargs(kwargs: dict[str, Any]) -> dict[str, Any] | None:
    """The sentinels get the same timeouts as the master's connections, not its password."""
    return {k: v for k, v in kwargs.items() if k in ("socket_timeout", "socket_connect_timeout")} or None


def sync_client(url: str | None = None, **kwargs: Any) -> redis.Redis:
    """A new synchronous client on ``url`` (default: the configured Redis; the master, under
    Sentinel)."""
    url = url or get_settings().redis_url
    target = _target(url)
    if target is None:
        return redis.Redis.from_url(url, **kwargs)
    sentinel = redis.sentinel.Sentinel(list(target.sentinels), sentinel_kwargs=_sentinel_kwargs(kwargs))
    return sentinel.master_for(target.master, **target.master_kwargs(), **kwargs)


def async_client(url: str | None = None, **kwargs: Any) -> aredis.Redis:
    """A new asyncio client (bound to the running loop on first use), master-following."""
    url = url or get_settings().redis_url
    target = _target(url)
    if target is None:
        return aredis.Redis.from_url(url, **kwargs)
    sentinel = asentinel.Sentinel(list(target.sentinels), sentinel_kwargs=_sentinel_kwargs(kwargs))
    return sentinel.master_for(target.master, **target.master_kwargs(), **kwargs)


def broker_options() -> tuple[str, dict[str, Any]]:
    """Celery's broker URL and the transport options it needs (kombu's sentinel transport
    takes the same ``sentinel://…;sentinel://…`` URL and the master's name)."""
    s = get_settings()
    if not is_sentinel(s.redis_url):
        return s.redis_url, {}
    target = parse_sentinel_url(s.redis_url, s.redis_sentinel_master)
    # kombu opens the master with the URL's password and database; the sentinels without.
    return s.redis_url, {"master_name": target.master}


def describe(url: str) -> str:
    """The URL without its password, for logs and errors."""
    parts = []
    for part in url.split(";"):
        u = urlsplit(part.strip())
        host = u.hostname or ""
        port = f":{u.port}" if u.port else ""
        parts.append(f"{u.scheme}://{host}{port}{u.path}")
    return ";".join(parts)


_client: redis.Redis | None = None


def get_redis() -> redis.Redis:
    global _client
    if _client is None:
        _client = sync_client(socket_timeout=5, health_check_interval=30)
    return _client


def reset_clients() -> None:
    """Forget the client (tests and the CLI change the settings)."""
    global _client
    _client = None
