"""Worker wiring that must hold when Celery's consumer reconnects after losing the broker."""

from __future__ import annotations

import os
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


def test_a_child_process_counters_are_summed_into_the_workers_series(tmp_path: Any) -> None:
    """The intake child writes its counters to a multiprocess directory; the worker's endpoint
    shows one series per label set, the two processes' counts added (not two families)."""
    import subprocess
    import sys

    from prometheus_client import CollectorRegistry, Counter, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    from wanotify.metrics import _Summed

    child = ("from prometheus_client import Counter; c = Counter('wanotify_jobs_accepted_total', 'x',"
             " ['kind', 'source']); c.labels('otp', 'celery').inc(3); c.labels('marketing', 'celery').inc(2)")
    subprocess.run([sys.executable, "-c", child], check=True,
                   env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)})
    own = CollectorRegistry()
    c = Counter("wanotify_jobs_accepted_total", "Jobs accepted", ["kind", "source"], registry=own)
    c.labels("otp", "celery").inc(4)
    c.labels("otp", "api").inc(1)
    merged = CollectorRegistry(auto_describe=False)
    merged.register(_Summed(own, MultiProcessCollector(None, path=str(tmp_path))))
    text = generate_latest(merged).decode()
    assert text.count("# TYPE wanotify_jobs_accepted_total counter") == 1
    lines = {ln.rsplit(" ", 1)[0]: float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines()
             if ln.startswith("wanotify_jobs_accepted_total{")}
    assert lines == {
        'wanotify_jobs_accepted_total{kind="otp",source="celery"}': 7.0,
        'wanotify_jobs_accepted_total{kind="otp",source="api"}': 1.0,
        'wanotify_jobs_accepted_total{kind="marketing",source="celery"}': 2.0,
    }


@pytest.mark.parametrize(("queues", "pool", "warmed"), [
    ({"otp", "transactional", "bulk", "fallback", "ingest"}, "threads", True),
    ({"bulk"}, "threads", True),
    (set(), "threads", False),  # an intake-only worker (notify deselected by its consumer step)
    ({"ingest"}, "threads", False),  # never sends
    ({"otp", "bulk"}, "solo", False),  # not the thread pool: the runtime is built where tasks run
])
def test_the_send_runtime_is_built_when_a_sending_worker_is_ready(
        monkeypatch: pytest.MonkeyPatch, queues: set[str], pool: str, warmed: bool) -> None:
    from celery.concurrency.solo import TaskPool as SoloPool
    from celery.concurrency.thread import TaskPool as ThreadPool

    built: list[bool] = []
    monkeypatch.setattr(signals, "get_runtime", lambda: built.append(True))

    class Queues:
        consume_from = {q: object() for q in queues}

    class App:
        class amqp:  # Celery's attribute name
            queues = Queues()

    class Consumer:
        app = App()

    c = Consumer()
    cls = ThreadPool if pool == "threads" else SoloPool
    c.pool = cls.__new__(cls)  # type: ignore[attr-defined]  # (the instance's class is what counts)
    signals._warm_runtime(sender=c)
    assert built == ([True] if warmed else [])
