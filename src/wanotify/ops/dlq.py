"""Dead letters: jobs that exhausted every channel. List, show, and replay (once)."""

from __future__ import annotations

import uuid
from typing import Any

from wanotify.core.phones import digits, mask_phone
from wanotify.db import connection_scope
from wanotify.pacing.lanes import entry, push_entries


class ReplayRefused(Exception):
    """The dead letter does not exist or was already replayed."""


def list_dead(limit: int = 100, include_replayed: bool = False) -> list[dict[str, Any]]:
    with connection_scope() as conn:
        rows = conn.exec_driver_sql(
            "SELECT d.notification_id, d.reason, d.created_at, d.replayed_at, n.kind, n.template,"
            " n.to_number, n.status FROM dead_letters d JOIN notifications n ON n.id = d.notification_id"
            " WHERE %(all)s OR d.replayed_at IS NULL ORDER BY d.id DESC LIMIT %(n)s",
            {"all": include_replayed, "n": limit},
        ).mappings().all()
    return [
        {
            "id": str(r["notification_id"]),
            "reason": r["reason"],
            "created_at": r["created_at"].isoformat(),
            "replayed_at": r["replayed_at"].isoformat() if r["replayed_at"] else None,
            "kind": r["kind"],
            "template": r["template"],
            "to": mask_phone(r["to_number"]),
            "status": r["status"],
        }
        for r in rows
    ]


def show(job_id: uuid.UUID) -> dict[str, Any] | None:
    with connection_scope() as conn:
        r = conn.exec_driver_sql(
            "SELECT notification_id, reason, history, created_at, replayed_at FROM dead_letters"
            " WHERE notification_id = %(id)s",
            {"id": job_id},
        ).mappings().one_or_none()
    if r is None:
        return None
    return {
        "id": str(r["notification_id"]),
        "reason": r["reason"],
        "created_at": r["created_at"].isoformat(),
        "replayed_at": r["replayed_at"].isoformat() if r["replayed_at"] else None,
        "history": r["history"],
    }


def replay(job_id: uuid.UUID) -> dict[str, str]:
    """Put a dead-lettered job back in its lane, once; its history stays."""
    with connection_scope() as conn:
        marked = conn.exec_driver_sql(
            "UPDATE dead_letters SET replayed_at = now() WHERE notification_id = %(id)s"
            " AND replayed_at IS NULL AND NOT EXISTS (SELECT 1 FROM notifications n"
            "   WHERE n.id = notification_id AND n.redacted_at IS NOT NULL) RETURNING notification_id",
            {"id": job_id},
        ).one_or_none()
        if marked is None:
            exists = conn.exec_driver_sql(
                "SELECT d.replayed_at, n.redacted_at FROM dead_letters d LEFT JOIN notifications n"
                " ON n.id = d.notification_id WHERE d.notification_id = %(id)s", {"id": job_id}
            ).one_or_none()
            raise ReplayRefused(
                f"no dead letter {job_id}" if exists is None
                else f"dead letter {job_id} was already replayed" if exists.replayed_at is not None
                else f"dead letter {job_id}: its content was removed (OTP code wiped, retention or erasure)"
            )
        row = conn.exec_driver_sql(
            "UPDATE notifications SET status = 'queued', fallback_state = NULL, attempt_count = 0,"
            " claim_token = NULL, error_code = NULL, error_message = NULL, finished_at = NULL,"
            " wamid = NULL, updated_at = now() WHERE id = %(id)s RETURNING sender, kind, to_number",
            {"id": job_id},
        ).one()

    push_entries({(row.sender, row.kind): [entry(row.kind, str(job_id), digits(row.to_number))]})
    return {"id": str(job_id), "status": "queued"}
