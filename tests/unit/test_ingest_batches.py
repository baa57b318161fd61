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

# These tests ingest stored bodies by hand: no stack worker may take them in between.
pytestmark = pytest.mark.usefixtures("no_stack_ingest")

PNID = "106540352242922"


def _body(*statuses: tuple[str, str, int]) -> bytes:
    return orjson.dumps({"object": "whatsapp_business_account", "entry": [{
        "id": "102290129340398", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881", "phone_number_id": PNID},
            "statuses": [{"id": w, "status": st, "timestamp": str(ts), "recipient_id": "919811176543"}
                         for w, st, ts in statuses]}}]}]})


def _job(db: Any, wamid: str) -> uuid.UUID:
    from wanotify.core.ids import uuid7

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
    from wanotify.inbound.ingest import ingest_inbox, store_webhooks

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
    from wanotify.inbound.ingest import ingest_inbox, store_webhooks

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
    from wanotify.inbound.ingest import store_webhooks

    bodies = [f'{{"n": {i}, "pad": "{"x" * (i % 7)}"}}'.encode() for i in range(size)]
    ids = store_webhooks(bodies)
    with db() as s:
        got = s.execute(text("SELECT body FROM webhook_inbox WHERE id = ANY(:ids) ORDER BY id"),
                        {"ids": ids}).scalars().all()
        s.execute(text("UPDATE webhook_inbox SET processed_at = now() WHERE id = ANY(:ids)"), {"ids": ids})
    assert [bytes(b) for b in got] == bodies


class _Kicks:
    """Ingest tasks the web would queue, captured instead of sent (run them by hand)."""

    def __init__(self) -> None:
        self.sent: list[tuple[list[int], dict[str, Any]]] = []

    def __call__(self, name: str, *args: Any, **kwargs: Any) -> None:
        assert name == "wanotify.ingest"
        self.sent.append((kwargs["args"][0], kwargs.get("kwargs") or {}))


@pytest.fixture()
def kicks(monkeypatch: pytest.MonkeyPatch, services: dict[str, str]) -> _Kicks:
    import wanotify.inbound.ingest as ingest
    from wanotify.queues.app import celery_app

    # Slots of this test's own: the session's stack web kicks through the shared ones.
    monkeypatch.setattr(ingest, "KICK_SLOT_KEY", f"test:{uuid.uuid4().hex}:" + "{}")
    captured = _Kicks()
    monkeypatch.setattr(celery_app, "send_task", captured)
    return captured


def _pending(db: Any, ids: list[int]) -> int:
    with db() as s:
        return int(s.execute(text("SELECT count(*) FROM webhook_inbox WHERE id = ANY(:ids)"
                                  " AND processed_at IS NULL"), {"ids": ids}).scalar_one())


def test_kicks_fold_into_waiting_tasks_and_each_task_takes_the_bodies_of_folded_kicks(
        db: Any, kicks: _Kicks) -> None:
    from wanotify.inbound import ingest
    from wanotify.inbound.ingest import KICK_SLOTS, store_webhooks_and_kick
    from wanotify.redis import get_redis
    from wanotify.worker.tasks import ingest_task

    redis_client = get_redis()  # the client the kicks use
    slot_key = ingest.KICK_SLOT_KEY
    t = int(time.time())
    wamids = [f"wamid.K{uuid.uuid4().hex}" for _ in range(6)]
    jobs = [_job(db, w) for w in wamids]
    ids = [store_webhooks_and_kick([_body((w, "delivered", t))])[0] for w in wamids]
    # Two tasks queued (one per slot); the other four stores found both waiting: no task.
    assert len(kicks.sent) == KICK_SLOTS == 2
    assert [kw["slot"][0] for _, kw in kicks.sent] == [slot_key.format(0), slot_key.format(1)]
    assert [own for own, _ in kicks.sent] == [[ids[0]], [ids[1]]]
    assert all(redis_client.exists(slot_key.format(k)) for k in range(KICK_SLOTS))
    own, kw = kicks.sent[0]
    res = ingest_task.apply(args=[own], kwargs=kw).get()
    # The first task to start frees its slot and takes every body waiting, folded kicks' too.
    assert not redis_client.exists(slot_key.format(0))
    assert res["bodies"] >= 6 and _pending(db, ids) == 0
    assert {_state(db, j).status for j in jobs} == {"delivered"}
    # A body stored now gets a task of its own again (slot 0 is free).
    w = f"wamid.K{uuid.uuid4().hex}"
    _job(db, w)
    late = store_webhooks_and_kick([_body((w, "delivered", t))])
    assert kicks.sent[-1][0] == late and kicks.sent[-1][1]["slot"][0] == slot_key.format(0)
    # The second queued task finds its body done and does nothing wrong.
    res2 = ingest_task.apply(args=kicks.sent[1][0], kwargs=kicks.sent[1][1]).get()
    assert res2["statuses"] <= 1 and _pending(db, ids) == 0


