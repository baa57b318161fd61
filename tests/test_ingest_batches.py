"""Ingest of many stored webhook bodies in one pass (real Postgres), and group commit."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from typing import Any

import orjson
import pytest
from sqlalchemy import text

PNID = "106540352242922"


def _body(*statuses: tuple[str, str, int]) -> bytes:
    return orjson.dumps({"object": "whatsapp_business_account", "entry": [{
        "id": "102290129340398", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881", "phone_number_id": PNID},
            "statuses": [{"id": w, "status": st, "timestamp": str(ts), "recipient_id": "919811176543"}
                         for w, st, ts in statuses]}}]}]})


def _job(db: Any, wamid: str) -> uuid.UUID:
    from wanotify.ids import uuid7

    jid = uuid7()
    with db() as s:
        s.execute(text(
            "INSERT INTO notifications (id, kind, channel, status, sender, to_number, payload, wamid,"
            " accepted_at, created_at, updated_at) VALUES (:id, 'transactional', 'whatsapp', 'accepted',"
            " 'main', '+919811176543', '{}'::jsonb, :w, now(), now(), now())"), {"id": jid, "w": wamid})
    return jid


def _state(db: Any, jid: uuid.UUID) -> Any:
    with db() as s:
        return s.execute(text("SELECT status, sent_at, delivered_at, read_at FROM notifications WHERE id = :id"),
                         {"id": jid}).one()


def test_one_pass_applies_several_reports_per_job_in_provider_time_order(db: Any) -> None:
    from wanotify.ingest import ingest_inbox, store_webhooks

    w1, w2 = f"wamid.A{uuid.uuid4().hex}", f"wamid.B{uuid.uuid4().hex}"
    j1, j2 = _job(db, w1), _job(db, w2)
    t = int(time.time())
    # Arrival order is the reverse of provider time; a duplicate; job 2 fails after delivery.
    ids = store_webhooks([
        _body((w1, "read", t + 3)),
        _body((w1, "delivered", t + 2), (w2, "delivered", t + 2)),
        _body((w1, "sent", t + 1), (w2, "sent", t + 1)),
        _body((w1, "delivered", t + 2)),
        _body((w2, "failed", t + 4)),
    ])
    assert ids == sorted(ids) and len(ids) == 5
    report = ingest_inbox(ids)
    assert report.bodies == 5 and report.statuses == 7
    assert report.new_events == 6  # the duplicate delivered is one event
    s1, s2 = _state(db, j1), _state(db, j2)
    assert s1.status == "read" and s1.sent_at and s1.delivered_at and s1.read_at
    assert s2.status == "delivered"  # failed never moves a delivered job back
    with db() as s:
        left = s.execute(text("SELECT count(*) FROM webhook_inbox WHERE id = ANY(:ids) AND processed_at IS NULL"),
                         {"ids": ids}).scalar_one()
    assert left == 0
    # Ingesting the same bodies again changes nothing.
    again = ingest_inbox(ids)
    assert again.bodies == 0


def test_a_malformed_body_is_marked_and_the_rest_of_the_batch_ingested(db: Any) -> None:
    from wanotify.ingest import ingest_inbox, store_webhooks

    w = f"wamid.C{uuid.uuid4().hex}"
    j = _job(db, w)
    ids = store_webhooks([b'{"object": "whatsapp_business_account", "entry": 7}',
                          _body((w, "delivered", int(time.time())))])
    report = ingest_inbox(ids)
    assert report.bodies == 2 and report.problems
    assert _state(db, j).status == "delivered"
    with db() as s:
        errs = s.execute(text("SELECT id, error FROM webhook_inbox WHERE id = ANY(:ids) ORDER BY id"),
                         {"ids": ids}).all()
    assert errs[0].error and errs[1].error is None


def test_group_commit_shares_writes_and_answers_each_caller() -> None:
    from wanotify.web.group_commit import GroupCommit

    calls: list[list[int]] = []
    gate = threading.Event()

    def write(items: list[int]) -> list[int]:
        calls.append(items)
        gate.wait(1)  # the first write is slow: the rest queue up behind it
        return [i * 10 for i in items]

    async def main() -> list[int]:
        gc: GroupCommit[int, int] = GroupCommit(write, max_batch=50)
        first = asyncio.create_task(gc.submit(0))
        await asyncio.sleep(0.05)
        rest = [asyncio.create_task(gc.submit(i)) for i in range(1, 101)]
        await asyncio.sleep(0.05)
        gate.set()
        return [await first, *[await r for r in rest]]

    results = asyncio.run(main())
    assert results == [i * 10 for i in range(101)]
    assert calls[0] == [0] and [len(c) for c in calls[1:]] == [50, 50]


def test_group_commit_failure_reaches_every_caller_of_that_batch_only() -> None:
    from wanotify.web.group_commit import GroupCommit

    def write(items: list[int]) -> list[int]:
        if 13 in items:
            raise RuntimeError("postgres away")
        return items

    async def main() -> tuple[list[Any], int]:
        gc: GroupCommit[int, int] = GroupCommit(write, max_batch=5)
        tasks = [asyncio.create_task(gc.submit(i)) for i in range(10, 20)]
        out = await asyncio.gather(*tasks, return_exceptions=True)
        return out, await gc.submit(99)

    out, later = asyncio.run(main())
    failed = [i for i, r in zip(range(10, 20), out, strict=True) if isinstance(r, RuntimeError)]
    assert failed == [10, 11, 12, 13, 14]
    assert out[5:] == [15, 16, 17, 18, 19] and later == 99


@pytest.mark.parametrize("size", [1, 499, 2500])
def test_store_webhooks_keeps_bodies_byte_exact_in_order(db: Any, size: int) -> None:
    from wanotify.ingest import store_webhooks

    bodies = [f'{{"n": {i}, "pad": "{"x" * (i % 7)}"}}'.encode() for i in range(size)]
    ids = store_webhooks(bodies)
    with db() as s:
        got = s.execute(text("SELECT body FROM webhook_inbox WHERE id = ANY(:ids) ORDER BY id"),
                        {"ids": ids}).scalars().all()
        s.execute(text("UPDATE webhook_inbox SET processed_at = now() WHERE id = ANY(:ids)"), {"ids": ids})
    assert [bytes(b) for b in got] == bodies
