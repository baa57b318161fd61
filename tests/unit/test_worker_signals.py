"""Worker wiring that must hold when Celery's consumer reconnects after losing the broker."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from wanotify.worker import signals


class _Thread(threading.Thread):
    started: list[str] = []

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self._done = threading.Event()

    def run(self) -> None:
        _Thread.started.append(type(self).__name__)
        self._done.wait(5)

    def stop(self) -> None:
        self._done.set()


class _Sweeper(_Thread):
    pass


class _Watcher(_Thread):
    pass


def test_worker_ready_again_after_a_reconnection_starts_nothing_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    """Celery sends worker_ready on every consumer start, also after a broker reconnection:
    one sweeper, one token watcher, one metrics server per worker whatever the count."""
    metrics: list[Any] = []
    monkeypatch.setattr(signals, "SweeperThread", _Sweeper)
    monkeypatch.setattr(signals, "TokenWatcher", _Watcher)
    monkeypatch.setattr(signals, "start_worker_metrics", lambda port, addr: metrics.append(port) or port)
    monkeypatch.setattr(signals, "_sweeper", None)
    monkeypatch.setattr(signals, "_token_watcher", None)
    monkeypatch.setenv("WANOTIFY_WORKER_METRICS_PORT", "9899")
    from wanotify.config import reset_settings

    reset_settings()
    _Thread.started.clear()
    try:
        signals._start_sweeper()
        first = signals._sweeper
        signals._start_sweeper()  # the reconnection's worker_ready
        assert signals._sweeper is first
        for _ in range(50):
            if len(_Thread.started) >= 2:
                break
            threading.Event().wait(0.02)
        assert sorted(_Thread.started) == ["_Sweeper", "_Watcher"]
        assert metrics == [9899]
    finally:
        signals._stop_sweeper()
        reset_settings()
