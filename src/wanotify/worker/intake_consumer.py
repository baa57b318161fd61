"""The ``notify`` queue taken in batches: what a producer's ``send_task("wanotify.notify", …)``
becomes in a worker.

One Celery task per job costs about 3 ms of CPU here (the task machinery and its events
half of it, one transaction per job the other), so a producer's burst of a few thousand
jobs kept both cores busy for seconds and starved the sends it fed (measured with
``wanotify bench pacing --intake burst``). This consumer step takes the queue away from the
task consumer and stores what arrives together: ``queues.puller.QueuePuller`` takes the
messages off the broker up to a hundred per round trip (kombu's own one-``BRPOP``-per-message
receiving cost more CPU than storing them), the messages that came in during a few
milliseconds are validated and stored by ``intake.service.notify_many`` (one statement, one
push per lane), then acknowledged in one pipeline, so nothing is acknowledged before it is
committed and a worker that dies holding a batch loses nothing (kombu's visibility timeout
gives the messages back; a worker that stops gives back what it did not store at once).

The producer's contract is unchanged (task name, queue, body); the worker still reports
every job as a ``wanotify.notify`` task in its events (Flower lists them, masked).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from celery import bootsteps
from celery.worker.control import inspect_command

from wanotify.core.backoff import task_retry_s
from wanotify.core.errors import IdempotencyConflict, InvalidJob
from wanotify.delivery import runtime
from wanotify.intake.service import notify_many, record_rejected, with_task_key
from wanotify.logs import args_summary
from wanotify.metrics import JOBS_ACCEPTED, JOBS_REJECTED
from wanotify.queues.names import NOTIFY, TASK_NOTIFY
from wanotify.queues.puller import Pulled, QueuePuller
from wanotify.worker.intake_process import INTAKE_BULK_NICE

log = logging.getLogger("wanotify.intake")

# At most one transaction of notify_many (its BULK_CHUNK is 1,000); small enough that an
# OTP arriving while a batch is stored waits tens of milliseconds, not a hundred or more.
MAX_BATCH = 200
LINGER_S = 0.004  # how long a batch waits for more messages once one has arrived
PREFETCH = 2_000  # messages a worker holds unacknowledged (a burst is taken off the queue fast)


@dataclass
class Item:
    """One message of the notify queue."""

    message: Any  # kombu Message (anything with ack(), headers and properties in tests)
    task_id: str
    name: str
    body: Any  # the job body (the task's first argument)
    received: float = field(default_factory=time.time)
    attempts: int = 0
    due: float = 0.0  # monotonic time of the next attempt after a failure


def decode(body: Any, message: Any) -> Item:
    """The task name, id and job body of a Celery message (protocol 2, or protocol 1).

    Whatever arrives (another producer's junk, a truncated body) gives an item: one that is
    not a notify task is refused with a reason by the batcher, never a crash of the consumer.
    """
    headers = getattr(message, "headers", None)
    headers = headers if isinstance(headers, dict) else {}
    if "task" in headers:  # protocol 2: body = (args, kwargs, embed)
        name, task_id = headers.get("task"), headers.get("id")
        ok = isinstance(body, (list, tuple)) and len(body) >= 2
        args, kwargs = (body[0], body[1]) if ok else ((), {})
    elif isinstance(body, dict) and "task" in body:  # protocol 1
        name, task_id = body.get("task"), body.get("id")
        args, kwargs = body.get("args") or (), body.get("kwargs") or {}
    else:
        return Item(message, "", "", body)
    name = name if isinstance(name, str) else ""
    task_id = task_id if isinstance(task_id, str) else ""
    if isinstance(args, (list, tuple)) and args:
        job = args[0]
    elif isinstance(kwargs, dict) and "body" in kwargs:
        job = kwargs["body"]
    else:  # a notify task without its one argument: refused by the validation ("body" missing)
        job = None
    return Item(message, task_id, name, job)


class Batcher:
    """Stores the notify queue's messages in batches on a thread of its own, acknowledging
    each message once its job is committed (or its refusal recorded)."""

    def __init__(self, events: Any = None, hostname: str = "", store: Any = notify_many,
                 reject: Any = record_rejected, max_batch: int = MAX_BATCH, linger_s: float = LINGER_S):
        self.events = events  # the worker's event dispatcher (None: no task events)
        self.hostname = hostname
        self.store = store
        self.reject = reject
        self.max_batch = max_batch
        self.linger_s = linger_s
        self.pending: deque[Item] = deque()
        self.urgent: deque[Item] = deque()  # OTPs: taken before everything else waiting
        self.retry: list[Item] = []
        self.cond = threading.Condition()
        self.acking = threading.Lock()  # two threads ack on one broker channel
        self.stopping = False
        self.threads: list[threading.Thread] = []
        # Nice increment of the bulk thread alone (an intake-only worker: its OTP thread and
        # the consumer that receives the messages keep the process's priority).
        self.bulk_nice = 0
        self.in_hand = 0  # messages of the batches being stored
        self.after_batch: Any = None  # called after each batch (the puller's acknowledgements)

    # -- the puller's side ----------------------------------------------------------------
    def on_message(self, body: Any, message: Any) -> None:
        self.on_messages([(body, message)])

    def on_messages(self, pairs: list[tuple[Any, Any]]) -> None:
        """A batch taken off the queue (``QueuePuller``): OTPs to the front, the rest in order."""
        items = [decode(body, message) for body, message in pairs]
        with self.cond:
            for item in items:
                (self.urgent if _kind(item.body) == "otp" else self.pending).append(item)
            self.cond.notify_all()

    def held(self) -> int:
        """How many messages are in hand (taken, not yet acknowledged)."""
        with self.cond:
            return len(self.pending) + len(self.urgent) + len(self.retry) + self.in_hand

    def start(self) -> None:
        """Two threads: one stores whatever waits (OTPs first), one only OTPs, so that an
        OTP never waits for a batch of a burst being validated and stored (up to a few
        hundred milliseconds on a saturated host) before its own store begins."""
        if not any(t.is_alive() for t in self.threads):
            self.stopping = False
            self.threads = [
                threading.Thread(target=self._run, name="wanotify-intake", daemon=True),
                threading.Thread(target=self._run, args=(True,), name="wanotify-intake-otp", daemon=True),
            ]
            for t in self.threads:
                t.start()

    def stop(self, timeout: float = 10.0) -> list[Any]:
        """Finish the batches in hand (so what was committed is acknowledged), then stop.
        Returns the messages of what was never stored (to be given back to the queue)."""
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        with self.cond:
            left = [i.message for i in (*self.urgent, *self.pending, *self.retry)]
            self.urgent.clear()
            self.pending.clear()
            self.retry.clear()
        return left

    # -- the batch thread ----------------------------------------------------------------
    def _take(self, urgent_only: bool = False) -> list[Item]:
        with self.cond:
            while not self.stopping:
                now = time.monotonic()
                if self.urgent or (not urgent_only and (self.pending or any(i.due <= now for i in self.retry))):
                    break
                wait = min((i.due for i in self.retry), default=now + 1.0) - now
                self.cond.wait(max(0.001, min(wait, 1.0)))
            if self.stopping:
                return []
            if urgent_only:
                return self._hand([self.urgent.popleft() for _ in range(min(len(self.urgent), self.max_batch))])
            lone = not self.urgent and len(self.pending) < self.max_batch
        if lone and self.linger_s > 0:
            time.sleep(self.linger_s)  # let the rest of a burst arrive: one transaction for it
        with self.cond:
            # OTPs first, in a batch of their own (stored in a few milliseconds, not behind the
            # validation of a burst); then what waited for a retry, then the rest in arrival
            # order. An OTP published behind a burst of marketing jobs is stored next.
            if self.urgent:
                return self._hand([self.urgent.popleft() for _ in range(min(len(self.urgent), self.max_batch))])
            batch: list[Item] = []
            now = time.monotonic()
            due = [i for i in self.retry if i.due <= now][: self.max_batch - len(batch)]
            if due:
                taken = {id(i) for i in due}
                self.retry = [i for i in self.retry if id(i) not in taken]
                batch += due
            while self.pending and len(batch) < self.max_batch:
                batch.append(self.pending.popleft())
            return self._hand(batch)

    def _hand(self, batch: list[Item]) -> list[Item]:
        self.in_hand += len(batch)  # (under self.cond)
        return batch

    def _run(self, urgent_only: bool = False) -> None:
        if self.bulk_nice and not urgent_only:
            lower_thread_priority(self.bulk_nice)
        while True:
            batch = self._take(urgent_only)
            if not batch:
                return
            try:
                self.process(batch)
            except Exception:  # never let the thread die: the items are retried
                log.exception("intake batch of %d failed unexpectedly", len(batch))
                self._later(batch)
            finally:
                if self.after_batch is not None:
                    try:
                        self.after_batch()
                    except Exception:
                        log.exception("acknowledging an intake batch failed unexpectedly")

    def process(self, batch: list[Item]) -> None:
        """Store a batch; on a failure (Postgres or Redis away, or one body the code cannot
        handle) each job is tried alone, and what still fails waits and is tried again,
        unacknowledged, as the old per-job task retried."""
        try:
            self._process(batch)
        finally:
            with self.cond:
                self.in_hand = max(0, self.in_hand - len(batch))

    def _process(self, batch: list[Item]) -> None:
        others = [i for i in batch if i.name != TASK_NOTIFY]
        for item in others:
            reason = ("not a Celery task message" if not item.name
                      else f"task {item.name!r} is not taken from the {NOTIFY!r} queue (only {TASK_NOTIFY!r})")
            self._refuse(item, [{"field": "task", "reason": reason}])
        jobs = [i for i in batch if i.name == TASK_NOTIFY]
        if not jobs:
            return
        try:
            self._store(jobs)
        except Exception:
            if len(jobs) == 1:
                log.warning("storing a job from the notify queue failed; it is tried again", exc_info=True)
                self._later(jobs)
                return
            log.warning("storing a batch of %d jobs failed; trying each alone", len(jobs), exc_info=True)
            for item in jobs:
                try:
                    self._store([item])
                except Exception:
                    self._later([item])

    def _store(self, items: list[Item]) -> None:
        """Only ``self.store`` may raise out of here: once it returned, the jobs it stored are
        acknowledged whatever happens to the others (so a retry never stores one twice)."""
        started = time.time()
        results = self.store([with_task_key(i.body, i.task_id) for i in items])
        runtime = time.time() - started
        for item, res in zip(items, results, strict=True):
            try:
                if isinstance(res, InvalidJob):
                    log.warning("rejected job from the notify queue", extra={"errors": res.as_json()})
                    self._refuse(item, res.as_json())
                elif isinstance(res, IdempotencyConflict):
                    self._refuse(item, [{"field": "idempotency_key", "reason": str(res)}])
                else:
                    JOBS_ACCEPTED.labels(_kind(item.body), "celery").inc()
                    self._done(item, {"id": res.id, "status": res.status}, runtime)
            except Exception:  # its refusal could not be recorded (Postgres away): later
                log.warning("recording a refused job failed; it is tried again", exc_info=True)
                self._later([item])

    def _refuse(self, item: Item, errors: list[dict[str, str]]) -> None:
        self.reject("celery", item.body, errors)
        JOBS_REJECTED.labels("celery").inc()
        self._done(item, {"error": {"errors": errors}}, 0.0)

    def _done(self, item: Item, result: dict[str, Any], runtime: float) -> None:
        self._event("task-received", item, name=item.name or TASK_NOTIFY, args=args_summary([item.body]),
                    kwargs="{}", retries=item.attempts, eta=None, root_id=item.task_id, parent_id=None)
        self._event("task-succeeded", item, result=repr(result), runtime=runtime)
        try:
            with self.acking:
                item.message.ack()
        except Exception:  # the connection went away: the broker gives the message back
            log.warning("could not acknowledge a stored notify message (it may come again)", exc_info=True)

    def _event(self, kind: str, item: Item, **fields: Any) -> None:
        ev = self.events
        if ev is None or not getattr(ev, "enabled", False) or not item.task_id:
            return
        try:
            ev.send(kind, uuid=item.task_id, hostname=self.hostname, **fields)
        except Exception:  # events are for watching; a failed one never holds a job
            log.debug("task event %s not sent", kind, exc_info=True)

    def _later(self, items: list[Item]) -> None:
        with self.cond:
            for item in items:
                item.due = time.monotonic() + task_retry_s(item.attempts, 60)
                item.attempts += 1
                self.retry.append(item)


def lower_thread_priority(increment: int) -> bool:
    """Raise the calling thread's nice value (Linux: a thread is a task of its own; elsewhere
    the call would lower the whole process, so it is skipped). True if it took effect."""
    if not sys.platform.startswith("linux"):
        return False
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + increment))
    except OSError:
        log.warning("could not lower the intake thread's priority", exc_info=True)
        return False
    return True


def _kind(body: Any) -> str:
    kind = body.get("kind") if isinstance(body, dict) else None
    return kind if isinstance(kind, str) else "transactional"


class NotifyConsumer(bootsteps.StartStopStep):
    """Takes the ``notify`` queue from Celery's task consumer (when this worker consumes it):
    a :class:`QueuePuller` takes its messages in batches and feeds them to a :class:`Batcher`."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, c: Any, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        self.takes_notify: bool | None = None  # decided at the first start, from the worker's queues
        self.intake_only = False
        self.batcher: Batcher | None = None
        self.puller: QueuePuller | None = None
        self.queue: Any = None

    def start(self, c: Any) -> None:
        if self.takes_notify is None:
            consumed = set(c.app.amqp.queues.consume_from)
            self.takes_notify = NOTIFY in consumed
            self.intake_only = consumed == {NOTIFY}
            self.queue = c.app.amqp.queues[NOTIFY]
            log.info("notify queue %s", "taken in batches" if self.takes_notify else "not consumed by this worker")
        if not self.takes_notify:
            return
        # Celery's task consumer is made (by the Tasks step, again after a reconnection) but
        # starts consuming only later: the queue is taken out of its list before then.
        tc = c.task_consumer
        if tc is not None:
            if tc.consuming_from(NOTIFY):
                tc.cancel_by_queue(NOTIFY)
            tc.queues = [q for q in tc.queues if q.name != NOTIFY]
        c.app.amqp.queues.deselect(NOTIFY)
        c.wanotify_notify_queue = self.queue  # still reported as consumed (active_queues)
        if self.batcher is None:
            self.batcher = Batcher(events=c.event_dispatcher, hostname=c.hostname)
            # A worker of the intake queue alone (the intake child of `wanotify worker`, or
            # one started with --queues notify) stores bursts lower still than its OTPs.
            self.batcher.bulk_nice = INTAKE_BULK_NICE if self.intake_only else 0
        if self.puller is None:
            batcher = self.batcher
            # The puller has its own connection: a broken Celery connection (this step is
            # stopped and started again around it) leaves what it took in hand, to be stored.
            # While this worker sends, a burst is left to the workers that do not (see
            # queues.puller): its validation would hold the GIL from the send loop.
            self.puller = QueuePuller(c.app, NOTIFY, deliver=batcher.on_messages,
                                      room=lambda: PREFETCH - batcher.held(),
                                      node=c.hostname, sending=runtime.sending)
            batcher.after_batch = self.puller.flush
        self.batcher.events = c.event_dispatcher
        self.batcher.start()
        self.puller.start()

    def shutdown(self, c: Any) -> None:
        """Take no more, store the batches in hand, give the rest back to the queue now."""
        if self.puller is not None:
            self.puller.stop()
        if self.batcher is not None:
            left = self.batcher.stop()
            if self.puller is not None:
                self.puller.flush()
                given = self.puller.restore([m.tag for m in left if isinstance(m, Pulled)])
                if given:
                    log.info("gave %d notify message(s) back to the queue", given)
        if self.puller is not None:
            self.puller.close()


@inspect_command()
def active_queues(state: Any) -> list[dict[str, Any]]:
    """Celery's ``active_queues``, with the notify queue this worker takes in batches: it is
    consumed (by :class:`NotifyConsumer`), so Flower and ``celery inspect`` list it."""
    c = state.consumer
    queues = list(c.task_consumer.queues) if c.task_consumer else []
    notify = getattr(c, "wanotify_notify_queue", None)
    if notify is not None and all(q.name != notify.name for q in queues):
        queues.append(notify)
    return [dict(q.as_dict(recurse=True)) for q in queues]
