"""Plain functions of the send path: claim jobs, decide what an outcome means, record it.

The dispatcher (``dispatch.py``) calls these; tests call them directly.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import insert, text

from wanotify.db import session_scope
from wanotify.db.models import Attempt
from wanotify.providers.whatsapp import SendResult
from wanotify.retry import SCHEDULES, pair_backoff_s
from wanotify.status import SQL_RANK

Action = Literal["done", "retry", "throttle", "fail", "fallback"]


@dataclass
class ClaimedJob:
    id: uuid.UUID
    kind: str
    sender: str
    to_number: str
    payload: dict[str, Any]
    attempt_count: int


@dataclass
class Decision:
    action: Action
    delay_s: float = 0.0
    status: str | None = None  # the job's new status


def decide(result: SendResult, job: ClaimedJob, throttle_count: int = 1) -> Decision:
    """What a provider outcome means for the job (the policy table plus the retry schedule)."""
    if result.ok:
        return Decision("done", status="accepted")
    policy = result.policy
    schedule = SCHEDULES[job.kind]
    if policy.action == "throttle":
        if result.error_code == 131056:
            return Decision("throttle", pair_backoff_s(throttle_count), status="queued")
        return Decision("throttle", max(1.0, result.retry_after or 1.0), status="queued")
    if policy.action == "retry":
        if job.attempt_count >= schedule.max_attempts:
            return Decision("fail", status="failed")
        return Decision(
            "retry", schedule.delay(job.attempt_count, result.retry_after), status="queued"
        )
    # Fallback channels arrive with the failures issue; until then an undeliverable job fails.
    return Decision("fail", status="failed")


def claim(ids: list[uuid.UUID], token: str, lease_s: float) -> tuple[list[ClaimedJob], list[uuid.UUID]]:
    """Mark released jobs ``sending`` (once) and load them; expire the ones past expires_at.

    A job already beyond ``sending`` (a redelivered entry whose send was accepted) is not
    returned, so it is never sent twice. A ``sending`` job whose claim is older than the
    lease belonged to a worker that died: it is claimed again.
    Returns (jobs to send, ids that expired).
    """
    if not ids:
        return [], []
    with session_scope() as s:
        expired = s.execute(
            text(
                "UPDATE notifications SET status = 'expired', finished_at = now(), updated_at = now(),"
                " error_message = 'expired before it could be sent', claim_token = NULL "
                "WHERE id = ANY(:ids) AND status IN ('queued', 'sending') AND expires_at < now() "
                "RETURNING id"
            ),
            {"ids": ids},
        ).scalars().all()
        if expired:
            s.execute(
                text(
                    "INSERT INTO status_events (notification_id, dedupe_key, status, source, at)"
                    " SELECT id, 'expired:' || id::text, 'expired', 'worker', now()"
                    " FROM unnest(CAST(:ids AS uuid[])) AS id ON CONFLICT DO NOTHING"
                ),
                {"ids": list(expired)},
            )
        rows = s.execute(
            text(
                "UPDATE notifications SET status = 'sending', claim_token = :tok, claimed_at = now(),"
                " updated_at = now(), attempt_count = attempt_count + 1 "
                "WHERE id = ANY(:ids) AND (status = 'queued' OR (status = 'sending'"
                " AND claimed_at < now() - make_interval(secs => :lease))) "
                "RETURNING id, kind, sender, to_number, payload, attempt_count"
            ),
            {"ids": ids, "tok": token, "lease": lease_s},
        ).all()
    return [ClaimedJob(r.id, r.kind, r.sender, r.to_number, r.payload, r.attempt_count) for r in rows], list(expired)


@dataclass
class Outcome:
    job: ClaimedJob
    result: SendResult
    decision: Decision


def record(outcomes: list[Outcome], channel: str = "whatsapp") -> None:
    """One transaction: an attempt row per call, the jobs' new statuses, worker events."""
    if not outcomes:
        return
    now = datetime.now(UTC)
    attempts = [
        {
            "notification_id": o.job.id,
            "channel": channel,
            "provider_message_id": o.result.wamid,
            "request_id": o.result.request_id,
            "http_status": o.result.http_status,
            "error_code": o.result.error_code,
            "error_message": o.result.error_message,
            "outcome": o.decision.action,
            "duration_ms": round(o.result.duration_ms, 3),
            "at": now,
        }
        for o in outcomes
    ]
    accepted = [
        {"id": o.job.id, "wamid": o.result.wamid, "at": now}
        for o in outcomes
        if o.decision.action == "done"
    ]
    failed = [
        {"id": o.job.id, "code": o.result.error_code, "msg": o.result.error_message, "at": now}
        for o in outcomes
        if o.decision.action == "fail"
    ]
    requeue = [
        {"id": o.job.id, "refund": 1 if o.decision.action == "throttle" else 0}
        for o in outcomes
        if o.decision.action in ("retry", "throttle")
    ]
    events = [
        {
            "nid": o.job.id,
            "wamid": o.result.wamid,
            "key": f"worker:{o.job.id}:{o.job.attempt_count}:{o.decision.status}",
            "status": "accepted" if o.decision.action == "done" else "failed",
            "code": o.result.error_code,
            "title": o.result.error_message,
            "at": now,
        }
        for o in outcomes
        if o.decision.action in ("done", "fail")
    ]
    rank = SQL_RANK.format(col="status")
    with session_scope() as s:
        s.execute(insert(Attempt), attempts)
        if accepted:
            s.execute(
                text(
                    f"UPDATE notifications SET wamid = :wamid, claim_token = NULL, updated_at = now(),"
                    f" accepted_at = COALESCE(accepted_at, :at),"
                    f" status = CASE WHEN {rank} < 2 THEN 'accepted' ELSE status END "
                    f"WHERE id = :id"
                ),
                accepted,
            )
        if failed:
            s.execute(
                text(
                    f"UPDATE notifications SET status = 'failed', error_code = :code,"
                    f" error_message = :msg, finished_at = :at, claim_token = NULL, updated_at = now() "
                    f"WHERE id = :id AND {rank} < 4"
                ),
                failed,
            )
        if requeue:
            s.execute(
                text(
                    "UPDATE notifications SET status = 'queued', claim_token = NULL, updated_at = now(),"
                    " attempt_count = attempt_count - :refund WHERE id = :id AND status = 'sending'"
                ),
                requeue,
            )
        if events:
            s.execute(
                text(
                    "INSERT INTO status_events (notification_id, provider_message_id, dedupe_key,"
                    " status, source, at, error_code, error_title, applied)"
                    " VALUES (:nid, :wamid, :key, :status, 'worker', :at, :code, :title, true)"
                    " ON CONFLICT (dedupe_key) DO NOTHING"
                ),
                events,
            )
        wamids = [str(a["wamid"]) for a in accepted if a["wamid"]]
        if wamids:
            from wanotify.ingest import apply_pending_for_wamids

            apply_pending_for_wamids(s, wamids)
