"""The notify queue's puller (queues/puller.py) on a real Redis, with messages a plain
Celery producer published: taken in batches, held unacknowledged exactly as kombu holds
them (so kombu's own restore gives back what a dead worker held), acknowledged in one
pipeline, given back at once on a stop; junk and priorities handled."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery
from kombu import Exchange, Queue

from wanotify.queues.puller import Pulled, QueuePuller


@pytest.fixture()
def app(services: dict[str, str]) -> Iterator[Celery]:
    a = Celery("puller-test", broker=services["redis_url"])
    a.conf.task_serializer = "json"
    a.conf.broker_transport_options = {"visibility_timeout": 1}
    yield a
    a.close()


@pytest.fixture()
def queue(redis_client: Any) -> Iterator[str]:
    name = f"pull-{uuid.uuid4().hex[:8]}"
    yield name
    redis_client.delete(name, *(f"{name}\x06\x16{p}" for p in (3, 6, 9)), f"_wanotify.idle_pullers.{name}")


def publish(app: Celery, queue: str, bodies: list[Any], **opts: Any) -> list[str]:
    ids = []
    with app.producer_or_acquire() as prod:
        for b in bodies:
            ids.append(app.send_task("wanotify.notify", args=[b], queue=queue, producer=prod, **opts).id)
    return ids


class Sink:
    def __init__(self, room: int = 10_000) -> None:
        self.got: list[tuple[Any, Pulled]] = []
        self.batches: list[int] = []
        self.room = room
        self.event = threading.Event()

    def deliver(self, pairs: list[tuple[Any, Pulled]]) -> None:
        self.got += pairs
        self.batches.append(len(pairs))
        self.event.set()

    def wait(self, n: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.got) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(self.got) >= n, f"{len(self.got)} of {n} delivered"


def unacked(redis_client: Any) -> dict[str, Any]:
    return {k.decode(): json.loads(v) for k, v in redis_client.hgetall("unacked").items()}


def test_takes_in_batches_holds_as_kombu_does_and_acks_in_one_go(app: Celery, queue: str, redis_client: Any) -> None:
    redis_client.delete("unacked", "unacked_index")
    ids = publish(app, queue, [{"to": str(i)} for i in range(250)])
    sink = Sink()
    p = QueuePuller(app, queue, sink.deliver, lambda: sink.room - len(sink.got))
    p.start()
    try:
        sink.wait(250)
        assert max(sink.batches) == 100  # one round trip for up to a hundred messages
        bodies = [body for body, _ in sink.got]
        assert [b[0][0]["to"] for b in bodies] == [str(i) for i in range(250)]  # in order
        assert [m.headers["id"] for _, m in sink.got] == ids
        held = unacked(redis_client)
        assert set(held) == {m.tag for _, m in sink.got}  # kombu's hash: [payload, exchange, routing key]
        payload, _exchange, routing_key = held[sink.got[0][1].tag]
        assert payload["properties"]["delivery_tag"] == sink.got[0][1].tag and routing_key == queue
        assert redis_client.zcard("unacked_index") == 250
        for _, m in sink.got[:200]:
            m.ack()
        p.flush()
        assert redis_client.zcard("unacked_index") == 50 and len(unacked(redis_client)) == 50
    finally:
        p.stop()
        p.close()


def test_a_message_published_while_it_waits_is_taken_and_left_in_place_meanwhile(
        app: Celery, queue: str, redis_client: Any) -> None:
    sink = Sink()
    p = QueuePuller(app, queue, sink.deliver, lambda: 100)
    p.start()
    try:
        time.sleep(0.3)  # waiting in BLMOVE on the empty list
        publish(app, queue, [{"to": "late"}])
        sink.wait(1)
        assert sink.got[0][0][0][0] == {"to": "late"} and redis_client.llen(queue) == 0
    finally:
        p.stop()
        p.close()


def test_priorities_junk_and_room(app: Celery, queue: str, redis_client: Any) -> None:
    publish(app, queue, [{"to": "low"}])
    publish(app, queue, [{"to": "prio"}], priority=6)  # kombu's list queue\x06\x166
    redis_client.lpush(queue, b"not json at all")
    sink = Sink(room=0)
    p = QueuePuller(app, queue, sink.deliver, lambda: sink.room - len(sink.got))
    p.start()
    try:
        time.sleep(0.3)
        assert not sink.got  # no room: nothing taken
        sink.room = 10
        sink.wait(3)
        by_body = [b[0][0]["to"] if b else None for b, _ in sink.got]
        assert by_body == ["low", None, "prio"]  # the queue's own list first, then priority 6
        junk = sink.got[1][1]
        assert junk.tag == "" and junk.message is None  # refused by the consumer, never held
    finally:
        p.stop()
        p.close()


def test_what_a_dead_puller_held_comes_back_through_kombu(app: Celery, queue: str, redis_client: Any) -> None:
    """A puller that took messages and died: kombu's restore_visible (run by every worker,
    this one included) gives them back after the visibility timeout, and a plain kombu
    consumer receives them."""
    redis_client.delete("unacked", "unacked_index")
    publish(app, queue, [{"to": "a"}, {"to": "b"}])
    sink = Sink()
    dead = QueuePuller(app, queue, sink.deliver, lambda: 100)
    dead.start()
    sink.wait(2)
    dead.stop()
    dead.close()  # gone without acknowledging
    assert redis_client.llen(queue) == 0 and redis_client.zcard("unacked_index") == 2
    time.sleep(1.2)  # the visibility timeout (1 s here)
    with app.connection_for_read() as conn:
        conn.default_channel.qos.restore_visible(num=10, interval=1)
        got: list[Any] = []
        q = Queue(queue, Exchange(queue), routing_key=queue)
        with conn.Consumer([q], callbacks=[lambda body, msg: (got.append(body), msg.ack())], accept=["json"]):
            deadline = time.monotonic() + 5
            while len(got) < 2 and time.monotonic() < deadline:
                try:
                    conn.drain_events(timeout=0.5)
                except TimeoutError:
                    pass
    assert sorted(b[0][0]["to"] for b in got) == ["a", "b"]
    assert redis_client.zcard("unacked_index") == 0


def test_restore_gives_back_to_the_front_at_once(app: Celery, queue: str, redis_client: Any) -> None:
    publish(app, queue, [{"to": "first"}, {"to": "second"}])
    sink = Sink()
    p = QueuePuller(app, queue, sink.deliver, lambda: 1 - len(sink.got))
    p.start()
    try:
        sink.wait(1)
        p.stop()
        assert p.restore([sink.got[0][1].tag]) == 1
        raws = redis_client.lrange(queue, 0, -1)
        assert [json.loads(r)["headers"]["argsrepr"] for r in raws] == ["[{'to': 'second'}]", "[{'to': 'first'}]"]
    finally:
        p.close()


def _until(pred: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_sending_worker_leaves_the_queue_to_an_idle_one_while_it_is_there(
        app: Celery, queue: str, redis_client: Any) -> None:
    """Two pullers of one queue: the one whose process sends takes nothing while the idle one
    is there and the queue is short; once the idle one has stopped, it takes everything."""
    idle_sink, busy_sink = Sink(), Sink()
    idle = QueuePuller(app, queue, idle_sink.deliver, lambda: idle_sink.room - len(idle_sink.got), node="idle")
    busy = QueuePuller(app, queue, busy_sink.deliver, lambda: busy_sink.room - len(busy_sink.got), node="busy",
                       sending=lambda: True)
    key = f"_wanotify.idle_pullers.{queue}"
    idle.start()
    try:
        _until(lambda: redis_client.zscore(key, "idle") is not None)
        busy.start()
        for _ in range(10):  # a trickle, as a producer's loop publishes
            publish(app, queue, [{"to": str(i)} for i in range(20)])
            time.sleep(0.03)
        idle_sink.wait(200)
        time.sleep(0.2)
        assert len(busy_sink.got) == 0 and len(idle_sink.got) == 200
        assert redis_client.zscore(key, "busy") is None  # a sending worker is never in the set
    finally:
        idle.stop()
    assert redis_client.zscore(key, "idle") is None  # it left the set as it stopped
    try:
        publish(app, queue, [{"to": str(i)} for i in range(50)])
        busy_sink.wait(50, timeout=5.0)
        assert len(idle_sink.got) == 200
    finally:
        busy.stop()


def test_sending_workers_take_their_share_of_a_burst_the_idle_one_cannot_hold(
        app: Celery, queue: str, redis_client: Any) -> None:
    idle_sink, busy_sink = Sink(), Sink()
    idle = QueuePuller(app, queue, idle_sink.deliver, lambda: idle_sink.room - len(idle_sink.got), node="idle")
    busy = QueuePuller(app, queue, busy_sink.deliver, lambda: busy_sink.room - len(busy_sink.got), node="busy",
                       sending=lambda: True, help_at=100)
    idle.start()
    try:
        _until(lambda: redis_client.zscore(f"_wanotify.idle_pullers.{queue}", "idle") is not None)
        idle_sink.room = 0  # it holds all it may: still there (its word holds), taking nothing
        busy.start()
        publish(app, queue, [{"to": str(i)} for i in range(300)])
        busy_sink.wait(200, timeout=2.0)  # (before the idle one's word lapses, FRESH_S)
        assert idle_sink.got == []
        time.sleep(0.3)
        assert redis_client.llen(queue) < 100  # it took until fewer than help_at were waiting
    finally:
        idle.stop()
        busy.stop()
