"""The release-and-send loop: one dispatcher task drives one sender for a time slice.

It owns the sender (a Redis lease), asks ``release.lua`` for the jobs the number may send
right now, claims them in Postgres, sends them concurrently over the process's long-lived
HTTP client (in order per recipient), records the outcomes in one transaction, and settles
the Redis entries. Then it releases the sender, or hands it on if work remains.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime

import aiohttp
import redis.asyncio as aredis

from wanotify.campaigns.pausing import auto_pause
from wanotify.compliance.consent import parse_window, quiet_wait_s
from wanotify.config import SenderConfig, Settings
from wanotify.core.phones import mask_phone
from wanotify.delivery import token_watch
from wanotify.delivery.gate import Pacer
from wanotify.delivery.outcomes import ClaimedJob, Decision, Outcome, claim, decide, record
from wanotify.metrics import (
    DISPATCH_IN_FLIGHT,
    ENQUEUE_TO_ACCEPTED,
    LATE_SENDS,
    SENDER_PAUSES,
    SENDS,
)
from wanotify.pacing.lanes import AsyncLanes, Pace, Released, Tier, now_ms, parse_entry
from wanotify.providers import tokens
from wanotify.providers.policy import token_refused
from wanotify.providers.whatsapp import SendResult, send_message

log = logging.getLogger("wanotify.dispatch")

MAX_RELEASE = 200


def _next_look(rel: Released, wall: float, lead: float, horizon: float, busy: bool) -> float | None:
    """When a drain looks at its lanes again (wall-clock ms), or None: nothing left to do."""
    due_soon = rel.next_due_ms is not None and rel.next_due_ms - wall < 1000
    if not rel.entries and rel.depth == 0 and not busy and not due_soon:
        return None
    if rel.entries:
        # Come back just before the reserved slots run out.
        return rel.slots[-1] - lead
    if rel.depth > 0:
        return wall + min(max(rel.wait_ms, 1.0), horizon) - lead
    if due_soon and rel.next_due_ms is not None:
        return min(rel.next_due_ms, wall + 200.0)
    return wall + 20.0


async def _wait_or_wake(waker: asyncio.Event, ms: float) -> None:
    """Sleep ``ms``, cut short by a wake (an OTP for this drain's sender)."""
    try:
        await asyncio.wait_for(waker.wait(), ms / 1000)
    except TimeoutError:
        pass


@dataclass
class DrainStats:
    sender: str
    released: int = 0
    sent: int = 0
    accepted: int = 0
    failed: int = 0
    requeued: int = 0
    expired: int = 0
    skipped: int = 0
    owned: bool = True
    paused: bool = False
    depth_left: int = 0
    next_due_ms: float | None = None
    errors: dict[int, int] = field(default_factory=dict)


class Dispatcher:
    def __init__(self, settings: Settings, client: aiohttp.ClientSession, redis_client: aredis.Redis):
        self.settings = settings
        self.client = client
        self.lanes = AsyncLanes(redis_client)
        self.pacers: dict[str, Pacer] = {}
        self.paused: set[str] = set()  # senders this process saw paused
        self.pair_hits: dict[tuple[str, str], int] = defaultdict(int)
        # Drains running in this process, by sender: a kick for a sender one of them owns
        # (an OTP just queued) wakes it to release at once instead of at its next planned
        # look (up to the reservation horizon later).
        self.wakers: dict[str, asyncio.Event] = {}
        # Jobs released and not yet settled, over every sender of this process: capped so
        # that what the process holds (claimed rows, requests, answers) does not grow with
        # the send rate or the number of senders; a drain at the cap waits for room.
        self.in_flight = 0
        self.room = asyncio.Event()
        self.quiet = parse_window(settings.quiet_hours)

    async def drain(self, sender: SenderConfig, slice_s: float | None = None) -> DrainStats:
        """Own ``sender`` for a time slice: reserve slots, claim, send each at its time."""
        settings = self.settings
        stats = DrainStats(sender.name)
        token = secrets.token_hex(8)
        lease_ms = int(settings.lease_s * 1000)
        if not await self._take(sender, token, lease_ms, stats):
            return stats
        waker = self.wakers[sender.name] = asyncio.Event()
        pace = Pace.for_sender(sender, settings)
        tier = Tier.for_sender(sender)
        horizon = settings.reserve_horizon_ms
        lead = min(horizon / 2, 50.0)
        pacer = self._pacer(sender, pace)
        deadline = time.monotonic() + (slice_s if slice_s is not None else settings.dispatch_slice_s)
        last_renew = time.monotonic()
        tasks: set[asyncio.Task[None]] = set()
        chains: dict[str, asyncio.Future[None]] = {}
        try:
            while True:
                now = time.monotonic()
                if now - last_renew > 1.0:  # (on every path: a wait for room keeps the lease too)
                    await self.lanes.claim(sender.name, token, lease_ms)
                    last_renew = now
                    if await self.lanes.is_paused(sender.name):
                        self.paused.add(sender.name)
                if sender.name in self.paused:
                    stats.paused = True
                    break
                if now >= deadline:
                    break
                # If sends run late (a slow claim, a busy loop), reserve nothing more until the
                # gate has caught up: the lag is not carried forward behind new reservations
                # (an OTP would wait behind it), and the number still sends at its full rate.
                # An OTP's wake still releases at once (the gate gives it an earlier slot).
                lag, max_lag = pacer.lag_ms, pace.late_ms / 2
                if lag > max_lag and not waker.is_set():
                    await _wait_or_wake(waker, min(lag - max_lag + 5.0, horizon))
                    continue
                room = settings.max_in_flight - self.in_flight
                if room <= 0:  # the process holds enough: wait until a batch is settled
                    await self._wait_for_room(horizon)
                    continue
                waker.clear()  # a kick from here on wakes the wait below
                rel = await self.lanes.release(
                    sender.name, pace, min(MAX_RELEASE, room), lease_ms, horizon, tier
                )
                if rel.entries:
                    stats.released += len(rel.entries)
                    self.in_flight += len(rel.entries)
                    DISPATCH_IN_FLIGHT.inc(len(rel.entries))
                    t = asyncio.create_task(
                        self._batch(sender, rel.entries, rel.slots, token, stats, chains, pacer)
                    )
                    tasks.add(t)
                    t.add_done_callback(tasks.discard)
                    t.add_done_callback(functools.partial(self._done, len(rel.entries)))
                if time.monotonic() >= deadline:
                    break
                wall = now_ms()
                wake = _next_look(rel, wall, lead, horizon, busy=bool(tasks))
                if wake is None:
                    break
                await _wait_or_wake(waker, max(1.0, wake - wall))
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            if self.wakers.get(sender.name) is waker:
                del self.wakers[sender.name]
            _released, depth, next_due = await self.lanes.finish(sender.name, token, force=True)
            stats.depth_left = depth
            stats.next_due_ms = next_due
        return stats

    def wake(self, sender: str) -> None:
        """An OTP arrived for ``sender``: if a drain of this process owns it, release now."""
        waker = self.wakers.get(sender)
        if waker is not None:
            waker.set()

    async def _take(self, sender: SenderConfig, token: str, lease_ms: int, stats: DrainStats) -> bool:
        """Own the sender for this drain: not paused, a token to send with, the lease won."""
        if await self.lanes.is_paused(sender.name):
            stats.paused = True
            self.paused.add(sender.name)
            return False
        try:
            tokens.current(sender)
        except tokens.TokenUnavailable as exc:  # no token to send with: pause, jobs wait
            reason = token_watch.unavailable_reason(sender, exc)
            await self.lanes.pause(sender.name, reason)
            token_watch.alert(sender, reason)
            stats.paused = True
            self.paused.add(sender.name)
            return False
        self.paused.discard(sender.name)
        if not await self.lanes.claim(sender.name, token, lease_ms):
            stats.owned = False
            self.wake(sender.name)  # if its drain runs here: release at once
            return False
        return True

    def _pacer(self, sender: SenderConfig, pace: Pace) -> Pacer:
        pacer = self.pacers.get(sender.name)
        if pacer is None or pacer.cap != pace.window_cap or pacer.late_ms != pace.late_ms:
            pacer = self.pacers[sender.name] = Pacer(
                pace.interval_ms, pace.window_cap, pace.pair_interval_ms, sender.pair_burst, pace.late_ms,
                max_advance_ms=pace.max_advance_ms,
            )
        return pacer

    async def _wait_for_room(self, horizon_ms: float) -> None:
        self.room.clear()
        try:
            await asyncio.wait_for(self.room.wait(), max(horizon_ms, 10.0) / 1000)
        except TimeoutError:
            pass

    def _done(self, n: int, _task: asyncio.Task[None]) -> None:
        self.in_flight -= n
        DISPATCH_IN_FLIGHT.dec(n)
        self.room.set()

    async def _batch(
        self,
        sender: SenderConfig,
        entries: list[str],
        slots: list[float],
        token: str,
        stats: DrainStats,
        chains: dict[str, asyncio.Future[None]],
        pacer: Pacer,
    ) -> None:
        by_id: dict[str, str] = {}
        slot_of: dict[str, float] = {}
        for e, t in zip(entries, slots, strict=True):
            job_id = parse_entry(e)[1]
            by_id[job_id], slot_of[job_id] = e, t
        ids = [uuid.UUID(i) for i in by_id]
        try:
            jobs, expired = await asyncio.to_thread(claim, ids, token, self.settings.lease_s)
        except Exception:
            log.exception("claim failed; entries stay leased and come back after the lease")
            return
        stats.expired += len(expired)
        claimed = {str(j.id) for j in jobs}
        done = [e for i, e in by_id.items() if i not in claimed]  # expired, or already handled
        stats.skipped += len(done) - len(expired)
        jobs.sort(key=lambda j: slot_of[str(j.id)])
        results = await asyncio.gather(
            *(self._send_ordered(sender, j, chains, slot_of[str(j.id)], pacer) for j in jobs)
        )
        outcomes: list[Outcome] = []
        hold: list[tuple[float, str]] = []
        for job, res in zip(jobs, results, strict=True):
            d = self._decide(sender, job, res)
            outcomes.append(Outcome(job, res, d))
            if not res.skipped:
                SENDS.labels("whatsapp", d.action, str(res.error_code or ""), sender.name).inc()
            if d.action == "done":
                ENQUEUE_TO_ACCEPTED.labels(job.kind).observe(max(0.0, now_ms() / 1000 - (job.id.int >> 80) / 1000))
            e = by_id[str(job.id)]
            if d.action in ("retry", "throttle", "pause"):
                hold.append((now_ms() + d.delay_s * 1000, e.lstrip("!")))
                stats.requeued += 1
            else:
                done.append(e)
                if d.action == "done":
                    stats.accepted += 1
                else:
                    stats.failed += 1
            if res.error_code is not None:
                stats.errors[res.error_code] = stats.errors.get(res.error_code, 0) + 1
        stats.sent += len(jobs)
        try:
            await asyncio.to_thread(record, outcomes)
        except Exception:
            log.exception("recording %d outcomes failed; entries come back after the lease", len(outcomes))
            return
        await self._feedback(sender, outcomes)
        await self.lanes.settle(sender.name, [x.lstrip("!") for x in done], hold)

    def _decide(self, sender: SenderConfig, job: ClaimedJob, res: SendResult) -> Decision:
        key = (sender.name, job.to_number)
        if res.policy.hold_pair:
            self.pair_hits[key] += 1
        elif res.ok:
            self.pair_hits.pop(key, None)
        return decide(res, job, self.pair_hits.get(key, 1))

    async def _feedback(self, sender: SenderConfig, outcomes: list[Outcome]) -> None:
        """Meta's throttling answers slow the number (130429) or the recipient (131056) down;
        account-level errors pause the number until an operator resumes it."""
        paused = next((o for o in outcomes if o.decision.action == "pause" and not o.result.skipped), None)
        res = paused.result if paused is not None else None
        if res is not None and token_refused(res.error_code, res.http_status):
            if res.token_fp != tokens.current_fingerprint(sender):
                # That token was already replaced (rotated while the call was in flight):
                # the job is held a few seconds and goes out with the new one.
                log.warning("sender %s: refused token %s is no longer current; not pausing",
                            sender.name, res.token_fp, extra={"sender": sender.name})
            else:
                reason = token_watch.pause_reason(res, sender)
                self.paused.add(sender.name)
                await self.lanes.pause(sender.name, reason)
                token_watch.alert(sender, reason)
        elif paused is not None:
            reason = {
                "error_code": paused.result.error_code,
                "error": paused.result.policy.title,
                "message": paused.result.error_message,
                "at": time.time(),
            }
            self.paused.add(sender.name)
            await self.lanes.pause(sender.name, reason)
            log.error(
                "sender %s paused: Meta error %s (%s); its jobs wait. Fix the account, then"
                " run `wanotify senders resume %s`",
                sender.name, paused.result.error_code, paused.result.policy.title, sender.name,
                extra={"sender": sender.name, "error_code": paused.result.error_code, "alert": True},
            )
            SENDER_PAUSES.labels(sender.name, "account").inc()
        spam = next((o.result.error_code for o in outcomes if o.result.policy.pause_campaigns), None)
        if spam is not None:  # spam / policy reports: stop this number's campaigns
            await asyncio.to_thread(auto_pause, f"Meta error {spam} on sender {sender.name}", sender=sender.name)
        if any(o.result.policy.slow_down for o in outcomes):
            log.warning("sender %s hit Meta's rate limit; slowing down for 10 s", sender.name)
            await self.lanes.slow_down(sender.name, 1.1, 10_000)
        for o in outcomes:
            if o.result.policy.hold_pair:
                await self.lanes.hold_recipient(
                    sender.name,
                    o.job.to_number.lstrip("+"),
                    o.decision.delay_s * 1000,
                    Pace.for_sender(sender, self.settings).pair_burst_ms,
                )

    async def _send_ordered(
        self,
        sender: SenderConfig,
        job: ClaimedJob,
        chains: dict[str, asyncio.Future[None]],
        slot_ms: float,
        pacer: Pacer,
    ) -> SendResult:
        """Send at its slot (through the sender's gate), after earlier messages to the same recipient."""
        prev = chains.get(job.to_number)
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        chains[job.to_number] = mine
        try:
            if prev is not None:
                await asyncio.shield(prev)
            if job.kind == "marketing" and self.quiet is not None:
                wait = quiet_wait_s(job.to_number, datetime.now(UTC), self.quiet, job.recipient_tz)
                if wait > 0:  # quiet hours where the recipient is: held until they end
                    return SendResult(False, None, None, None, "quiet hours", None, 0.0,
                                      retry_after=wait, skipped=True)
            rcpt = job.to_number
            await pacer.wait_recipient(rcpt)
            if not await pacer.wait_turn(slot_ms, urgent=job.kind == "otp"):  # too late: a new slot, soon
                LATE_SENDS.labels(sender.name).inc()
                return SendResult(False, None, None, None, "late for its slot", None, 0.0,
                                  retry_after=0.0, skipped=True)
            if sender.name in self.paused:  # paused while this one waited: keep it, send nothing
                return SendResult(False, None, None, None, "sender paused", None, 0.0, skipped=True)
            pacer.sent_to(rcpt)
            res = await send_message(self.client, self.settings, sender, job.payload)
            if not res.ok:
                log.info(
                    "send failed",
                    extra={
                        "notification_id": str(job.id),
                        "sender": sender.name,
                        "to": mask_phone(job.to_number),
                        "attempt": job.attempt_count,
                        "error_code": res.error_code,
                        "http_status": res.http_status,
                    },
                )
            return res
        finally:
            mine.set_result(None)
            if chains.get(job.to_number) is mine:
                del chains[job.to_number]
