"""The process's Redis clients: one synchronous client, made on first use from the settings.

Every Redis use outside the send loop goes through :func:`get_redis` (the send loop, on its
own event loop, has an asyncio client of its own in ``delivery.runtime``).
"""

from __future__ import annotations

import kombu.exceptions
import redis

from wanotify.config import get_settings

# What "Redis is away" looks like to callers, directly or through Celery's publisher.
REDIS_DOWN: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
    kombu.exceptions.OperationalError,
)

_client: redis.Redis | None = None


def get_redis() -> redis.Redis:
    global _client
    if _client is None:
        _client = redis.Redis.from_url(get_settings().redis_url, socket_timeout=5,
                                       health_check_interval=30)
    return _client


def reset_clients() -> None:
    """Forget the client (tests and the CLI change the settings)."""
    global _client
    _client = None