def test_a_lost_kick_frees_its_slot_by_itself(db: Any, kicks: _Kicks) -> None:
    from wanotify.inbound import ingest
    from wanotify.inbound.ingest import KICK_SLOT_MS, KICK_SLOTS, kick_ingest
    from wanotify.redis import get_redis

    redis_client = get_redis()  # the client the kicks use
    slot_key = ingest.KICK_SLOT_KEY
    assert kick_ingest([1]) and kick_ingest([2]) and not kick_ingest([3])
    # Neither task ever starts (lost with a broker): the slots expire and kicks resume.
    assert all(0 < redis_client.pttl(slot_key.format(k)) <= KICK_SLOT_MS for k in range(KICK_SLOTS))
    time.sleep(KICK_SLOT_MS / 1000 + 0.1)
    assert kick_ingest([4])
    assert [own for own, _ in kicks.sent] == [[1], [2], [4]]


def test_a_task_finding_full_batches_takes_them_all(db: Any, kicks: _Kicks) -> None:
    from wanotify.inbound.ingest import store_webhooks
    from wanotify.worker.tasks import ingest_task

    t = int(time.time())
    wamids = [f"wamid.F{uuid.uuid4().hex}" for _ in range(450)]
    for w in wamids[:5]:
        _job(db, w)
    ids = store_webhooks([_body((w, "sent", t)) for w in wamids])
    res = ingest_task.apply(args=[ids[:1]], kwargs={"slot": None}).get()
    # 200 per transaction: three rounds in one task, nothing left for the sweeper.
    assert res["bodies"] >= 450 and _pending(db, ids) == 0


def test_a_failing_topped_up_batch_falls_back_to_the_kicks_own_bodies(
        db: Any, kicks: _Kicks, monkeypatch: pytest.MonkeyPatch) -> None:
    import wanotify.inbound.ingest as ingest
    from wanotify.worker.tasks import ingest_task

    t = int(time.time())
    w = f"wamid.P{uuid.uuid4().hex}"
    j = _job(db, w)
    ids = ingest.store_webhooks([_body((w, "delivered", t))])
    real = ingest.ingest_inbox
    calls: list[bool] = []

    def flaky(ids_: Any = None, limit: int = 200, top_up: bool = False) -> Any:
        calls.append(top_up)
        if top_up:  # as if another waiting body broke the batch
            raise RuntimeError("a body of someone else's batch")
        return real(ids_, limit=limit, top_up=top_up)

    monkeypatch.setattr("wanotify.worker.tasks.ingest_inbox", flaky)  # the name the task calls
    res = ingest_task.apply(args=[ids]).get()
    assert calls == [True, False] and res["bodies"] == 1
    assert _state(db, j).status == "delivered"


def test_two_reports_of_one_job_in_one_batch_apply_in_provider_time_order_ties_in_arrival(db: Any) -> None:
    from wanotify.inbound.ingest import ingest_inbox, store_webhooks

    t = int(time.time())
    wa, wb = f"wamid.T{uuid.uuid4().hex}", f"wamid.U{uuid.uuid4().hex}"
    ja, jb = _job(db, wa), _job(db, wb)
    # Same second: a job failed then delivered (arrival order) ends failed; the other,
    # delivered then failed, stays delivered.
    report = ingest_inbox(store_webhooks([_body((wa, "failed", t), (wb, "delivered", t)),
                                          _body((wa, "delivered", t), (wb, "failed", t))]))
    assert report.new_events == 4 and report.applied == 4
    assert _state(db, ja).status == "failed" and _state(db, jb).status == "delivered"


