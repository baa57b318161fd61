"""Every ``send_task`` of wanotify, in one place: what the domain asks the workers to do.

Domain code calls these functions (never the Celery app): the names, queues and
arguments of the tasks live here and in ``worker.queues``, and nowhere else.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from wanotify.queues.app import celery_app
from wanotify.queues.names import (
    BULK,
    FALLBACK,
    INGEST,
    QUEUE_FOR_KIND,
    TASK_CAMPAIGN_FANOUT,
    TASK_DISPATCH,
    TASK_FALLBACK,
    TASK_INGEST,
)


def dispatch(sender: str, kind: str, countdown: float | None = None) -> None:
    """Have a dispatcher drive ``sender``'s lanes, on the queue of ``kind``'s work."""
    celery_app.send_task(TASK_DISPATCH, args=[sender], queue=QUEUE_FOR_KIND[kind],
                         countdown=countdown)


def fallback(job_ids: Iterable[uuid.UUID], reason: str) -> None:
    """Run the fallback chain of these jobs (on the ``fallback`` queue)."""
    for job_id in job_ids:
        celery_app.send_task(TASK_FALLBACK, args=[str(job_id), reason], queue=FALLBACK)


def ingest(inbox_ids: list[int], *, slot: list[str] | None = None, top_up: bool = True) -> None:
    """Ingest stored webhook bodies; ``slot`` is the debounce slot the task frees as it
    starts, ``top_up=False`` keeps the task to the bodies it names."""
    kwargs: dict[str, object] = {}
    if slot:
        kwargs["slot"] = slot
    if not top_up:
        kwargs["top_up"] = False
    celery_app.send_task(TASK_INGEST, args=[inbox_ids], kwargs=kwargs, queue=INGEST)


def campaign_fanout(campaign_id: uuid.UUID, countdown: float | None = None) -> None:
    celery_app.send_task(TASK_CAMPAIGN_FANOUT, args=[str(campaign_id)], queue=BULK,
                         countdown=countdown)
