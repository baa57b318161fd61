"""Celery queues and task names, declared once (stable: see the README).

Producers in any codebase enqueue with ``send_task("wanotify.notify", args=[body],
queue="notify")``; the work queues keep OTP work from ever waiting behind bulk work.
"""

from __future__ import annotations

# Queues (stable names).
NOTIFY = "notify"  # intake from any producer
OTP = "otp"
TRANSACTIONAL = "transactional"
BULK = "bulk"  # marketing sends, campaign fan-out, periodic housekeeping
FALLBACK = "fallback"
INGEST = "ingest"  # Meta's webhooks, stored bodies turned into rows
QUEUES: tuple[str, ...] = (NOTIFY, OTP, TRANSACTIONAL, BULK, FALLBACK, INGEST)

# The work queue of each kind's dispatcher.
QUEUE_FOR_KIND: dict[str, str] = {"otp": OTP, "transactional": TRANSACTIONAL, "marketing": BULK}

# Task names (stable) and where each is consumed.
TASK_NOTIFY = "wanotify.notify"
TASK_DISPATCH = "wanotify.dispatch"  # its queue is the kind's (QUEUE_FOR_KIND)
TASK_INGEST = "wanotify.ingest"
TASK_FALLBACK = "wanotify.fallback"
TASK_CAMPAIGN_FANOUT = "wanotify.campaign_fanout"
TASK_CAMPAIGNS_TICK = "wanotify.campaigns_tick"
TASK_PURGE = "wanotify.purge"
ROUTES: dict[str, str] = {
    TASK_NOTIFY: NOTIFY,
    TASK_INGEST: INGEST,
    TASK_FALLBACK: FALLBACK,
    TASK_CAMPAIGN_FANOUT: BULK,
    TASK_CAMPAIGNS_TICK: BULK,
    TASK_PURGE: BULK,
}

# Tasks whose arguments are job bodies (numbers, names, codes): what is reported of them in
# task events (Flower shows and keeps those) is a masked summary.
PERSONAL_ARGS = frozenset({TASK_NOTIFY})
