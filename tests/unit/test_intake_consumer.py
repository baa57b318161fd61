"""The notify queue's batch consumer (worker/intake_consumer.py), its logic with fakes:
acknowledged only after a commit, refusals recorded, a failure isolated to its job and
retried, other task names refused. The real path (Celery worker, Redis, Postgres) is
exercised by the e2e tests that enqueue with ``send_task``."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from wanotify.core.errors import IdempotencyConflict, InvalidJob
from wanotify.core.jobs import Accepted
from wanotify.queues.names import TASK_NOTIFY
from wanotify.worker.intake_consumer import Batcher, Item, decode


class Msg:
    def __init__(self, name: str = TASK_NOTIFY, task_id: str | None = None) -> None:
        self.headers = {"task": name, "id": task_id or str(uuid.uuid4())} if name else {}
        self.acked = 0

    def ack(self) -> None:
        self.acked += 1


class Store:
    """notify_many's shape: one result per body; raises when told to."""

    def __init__(self) -> None:
        self.calls: list[list[Any]] = []
        self.stored: list[Any] = []
        self.fail_batches = False
        self.poison: set[str] = set()  # bodies' "to" that make the store raise
        self.down = False

    def __call__(self, bodies: list[Any]) -> list[Any]:
        self.calls.append(list(bodies))
        if self.down:
            raise ConnectionError("postgres away")
        if any(isinstance(b, dict) and b.get("to") in self.poison for b in bodies):
            raise RuntimeError("a body the code cannot handle")
        if self.fail_batches and len(bodies) > 1:
            raise RuntimeError("batch failed")
        out: list[Any] = []
        for b in bodies:
            if not isinstance(b, dict) or "to" not in b:
                out.append(InvalidJob([("to", "required")]))
            elif b.get("idempotency_key") == "clash":
                out.append(IdempotencyConflict("clash", "j-1"))
            else:
                self.stored.append(b)
                out.append(Accepted(id=str(uuid.uuid4()), status="queued"))
        return out


class Rejects:
    def __init__(self) -> None:
        self.rows: list[tuple[str, Any, list[dict[str, str]]]] = []
        self.down = False

    def __call__(self, source: str, body: Any, errors: list[dict[str, str]]) -> None:
        if self.down:
            raise ConnectionError("postgres away")
        self.rows.append((source, body, errors))


class Events:
    enabled = True

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def send(self, kind: str, **fields: Any) -> None:
        self.sent.append((kind, fields))


def items(bodies: list[Any], name: str = TASK_NOTIFY) -> list[Item]:
    return [decode(((b,), {}, {}), Msg(name)) for b in bodies]


def make(**kw: Any) -> tuple[Batcher, Store, Rejects]:
    store, rejects = Store(), Rejects()
    return Batcher(store=store, reject=rejects, linger_s=0, **kw), store, rejects


def test_decode_protocol_2_and_1() -> None:
    m = Msg(task_id="t-1")
    it = decode(([{"to": "1"}], {}, {}), m)
    assert (it.name, it.task_id, it.body) == (TASK_NOTIFY, "t-1", {"to": "1"})
    it = decode(((), {"body": {"to": "2"}}, {}), Msg())
    assert it.body == {"to": "2"}
    legacy = type("M", (), {"headers": {}})()
    it = decode({"task": TASK_NOTIFY, "id": "t-2", "args": [{"to": "3"}]}, legacy)
    assert (it.name, it.task_id, it.body) == (TASK_NOTIFY, "t-2", {"to": "3"})
    it = decode("not a task", legacy)
    assert it.name == "" and it.body == "not a task"


@settings(max_examples=200, deadline=None)
@given(body=st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                         lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                         max_leaves=12),
       headers=st.dictionaries(st.sampled_from(["task", "id", "x"]),
                               st.none() | st.text(max_size=10) | st.integers(), max_size=3))
def test_decode_never_raises_on_hostile_messages(body: Any, headers: dict[str, Any]) -> None:
    """Whatever arrives on the queue (another producer's junk, a truncated body), decode
    gives an item: the batcher then refuses it with a reason, it never crashes the consumer."""
    msg = type("M", (), {"headers": headers})()
    it = decode(body, msg)
    assert isinstance(it.name, str) and isinstance(it.task_id, str)
    b, _store, _rejects = make()
    it.message = Msg()  # something to acknowledge
    b.process([it])
    assert it.message.acked == 1 or it in b.retry


