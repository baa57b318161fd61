"""What ``wanotify bench throughput`` measures: the senders and jobs it uses, the figures of
a run, its sizes, and the baselines it runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psutil

SENDERS = 4
SENDER_MPS = 10_000  # far above what this machine can send: pacing never caps the figure


def make_senders(n: int = SENDERS) -> list[dict[str, Any]]:
    return [
        {"name": f"tp{i}", "phone_number_id": f"9100000{i:05d}", "waba_id": f"8100000{i:05d}",
         "access_token": f"EAAGtp{i}token", "mps": SENDER_MPS, "pair_interval_s": 0.001,
         "pair_burst": 100}
        for i in range(n)
    ]


def job_bodies(n: int, senders: list[dict[str, Any]], offset: int = 0) -> list[dict[str, Any]]:
    return [
        {"to": f"+9198{(offset + i) % 100_000_000:08d}", "template": "order_confirmation_v2",
         "params": {"body": ["Rahul Sharma", f"ZEC-{offset + i:07d}", "₹45,000"]},
         "sender": senders[i % len(senders)]["name"]}
        for i in range(n)
    ]


@dataclass
class Drain:
    """A drain measured from the sandbox's arrival log (or a completion counter)."""

    name: str
    n: int
    rate: float | None = None  # messages/s between 5% and 95% of arrivals
    wall_s: float | None = None
    cpu_per_1000: float | None = None  # worker + broker CPU seconds per 1,000 messages
    db_cpu_per_1000: float | None = None
    rss_mb: float | None = None
    notes: list[str] = field(default_factory=list)


def steady_rate(times: list[float]) -> float | None:
    """Messages per second between the 5th and the 95th percentile of arrival times."""
    if len(times) < 20:
        return None
    s = sorted(times)
    lo, hi = int(len(s) * 0.05), int(len(s) * 0.95)
    span = s[hi] - s[lo]
    return (hi - lo) / span if span > 0 else None


def rss_mb(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            root = psutil.Process(pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        best = 0.0
        for p in procs:
            try:
                best = max(best, p.memory_info().rss / 2**20)
            except psutil.NoSuchProcess:
                pass
        total = max(total, best)
    return total


@dataclass
class Enqueue:
    http_p50_ms: float | None = None
    http_p99_ms: float | None = None
    http_rate: float | None = None
    paced_rate: float | None = None  # requests/s of the open-loop probe
    paced_p50_ms: float | None = None
    paced_p99_ms: float | None = None
    batch_rate: float | None = None
    bulk_rate: float | None = None


@dataclass
class Ingest:
    name: str
    events: int
    rate: float | None = None  # status events/s from the first POST to the last row
    p50_ms: float | None = None
    p99_ms: float | None = None
    paced_rate: float | None = None  # POSTs/s of the open-loop probe
    paced_p50_ms: float | None = None
    paced_p99_ms: float | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class Sizes:
    send_jobs: int = 20_000
    noop_prefill: int = 8_000
    window_s: float = 6.0
    http_jobs: int = 6_000
    batch_jobs: int = 20_000
    bulk_jobs: int = 20_000
    ingest_messages: int = 10_000
    ingest_single_messages: int = 3_000
    rss_sends: int = 100_000

    @classmethod
    def quick(cls) -> Sizes:
        return cls(send_jobs=1_500, noop_prefill=5_000, window_s=1.5, http_jobs=600, batch_jobs=2_000,
                   bulk_jobs=2_000, ingest_messages=500, ingest_single_messages=200, rss_sends=2_000)


@dataclass
class RunFigures:
    drains: dict[str, Drain] = field(default_factory=dict)
    enqueue: Enqueue = field(default_factory=Enqueue)
    ingest: dict[str, Ingest] = field(default_factory=dict)


BASELINES: list[tuple[str, str, int, dict[float, int]]] = [
    # task, pool, concurrency, prefill per latency
    # (enough for a window at twice the rates measured here, so the queue never runs dry)
    ("naive_send", "prefork", 2, {0.0: 1_200, 50.0: 600}),
    ("pooled_send", "prefork", 2, {0.0: 8_000, 50.0: 800}),
    ("pooled_send", "threads", 32, {0.0: 8_000, 50.0: 8_000}),
]
