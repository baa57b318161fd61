"""Read models: what ``GET /v1/notifications/{id}`` and ``wanotify status`` show."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import text

from wanotify.db import session_scope


def notification_view(job_id: uuid.UUID) -> dict[str, Any] | None:
    with session_scope() as s:
        n = s.execute(
            text(
                "SELECT id, status, kind, channel, sender, template, language, error_code,"
                " error_message, wamid, attempt_count, created_at, accepted_at, sent_at,"
                " delivered_at, read_at, finished_at, expires_at, metadata, idempotency_key"
                " FROM notifications WHERE id = :id"
            ),
            {"id": job_id},
        ).one_or_none()
        if n is None:
            return None
        attempts = s.execute(
            text(
                "SELECT channel, provider_message_id, http_status, error_code, error_message,"
                " outcome, duration_ms, at FROM attempts WHERE notification_id = :id ORDER BY id"
            ),
            {"id": job_id},
        ).all()
        events = s.execute(
            text(
                "SELECT status, at, error_code, error_title, source, pricing FROM status_events"
                " WHERE notification_id = :id OR (applied = false AND provider_message_id = :w AND :w IS NOT NULL)"
                " ORDER BY at, id"
            ),
            {"id": job_id, "w": n.wamid},
        ).all()
    timeline = [{"status": "queued", "at": n.created_at.isoformat(), "error_code": None, "source": "api"}]
    timeline += [
        {
            "status": e.status,
            "at": e.at.isoformat(),
            "error_code": e.error_code,
            "error_title": e.error_title,
            "source": e.source,
            **({"pricing": e.pricing} if e.pricing else {}),
        }
        for e in events
    ]
    return {
        "id": str(n.id),
        "status": n.status,
        "kind": n.kind,
        "channel": n.channel,
        "sender": n.sender,
        "template": n.template,
        "language": n.language,
        "error_code": n.error_code,
        "error_message": n.error_message,
        "provider_message_id": n.wamid,
        "idempotency_key": n.idempotency_key,
        "metadata": n.metadata,
        "created_at": n.created_at.isoformat(),
        "accepted_at": n.accepted_at.isoformat() if n.accepted_at else None,
        "delivered_at": n.delivered_at.isoformat() if n.delivered_at else None,
        "read_at": n.read_at.isoformat() if n.read_at else None,
        "expires_at": n.expires_at.isoformat() if n.expires_at else None,
        "attempts": [
            {
                "channel": a.channel,
                "provider_message_id": a.provider_message_id,
                "http_status": a.http_status,
                "error_code": a.error_code,
                "error_message": a.error_message,
                "outcome": a.outcome,
                "duration_ms": a.duration_ms,
                "at": a.at.isoformat(),
            }
            for a in attempts
        ],
        "events": timeline,
    }

