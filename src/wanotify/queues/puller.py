"""One Celery queue taken off the Redis broker in batches, as kombu itself would hold it.

kombu's Redis transport delivers one message per ``BRPOP``, then records it unacknowledged
(a ``MULTI``/``EXEC`` of ``ZADD`` + ``HSET``) and builds its message object; acknowledging is
another ``MULTI``/``EXEC``. Measured on a worker of the ``notify`` queue alone storing a burst
of 2,700 jobs (``wanotify bench pacing --intake burst``'s backlog), that receiving took
1.34 s of CPU on the consumer's thread, more than validating and storing them all (1.02 s),
and at the worker's normal priority, competing with the sends.

:class:`QueuePuller` takes up to a hundred messages per round trip (``lua/queue_take.lua``:
``RPOP`` with a count, each recorded in kombu's own unacked hash and index in the same
script) and acknowledges a batch in one pipeline. The layout is kombu's, unchanged: any
worker's kombu restores what a dead puller held once the visibility timeout has passed
(``restore_visible``, which this puller runs too), and :meth:`QueuePuller.restore` gives
back at once what a stopping worker did not store. When the queue is empty it waits in
``BLMOVE queue queue RIGHT RIGHT`` (a rotation of the list onto itself: it returns as soon as
a message is there and leaves it in place, so nothing is ever held outside the unacked
hash). Requires Redis 6.2 or later (``RPOP`` with a count, ``BLMOVE``).

A worker that is sending (``sending()``: its dispatcher owns a number) leaves the queue to
the workers that are not, while one is there (each says so in a small set of the broker's
at every round) and fewer than ``help_at`` messages wait: it looks again ``YIELD_S`` later.
Measured with four workers and a burst published while a backlog is sent (``wanotify bench
pacing --intake burst``), the burst's validation in the sending processes held the GIL
from their send loops, which then fell behind their slots; a worker with no number to send
stores it instead, and a burst too large for it is shared by all (``help_at``).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from importlib import resources
from typing import Any

import redis
from celery import Celery
from kombu.serialization import prepare_accept_content
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads

log = logging.getLogger("wanotify.queues")

TAKE = resources.files("wanotify").joinpath("lua/queue_take.lua").read_text(encoding="utf-8")
TAKE_MAX = 100  # messages per round trip (one Lua call)
LINGER_S = 0.002  # after a round that took some: the rest of a burst comes in a few ms
WAIT_S = 1  # BLMOVE's timeout: how often an idle puller looks at the priority lists, restores
RESTORE_EVERY_S = 10.0  # restore_visible, as kombu's event loop runs it
YIELD_S = 0.025  # a sending worker that left the messages to an idle one looks again after this
HELP_AT = 500  # waiting messages from which sending workers take their share anyway
FRESH_S = 3.0  # how long an idle worker's word holds (it looks at least every WAIT_S)
RETRY_S = (0.2, 0.5, 1.0, 2.0, 5.0)  # reconnection backoff while the broker is away
ACCEPT = prepare_accept_content({"json"})
MIN_REDIS = (6, 2)


class Pulled:
    """One message taken off the queue: kombu's message (its headers, properties and
    decoded body) and its delivery tag, acknowledged through the puller."""

    __slots__ = ("message", "puller", "tag")

    def __init__(self, message: Any, tag: str, puller: QueuePuller):
        self.message = message
        self.tag = tag
        self.puller = puller

    @property
    def headers(self) -> Any:
        return getattr(self.message, "headers", None)

    def ack(self) -> None:
        self.puller.ack_later(self.tag)


class QueuePuller:
    """Takes a queue's messages in batches on a thread of its own and hands each batch to
    ``deliver`` (as ``(body, Pulled)`` pairs), while ``room()`` says more may be held.

    The puller has its own broker connection (the Celery app's, so a ``sentinel://`` broker
    is followed through a failover) and reconnects by itself: a broker away for seconds
    stops the taking, never the worker, and what was taken stays in hand to be stored.
    """

    def __init__(self, app: Celery, queue: str, deliver: Callable[[list[tuple[Any, Pulled]]], None],
                 room: Callable[[], int], take_max: int = TAKE_MAX, linger_s: float = LINGER_S,
                 node: str = "", sending: Callable[[], bool] | None = None, help_at: int = HELP_AT):
        self.app = app
        self.queue = queue
        self.deliver = deliver
        self.room = room
        self.take_max = take_max
        self.linger_s = linger_s
        self.node = node or f"{socket.gethostname()}:{os.getpid()}"
        self.sending = sending
        self.help_at = help_at
        self.peers_key = f"_wanotify.idle_pullers.{queue}"
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()
        self.acks: list[str] = []
        self.conn: Any = None
        self.channel: Any = None
        self.client: Any = None
        self.script: Any = None
        self.keys: list[str] = []  # the queue's lists, highest priority first
        self.script_keys: list[str] = []  # those, then kombu's unacked hash and index
        self.restored_at = 0.0

    # -- life ------------------------------------------------------------------------
    def start(self) -> None:
        if self.thread is None or not self.thread.is_alive():
            self.stopping.clear()
            self.thread = threading.Thread(target=self._run, name=f"wanotify-take-{self.queue}", daemon=True)
            self.thread.start()

    def stop(self, timeout: float = WAIT_S + 2.0) -> None:
        """Take no more (the batch being handed over is handed over)."""
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(timeout)

    def close(self) -> None:
        with self.lock:
            conn, self.conn, self.channel, self.client = self.conn, None, None, None
        if conn is not None:
            try:
                conn.release()
            except Exception:  # already gone with the broker
                log.debug("closing the %s puller's connection failed", self.queue, exc_info=True)

    # -- acknowledgements --------------------------------------------------------------
    def ack_later(self, tag: str) -> None:
        if tag:
            with self.lock:
                self.acks.append(tag)

    def flush(self) -> None:
        """Acknowledge what was acknowledged since the last flush, in one pipeline. If the
        broker is away the tags wait for the next flush; one never done is harmless: the
        message comes back after the visibility timeout and its task id finds the job."""
        with self.lock:
            tags, self.acks = self.acks, []
            client, channel = self.client, self.channel
        if not tags:
            return
        try:
            if client is None:
                raise redis.ConnectionError("the puller is not connected")
            pipe = client.pipeline(transaction=False)
            pipe.zrem(channel.unacked_index_key, *tags)
            pipe.hdel(channel.unacked_key, *tags)
            pipe.execute()
        except Exception:
            log.warning("could not acknowledge %d %s message(s) yet (tried again)", len(tags), self.queue,
                        exc_info=log.isEnabledFor(logging.DEBUG))
            with self.lock:
                self.acks[:0] = tags

    def restore(self, tags: list[str]) -> int:
        """Give messages taken but not stored back to the front of their queue now (kombu's
        ``restore_by_tag``), not after the visibility timeout. Returns how many."""
        done = 0
        try:
            channel = self.channel or self._connect()
            for tag in tags:
                if tag:
                    channel.qos.restore_by_tag(tag, channel.client)
                    done += 1
        except Exception:  # the broker is away: the visibility timeout restores them
            log.warning("could not give back %d %s message(s) now; the broker's visibility timeout will",
                        len(tags) - done, self.queue, exc_info=log.isEnabledFor(logging.DEBUG))
        return done

    # -- the taking thread ---------------------------------------------------------------
    def _connect(self) -> Any:
        conn = self.app.connection_for_read()
        conn.ensure_connection(max_retries=1)
        channel = conn.default_channel
        client = channel.client
        version = str(client.info("server").get("redis_version", "0"))
        if tuple(int(x) for x in version.split(".")[:2] if x.isdigit()) < MIN_REDIS:
            conn.release()
            raise RuntimeError(f"the broker is Redis {version}; wanotify needs {'.'.join(map(str, MIN_REDIS))}"
                               " or later (RPOP with a count, BLMOVE)")
        with self.lock:
            self.conn, self.channel, self.client = conn, channel, client
        self.keys = [channel._q_for_pri(self.queue, p) for p in channel.priority_steps]
        self.script_keys = [*self.keys, channel.unacked_key, channel.unacked_index_key, self.peers_key]
        self.script = client.register_script(TAKE)
        return channel

    def _run(self) -> None:
        failures = 0
        while not self.stopping.is_set():
            try:
                if self.channel is None:
                    self._connect()
                    if failures:
                        log.warning("the %s queue's puller is connected again", self.queue)
                    failures = 0
                self._round()
            except Exception as exc:
                if failures == 0:
                    log.warning("the %s queue's puller lost the broker (%s); reconnecting",
                                self.queue, exc if isinstance(exc, RuntimeError) else type(exc).__name__)
                self.close()
                delay = RETRY_S[min(failures, len(RETRY_S) - 1)]
                failures += 1
                self.stopping.wait(delay)
        self._leave()
        self.close()

    def _leave(self) -> None:
        """No longer there to take the queue: sending workers stop leaving it to this one."""
        try:
            if self.client is not None:
                self.client.zrem(self.peers_key, self.node)
        except Exception:  # the broker is away: the word lapses by itself (FRESH_S)
            log.debug("could not leave the %s pullers' set", self.queue, exc_info=True)

    def _round(self) -> None:
        now = time.time()
        if now - self.restored_at >= RESTORE_EVERY_S:
            self.restored_at = now
            # What a dead worker held, back in the queue once the visibility timeout passed: as
            # kombu's event loop does it (every 10 s, the scan itself throttled to one call in
            # ten), not more often. Scanning every 10 s gave back other queues' messages held
            # by tasks still running (a stack with a 15 s visibility timeout lost campaign sends).
            self.channel.qos.restore_visible(num=self.channel.unacked_restore_limit)
        room = min(self.take_max, self.room())
        if room <= 0:
            self.stopping.wait(0.005)  # what is held is being stored
            return
        mode = "sending" if self.sending is not None and self.sending() else "idle"
        got = self.script(keys=self.script_keys, args=[room, repr(now), self.node, mode, self.help_at, FRESH_S])
        if got is None:  # left to a worker that is not sending
            self.stopping.wait(YIELD_S)
            return
        if got:
            self.deliver([self._message(tag, raw) for tag, raw in zip(got[::2], got[1::2], strict=True)])
            if len(got) // 2 >= room:
                return  # more waiting: take again at once
            # A stream of messages: let a few more arrive than one round trip's worth.
            self.stopping.wait(self.linger_s)
        if not self.stopping.is_set():
            # Wait for the next message without taking it (it stays in the list).
            self.client.blmove(self.keys[0], self.keys[0], WAIT_S, "RIGHT", "RIGHT")

    def _message(self, tag: bytes | str, raw: bytes | str) -> tuple[Any, Pulled]:
        tag_s = tag.decode() if isinstance(tag, bytes) else tag
        try:
            message = self.channel.Message(loads(bytes_to_str(raw)), channel=self.channel, accept=ACCEPT)
            body = message.decode()
        except Exception:  # not kombu's message, or not JSON: refused by the consumer, with a reason
            return None, Pulled(None, tag_s, self)
        return body, Pulled(message, tag_s, self)
