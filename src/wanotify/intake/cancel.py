"""Withdrawing a job a producer no longer wants sent (``POST /v1/notifications/{id}:cancel``).

A job can be cancelled while it is ``queued``: nothing has been handed to a provider. Its
entry may still be in a pacing lane; the claim takes only ``queued`` jobs, so the entry is
dropped there, never sent. A job the gate has claimed (``sending``) or that any provider
accepted is past cancelling. The claim and the cancel each change the row only from
``queued``, so of the two racing, exactly one wins.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from wanotify.db import connection_scope

CANCEL_SQL = """
WITH c AS (
  UPDATE notifications SET status = 'cancelled', finished_at = now(), updated_at = now(),
    error_message = 'cancelled by the producer', claim_token = NULL
  WHERE id = %(id)s AND status = 'queued' AND (%(allowed)s::text[] IS NULL OR sender = ANY(%(allowed)s))
  RETURNING id
), e AS (
  INSERT INTO status_events (notification_id, dedupe_key, status, source, at)
  SELECT id, 'cancelled:' || id::text, 'cancelled', 'api', now() FROM c
  ON CONFLICT DO NOTHING
)
SELECT EXISTS (SELECT 1 FROM c) AS done, n.status, n.sender FROM notifications n WHERE n.id = %(id)s
"""


@dataclass(frozen=True)
class CancelResult:
    found: bool  # False: no such job (or another sender's, for a scoped key)
    cancelled: bool
    status: str | None  # the job's status when it could not be cancelled


def cancel(job_id: uuid.UUID, allowed: tuple[str, ...] | None = None) -> CancelResult:
    """Cancel a queued job. ``allowed``: the senders a scoped key may touch (None: all)."""
    with connection_scope() as conn:
        row = conn.exec_driver_sql(
            CANCEL_SQL, {"id": job_id, "allowed": list(allowed) if allowed is not None else None}).one_or_none()
    if row is None or (allowed is not None and row.sender not in allowed):
        return CancelResult(False, False, None)
    if row.done:
        return CancelResult(True, True, "cancelled")
    return CancelResult(True, False, row.status)
