"""Worker process wiring: logging, the sweeper timer, clean shutdown of the runtime."""

from __future__ import annotations

from typing import Any

from celery import signals

from wanotify.config import get_settings
from wanotify.ops.logs import setup_logging

_sweeper: Any = None
_token_watcher: Any = None


@signals.setup_logging.connect
def _logging(**_: Any) -> None:
    s = get_settings()
    setup_logging(s.log_level, s.log_json)


@signals.worker_ready.connect
def _start_sweeper(**_: Any) -> None:
    global _sweeper, _token_watcher
    from wanotify.delivery.sweeper import SweeperThread

    _sweeper = SweeperThread()
    _sweeper.start()
    from wanotify.providers.tokens import TokenWatcher

    _token_watcher = TokenWatcher()  # resumes senders paused for a token once a new one appears
    _token_watcher.start()
    settings = get_settings()
    port = settings.worker_metrics_port
    if port:
        import logging

        from wanotify.ops.metrics import start_worker_metrics

        got = start_worker_metrics(port, settings.worker_metrics_addr)
        logging.getLogger("wanotify.worker").info(
            "worker metrics on %s:%s/metrics", settings.worker_metrics_addr, got)


@signals.worker_shutting_down.connect
def _stop_sweeper(**_: Any) -> None:
    if _sweeper is not None:
        _sweeper.stop()
    if _token_watcher is not None:
        _token_watcher.stop()


@signals.worker_process_shutdown.connect
@signals.worker_shutdown.connect
def _close_runtime(**_: Any) -> None:
    from wanotify.delivery.runtime import shutdown_runtime

    shutdown_runtime()


@signals.worker_process_shutdown.connect
def _child_metrics_gone(pid: int | None = None, **_: Any) -> None:
    import os

    from wanotify.ops.metrics import mark_process_dead

    mark_process_dead(pid or os.getpid())


_trimmed_at = 0.0


@signals.task_postrun.connect
def _trim_heap(**_: Any) -> None:
    """Hand free heap pages back to the system at most every 10 s (see wanotify.worker.memory)."""
    import time

    global _trimmed_at
    now = time.monotonic()
    if now - _trimmed_at > 10.0:
        _trimmed_at = now
        from wanotify.worker.memory import trim

        trim()


# Tasks whose arguments are job bodies (numbers, names, codes): what the worker reports of
# them in its task events (Flower shows and keeps those) is a masked summary, whatever
# representation the producer put in the message.
PERSONAL_ARGS = frozenset({"wanotify.notify"})


@signals.task_received.connect
def _mask_personal_args(request: Any = None, **_: Any) -> None:
    if request is None or getattr(request, "name", None) not in PERSONAL_ARGS:
        return
    from wanotify.ops.logs import args_summary

    # Celery's Request keeps the producer's repr in these slots and sends them in the
    # task-received event right after this signal.
    request._argsrepr = args_summary(request.args if hasattr(request, "args") else None)
    request._kwargsrepr = "{}"
