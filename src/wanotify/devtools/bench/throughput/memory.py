"""A worker's RSS over a long drain, fed while it sends."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

from wanotify.devtools.bench.common import BenchEnv, last_seq, wait_until
from wanotify.devtools.bench.throughput.figures import job_bodies, rss_mb
from wanotify.devtools.procs import wait_worker
from wanotify.intake.service import notify_many


def run_rss(env: BenchEnv, sb_url: str, senders: list[dict[str, Any]], total: int,
            every: int = 10_000) -> list[tuple[int, float]]:
    """One worker sends ``total`` messages (fed while it drains); its RSS every ``every``."""
    node = f"rss-{uuid.uuid4().hex[:4]}"
    proc = env.start("worker-rss", ["worker", "-n", f"{node}@%h"], {"WANOTIFY_WORKER_METRICS_PORT": "0"})
    wait_worker(env.redis_url, proc, timeout=60, node=node)
    start_seq = last_seq(sb_url)
    failed: list[str] = []

    def feed() -> None:
        for k in range(0, total, 5000):
            # Keep the backlog short: the worker, not the lanes, is what is measured.
            wait_until(lambda k=k: last_seq(sb_url) - start_seq >= k - 15_000, 600, 0.2)
            for acc in notify_many(job_bodies(min(5000, total - k), senders, offset=start_seq + k)):
                if not hasattr(acc, "id"):
                    failed.append(str(acc))

    t = threading.Thread(target=feed, daemon=True)
    t.start()
    samples: list[tuple[int, float]] = []
    mark = every
    deadline = time.monotonic() + max(600.0, total / 100)
    while mark <= total and time.monotonic() < deadline:
        if last_seq(sb_url) - start_seq >= mark:
            samples.append((mark, rss_mb([proc.pid])))
            mark += every
        else:
            time.sleep(0.2)
    t.join(5)
    env.stop([proc])
    if failed:
        raise RuntimeError(f"bench jobs refused: {failed[:3]}")
    return samples
