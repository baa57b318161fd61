"""The send path: wanotify's workers draining a committed backlog into the sandbox, and the
textbook one-task-per-message Celery baselines (a no-op, the naive and the pooled send)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import psutil
import redis as redis_lib

from wanotify.devtools.bench.common import (
    BenchEnv,
    CpuMeter,
    last_seq,
    sandbox_log,
    server_pid,
    wait_until,
)
from wanotify.devtools.bench.throughput.figures import Drain, job_bodies, rss_mb, steady_rate
from wanotify.devtools.procs import wait_worker
from wanotify.intake.service import notify_many
from wanotify.pacing.lanes import prefix
from wanotify.queues.enqueue import dispatch as kick
from wanotify.redis import get_redis


def _pg_pids() -> list[int]:
    out = []
    for p in psutil.process_iter(["name"]):
        if (p.info.get("name") or "").startswith("postgres"):
            out.append(p.pid)
    return out


class PgCpu:
    """CPU used by every postgres process (backends come and go; sum what is seen)."""

    def __init__(self) -> None:
        self.start = self._now()

    @staticmethod
    def _now() -> dict[int, float]:
        out: dict[int, float] = {}
        for pid in _pg_pids():
            try:
                t = psutil.Process(pid).cpu_times()
                out[pid] = t.user + t.system
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        return out

    def used(self) -> float:
        now = self._now()
        return sum(v - self.start.get(pid, 0.0) for pid, v in now.items())


def run_wanotify_send(env: BenchEnv, sb_url: str, senders: list[dict[str, Any]], n: int,
                      workers: int = 1, timeout: float = 300.0) -> Drain:
    """Jobs committed and waiting; then the workers start and drain them into the sandbox."""
    r = get_redis()
    for s in senders:
        r.set(prefix(s["name"]) + "owner", "bench-hold", px=600_000)
    start_seq = last_seq(sb_url)
    bodies = job_bodies(n, senders, offset=start_seq)
    for k in range(0, n, 2000):
        for acc in notify_many(bodies[k : k + 2000]):
            if not hasattr(acc, "id"):
                raise RuntimeError(f"bench job refused: {acc}")
    procs = []
    for i in range(workers):
        node = f"tp{i}-{uuid.uuid4().hex[:4]}"
        procs.append(env.start(f"worker{i}", ["worker", "-n", f"{node}@%h"],
                               {"WANOTIFY_WORKER_METRICS_PORT": "0"}))
    for p in procs:
        wait_worker(env.redis_url, p, timeout=60, node=p.args[-1].split("@")[0])
    time.sleep(1.0)
    broker = server_pid(int(env.redis_url.split(":")[-1].split("/")[0]))
    meter = CpuMeter([p.pid for p in procs] + ([broker] if broker else []))
    pg = PgCpu()
    t0 = time.time()
    for s in senders:
        r.delete(prefix(s["name"]) + "owner")
        kick(s["name"], "transactional")
    ok = wait_until(lambda: last_seq(sb_url) - start_seq >= n, timeout, 0.1)
    wall = time.time() - t0
    cpu, db_cpu = meter.used(), pg.used()
    mem = rss_mb([p.pid for p in procs])
    env.stop(procs)
    log = [m for m in sandbox_log(sb_url, after=start_seq) if m["code"] == 0]
    res = Drain("wanotify", n, steady_rate([m["t"] for m in log]), wall,
                cpu / n * 1000, db_cpu / n * 1000, mem)
    if not ok:
        res.notes.append(f"only {len(log)} of {n} sent within {timeout:.0f}s")
    return res


# --- the textbook Celery baselines ------------------------------------------------------


def run_celery_baseline(env: BenchEnv, sb_url: str, senders: list[dict[str, Any]], task: str,
                        pool: str, concurrency: int, prefill: int, window_s: float = 6.0) -> Drain:
    """Pre-fill the textbook queue, start its worker, and measure a steady window."""
    # In-function: the textbook module reads the settings (broker, database) when it is
    # imported, so only once bench_env has set them.
    from wanotify.devtools.bench.textbook import COUNTER, QUEUE, celery  # noqa: PLC0415 (see above)

    r = redis_lib.Redis.from_url(env.redis_url)
    r.delete(QUEUE, COUNTER)
    s = senders[0]
    url = f"{sb_url}/v23.0/{s['phone_number_id']}/messages"
    with celery.producer_or_acquire() as producer:
        for i in range(prefill):
            if task == "noop":
                celery.send_task("textbook.noop", producer=producer)
            else:
                body = job_bodies(1, senders, offset=i)[0]
                payload = {"messaging_product": "whatsapp", "to": body["to"].lstrip("+"), "type": "text",
                           "text": {"body": f"Order {body['params']['body'][1]} confirmed"}}
                celery.send_task(f"textbook.{task}", args=[url, s["access_token"], payload], producer=producer)
    start_seq = last_seq(sb_url)

    def progress() -> int:
        if task == "noop":
            return int(r.get(COUNTER) or 0)
        return last_seq(sb_url) - start_seq

    node = f"tb-{uuid.uuid4().hex[:6]}"
    proc = env.start(f"textbook-{task}", ["bench", "textbook-worker", "--pool", pool,
                                          "--concurrency", str(concurrency), "--name", node])
    name = f"{task} ({pool}, c={concurrency})"
    try:
        wait_worker(env.redis_url, proc, timeout=60, node=node)
        if not wait_until(lambda: progress() > 0, 30, 0.05):
            return Drain(name, 0, notes=["nothing completed"])
        time.sleep(1.0)
        broker = server_pid(int(env.redis_url.split(":")[-1].split("/")[0]))
        meter = CpuMeter([proc.pid] + ([broker] if broker else []))
        c1, t1 = progress(), time.monotonic()
        time.sleep(window_s)
        c2, t2 = progress(), time.monotonic()
        cpu = meter.used()
        mem = rss_mb([proc.pid])
        res = Drain(name, c2 - c1, (c2 - c1) / (t2 - t1), t2 - t1,
                    cpu / max(1, c2 - c1) * 1000, None, mem)
        if r.llen(QUEUE) == 0:
            res.notes.append("the queue ran dry during the window: the rate is a lower bound")
        return res
    finally:
        env.stop([proc])
        r.delete(QUEUE, COUNTER)
