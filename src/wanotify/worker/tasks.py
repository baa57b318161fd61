"""Thin Celery tasks; the logic lives in plain functions (intake, dispatch, ingest, sweeper).

Every task's name and queue is declared in ``worker.queues``; every task a producer or the
domain sends goes through ``worker.enqueue``.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from celery import Task

from wanotify.campaigns.fanout import (
    end_fanout,
    fan_out,
    fanout_rate,
    has_pending,
    kick_fanout,
    tick,
)
from wanotify.campaigns.records import CampaignError
from wanotify.config import get_settings
from wanotify.core.backoff import task_retry_s
from wanotify.core.errors import IdempotencyConflict, InvalidJob
from wanotify.core.kinds import KINDS
from wanotify.delivery.fallback import run_fallback
from wanotify.delivery.runtime import get_runtime
from wanotify.inbound.ingest import free_kick_slot, ingest_inbox, kick_ingest
from wanotify.intake.service import notify, record_rejected, with_task_key
from wanotify.pacing.lanes import Lanes
from wanotify.privacy.retention import purge
from wanotify.queues import enqueue
from wanotify.queues.app import celery_app
from wanotify.queues.names import (
    TASK_CAMPAIGN_FANOUT,
    TASK_CAMPAIGNS_TICK,
    TASK_DISPATCH,
    TASK_FALLBACK,
    TASK_INGEST,
    TASK_NOTIFY,
    TASK_PURGE,
)
from wanotify.redis import get_redis

log = logging.getLogger("wanotify.tasks")

# A task that keeps finding full batches hands over to a new one after this many.
INGEST_ROUNDS = 20


@celery_app.task(name=TASK_NOTIFY, bind=True, acks_late=True, max_retries=None)
def notify_task(self: Task, body: Any) -> dict[str, Any]:
    """Intake from any producer: validate, store, route. Invalid bodies are recorded."""
    try:
        acc = notify(with_task_key(body, self.request.id or ""))
    except InvalidJob as exc:
        record_rejected("celery", body, exc.as_json())
        log.warning("rejected job from the notify queue", extra={"errors": exc.as_json()})
        return {"error": {"errors": exc.as_json()}}
    except IdempotencyConflict as exc:
        record_rejected("celery", body, [{"field": "idempotency_key", "reason": str(exc)}])
        return {"error": {"errors": [{"field": "idempotency_key", "reason": str(exc)}]}}
    except Exception as exc:  # Postgres or Redis away: try again, the message is still ours
        raise self.retry(exc=exc, countdown=task_retry_s(self.request.retries, 60)) from exc
    return acc.model_dump()


@celery_app.task(name=TASK_DISPATCH, acks_late=True, ignore_result=True)
def dispatch_task(sender: str) -> dict[str, Any]:
    """Drive one sender's pacing queue for a time slice (many sends per task)."""
    settings = get_settings()
    if sender not in settings.sender_map:
        log.error("dispatch for unknown sender %r ignored", sender)
        return {"sender": sender, "error": "unknown sender"}
    rt = get_runtime()
    stats = rt.run(rt.dispatcher.drain(settings.sender_map[sender]))
    if stats.owned and not stats.paused:
        if stats.depth_left > 0:
            # Hand the number on, on the queue of its most urgent waiting work.
            d = Lanes(get_redis()).depths(sender)
            enqueue.dispatch(sender, next((k for k in KINDS if d[k]), "transactional"))
        elif stats.next_due_ms is not None:
            delay = max(0.0, stats.next_due_ms / 1000 - time.time())
            if delay < settings.broker_visibility_timeout_s / 2:
                enqueue.dispatch(sender, "transactional", countdown=delay)
    return {
        "sender": sender,
        "owned": stats.owned,
        "paused": stats.paused,
        "released": stats.released,
        "accepted": stats.accepted,
        "failed": stats.failed,
        "requeued": stats.requeued,
        "expired": stats.expired,
        "left": stats.depth_left,
    }


