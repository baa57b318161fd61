"""Worker process wiring: logging, the sweeper timer, clean shutdown of the runtime."""

from __future__ import annotations

from typing import Any

from celery import signals

from wanotify.config import get_settings
from wanotify.logs import setup_logging

_sweeper: Any = None
_token_watcher: Any = None


@signals.setup_logging.connect
def _logging(**_: Any) -> None:
    s = get_settings()
    setup_logging(s.log_level, s.log_json)


@signals.worker_ready.connect
def _start_sweeper(**_: Any) -> None:
    global _sweeper, _token_watcher
    from wanotify.sweeper import SweeperThread

    _sweeper = SweeperThread()
    _sweeper.start()
    from wanotify.tokens import TokenWatcher

    _token_watcher = TokenWatcher()  # resumes senders paused for a token once a new one appears
    _token_watcher.start()
    settings = get_settings()
    port = settings.worker_metrics_port
    if port:
        import logging

        from wanotify.metrics import start_worker_metrics

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
    from wanotify.runtime import shutdown_runtime

    shutdown_runtime()


@signals.worker_process_shutdown.connect
def _child_metrics_gone(pid: int | None = None, **_: Any) -> None:
    import os

    from wanotify.metrics import mark_process_dead

    mark_process_dead(pid or os.getpid())


_trimmed_at = 0.0


@signals.task_postrun.connect
def _trim_heap(**_: Any) -> None:
    """Hand free heap pages back to the system at most every 10 s (see wanotify.memory)."""
    import time

    global _trimmed_at
    now = time.monotonic()
    if now - _trimmed_at > 10.0:
        _trimmed_at = now
        from wanotify.memory import trim

        trim()
