"""The data behind ``wanotify status``."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from wanotify.config import get_settings
from wanotify.db import session_scope
from wanotify.pacing.lanes import Lanes
from wanotify.redis import get_redis


def overview() -> dict[str, Any]:
    settings = get_settings()
    lanes = Lanes(get_redis())
    senders = {s.name: {**lanes.depths(s.name), "paused": lanes.paused(s.name)} for s in settings.sender_list}
    with session_scope() as s:
        rows = s.execute(
            text("SELECT kind, status, count(*) AS n FROM notifications GROUP BY 1, 2 ORDER BY 1, 2")
        ).all()
        last_webhook = s.execute(text("SELECT max(received_at) FROM webhook_inbox")).scalar()
        ages = s.execute(
            text(
                "SELECT"
                " (SELECT extract(epoch FROM now() - min(received_at)) FROM webhook_inbox"
                "   WHERE processed_at IS NULL) AS ingest,"
                " (SELECT extract(epoch FROM now() - min(accepted_at)) FROM notifications"
                "   WHERE status IN ('accepted', 'sent') AND accepted_at > now() - interval '1 day') AS delivery,"
                " (SELECT extract(epoch FROM now() - min(updated_at)) FROM notifications"
                "   WHERE fallback_state = 'running') AS fallback,"
                " (SELECT count(*) FROM dead_letters WHERE replayed_at IS NULL) AS dead"
            )
        ).one()
    waiting = max((max(d["wait_s"].values()) for d in senders.values()), default=0.0)
    stages = {
        "waiting in a pacing lane": waiting,
        "webhook bodies not ingested": float(ages.ingest or 0.0),
        "accepted, not yet delivered": float(ages.delivery or 0.0),
        "fallback in progress": float(ages.fallback or 0.0),
    }
    slowest = max(stages.items(), key=lambda kv: kv[1])
    return {
        "senders": senders,
        "counts": [{"kind": r.kind, "status": r.status, "count": r.n} for r in rows],
        "last_webhook_at": last_webhook,
        "dead_letters": int(ages.dead),
        "stages_oldest_s": stages,
        "slowest_stage": {"stage": slowest[0], "oldest_s": slowest[1]} if slowest[1] > 0 else None,
    }