@celery_app.task(name=TASK_INGEST, bind=True, acks_late=True, max_retries=None)
def ingest_task(self: Task, inbox_id: int | list[int] | None = None, slot: list[str] | None = None,
                top_up: bool = True) -> dict[str, Any]:
    """Turn stored webhook bodies (one id, a list, or the oldest pending) into status events
    and job statuses; with ``top_up``, other bodies waiting too (whose kicks were folded into
    this one: see ``ingest.kick_ingest``; the sweeper names its bodies and does not top up)."""
    free_kick_slot(slot)  # bodies stored from now on get a kick of their own
    top_up = top_up and not self.request.retries
    ids = None if inbox_id is None else (list(inbox_id) if isinstance(inbox_id, list) else [inbox_id])
    limit = max(200, len(ids or ()))
    totals = {"bodies": 0, "statuses": 0, "applied": 0}
    try:
        for _ in range(INGEST_ROUNDS):
            try:  # this kick's bodies and others waiting, in one transaction
                report = ingest_inbox(ids, limit=limit, top_up=top_up)
            except Exception:
                if not ids or not top_up:
                    raise
                # Another body of the batch may be at fault: this kick's own bodies, alone.
                log.warning("ingest of a topped-up batch failed; ingesting the kick's %d bodies alone",
                            len(ids), exc_info=True)
                report = ingest_inbox(ids, limit=len(ids))
            enqueue.fallback(report.fallback_ids, "failed status webhook")
            for k in totals:
                totals[k] += getattr(report, k)
            if not top_up or report.bodies < limit:
                break
            ids = []  # a full batch: more may be waiting, and their kicks were folded into this one
        else:
            kick_ingest([])
    except Exception as exc:  # Postgres away: the raw body is kept; try again
        raise self.retry(exc=exc, countdown=task_retry_s(self.request.retries, 30)) from exc
    return totals


@celery_app.task(name=TASK_FALLBACK, bind=True, acks_late=True, max_retries=None)
def fallback_task(self: Task, job_id: str, reason: str = "") -> str:
    """Send a job's fallback (SMS, then email), once."""
    try:
        return run_fallback(uuid.UUID(job_id), reason)
    except Exception as exc:  # Postgres away: the job's fallback is still ours to do
        raise self.retry(exc=exc, countdown=task_retry_s(self.request.retries, 60)) from exc


@celery_app.task(name=TASK_CAMPAIGN_FANOUT, bind=True, acks_late=True, max_retries=None)
def campaign_fanout_task(self: Task, campaign_id: str) -> dict[str, Any]:
    """Enqueue the next chunk of a running campaign; again in a second while some remain."""
    cid = uuid.UUID(campaign_id)
    began = time.monotonic()
    try:
        n = fan_out(cid)
    except CampaignError:
        end_fanout(cid)
        return {"campaign": campaign_id, "enqueued": 0}
    except Exception as exc:  # Postgres away: the tick restarts the chain if this gives up
        raise self.retry(exc=exc, countdown=task_retry_s(self.request.retries, 30)) from exc
    if n:
        # More may be pending: go on at about 1.25x the number's rate (enough to stay ahead of
        # the drain, never a burst that takes the CPU from the sends and the OTPs).
        pace = n / (1.25 * fanout_rate(cid)) - (time.monotonic() - began)
        kick_fanout(cid, countdown=pace if pace > 0.01 else None, chain=True)
    elif has_pending(cid):
        kick_fanout(cid, countdown=2.0, chain=True)  # the lanes are full: look again shortly
    else:
        end_fanout(cid)
    return {"campaign": campaign_id, "enqueued": n}


@celery_app.task(name=TASK_CAMPAIGNS_TICK)
def campaigns_tick_task() -> dict[str, int]:
    return tick()


@celery_app.task(name=TASK_PURGE, ignore_result=True)
def purge_task() -> dict[str, int]:
    """Retention: anonymise or delete personal data past ``WANOTIFY_RETENTION``."""
    return purge().totals()
