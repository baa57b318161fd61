"""`wanotify worker` with its intake in a child process (WANOTIFY_INTAKE_PROCESS=true) and
without (the default), as users start it: real Celery workers, Redis, Postgres, the sandbox."""

from __future__ import annotations

import os
import signal
import time
import uuid
from typing import Any

import httpx
import psutil
import pytest
import redis
from celery import Celery
from sqlalchemy import text

from conftest import Stack, wait_for
from wanotify.devtools.procs import Proc, free_port, wait_worker
from wanotify.worker.intake_process import INTAKE_BULK_NICE, INTAKE_NICE

pytestmark = pytest.mark.slow

ORDER = {"template": "order_confirmation_v2", "language": "en",
         "params": {"body": ["Rahul Sharma", "ZEC-2026-0042", "₹45,000"]}, "kind": "transactional"}


def _intake_child(parent: Proc) -> psutil.Process:
    def found() -> psutil.Process | None:
        kids = [c for c in psutil.Process(parent.pid).children()
                if "--queues" in c.cmdline() and "notify" in c.cmdline()]
        return kids[0] if kids else None

    child: psutil.Process = wait_for(found, timeout=30, what="the intake child process")
    return child


def _publish(broker: str, bodies: list[dict[str, Any]]) -> None:
    app = Celery(broker=broker)
    try:
        for b in bodies:
            app.send_task("wanotify.notify", args=[b], queue="notify")
    finally:
        app.close()


def _stored(db: Any, prefix: str, n: int) -> Any:
    def done() -> int | None:
        with db() as s:
            got = s.execute(text("SELECT count(*) FROM notifications WHERE idempotency_key LIKE :k"),
                            {"k": f"{prefix}%"}).scalar_one()
        return got if got >= n else None

    return done


def _private_broker(stack: Stack, db: int) -> str:
    """A Redis db of its own for a worker of this module. It shares the stack's Postgres, so
    its sweeper is kept from running (``_start``): it would push other tests' open jobs into
    this db's lanes and send them from here."""
    base, _, _ = stack.env["WANOTIFY_REDIS_URL"].rpartition("/")
    url = f"{base}/{db}"
    redis.Redis.from_url(url).flushdb()
    return url


def _start(stack: Stack, name: str, extra: dict[str, str] | None = None) -> tuple[Proc, str]:
    node = f"{name}-{uuid.uuid4().hex[:6]}"
    env = {**stack.env, "WANOTIFY_SWEEP_INTERVAL_S": "3600", **(extra or {})}
    p = Proc(name, ["worker", "--concurrency", "4", "-n", f"{node}@%h"], env, stack.logdir / f"{name}.log")
    wait_worker(env["WANOTIFY_REDIS_URL"], p, timeout=40, node=node)
    return p, node


