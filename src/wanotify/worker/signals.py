"""Worker process wiring: logging, the sweeper and token-watch threads, metrics, shutdown."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from celery import signals
from celery.concurrency.thread import TaskPool as ThreadTaskPool

from wanotify.config import get_settings
from wanotify.delivery.runtime import get_runtime, shutdown_runtime
from wanotify.delivery.token_watch import TokenWatcher
from wanotify.logs import args_summary, setup_logging
from wanotify.metrics import mark_process_dead, start_worker_metrics
from wanotify.queues.names import PERSONAL_ARGS, QUEUE_FOR_KIND
from wanotify.worker.memory import trim
from wanotify.worker.sweeper import SweeperThread

log = logging.getLogger("wanotify.worker")

_sweeper: SweeperThread | None = None
_token_watcher: TokenWatcher | None = None


@signals.setup_logging.connect
def _logging(**_: Any) -> None:
    s = get_settings()
    setup_logging(s.log_level, s.log_json)


@signals.worker_ready.connect
def _start_sweeper(**_: Any) -> None:
    global _sweeper, _token_watcher
    if _sweeper is not None and _sweeper.is_alive():
        # Celery sends worker_ready again when its consumer reconnects after the broker's
        # loss: the threads and the metrics server of the first start are still running.
        log.info("worker ready again after a broker reconnection; its threads are running")
        return
    _sweeper = SweeperThread()
    _sweeper.start()
    _token_watcher = TokenWatcher()  # resumes senders paused for a token once a new one appears
    _token_watcher.start()
    settings = get_settings()
    port = settings.worker_metrics_port
    if port:
        got = start_worker_metrics(port, settings.worker_metrics_addr)
        log.info("worker metrics on %s:%s/metrics", settings.worker_metrics_addr, got)


@signals.worker_ready.connect
def _warm_runtime(sender: Any = None, **_: Any) -> None:
    """Start the send runtime (event loop, HTTP pool, Redis clients, the wake subscription,
    its one full garbage collection) when a worker of the send queues is ready, not inside
    its first dispatch: measured with ``wanotify bench pacing --intake burst``, the first
    OTPs of a run, whose dispatch built it while a burst was arriving, reached Meta 200-400 ms
    after their enqueue (the rest: p99 ~150 ms). A thread-pool worker only (a prefork child
    builds its own on its first task); an intake-only worker never sends."""
    app = getattr(sender, "app", None)
    consumed = set(app.amqp.queues.consume_from) if app is not None else set()
    if consumed & set(QUEUE_FOR_KIND.values()) and isinstance(getattr(sender, "pool", None), ThreadTaskPool):
        get_runtime()


@signals.worker_shutting_down.connect
def _stop_sweeper(**_: Any) -> None:
    if _sweeper is not None:
        _sweeper.stop()
    if _token_watcher is not None:
        _token_watcher.stop()


@signals.worker_process_shutdown.connect
@signals.worker_shutdown.connect
def _close_runtime(**_: Any) -> None:
    shutdown_runtime()


@signals.worker_process_shutdown.connect
def _child_metrics_gone(pid: int | None = None, **_: Any) -> None:
    mark_process_dead(pid or os.getpid())


_trimmed_at = 0.0


@signals.task_postrun.connect
def _trim_heap(**_: Any) -> None:
    """Hand free heap pages back to the system at most every 10 s (see worker.memory)."""
    global _trimmed_at
    now = time.monotonic()
    if now - _trimmed_at > 10.0:
        _trimmed_at = now
        trim()


@signals.task_received.connect
def _mask_personal_args(request: Any = None, **_: Any) -> None:
    """Tasks whose arguments are job bodies (numbers, names, codes): what the worker reports
    of them in its task events (Flower shows and keeps those) is a masked summary, whatever
    representation the producer put in the message."""
    if request is None or getattr(request, "name", None) not in PERSONAL_ARGS:
        return
    # Celery's Request keeps the producer's repr in these slots and sends them in the
    # task-received event right after this signal.
    request._argsrepr = args_summary(request.args if hasattr(request, "args") else None)
    request._kwargsrepr = "{}"