def test_batch_stored_once_then_each_acknowledged_with_events() -> None:
    ev = Events()
    b, store, _rejects = make(events=ev, hostname="w1")
    batch = items([{"to": str(i), "text": "+15550000000"} for i in range(5)])
    b.process(batch)
    assert len(store.calls) == 1 and len(store.stored) == 5
    assert all(i.message.acked == 1 for i in batch)
    kinds = [k for k, _ in ev.sent]
    assert kinds.count("task-received") == 5 and kinds.count("task-succeeded") == 5
    received = next(f for k, f in ev.sent if k == "task-received")
    assert received["name"] == TASK_NOTIFY and received["hostname"] == "w1"


def test_invalid_and_conflicting_jobs_are_recorded_and_acknowledged() -> None:
    b, store, rejects = make()
    batch = items([{"to": "1"}, {"text": "no to"}, {"to": "2", "idempotency_key": "clash"}])
    b.process(batch)
    assert len(store.stored) == 1
    assert [r[2][0]["field"] for r in rejects.rows] == ["to", "idempotency_key"]
    assert all(r[0] == "celery" for r in rejects.rows)
    assert all(i.message.acked == 1 for i in batch)


def test_other_task_names_are_refused_not_stored() -> None:
    b, store, rejects = make()
    batch = items([{"to": "1"}], name="someone.else") + items([{"to": "2"}])
    b.process(batch)
    assert [s["to"] for s in store.stored] == ["2"]
    assert rejects.rows[0][2][0]["field"] == "task" and "someone.else" in rejects.rows[0][2][0]["reason"]
    assert all(i.message.acked == 1 for i in batch)


def test_one_poison_job_does_not_hold_the_batch() -> None:
    b, store, _rejects = make()
    store.poison = {"bad"}
    batch = items([{"to": "1"}, {"to": "bad"}, {"to": "3"}])
    b.process(batch)
    assert sorted(s["to"] for s in store.stored) == ["1", "3"]
    assert [i.message.acked for i in batch] == [1, 0, 1]
    assert [i.body["to"] for i in b.retry] == ["bad"] and b.retry[0].attempts == 1


def test_outage_leaves_everything_unacknowledged_and_retried_later() -> None:
    b, store, _rejects = make()
    store.down = True
    batch = items([{"to": "1"}, {"to": "2"}])
    b.process(batch)
    assert all(i.message.acked == 0 for i in batch) and len(b.retry) == 2
    assert all(i.due > time.monotonic() for i in b.retry)
    store.down = False
    for it in b.retry:
        it.due = 0.0
    retry, b.retry = b.retry, []
    b.process(retry)
    assert sorted(s["to"] for s in store.stored) == ["1", "2"]
    assert all(i.message.acked == 1 for i in batch)


def test_a_failure_after_the_store_never_stores_a_job_twice() -> None:
    """The refusal of one job cannot be recorded (Postgres went away between the two
    statements): the jobs already stored are acknowledged, only the refused one waits."""
    b, store, rejects = make()
    rejects.down = True
    batch = items([{"to": "1"}, {"text": "no to"}, {"to": "3"}])
    b.process(batch)
    assert len(store.calls) == 1 and len(store.stored) == 2
    assert [i.message.acked for i in batch] == [1, 0, 1]
    assert len(b.retry) == 1
    rejects.down = False
    retry, b.retry = b.retry, []
    b.process(retry)
    assert len(store.stored) == 2 and batch[1].message.acked == 1 and len(rejects.rows) == 1


def test_thread_batches_what_arrives_and_stop_finishes() -> None:
    store, rejects = Store(), Rejects()
    b = Batcher(store=store, reject=rejects, linger_s=0.02, max_batch=50)
    b.start()
    msgs = [Msg() for _ in range(120)]
    for i, m in enumerate(msgs):
        b.on_message(([{"to": str(i)}], {}, {}), m)  # type: ignore[arg-type]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not all(m.acked for m in msgs):
        time.sleep(0.01)
    b.stop()
    assert all(m.acked == 1 for m in msgs)
    assert len(store.stored) == 120
    assert max(len(c) for c in store.calls) <= 50 and len(store.calls) < 120  # batched


