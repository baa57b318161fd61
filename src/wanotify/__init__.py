"""wanotify: outbound WhatsApp Business notifications, paced, retried and tracked."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "notify", "notify_many"]


def notify(body: dict[str, Any] | Any, *, idempotency_key: str | None = None) -> Any:
    """Validate, store and enqueue one notification job; returns its ``Accepted`` result."""
    from wanotify.intake.service import notify as _notify

    return _notify(body, idempotency_key=idempotency_key)


def notify_many(bodies: list[Any]) -> list[Any]:
    """Enqueue many jobs in one transaction; one bad job never rejects the rest."""
    from wanotify.intake.service import notify_many as _notify_many

    return _notify_many(bodies)
