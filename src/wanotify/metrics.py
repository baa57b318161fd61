"""Prometheus metrics (one registry per process; workers expose theirs on a port)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

JOBS_ACCEPTED = Counter("wanotify_jobs_accepted_total", "Jobs accepted for delivery", ["kind", "source"])
JOBS_REJECTED = Counter("wanotify_jobs_rejected_total", "Jobs refused by validation", ["source"])
WEBHOOKS = Counter("wanotify_webhooks_total", "Webhook POSTs received", ["result"])
API_LATENCY = Histogram(
    "wanotify_api_request_seconds",
    "API request latency",
    ["route"],
    buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
