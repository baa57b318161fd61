"""Plain functions of the send path: claim jobs, decide what an outcome means, record it.

The dispatcher (``dispatch.py``) calls these; tests call them directly.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Literal

from wanotify.core.backoff import SCHEDULES, pair_backoff_s
from wanotify.core.status import sql_before
from wanotify.db import connection_scope, session_scope
from wanotify.inbound.apply import apply_pending_for_wamids
from wanotify.providers.whatsapp import SendResult
from wanotify.queues import enqueue

# What becomes of a job after one provider call (``decide``); the error-policy table's
# actions (``providers.policy.Action``) are one input to it.
Verdict = Literal["done", "retry", "throttle", "fail", "fallback", "pause"]


@dataclass
class ClaimedJob:
    id: uuid.UUID
    kind: str
    sender: str
    to_number: str
    payload: dict[str, Any]
    attempt_count: int
    has_fallback: bool = False
    recipient_tz: str | None = None


@dataclass
class Decision:
    action: Verdict
    delay_s: float = 0.0
    status: str | None = None  # the job's new status


def decide(result: SendResult, job: ClaimedJob, throttle_count: int = 1) -> Decision:
    """What a provider outcome means for the job (the policy table plus the retry schedule)."""
    if result.ok:
        return Decision("done", status="accepted")
    if result.skipped:  # not sent (sender paused, quiet hours): held, no attempt burned
        return Decision("pause", 5.0 if result.retry_after is None else result.retry_after, status="queued")
    policy = result.policy
    schedule = SCHEDULES[job.kind]
    if policy.pause_sender:
        # The account cannot send (token expired, payment, restriction): pause the number
        # and keep the job, instead of burning through the queue.
        return Decision("pause", 5.0, status="queued")
    if policy.action == "throttle":
        if policy.hold_pair:
            return Decision("throttle", pair_backoff_s(throttle_count), status="queued")
        return Decision("throttle", max(1.0, result.retry_after or 1.0), status="queued")
    if policy.action == "retry":
        if job.attempt_count >= schedule.max_attempts:
            # Retries exhausted: the next channel, if the job has one.
            return Decision("fallback" if job.has_fallback else "fail", status="failed")
        return Decision(
            "retry", schedule.delay(job.attempt_count, result.retry_after), status="queued"
        )
    if policy.action == "fallback" and job.has_fallback:
        return Decision("fallback", status="failed")
    return Decision("fail", status="failed")


CLAIM_SQL = """
WITH ex AS (
  UPDATE notifications SET status = 'expired', finished_at = now(), updated_at = now(),
    error_message = 'expired before it could be sent', claim_token = NULL
  WHERE id = ANY(%(ids)s) AND status IN ('queued', 'sending') AND expires_at < now()
  RETURNING id
), ev AS (
  INSERT INTO status_events (notification_id, dedupe_key, status, source, at)
  SELECT id, 'expired:' || id::text, 'expired', 'worker', now() FROM ex
  ON CONFLICT DO NOTHING
), oo AS (
  UPDATE notifications n SET status = 'opted_out', finished_at = now(), updated_at = now(),
    error_message = 'the recipient opted out of marketing messages', claim_token = NULL
  FROM opt_outs o
  WHERE n.id = ANY(%(ids)s) AND n.kind = 'marketing' AND n.status IN ('queued', 'sending')
    AND o.phone_hash = n.to_hash AND o.opted_out
  RETURNING n.id
), ov AS (
  INSERT INTO status_events (notification_id, dedupe_key, status, source, at)
  SELECT id, 'opted_out:' || id::text, 'opted_out', 'worker', now() FROM oo
  ON CONFLICT DO NOTHING
), cl AS (
  UPDATE notifications SET status = 'sending', claim_token = %(tok)s, claimed_at = now(),
    updated_at = now(), attempt_count = attempt_count + 1
  WHERE id = ANY(%(ids)s)
    AND (expires_at IS NULL OR expires_at >= now())
    AND id NOT IN (SELECT id FROM oo)
    AND (campaign_id IS NULL OR NOT EXISTS (
         SELECT 1 FROM campaigns c WHERE c.id = campaign_id AND c.status = 'paused'))
    AND (status = 'queued'
         OR (status = 'sending' AND claimed_at < now() - make_interval(secs => %(lease)s)))
  RETURNING id, kind, sender, to_number, payload, attempt_count, fallback IS NOT NULL AS has_fallback,
    recipient_tz
)
SELECT id, kind, sender, to_number, payload, attempt_count, has_fallback, recipient_tz FROM cl
UNION ALL
SELECT id, NULL, NULL, NULL, NULL, NULL, NULL, NULL FROM ex
UNION ALL
SELECT id, NULL, NULL, NULL, NULL, NULL, NULL, NULL FROM oo
"""


def claim(ids: list[uuid.UUID], token: str, lease_s: float) -> tuple[list[ClaimedJob], list[uuid.UUID]]:
    """Mark released jobs ``sending`` (once) and load them; expire the ones past expires_at.

    A job already beyond ``sending`` (a redelivered entry whose send was accepted) is not
    returned, so it is never sent twice. A ``sending`` job whose claim is older than the
    lease belonged to a worker that died: it is claimed again. One statement, one round trip.
    A marketing job to a number that has opted out since it was queued ends ``opted_out``;
    a paused campaign's jobs are left queued (resume puts them back in the lanes).
    Returns (jobs to send, ids finished here: expired or opted out).
    """
    if not ids:
        return [], []
    with connection_scope() as conn:
        rows = conn.exec_driver_sql(CLAIM_SQL, {"ids": ids, "tok": token, "lease": lease_s}).all()
    jobs = [ClaimedJob(r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6]), r[7]) for r in rows if r[1] is not None]
    finished = [r[0] for r in rows if r[1] is None]  # expired, or to a number that opted out
    return jobs, finished


@dataclass
class Outcome:
    job: ClaimedJob
    result: SendResult
    decision: Decision


_BEFORE_ACCEPTED = sql_before("n.status", "accepted")
_BEFORE_DELIVERED = sql_before("n.status", "delivered")

RECORD_SQL = f"""
WITH v AS (
  SELECT * FROM unnest(%(id)s::uuid[], %(action)s::text[], %(wamid)s::text[], %(code)s::int[],
                       %(msg)s::text[], %(http)s::int[], %(reqid)s::text[], %(dur)s::float8[],
                       %(attempt)s::int[], %(called)s::bool[])
    AS v(id, action, wamid, code, msg, http, reqid, dur, attempt, called)
), a AS (
  INSERT INTO attempts (notification_id, channel, provider_message_id, request_id, http_status,
                        error_code, error_message, outcome, duration_ms, at)
  SELECT id, %(channel)s, wamid, reqid, http, code, msg, action, dur, now() FROM v WHERE called
), e AS (
  INSERT INTO status_events (notification_id, provider_message_id, dedupe_key, status, source,
                             at, error_code, error_title, applied)
  SELECT id, wamid, 'worker:' || id::text || ':' || attempt::text || ':' || action,
         CASE action WHEN 'done' THEN 'accepted' ELSE 'failed' END, 'worker', now(), code, msg, true
  FROM v WHERE action IN ('done', 'fail', 'fallback')
  ON CONFLICT (dedupe_key) DO NOTHING
), u AS (
  UPDATE notifications n SET
    status = CASE
      WHEN v.action = 'done' THEN CASE WHEN {_BEFORE_ACCEPTED} THEN 'accepted' ELSE n.status END
      WHEN v.action IN ('fail', 'fallback') THEN CASE WHEN {_BEFORE_DELIVERED} THEN 'failed' ELSE n.status END
      ELSE CASE WHEN n.status = 'sending' THEN 'queued' ELSE n.status END END,
    wamid = COALESCE(v.wamid, n.wamid),
    accepted_at = CASE WHEN v.action = 'done' THEN COALESCE(n.accepted_at, now()) ELSE n.accepted_at END,
    error_code = CASE WHEN v.action IN ('fail', 'fallback') AND {_BEFORE_DELIVERED} THEN v.code ELSE n.error_code END,
    error_message = CASE WHEN v.action IN ('fail', 'fallback') AND {_BEFORE_DELIVERED} THEN v.msg ELSE n.error_message END,
    finished_at = CASE WHEN v.action IN ('fail', 'fallback') AND {_BEFORE_DELIVERED} THEN now() ELSE n.finished_at END,
    attempt_count = n.attempt_count
      - CASE WHEN v.action IN ('throttle', 'pause') AND n.status = 'sending' THEN 1 ELSE 0 END,
    claim_token = NULL, updated_at = now()
  FROM v WHERE n.id = v.id
)
SELECT count(*) FROM status_events
WHERE applied = false AND provider_message_id = ANY(%(wamids)s::text[])
"""


def record(outcomes: list[Outcome], channel: str = "whatsapp") -> None:
    """One statement: an attempt row per call, the jobs' new statuses, worker events.

    Statuses that arrived by webhook before the wamid was known are applied right after.
    """
    if not outcomes:
        return
    params: dict[str, Any] = {
        "id": [o.job.id for o in outcomes],
        "action": [o.decision.action for o in outcomes],
        "wamid": [o.result.wamid for o in outcomes],
        "code": [o.result.error_code for o in outcomes],
        "msg": [o.result.error_message for o in outcomes],
        "http": [o.result.http_status for o in outcomes],
        "reqid": [o.result.request_id for o in outcomes],
        "dur": [round(o.result.duration_ms, 3) for o in outcomes],
        "attempt": [o.job.attempt_count for o in outcomes],
        "called": [not o.result.skipped for o in outcomes],
        "channel": channel,
    }
    wamids = [o.result.wamid for o in outcomes if o.result.wamid]
    params["wamids"] = wamids
    with connection_scope() as conn:
        early = conn.exec_driver_sql(RECORD_SQL, params).scalar_one()
    fall = [o.job.id for o in outcomes if o.decision.action == "fallback"]
    if fall:
        enqueue.fallback(fall, "whatsapp undeliverable or retries exhausted")
    if early:
        with session_scope() as s:
            failed = apply_pending_for_wamids(s, wamids)
        if failed:
            enqueue.fallback(failed, "failed status webhook")
