"""Thin Celery tasks; the logic lives in plain functions (intake, dispatch, ingest, sweeper)."""

from __future__ import annotations

import logging
from typing import Any

from celery import Task

from wanotify.config import get_settings
from wanotify.core.errors import IdempotencyConflict, InvalidJob
from wanotify.worker.app import celery_app

log = logging.getLogger("wanotify.tasks")


@celery_app.task(name="wanotify.notify", bind=True, acks_late=True, max_retries=None)
def notify_task(self: Task, body: Any) -> dict[str, Any]:
    """Intake from any producer: validate, store, route. Invalid bodies are recorded."""
    from wanotify.intake.service import notify, record_rejected

    try:
        acc = notify(body)
    except InvalidJob as exc:
        record_rejected("celery", body, exc.as_json())
        log.warning("rejected job from the notify queue", extra={"errors": exc.as_json()})
        return {"error": {"errors": exc.as_json()}}
    except IdempotencyConflict as exc:
        record_rejected("celery", body, [{"field": "idempotency_key", "reason": str(exc)}])
        return {"error": {"errors": [{"field": "idempotency_key", "reason": str(exc)}]}}
    except Exception as exc:  # Postgres or Redis away: try again, the message is still ours
        raise self.retry(exc=exc, countdown=min(60, 2 ** min(self.request.retries, 6))) from exc
    return acc.model_dump()


@celery_app.task(name="wanotify.dispatch", acks_late=True, ignore_result=True)
def dispatch_task(sender: str) -> dict[str, Any]:
    """Drive one sender's pacing queue for a time slice (many sends per task)."""
    from wanotify.delivery.runtime import get_runtime
    from wanotify.intake.service import kick

    settings = get_settings()
    if sender not in settings.sender_map:
        log.error("dispatch for unknown sender %r ignored", sender)
        return {"sender": sender, "error": "unknown sender"}
    rt = get_runtime()
    stats = rt.run(rt.dispatcher.drain(settings.sender_map[sender]))
    if stats.owned and not stats.paused:
        if stats.depth_left > 0:
            # Hand the number on, on the queue of its most urgent waiting work.
            from wanotify.delivery.lanes import Lanes
            from wanotify.intake.service import get_redis

            d = Lanes(get_redis()).depths(sender)
            kind = next((k for k in ("otp", "transactional", "marketing") if d[k]), "transactional")
            kick(sender, kind)
        elif stats.next_due_ms is not None:
            import time

            delay = max(0.0, stats.next_due_ms / 1000 - time.time())
            if delay < settings.broker_visibility_timeout_s / 2:
                kick(sender, "transactional", countdown=delay)
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


@celery_app.task(name="wanotify.ingest", bind=True, acks_late=True, max_retries=None)
def ingest_task(self: Task, inbox_id: int | list[int] | None = None, slot: list[str] | None = None,
                top_up: bool = True) -> dict[str, Any]:
    """Turn stored webhook bodies (one id, a list, or the oldest pending) into status events
    and job statuses; with ``top_up``, other bodies waiting too (whose kicks were folded into
    this one: see ``ingest.kick_ingest``; the sweeper names its bodies and does not top up)."""
    from wanotify.inbound.ingest import free_kick_slot, ingest_inbox

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
            if report.fallback_ids:
                from wanotify.delivery.fallback import trigger

                trigger(report.fallback_ids, "failed status webhook")
            for k in totals:
                totals[k] += getattr(report, k)
            if not top_up or report.bodies < limit:
                break
            ids = []  # a full batch: more may be waiting, and their kicks were folded into this one
        else:
            from wanotify.inbound.ingest import kick_ingest

            kick_ingest([])
    except Exception as exc:  # Postgres away: the raw body is kept; try again
        raise self.retry(exc=exc, countdown=min(30, 1 + 2 ** min(self.request.retries, 5))) from exc
    return totals


# A task that keeps finding full batches hands over to a new one after this many.
INGEST_ROUNDS = 20


@celery_app.task(name="wanotify.fallback", bind=True, acks_late=True, max_retries=None)
def fallback_task(self: Task, job_id: str, reason: str = "") -> str:
    """Send a job's fallback (SMS, then email), once."""
    import uuid

    from wanotify.delivery.fallback import run_fallback

    try:
        return run_fallback(uuid.UUID(job_id), reason)
    except Exception as exc:  # Postgres away: the job's fallback is still ours to do
        raise self.retry(exc=exc, countdown=min(60, 2 ** min(self.request.retries, 6))) from exc


@celery_app.task(name="wanotify.sweep", ignore_result=True)
def sweep_task() -> dict[str, int]:
    from wanotify.delivery.sweeper import sweep

    return sweep()


@celery_app.task(name="wanotify.campaign_fanout", bind=True, acks_late=True, max_retries=None)
def campaign_fanout_task(self: Task, campaign_id: str) -> dict[str, Any]:
    """Enqueue the next chunk of a running campaign; again in a second while some remain."""
    import time
    import uuid

    from wanotify.campaigns.service import (
        CampaignError,
        end_fanout,
        fan_out,
        fanout_rate,
        has_pending,
        kick_fanout,
    )

    cid = uuid.UUID(campaign_id)
    began = time.monotonic()
    try:
        n = fan_out(cid)
    except CampaignError:
        end_fanout(cid)
        return {"campaign": campaign_id, "enqueued": 0}
    except Exception as exc:  # Postgres away: the tick restarts the chain if this gives up
        raise self.retry(exc=exc, countdown=min(30, 1 + 2 ** min(self.request.retries, 5))) from exc
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


@celery_app.task(name="wanotify.campaigns_tick")
def campaigns_tick_task() -> dict[str, int]:
    from wanotify.campaigns.service import tick

    return tick()


@celery_app.task(name="wanotify.purge", ignore_result=True)
def purge_task() -> dict[str, int]:
    """Retention: anonymise or delete personal data past ``WANOTIFY_RETENTION``."""
    from wanotify.compliance.retention import purge

    return purge().totals()
