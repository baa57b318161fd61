"""Faults around the send path: Redis losing everything, a crash between commit and push."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import text

from conftest import Stack, statuses, wait_for

pytestmark = pytest.mark.slow

ORDER = {"template": "order_confirmation_v2", "sender": "backup",
         "params": {"body": ["Rahul Sharma", "ZEC-2026-0042", "₹45,000"]}}


def test_redis_losing_its_data_loses_no_job(stack: Stack, db: Any, redis_client: Any) -> None:
    """A Redis restart without persistence: lanes, leases and queued Celery messages are gone.
    Postgres still has every job; the sweeper pushes them again and they are sent once."""
    # Hold the number so the jobs are still waiting in Redis when it loses everything.
    redis_client.set("wn:{backup}:owner", "test-hold", px=60_000)
    with stack.api() as api:
        r = api.post("/v1/notifications:batch",
                     json=[{**ORDER, "to": f"+919811{i:02d}5555"} for i in range(20)])
        ids = [x["id"] for x in r.json()["results"]]
    assert redis_client.llen("wn:{backup}:q:t") == 20
    # What a restart without persistence does: the data is gone and every client reconnects.
    redis_client.flushdb()
    redis_client.client_kill_filter(_type="normal", skipme=True)
    wait_for(lambda: all(s in ("delivered", "read") for s in statuses(db, ids).values()), timeout=60,
             what="every job delivered after Redis lost its data")
    with stack.sandbox() as sb:
        log = sb.get("/_sandbox/messages", params={"limit": 100000}).json()["data"]
    sent = [m["biz_opaque_callback_data"] for m in log if m["code"] == 0 and m["biz_opaque_callback_data"] in ids]
    assert sorted(sent) == sorted(ids)  # each exactly once


def test_a_crash_between_commit_and_push_loses_nothing(stack: Stack, db: Any) -> None:
    """A job committed to Postgres whose id never reached Redis is found and sent."""
    from wanotify.intake.service import prepare

    p = prepare({**ORDER, "to": "+919811199999"})
    with db() as s:
        s.execute(text(
            "INSERT INTO notifications (id, kind, channel, status, sender, to_number, template, language,"
            " payload, created_at, updated_at) VALUES (:id, 'transactional', 'whatsapp', 'queued', 'backup',"
            " :to, 'order_confirmation_v2', 'en', CAST(:payload AS jsonb), now(), now() - interval '1 minute')"),
            {"id": p.id, "to": "+919811199999", "payload": __import__("orjson").dumps(p.payload).decode()})
    job = str(p.id)
    wait_for(lambda: statuses(db, [job])[job] in ("delivered", "read"), timeout=60, what="stranded job sent")
    assert uuid.UUID(job)
