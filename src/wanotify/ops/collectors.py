"""Metrics read at scrape time: pacing lanes and paused senders (Redis), dead letters, the
webhook inbox backlog, the last hour's jobs by outcome and campaign progress (Postgres). ``register_collectors`` adds them to the process's registry
(the web app does; workers expose only their own counters)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy import text

from wanotify.campaigns.records import CampaignError
from wanotify.campaigns.service import status
from wanotify.config import get_settings
from wanotify.core.kinds import KINDS
from wanotify.db import session_scope
from wanotify.pacing.lanes import Lanes
from wanotify.queues.names import QUEUES
from wanotify.redis import get_redis


class LaneCollector:
    """Pacing-queue depth and wait per sender, read from Redis at scrape time."""

    def collect(self) -> Iterator[Metric]:
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
        celery_depth = GaugeMetricFamily(
            "wanotify_celery_queue_depth", "Messages waiting in a Celery queue", labels=["queue"]
        )
        paused = GaugeMetricFamily(
            "wanotify_sender_paused", "1 while a sender is paused by an account-level error",
            labels=["sender"],
        )
        token_invalid = GaugeMetricFamily(
            "wanotify_sender_token_invalid",
            "1 while a sender is paused because Meta refused its access token", labels=["sender"],
        )
        try:
            lanes = Lanes(get_redis())
            for s in get_settings().sender_list:
                d = lanes.depths(s.name)
                for lane in KINDS:
                    depth.add_metric([s.name, lane], d[lane])
                    wait.add_metric([s.name, lane], d["wait_s"][lane])
                held.add_metric([s.name], d["held"])
                inflight.add_metric([s.name], d["inflight"])
                p = lanes.paused(s.name)
                paused.add_metric([s.name], 1.0 if p else 0.0)
                token_invalid.add_metric([s.name], 1.0 if p and p.get("kind") == "token" else 0.0)

            r = get_redis()
            for q in QUEUES:
                celery_depth.add_metric([q], float(r.llen(q)))
        except Exception:  # Redis away: /readyz says so; metrics stay up
            return
        yield from (depth, wait, held, inflight, paused, token_invalid, celery_depth)


class DeadLetterCollector:
    """Dead letters waiting for a decision (read from Postgres at scrape time)."""

    def collect(self) -> Iterator[Metric]:
        g = GaugeMetricFamily("wanotify_dead_letters", "Dead letters not yet replayed")
        try:
            with session_scope() as s:
                n = s.execute(text("SELECT count(*) FROM dead_letters WHERE replayed_at IS NULL")).scalar_one()
        except Exception:
            return
        g.add_metric([], float(n))
        yield g


INBOX_SQL = text(
    "SELECT count(*), coalesce(extract(epoch FROM now() - min(received_at)), 0)"
    " FROM webhook_inbox WHERE processed_at IS NULL"  # the partial index ix_webhook_inbox_pending
)

RECENT_JOBS_SQL = text(
    "SELECT kind, status, count(*) FROM notifications"
    " WHERE kind = ANY(:kinds) AND created_at > now() - interval '1 hour' AND anonymised_at IS NULL"
    " GROUP BY kind, status"  # a range of ix_notifications_retention (kind, created_at)
)


class InboxCollector:
    """Webhook bodies stored and not yet ingested: how many, and how long the oldest has
    waited. Unlike the ingest-lag histogram (observed by workers when they ingest), this
    grows while no worker ingests at all."""

    def collect(self) -> Iterator[Metric]:
        pending = GaugeMetricFamily("wanotify_webhook_inbox_pending", "Webhook bodies stored, not yet ingested")
        oldest = GaugeMetricFamily("wanotify_webhook_inbox_oldest_seconds",
                                   "Age of the oldest webhook body not yet ingested (0 when none waits)")
        try:
            with session_scope() as s:
                n, age = s.execute(INBOX_SQL).one()
        except Exception:
            return
        pending.add_metric([], float(n))
        oldest.add_metric([], float(age))
        yield from (pending, oldest)


class RecentJobsCollector:
    """Jobs created in the last hour, by kind and current status (their outcomes so far)."""

    def collect(self) -> Iterator[Metric]:
        g = GaugeMetricFamily("wanotify_jobs_recent", "Jobs created in the last hour, by kind and current status",
                              labels=["kind", "status"])
        try:
            with session_scope() as s:
                rows = s.execute(RECENT_JOBS_SQL, {"kinds": list(KINDS)}).all()
        except Exception:
            return
        for kind, st, n in rows:
            g.add_metric([str(kind), str(st)], float(n))
        yield g


class CampaignCollector:
    """Progress of active campaigns (and those finished in the last day), from Postgres at
    scrape time: counts by status, read rate, billable messages by pricing category."""

    MAX_CAMPAIGNS = 50

    def collect(self) -> Iterator[Metric]:
        labels = ["campaign", "name"]
        counts = GaugeMetricFamily("wanotify_campaign_messages", "Campaign recipients by outcome",
                                   labels=[*labels, "status"])
        state = GaugeMetricFamily("wanotify_campaign_state", "1 for the campaign's current state",
                                  labels=[*labels, "state"])
        read = GaugeMetricFamily("wanotify_campaign_read_rate", "Read / (delivered + read)", labels=labels)
        billable = GaugeMetricFamily("wanotify_campaign_billable_messages",
                                     "Billable messages by pricing category (from Meta's webhooks)",
                                     labels=[*labels, "category"])
        try:
            with session_scope() as s:
                ids = s.execute(text(
                    "SELECT id FROM campaigns WHERE status IN ('scheduled', 'running', 'paused')"
                    " OR finished_at > now() - interval '1 day' ORDER BY updated_at DESC LIMIT :n"),
                    {"n": self.MAX_CAMPAIGNS}).scalars().all()
            for cid in ids:
                try:
                    st = status(cid)
                except CampaignError:
                    continue
                lv = [st["id"], st["name"]]
                for k, v in st["counts"].items():
                    counts.add_metric([*lv, k], float(v))
                state.add_metric([*lv, st["status"]], 1.0)
                if st["read_rate"] is not None:
                    read.add_metric(lv, float(st["read_rate"]))
                for cat, n in st["cost"]["billable_by_category"].items():
                    billable.add_metric([*lv, str(cat)], float(n))
        except Exception:
            return
        yield from (counts, state, read, billable)


_registered = False


def register_collectors() -> None:
    global _registered
    if not _registered:
        REGISTRY.register(LaneCollector())
        REGISTRY.register(DeadLetterCollector())
        REGISTRY.register(InboxCollector())
        REGISTRY.register(RecentJobsCollector())
        REGISTRY.register(CampaignCollector())
        _registered = True


