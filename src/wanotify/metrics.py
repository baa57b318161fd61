"""Prometheus metrics (one registry per process; workers expose theirs on a port)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric

JOBS_ACCEPTED = Counter("wanotify_jobs_accepted_total", "Jobs accepted for delivery", ["kind", "source"])
JOBS_REJECTED = Counter("wanotify_jobs_rejected_total", "Jobs refused by validation", ["source"])
WEBHOOKS = Counter("wanotify_webhooks_total", "Webhook POSTs received", ["result"])
API_LATENCY = Histogram(
    "wanotify_api_request_seconds",
    "API request latency",
    ["route"],
    buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)


class LaneCollector:
    """Pacing-queue depth and wait per sender, read from Redis at scrape time."""

    def collect(self) -> Iterator[Metric]:
        from wanotify.config import get_settings
        from wanotify.intake import get_redis
        from wanotify.throttle import Lanes

        depth = GaugeMetricFamily(
            "wanotify_queue_depth", "Jobs waiting in a sender's pacing lane", labels=["sender", "lane"]
        )
        wait = GaugeMetricFamily(
            "wanotify_queue_wait_seconds",
            "Age of the oldest job waiting in a sender's pacing lane",
            labels=["sender", "lane"],
        )
        held = GaugeMetricFamily(
            "wanotify_queue_held", "Jobs held (pair limit, retry, daily tier)", labels=["sender"]
        )
        inflight = GaugeMetricFamily(
            "wanotify_queue_inflight", "Jobs released and not yet settled", labels=["sender"]
        )
        paused = GaugeMetricFamily(
            "wanotify_sender_paused", "1 while a sender is paused by an account-level error",
            labels=["sender"],
        )
        try:
            lanes = Lanes(get_redis())
            for s in get_settings().sender_list:
                d = lanes.depths(s.name)
                for lane in ("otp", "transactional", "marketing"):
                    depth.add_metric([s.name, lane], d[lane])
                    wait.add_metric([s.name, lane], d["wait_s"][lane])
                held.add_metric([s.name], d["held"])
                inflight.add_metric([s.name], d["inflight"])
                paused.add_metric([s.name], 1.0 if lanes.paused(s.name) else 0.0)
        except Exception:  # Redis away: /readyz says so; metrics stay up
            return
        yield from (depth, wait, held, inflight, paused)


_registered = False


def register_collectors() -> None:
    global _registered
    if not _registered:
        REGISTRY.register(LaneCollector())
        _registered = True