def test_stop_hands_back_what_was_never_stored() -> None:
    """What waits (pending, OTPs, retries) when the worker stops is returned, to be given
    back to the queue at once; what was stored is acknowledged and not returned."""
    b, store, _rejects = make()
    stored, waiting, otp, retried = Msg(), Msg(), Msg(), Msg()
    b.on_message(([{"to": "1"}], {}, {}), stored)
    b.process(b._take())
    b.on_messages([(([{"to": "2"}], {}, {}), waiting), (([{"to": "3", "kind": "otp"}], {}, {}), otp)])
    b.retry.append(decode((({"to": "4"},), {}, {}), retried))
    assert b.held() == 3
    left = b.stop()
    assert stored.acked == 1 and len(store.stored) == 1
    assert set(map(id, left)) == {id(waiting), id(otp), id(retried)} and b.held() == 0


def test_otps_are_taken_before_a_waiting_burst() -> None:
    """An OTP published behind a burst of marketing jobs is stored in the very next batch."""
    store, rejects = Store(), Rejects()
    b = Batcher(store=store, reject=rejects, linger_s=0, max_batch=50)
    for i in range(400):
        b.on_message(([{"to": f"m{i}", "kind": "marketing"}], {}, {}), Msg())  # type: ignore[arg-type]
    b.on_message(([{"to": "otp-1", "kind": "otp"}], {}, {}), Msg())  # type: ignore[arg-type]
    first = b._take()
    assert [i.body["to"] for i in first] == ["otp-1"]  # a batch of its own: stored at once
    second = b._take()
    assert len(second) == 50 and [i.body["to"] for i in second[:2]] == ["m0", "m1"]  # in order


def test_an_otp_is_stored_while_a_burst_batch_is_still_being_stored() -> None:
    """The OTP thread does not wait for the batch in hand (a burst's store can take
    hundreds of milliseconds on a saturated host): the OTP is committed and acknowledged
    while that batch is still in the store."""
    release = threading.Event()
    inside = threading.Event()

    class SlowBulk(Store):
        def __call__(self, bodies: list[Any]) -> list[Any]:
            if any(b.get("kind") == "marketing" for b in bodies):
                inside.set()
                release.wait(10)
            return super().__call__(bodies)

    store, rejects = SlowBulk(), Rejects()
    b = Batcher(store=store, reject=rejects, linger_s=0, max_batch=50)
    b.start()
    try:
        bulk = [Msg() for _ in range(50)]
        for i, m in enumerate(bulk):
            b.on_message(([{"to": f"m{i}", "kind": "marketing"}], {}, {}), m)  # type: ignore[arg-type]
        assert inside.wait(5)
        otp = Msg()
        b.on_message(([{"to": "otp-1", "kind": "otp"}], {}, {}), otp)  # type: ignore[arg-type]
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not otp.acked:
            time.sleep(0.005)
        assert otp.acked == 1 and not any(m.acked for m in bulk)  # the burst's batch still in hand
    finally:
        release.set()
        b.stop()
    assert all(m.acked == 1 for m in bulk)


def test_a_message_delivered_again_is_the_same_job_not_a_second_one(db: Any) -> None:
    """The broker delivers a message again when its ack was lost (a worker stored the job and
    died, or Redis restarted, before acking): keyed by its task id, it finds the job already
    stored instead of storing, and sending, it twice. The same body published as a new task
    is a new job, as before; a producer's own idempotency key is left as it is."""
    from sqlalchemy import text

    from wanotify.intake.service import TASK_KEY_PREFIX

    to = f"+9198765{uuid.uuid4().int % 100_000:05d}"
    body = {"to": to, "template": "order_confirmation_v2", "language": "en", "kind": "transactional",
            "params": {"body": ["Ada", "A-1", "₹45,000"]}}
    b = Batcher(linger_s=0)  # the real store: intake.service.notify_many
    task_id = str(uuid.uuid4())
    first, again, other = Msg(task_id=task_id), Msg(task_id=task_id), Msg()
    for m in (first, again, other):
        b.on_message(([body], {}, {}), m)  # type: ignore[arg-type]
        b.process(b._take())
    own = Msg()
    b.on_message(([{**body, "idempotency_key": f"own-{task_id}"}], {}, {}), own)  # type: ignore[arg-type]
    b.process(b._take())
    assert [m.acked for m in (first, again, other, own)] == [1, 1, 1, 1]
    with db() as s:
        keys = s.execute(text("SELECT idempotency_key FROM notifications WHERE to_number = :t ORDER BY id"),
                         {"t": to}).scalars().all()
    assert keys == [TASK_KEY_PREFIX + task_id, TASK_KEY_PREFIX + other.headers["id"], f"own-{task_id}"]
