"""Outgoing webhooks: Meta's signed status (and inbound message) notifications.

For each accepted message the sandbox schedules ``sent`` after about one webhook delay,
``delivered`` after about two and, with probability ``read_ratio``, ``read`` after about
three (each step jittered by ±25 %). A webhook-mode failure gets ``sent`` (unless the rule
says ``sent_first: false``) then ``failed`` with ``errors[]``. As Meta does, a status is
sometimes sent twice (``duplicate_ratio``: the copy always arrives in a later POST) and
``delivered`` sometimes arrives before ``sent`` (``reorder_ratio``; the ``timestamp`` fields
keep the true order).

Delivery: every ~50 ms the statuses that are due are grouped per business phone number into
POSTs of at most 100 statuses (several phone numbers sometimes share one POST, as several
``entry``/``changes`` elements). Each body is signed with
``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body, keyed with the app secret>``.
A POST that fails (connection error, timeout or non-2xx) is retried with exponential backoff
for about 60 s, then dropped with a log line. One long-lived ``httpx.AsyncClient`` does all
of it; nothing here blocks the event loop.

The same machinery POSTs Twilio-style SMS status callbacks (form-encoded, with
``X-Twilio-Signature``) for the fake SMS provider.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import heapq
import hmac
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import httpx
import orjson

from wanotify.devtools.sandbox.errors import webhook_error

log = logging.getLogger("wanotify.devtools.sandbox.webhooks")

Clock = Callable[[], float]

MAX_STATUSES_PER_POST = 100
TICK_S = 0.05
RETRY_FOR_S = 60.0
MAX_PENDING = 1_000_000
MERGE_RATIO = 0.25  # chance that due statuses of several phone numbers share one POST
USER_AGENT = "facebookexternalua"


def sign(body: bytes, secret: str) -> str:
    """The ``X-Hub-Signature-256`` header value for ``body``."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def twilio_signature(url: str, params: Mapping[str, str], auth_token: str) -> str:
    """Twilio's ``X-Twilio-Signature``: base64 HMAC-SHA1 of the URL + sorted key/value pairs."""
    data = url + "".join(k + params[k] for k in sorted(params))
    digest = hmac.new(auth_token.encode("utf-8"), data.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


@dataclass(frozen=True, slots=True)
class Target:
    """Where a business phone number's notifications say they come from."""

    phone_number_id: str
    waba_id: str
    display_phone_number: str  # digits only, as in webhook metadata


@dataclass(slots=True)
class _Event:
    phone_number_id: str
    kind: str  # "statuses" | "messages"
    item: dict[str, Any]
    key: tuple[str, str]  # (message id, status): duplicates never share a POST
    contacts: list[dict[str, Any]] | None = None


@dataclass(slots=True)
class _Delivery:
    url: str
    body: bytes
    headers: dict[str, str]
    items: int  # statuses/messages carried, for the stats
    first_at: float
    attempt: int = 0


@dataclass
class WebhookStats:
    posts_ok: int = 0
    posts_failed: int = 0  # failed attempts (each may be retried)
    posts_dropped: int = 0  # gave up after RETRY_FOR_S
    statuses_sent: int = 0
    messages_sent: int = 0
    duplicates: int = 0
    reordered: int = 0
    overflow_dropped: int = 0
    by_status: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "posts_ok": self.posts_ok,
            "posts_failed": self.posts_failed,
            "posts_dropped": self.posts_dropped,
            "statuses_sent": self.statuses_sent,
            "messages_sent": self.messages_sent,
            "duplicates": self.duplicates,
            "reordered": self.reordered,
            "overflow_dropped": self.overflow_dropped,
            "by_status": dict(self.by_status),
        }


