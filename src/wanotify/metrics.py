"""Prometheus metrics: the counters, gauges and histograms the code updates (one registry
per process; workers expose theirs on a port). What is read at scrape time from Redis and
Postgres is in ``ops.collectors``."""

from __future__ import annotations

import os

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
    start_http_server,
)
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


def start_worker_metrics(port: int, addr: str = "127.0.0.1") -> int | None:
    """Serve this worker's metrics (sends, latencies, ingest lag) on the first free port
    from ``port`` (several workers on one host take consecutive ports)."""
    registry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # prefork: children write, we aggregate
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
    for p in range(port, port + 32):
        try:
            start_http_server(p, addr=addr, registry=registry)
            return p
        except OSError:
            continue
    return None
