"""Prometheus metrics: the counters, gauges and histograms the code updates (one registry
per process; workers expose theirs on a port). What is read at scrape time from Redis and
Postgres is in ``ops.collectors``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
    start_http_server,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector

JOBS_ACCEPTED = Counter("wanotify_jobs_accepted_total", "Jobs accepted for delivery", ["kind", "source"])
JOBS_REJECTED = Counter("wanotify_jobs_rejected_total", "Jobs refused by validation", ["source"])
WEBHOOKS = Counter("wanotify_webhooks_total", "Webhook POSTs received", ["result"])
SENDS = Counter(
    "wanotify_sends_total", "Provider calls by channel, outcome, error code and sender",
    ["channel", "outcome", "error_code", "sender"],
)
ENQUEUE_TO_ACCEPTED = Histogram(
    "wanotify_enqueue_to_accepted_seconds", "From enqueue to Meta accepting the message", ["kind"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800),
)
ACCEPTED_TO_DELIVERED = Histogram(
    "wanotify_accepted_to_delivered_seconds", "From accepted to the delivered status",
    buckets=(0.5, 1, 2, 5, 10, 30, 60, 300, 1800, 7200),
)
SENDER_PAUSES = Counter(
    "wanotify_sender_pauses_total", "Senders paused by an account-level error (reason: token, account)",
    ["sender", "reason"],
)
TOKEN_ROTATIONS = Counter(
    "wanotify_token_rotations_total", "Senders resumed by themselves because a new access token appeared",
    ["sender"],
)
LATE_SENDS = Counter(
    "wanotify_sends_late_total",
    "Sends not fired because the gate reached them later after their slot than pacing allows"
    " (each is held for a new slot at once; a steady rate means the workers are overloaded)",
    ["sender"],
)
DISPATCH_IN_FLIGHT = Gauge(
    "wanotify_dispatch_in_flight",
    "Jobs this worker process released and has not settled yet (at most WANOTIFY_MAX_IN_FLIGHT)",
    multiprocess_mode="livesum",
)
WEBHOOK_LAG = Histogram(
    "wanotify_webhook_ingest_lag_seconds", "From receiving a webhook body to ingesting it",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60, 300),
)


def mark_process_dead(pid: int) -> None:
    """A prefork child is gone: drop its live gauges from the shared directory."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(pid)


# The multiprocess directory of a child that is not one of this worker's pool processes
# (the intake process beside a threads-pool worker): its samples are added to this worker's.
_CHILD_DIRS: list[str] = []


def serve_child_metrics(path: str) -> None:
    """This worker's endpoint also shows what a child writes to ``path`` (its
    ``PROMETHEUS_MULTIPROC_DIR``), summed into the same series."""
    _CHILD_DIRS.append(path)


class _Summed:
    """Families of several collectors as one: samples of one series added together (a
    counter counted partly here, partly in the child), ``_created`` kept from the first."""

    def __init__(self, *collectors: Any):
        self.collectors = collectors

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        for collector in self.collectors:
            for fam in collector.collect():
                have = families.get(fam.name)
                if have is None:
                    families[fam.name] = Metric(fam.name, fam.documentation, fam.type, fam.unit)
                    families[fam.name].samples = list(fam.samples)
                    continue
                index = {(x.name, tuple(sorted(x.labels.items()))): i for i, x in enumerate(have.samples)}
                for x in fam.samples:
                    i = index.get((x.name, tuple(sorted(x.labels.items()))))
                    if i is None:
                        have.samples.append(x)
                    elif not x.name.endswith("_created"):
                        have.samples[i] = have.samples[i]._replace(value=have.samples[i].value + x.value)
        yield from families.values()


def start_worker_metrics(port: int, addr: str = "127.0.0.1") -> int | None:
    """Serve this worker's metrics (sends, latencies, ingest lag) on the first free port
    from ``port`` (several workers on one host take consecutive ports)."""
    registry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # prefork: children write, we aggregate
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
    elif _CHILD_DIRS:  # this process's own registry, plus its intake child's files
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Summed(REGISTRY, *(MultiProcessCollector(None, path=d) for d in _CHILD_DIRS)))
    for p in range(port, port + 32):
        try:
            start_http_server(p, addr=addr, registry=registry)
            return p
        except OSError:
            continue
    return None
