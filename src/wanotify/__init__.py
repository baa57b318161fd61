"""wanotify: outbound WhatsApp Business notifications, paced, retried and tracked.

``notify`` and ``notify_many`` are the in-process way in. They import the intake when first
called: importing ``wanotify`` (or any of its modules, e.g. the CLI or the embedded servers)
must not load the database, Redis and Celery layers.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "notify", "notify_many"]


def notify(body: dict[str, Any] | Any, *, idempotency_key: str | None = None) -> Any:
    """Validate, store and enqueue one notification job; returns its ``Accepted`` result."""
    from wanotify.intake.service import notify as _notify  # noqa: PLC0415  (lazy: see the module docstring)

    return _notify(body, idempotency_key=idempotency_key)


def notify_many(bodies: list[Any]) -> list[Any]:
    """Enqueue many jobs in one transaction; one bad job never rejects the rest."""
    from wanotify.intake.service import notify_many as _notify_many  # noqa: PLC0415  (lazy: see above)

    return _notify_many(bodies)