class WebhookDispatcher:
    """Schedules, batches, signs, POSTs and retries webhooks to one receiver URL."""

    def __init__(
        self,
        url: str | None,
        app_secret: str | None,
        *,
        delay_ms: float = 150.0,
        read_ratio: float = 0.5,
        duplicate_ratio: float = 0.05,
        reorder_ratio: float = 0.05,
        rng: random.Random | None = None,
        clock: Clock = time.monotonic,
        wall: Clock = time.time,
        tick_s: float = TICK_S,
        retry_for_s: float = RETRY_FOR_S,
        max_pending: int = MAX_PENDING,
        max_in_flight: int = 16,
        timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url or None
        self._secret = app_secret
        self.delay_ms = delay_ms
        self.read_ratio = read_ratio
        self.duplicate_ratio = duplicate_ratio
        self.reorder_ratio = reorder_ratio
        self.rng = rng or random.Random()
        self.clock = clock
        self.wall = wall
        self.tick_s = tick_s
        self.retry_for_s = retry_for_s
        self.max_pending = max_pending
        self.timeout_s = timeout_s
        self.stats = WebhookStats()
        self._targets: dict[str, Target] = {}
        self._heap: list[tuple[float, int, _Event]] = []
        self._retries: list[tuple[float, int, _Delivery]] = []
        self._seq = 0
        self._horizon = float("-inf")  # flush(): everything due before this is due now
        self._in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._sem = asyncio.Semaphore(max_in_flight)
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._runner: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._warned_unsigned = False
        self._warned_overflow = False

    # ---- lifecycle ------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        return self.url is not None

    def register(self, target: Target) -> None:
        self._targets[target.phone_number_id] = target

    async def start(self) -> None:
        if self._runner is not None:
            return
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(self.timeout_s, connect=min(self.timeout_s, 3.0)),
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=32),
            headers={"User-Agent": USER_AGENT},
            transport=self._transport,
        )
        self._wake = asyncio.Event()
        self._runner = asyncio.create_task(self._run(), name="sandbox-webhooks")
        if self.url and not self._secret:
            self._warn_unsigned()

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def set_url(self, url: str | None) -> None:
        self.url = url or None
        if self.url and not self._secret:
            self._warn_unsigned()

    def _warn_unsigned(self) -> None:
        if not self._warned_unsigned:
            self._warned_unsigned = True
            log.warning(
                "sandbox: WANOTIFY_APP_SECRET is not set: webhooks are sent without "
                "X-Hub-Signature-256 (a real receiver refuses them)"
            )

    def clear(self) -> None:
        """Forget scheduled (not yet posted) notifications and retries."""
        self._heap.clear()
        self._retries.clear()
        self._horizon = float("-inf")

    @property
    def pending(self) -> int:
        return len(self._heap) + len(self._retries) + self._in_flight

    # ---- scheduling -----------------------------------------------------------------

    def _push(self, due: float, event: _Event) -> None:
        if len(self._heap) >= self.max_pending:
            self.stats.overflow_dropped += 1
            if not self._warned_overflow:
                self._warned_overflow = True
                log.warning(
                    "sandbox: more than %d webhooks pending; dropping new ones", self.max_pending
                )
            return
        self._seq += 1
        heapq.heappush(self._heap, (due, self._seq, event))

    def _jitter(self, base_s: float) -> float:
        return base_s * self.rng.uniform(0.75, 1.25)

    def schedule_message(
        self,
        phone_number_id: str,
        wamid: str,
        recipient_id: str,
        *,
        category: str,
        billable: bool,
        pricing_type: str,
        biz_opaque_callback_data: str | None = None,
        with_conversation: bool = True,
        failure: tuple[int, str | None] | None = None,
        sent_first: bool = True,
    ) -> None:
        """Schedule the status notifications of one accepted message."""
        if self.url is None:
            return
        now = self.clock()
        wall_now = self.wall()
        delay = self.delay_ms / 1000.0
        t_sent = now + self._jitter(delay)
        t_second = t_sent + self._jitter(delay)

        def status(name: str, at: float, extra: dict[str, Any] | None = None) -> dict[str, Any]:
            st: dict[str, Any] = {
                "id": wamid,
                "status": name,
                "timestamp": str(int(wall_now + (at - now))),
                "recipient_id": recipient_id,
            }
            if biz_opaque_callback_data is not None:
                st["biz_opaque_callback_data"] = biz_opaque_callback_data
            if extra:
                st.update(extra)
            return st

        def billing(first: bool) -> dict[str, Any]:
            extra: dict[str, Any] = {}
            if with_conversation:
                conv_id, expires = _conversation(phone_number_id, recipient_id, category, wall_now)
                conv: dict[str, Any] = {"id": conv_id}
                if first:
                    conv["expiration_timestamp"] = str(expires)
                conv["origin"] = {"type": category}
                extra["conversation"] = conv
            extra["pricing"] = {
                "billable": billable,
                "pricing_model": "PMP",
                "category": category,
                "type": pricing_type,
            }
            return extra

        plan: list[tuple[float, dict[str, Any]]] = []
        if failure is not None:
            code, details = failure
            if sent_first:
                plan.append((t_sent, status("sent", t_sent, billing(True))))
                t_fail = t_second
            else:
                t_fail = t_sent
            plan.append(
                (t_fail, status("failed", t_fail, {"errors": [webhook_error(code, details)]}))
            )
        else:
            sent = status("sent", t_sent, billing(True))
            delivered = status("delivered", t_second, billing(False))
            if self.reorder_ratio and self.rng.random() < self.reorder_ratio:
                # delivered arrives first; the timestamps still tell the true order
                self.stats.reordered += 1
                plan.append((t_sent, delivered))
                plan.append((t_second, sent))
            else:
                plan.append((t_sent, sent))
                plan.append((t_second, delivered))
            if self.read_ratio and self.rng.random() < self.read_ratio:
                t_read = t_second + self._jitter(delay)
                plan.append((t_read, status("read", t_read)))
        for due, st in plan:
            event = _Event(phone_number_id, "statuses", st, (wamid, st["status"]))
            self._push(due, event)
            if self.duplicate_ratio and self.rng.random() < self.duplicate_ratio:
                self.stats.duplicates += 1
                self._push(due + self._jitter(max(delay, self.tick_s * 2)), event)

    def schedule_inbound(
        self,
        phone_number_id: str,
        from_id: str,
        name: str,
        message: dict[str, Any],
    ) -> None:
        """Schedule an inbound (user → business) message notification, due now."""
        if self.url is None:
            return
        contacts = [{"profile": {"name": name}, "wa_id": from_id}]
        self._push(
            self.clock(),
            _Event(
                phone_number_id, "messages", message, (str(message.get("id")), "message"), contacts
            ),
        )
        self._kick()

    def schedule_form(
        self, url: str, params: Mapping[str, str], headers: Mapping[str, str], delay_s: float
    ) -> None:
        """POST a form-encoded callback (the fake SMS provider's status callbacks)."""
        body = urlencode(dict(params)).encode("ascii")
        hdrs = {"Content-Type": "application/x-www-form-urlencoded", **headers}
        delivery = _Delivery(url, body, hdrs, 1, self.clock() + delay_s)
        self._seq += 1
        heapq.heappush(self._retries, (self.clock() + delay_s, self._seq, delivery))

    def _kick(self) -> None:
        if self._wake is not None:
            self._wake.set()

    # ---- the pump -------------------------------------------------------------------

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.tick_s)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                self._pump()
            except Exception:  # never let one bad batch stop the webhooks
                log.exception("sandbox: webhook pump failed")

    def _pump(self) -> None:
        now = self.clock()
        horizon = max(now, self._horizon)
        # retries (and form callbacks) that are due
        while self._retries and self._retries[0][0] <= horizon:
            _, _, delivery = heapq.heappop(self._retries)
            self._spawn(delivery)
        if not self._heap or self._heap[0][0] > horizon:
            return
        url = self.url
        due: list[_Event] = []
        while self._heap and self._heap[0][0] <= horizon:
            due.append(heapq.heappop(self._heap)[2])
        if url is None:
            return
        # group per phone number, in due order; a duplicate waits for the next round
        groups: dict[tuple[str, str], list[list[_Event]]] = {}
        deferred: list[_Event] = []
        seen: dict[tuple[str, str], set[tuple[str, str]]] = {}
        for ev in due:
            gkey = (ev.phone_number_id, ev.kind)
            keys = seen.setdefault(gkey, set())
            if ev.key in keys:
                deferred.append(ev)
                continue
            keys.add(ev.key)
            batches = groups.setdefault(gkey, [[]])
            limit = MAX_STATUSES_PER_POST if ev.kind == "statuses" else 1
            if len(batches[-1]) >= limit:
                batches.append([])
            batches[-1].append(ev)
        # (while flushing, the next round is immediate)
        later = self._horizon if self._horizon > now else now + self.tick_s
        for ev in deferred:
            self._seq += 1
            heapq.heappush(self._heap, (later, self._seq, ev))
        bodies: list[list[tuple[str, str, list[_Event]]]] = []
        for (pnid, kind), batches in groups.items():
            for batch in batches:
                part = (pnid, kind, batch)
                if (
                    kind == "statuses"
                    and bodies
                    and bodies[-1][0][1] == "statuses"
                    and sum(len(p[2]) for p in bodies[-1]) + len(batch) <= MAX_STATUSES_PER_POST
                    and all(p[0] != pnid for p in bodies[-1])
                    and self.rng.random() < MERGE_RATIO
                ):
                    bodies[-1].append(part)
                else:
                    bodies.append([part])
        for parts in bodies:
            self._spawn(self._build(url, parts, now))

    def _build(self, url: str, parts: list[tuple[str, str, list[_Event]]], now: float) -> _Delivery:
        entries: dict[str, list[dict[str, Any]]] = {}
        count = 0
        for pnid, kind, events in parts:
            target = self._targets.get(pnid) or Target(pnid, pnid, pnid)
            value: dict[str, Any] = {
                "messaging_product": "whatsapp",
                "metadata": {
                    "display_phone_number": target.display_phone_number,
                    "phone_number_id": pnid,
                },
            }
            if kind == "messages":
                contacts: list[dict[str, Any]] = []
                for ev in events:
                    contacts.extend(ev.contacts or [])
                value["contacts"] = contacts
                value["messages"] = [ev.item for ev in events]
                self.stats.messages_sent += len(events)
            else:
                value["statuses"] = [ev.item for ev in events]
                for ev in events:
                    name = ev.item["status"]
                    self.stats.by_status[name] = self.stats.by_status.get(name, 0) + 1
                self.stats.statuses_sent += len(events)
            count += len(events)
            entries.setdefault(target.waba_id, []).append({"value": value, "field": "messages"})
        payload = {
            "object": "whatsapp_business_account",
            "entry": [{"id": waba, "changes": changes} for waba, changes in entries.items()],
        }
        body = orjson.dumps(payload)
        headers = {"Content-Type": "application/json"}
        if self._secret:
            headers["X-Hub-Signature-256"] = sign(body, self._secret)
        return _Delivery(url, body, headers, count, now)

    def _spawn(self, delivery: _Delivery) -> None:
        self._in_flight += 1
        task = asyncio.create_task(self._deliver(delivery))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, delivery: _Delivery) -> None:
        try:
            async with self._sem:
                ok, reason = await self._post(delivery)
            if ok:
                self.stats.posts_ok += 1
                return
            self.stats.posts_failed += 1
            delivery.attempt += 1
            now = self.clock()
            if now - delivery.first_at >= self.retry_for_s:
                self.stats.posts_dropped += 1
                log.warning(
                    "sandbox: dropping a webhook POST to %s after %d attempts over %.0f s "
                    "(%d notifications): %s",
                    delivery.url,
                    delivery.attempt,
                    now - delivery.first_at,
                    delivery.items,
                    reason,
                )
                return
            backoff = min(0.25 * (2 ** (delivery.attempt - 1)), 8.0) * self.rng.uniform(0.8, 1.2)
            self._seq += 1
            heapq.heappush(self._retries, (now + backoff, self._seq, delivery))
        finally:
            self._in_flight -= 1

    async def _post(self, delivery: _Delivery) -> tuple[bool, str]:
        client = self._client
        if client is None:
            return False, "dispatcher is not running"
        try:
            resp = await client.post(delivery.url, content=delivery.body, headers=delivery.headers)
        except httpx.HTTPError as exc:
            return False, f"{type(exc).__name__}: {exc}"
        if 200 <= resp.status_code < 300:
            return True, ""
        return False, f"HTTP {resp.status_code}"

    # ---- flush ----------------------------------------------------------------------

    async def flush(self, timeout_s: float = 10.0) -> dict[str, Any]:
        """Post everything scheduled now (ignoring the remaining delays) and wait for it.

        Failed POSTs get one immediate retry; if that fails too they stay in the retry
        queue (reported as ``retrying``) instead of holding the flush for a minute.
        """
        deadline = self.clock() + timeout_s
        horizon = max((due for due, _, _ in self._heap), default=self.clock())
        self._horizon = max(self._horizon, horizon)
        self._retries = [(self.clock(), seq, d) for _, seq, d in self._retries]
        heapq.heapify(self._retries)
        retry_horizon = self._seq
        while self.clock() < deadline:
            self._kick()
            await asyncio.sleep(0.005)
            busy = (
                self._in_flight
                or any(due <= self._horizon for due, _, _ in self._heap[:1])
                or any(
                    seq <= retry_horizon and due <= self.clock() for due, seq, _ in self._retries
                )
            )
            if not busy:
                break
        self._horizon = float("-inf")
        return {
            "pending": len(self._heap),
            "retrying": len(self._retries),
            "in_flight": self._in_flight,
            "stats": self.stats.as_dict(),
        }


def _conversation(pnid: str, recipient: str, category: str, wall_now: float) -> tuple[str, int]:
    """A stable 32-hex conversation id per (number, recipient, category, day) and its expiry."""
    bucket = int(wall_now // 86400)
    digest = hashlib.blake2b(
        f"{pnid}:{recipient}:{category}:{bucket}".encode(), digest_size=16
    ).hexdigest()
    return digest, (bucket + 1) * 86400