def test_worker_runs_its_intake_in_a_child_that_follows_it(stack: Stack, db: Any) -> None:
    """The child consumes `notify` (at a lower priority, under a node name of its own) while the
    parent consumes the work queues; a child that dies is started again and the queue is
    still taken; the parent SIGKILLed takes the child with it (no orphan holding messages)."""
    broker = _private_broker(stack, 12)  # only this worker and its child take what is published
    metrics_port = free_port()
    p, node = _start(stack, "worker-intake", {"WANOTIFY_WORKER_METRICS_PORT": str(metrics_port),
                                              "WANOTIFY_REDIS_URL": broker, "WANOTIFY_INTAKE_PROCESS": "true"})
    try:
        child = _intake_child(p)
        # The child runs at nice +5 (INTAKE_NICE), its bulk batch thread at +10; the consumer
        # that receives the messages and the OTP thread stay at +5.
        base_nice = psutil.Process(p.pid).nice()
        assert child.nice() == base_nice + INTAKE_NICE

        def nices() -> list[int] | None:
            got = sorted(os.getpriority(os.PRIO_PROCESS, t.id) for t in child.threads())
            return got if base_nice + INTAKE_NICE + INTAKE_BULK_NICE in got else None

        got = wait_for(nices, timeout=30, what="the intake batch thread lowered once more")
        assert got.count(base_nice + INTAKE_NICE + INTAKE_BULK_NICE) == 1
        assert got[0] == base_nice + INTAKE_NICE
        wait_worker(broker, None, timeout=40, node=f"intake-{node}")
        app = Celery(broker=broker)
        try:
            queues = app.control.inspect(destination=[f"{node}@{os.uname().nodename}",
                                                      f"intake-{node}@{os.uname().nodename}"],
                                         timeout=5).active_queues() or {}
        finally:
            app.close()
        by_node = {k.split("@")[0]: {q["name"] for q in v} for k, v in queues.items()}
        assert by_node[f"intake-{node}"] == {"notify"}
        assert "notify" not in by_node[node] and {"otp", "transactional", "bulk"} <= by_node[node]

        run = uuid.uuid4().hex[:8]
        # The child killed: started again (after ~1 s), and what is published meanwhile is
        # stored once each.
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        _publish(broker, [{**ORDER, "to": f"+919876{i:04d}10", "idempotency_key": f"ip-{run}-{i}"}
                         for i in range(50)])
        again = wait_for(lambda: (c := _intake_child(p)).pid != child.pid and c, timeout=30,
                         what="a new intake child")
        wait_for(_stored(db, f"ip-{run}-", 50), timeout=60, what="the jobs stored")
        with db() as s:
            assert s.execute(text("SELECT count(*) FROM notifications WHERE idempotency_key LIKE :k"),
                             {"k": f"ip-{run}-%"}).scalar_one() == 50

        # The child's counters are on the worker's own endpoint (it serves no port itself),
        # summed with the worker's: the 50 jobs above, stored by the second child.
        with httpx.Client(timeout=10) as c:
            body = c.get(f"http://127.0.0.1:{metrics_port}/metrics").text
        accepted = [float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
                    if line.startswith('wanotify_jobs_accepted_total{kind="transactional",source="celery"}')]
        assert len(accepted) == 1, "one series, not one per process"
        assert body.count("# TYPE wanotify_jobs_accepted_total counter") == 1
        assert accepted[0] == 50

        os.kill(p.pid, signal.SIGKILL)  # the parent alone, not its process group
        p.popen.wait(10)
        again.wait(30)  # PR_SET_PDEATHSIG: SIGTERM, a warm shutdown
        assert not again.is_running() or again.status() == psutil.STATUS_ZOMBIE
    finally:
        p.stop()


def test_worker_with_intake_inline_stores_the_notify_queue_itself(stack: Stack, db: Any) -> None:
    """WANOTIFY_INTAKE_PROCESS=false (the default): no child; the worker consumes `notify` itself and stores
    what a producer publishes; SIGTERM stops it cleanly. It has a broker of its own (another
    Redis db), so the jobs it is shown to store cannot have been taken by the stack's worker."""
    broker = _private_broker(stack, 13)
    p, node = _start(stack, "worker-inline", {"WANOTIFY_INTAKE_PROCESS": "false", "WANOTIFY_REDIS_URL": broker})
    try:
        time.sleep(1.0)
        assert all("notify" not in c.cmdline() for c in psutil.Process(p.pid).children())
        app = Celery(broker=broker)
        try:
            queues = app.control.inspect(timeout=5).active_queues() or {}
        finally:
            app.close()
        assert list(queues) == [f"{node}@{os.uname().nodename}"]  # one node: no intake child
        assert "notify" in {q["name"] for v in queues.values() for q in v}
        run = uuid.uuid4().hex[:8]
        _publish(broker, [{**ORDER, "to": f"+919875{i:04d}10", "idempotency_key": f"il-{run}-{i}"}
                          for i in range(20)])
        wait_for(_stored(db, f"il-{run}-", 20), timeout=60, what="the jobs stored")
    finally:
        p.stop()
    assert p.popen.returncode == 0
