"""The Celery app: broker, queues and routes (``worker.queues``), reliability settings.

Producers import this module (it is light: no tasks, no signals); a worker process loads
``wanotify.worker.main``, which adds the tasks and the process wiring.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu import pools
from kombu.entity import Exchange, Queue

from wanotify.config import get_settings
from wanotify.logs import args_summary
from wanotify.queues.broker import WanotifyAMQP
from wanotify.queues.names import (
    BULK,
    PERSONAL_ARGS,
    QUEUES,
    ROUTES,
    TASK_CAMPAIGNS_TICK,
    TASK_PURGE,
    TRANSACTIONAL,
)
from wanotify.redis import broker_options


class WanotifyCelery(Celery):
    """Celery whose ``task-sent`` events carry a masked summary of a job body: a producer
    using this app (it sends those events, for Flower) never publishes a number or a code;
    the worker masks its own events the same way (``signals._mask_personal_args``)."""

    def send_task(self, name: str, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
        if name in PERSONAL_ARGS and "argsrepr" not in options:
            options["argsrepr"] = args_summary(args)
            options["kwargsrepr"] = "{}"
        return super().send_task(name, args, kwargs, **options)


def make_app() -> Celery:
    settings = get_settings()
    broker, sentinel_options = broker_options()
    app = WanotifyCelery("wanotify", broker=broker, include=["wanotify.worker.tasks"],
                         amqp=WanotifyAMQP)
    exchange = Exchange("wanotify", type="direct")
    app.conf.update(
        task_queues=[Queue(q, exchange, routing_key=q) for q in QUEUES],
        task_default_queue=TRANSACTIONAL,
        task_default_exchange="wanotify",
        task_default_routing_key=TRANSACTIONAL,
        task_routes={task: {"queue": queue} for task, queue in ROUTES.items()},
        # `wanotify beat`: scheduled campaigns start, running ones are fed, finished ones close.
        beat_schedule={
            "campaigns-tick": {"task": TASK_CAMPAIGNS_TICK, "schedule": 5.0,
                               "options": {"queue": BULK, "expires": 30}},
            # Retention (compliance.retention): personal fields past WANOTIFY_RETENTION go.
            "privacy-purge": {"task": TASK_PURGE, "schedule": settings.purge_interval_s,
                              "options": {"queue": BULK, "expires": settings.purge_interval_s}},
        },
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        result_backend=None,
        # Nothing lost when a worker dies: ack after the task ran, redeliver on worker loss.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=4,
        # Redis redelivers unacked messages after the visibility timeout (default 1 h: far
        # too long for "resolved within 2 minutes").
        broker_transport_options={
            "visibility_timeout": settings.broker_visibility_timeout_s,
            "socket_keepalive": True,
            **sentinel_options,
        },
        broker_connection_retry_on_startup=True,
        # Flower: task events on.
        worker_send_task_events=True,
        task_send_sent_event=True,
        worker_hijack_root_logger=False,
        timezone="UTC",
    )
    return app


celery_app = make_app()


def follow_settings(app: Celery = celery_app) -> None:
    """Point the app's broker at the current settings' Redis (a process that changes
    ``WANOTIFY_REDIS_URL`` after importing wanotify: the CLI's benchmarks, tests). Without
    this, its kicks and sends go to the Redis the settings named at import time."""
    broker, sentinel_options = broker_options()
    app.conf.broker_url = broker
    app.conf.broker_transport_options = {
        **{k: v for k, v in app.conf.broker_transport_options.items() if k not in ("master_name",)},
        **sentinel_options,
    }
    pool = app._pool
    if pool is not None:
        pool.force_close_all()
        app._pool = None
    # Celery's producer pool, and kombu's registry of them (keyed by broker URL), would hand
    # out the closed connections again: a second `bench pacing` run in one process failed
    # with "Acquire on closed pool" at its first kick.
    app.amqp._producer_pool = None
    pools.reset()