def test_a_failure_reported_before_the_wamid_was_recorded_starts_the_fallback(db: Any) -> None:
    from wanotify.inbound.apply import reconcile_unmatched
    from wanotify.inbound.ingest import ingest_inbox, store_webhooks

    w = f"wamid.E{uuid.uuid4().hex}"
    j = _job(db, f"wamid.other{uuid.uuid4().hex}")
    with db() as s:
        s.execute(text("UPDATE notifications SET wamid = NULL, fallback = '{\"sms_text\": \"x\"}'::jsonb"
                       " WHERE id = :id"), {"id": j})
    report = ingest_inbox(store_webhooks([_body((w, "failed", int(time.time())))]))
    assert report.unmatched == 1 and not report.fallback_ids
    with db() as s:  # the send's answer is recorded after the webhook
        s.execute(text("UPDATE notifications SET wamid = :w WHERE id = :id"), {"w": w, "id": j})
    assert j in reconcile_unmatched()
    assert _state(db, j).status == "failed"


def test_status_reports_update_jobs_in_place(db: Any) -> None:
    """Delivered and read change no indexed value of a job without a pending fallback, so
    Postgres updates the row in place (HOT: no new entry in any of the table's indexes)."""
    from wanotify.inbound.ingest import IngestReport, _write_statuses
    from wanotify.inbound.parse import parse_webhook

    t = int(time.time())
    wamids = [f"wamid.H{uuid.uuid4().hex}" for _ in range(10)]
    jobs = [_job(db, w) for w in wamids]
    hot = text("SELECT pg_stat_get_xact_tuples_updated(CAST('notifications' AS regclass)),"
               " pg_stat_get_xact_tuples_hot_updated(CAST('notifications' AS regclass))")
    updated = in_place = 0
    for status, ts in (("delivered", t), ("read", t + 1)):
        for w in wamids:  # one report per transaction, as reports arrive in production
            with db() as s:  # (the counters may include this backend's recent transactions: a delta)
                u0, h0 = s.execute(hot).one()
                _write_statuses(s, parse_webhook(_body((w, status, ts))).statuses, IngestReport())
                u1, h1 = s.execute(hot).one()
            updated, in_place = updated + u1 - u0, in_place + h1 - h0
    assert updated == 20
    # A page without room for the new version puts it elsewhere; the room comes back as
    # Postgres prunes the old versions (before this schema: not one update in place).
    assert in_place >= 17, (updated, in_place)
    assert {_state(db, j).status for j in jobs} == {"read"}


def test_a_late_task_does_not_free_a_newer_kicks_slot(db: Any, kicks: _Kicks) -> None:
    from wanotify.inbound import ingest
    from wanotify.redis import get_redis

    assert ingest.kick_ingest([1])
    (old_key, old_token) = kicks.sent[0][1]["slot"]
    r = get_redis()
    r.set(old_key, "a newer kick", px=5000)  # the first slot expired and was taken again
    ingest.free_kick_slot([old_key, old_token])  # the first task starts only now
    assert r.get(old_key) == b"a newer kick"
    ingest.free_kick_slot([old_key, "a newer kick"])
    assert not r.exists(old_key)


def test_the_sweepers_ingest_takes_only_the_bodies_it_names(db: Any) -> None:
    from wanotify.inbound.ingest import store_webhooks
    from wanotify.worker.tasks import ingest_task

    t = int(time.time())
    ids = store_webhooks([_body((f"wamid.S{uuid.uuid4().hex}", "sent", t)) for _ in range(3)])
    res = ingest_task.apply(args=[ids[:1]], kwargs={"top_up": False}).get()
    assert res["bodies"] == 1 and _pending(db, ids) == 2
    ingest_task.apply(args=[ids[1:]], kwargs={"top_up": False}).get()
    assert _pending(db, ids) == 0
