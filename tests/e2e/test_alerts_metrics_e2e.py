"""Every metric the alert rules and the Grafana dashboard name is really exposed: the stack's
web app (uvicorn) and Celery worker are scraped after real jobs went through, and each name
must be a series of one of them (a counter's `_total`, a histogram's `_bucket`/`_sum`/
`_count`). Also the series added for alerting: the sender label of wanotify_sends_total,
wanotify_jobs_recent and the webhook inbox gauges."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from sqlalchemy import text

from alerting import (
    PROMETHEUS_SERIES,
    alert_rules,
    dashboard_exprs,
    dashboard_variable_metrics,
    metric_names,
)
from conftest import Stack, statuses, wait_for

pytestmark = pytest.mark.slow

SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
            "gauge": ("",), "summary": ("", "_sum", "_count", "_created")}


def _scrape(url: str) -> tuple[set[str], list[Sample]]:
    """Series names a target exposes (also of families that have no sample yet) and its samples."""
    names: set[str] = set()
    samples: list[Sample] = []
    for fam in text_string_to_metric_families(httpx.get(url, timeout=10).text):
        names |= {fam.name + s for s in SUFFIXES.get(fam.type, ("",))}
        names |= {s.name for s in fam.samples}
        samples += fam.samples
    return names, samples


def _value(samples: list[Sample], name: str, **labels: str) -> float:
    got = [s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    assert got, f"{name}{labels} not exposed"
    return sum(got)


def _send_and_wait(stack: Stack, db: Any) -> list[str]:
    with stack.api() as api:
        ids = [
            api.post("/v1/notifications", json={
                "to": "+919811176501", "template": "order_confirmation_v2",
                "params": {"body": ["Rahul Sharma", "ZEC-2026-0501", "₹45,000"]}}).json()["id"],
            api.post("/v1/notifications", json={
                "to": "+919811176502", "template": "otp_code", "kind": "otp",
                "params": {"body": ["483920"]}}).json()["id"],
        ]
    wait_for(lambda: all(s in ("delivered", "read") for s in statuses(db, ids).values()), timeout=60,
             what="both jobs delivered")
    return ids


def test_every_metric_of_the_alerts_and_the_dashboard_is_exposed(stack: Stack, db: Any) -> None:
    _send_and_wait(stack, db)
    worker_url = f"http://127.0.0.1:{stack.env['WANOTIFY_WORKER_METRICS_PORT']}/metrics"

    def worker_ready() -> bool:  # the delivered status is ingested (and observed) after our wait
        names, _ = _scrape(worker_url)
        return "wanotify_accepted_to_delivered_seconds_bucket" in names

    wait_for(worker_ready, what="worker metrics with accepted→delivered")
    worker, worker_samples = _scrape(worker_url)
    web, web_samples = _scrape(f"{stack.web_url}/metrics")
    exposed = worker | web

    wanted: dict[str, set[str]] = {}
    for rule in alert_rules():
        for name in metric_names(rule["expr"]):
            wanted.setdefault(name, set()).add(f"alert {rule['alert']}")
    for expr in dashboard_exprs():
        for name in metric_names(expr):
            wanted.setdefault(name, set()).add("dashboard")
    for name in dashboard_variable_metrics():
        wanted.setdefault(name, set()).add("dashboard variable")
    assert len(wanted) >= 15, sorted(wanted)  # the extraction found the names
    missing = {n: sorted(u) for n, u in wanted.items() if n not in exposed and n not in PROMETHEUS_SERIES}
    assert not missing, f"referenced but not exposed by web or worker: {missing}"

    # The series the per-sender and per-kind alerts group by carry those labels.
    assert _value(worker_samples, "wanotify_sends_total", channel="whatsapp", outcome="done", sender="main") >= 2
    assert _value(worker_samples, "wanotify_enqueue_to_accepted_seconds_count", kind="otp") >= 1
    assert sum(x.value for x in web_samples if x.name == "wanotify_jobs_recent"
               and x.labels == {"kind": "transactional", "status": x.labels["status"]}
               and x.labels["status"] in ("delivered", "read")) >= 1
    assert _value(web_samples, "wanotify_sender_paused", sender="main") == 0


def test_the_inbox_gauges_see_a_body_waiting(stack: Stack, db: Any) -> None:
    """A body stored an hour ago and not ingested (held under a row lock, which ingest skips)
    shows in wanotify_webhook_inbox_pending and _oldest_seconds."""
    with db() as s:
        for _ in range(5):  # a sweeper may ingest it between our commit and our lock: again
            with db() as ins:
                row_id = ins.execute(text("INSERT INTO webhook_inbox (body, received_at)"
                                          " VALUES ('{}', now() - interval '1 hour') RETURNING id")).scalar_one()
            if s.execute(text("SELECT id FROM webhook_inbox WHERE id = :id AND processed_at IS NULL"
                              " FOR UPDATE"), {"id": row_id}).scalar_one_or_none() is not None:
                break
        else:
            raise AssertionError("every body was ingested before the test could hold it")
        _, samples = _scrape(f"{stack.web_url}/metrics")
        assert _value(samples, "wanotify_webhook_inbox_pending") >= 1
        assert _value(samples, "wanotify_webhook_inbox_oldest_seconds") >= 3600
        s.execute(text("DELETE FROM webhook_inbox WHERE id = :id"), {"id": row_id})
