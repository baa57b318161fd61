"""The data behind ``wanotify status``."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from wanotify.config import get_settings
from wanotify.db import session_scope
from wanotify.intake import get_redis
from wanotify.throttle import Lanes


def overview() -> dict[str, Any]:
    settings = get_settings()
    lanes = Lanes(get_redis())
    senders = {s.name: {**lanes.depths(s.name), "paused": lanes.paused(s.name)} for s in settings.sender_list}
    with session_scope() as s:
        rows = s.execute(
            text("SELECT kind, status, count(*) AS n FROM notifications GROUP BY 1, 2 ORDER BY 1, 2")
        ).all()
        last_webhook = s.execute(text("SELECT max(received_at) FROM webhook_inbox")).scalar()
    return {
        "senders": senders,
        "counts": [{"kind": r.kind, "status": r.status, "count": r.n} for r in rows],
        "last_webhook_at": last_webhook,
    }
