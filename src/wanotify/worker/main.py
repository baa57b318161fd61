"""What a worker process loads: the Celery app with its tasks and its process wiring.

``wanotify worker`` runs it; ``celery -A wanotify.worker.main worker`` does the same.
Producers import ``wanotify.queues.app`` (or nothing of wanotify at all) instead.
"""

from __future__ import annotations

from wanotify.queues.app import celery_app
from wanotify.worker import signals, tasks
from wanotify.worker.intake_consumer import NotifyConsumer

# The notify queue is taken in batches, not as one task per job (see intake_consumer).
celery_app.steps["consumer"].add(NotifyConsumer)

__all__ = ["celery_app", "signals", "tasks"]
