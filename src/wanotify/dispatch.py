"""The release-and-send loop: one dispatcher task drives one sender for a time slice.

It owns the sender (a Redis lease), asks ``release.lua`` for the jobs the number may send
right now, claims them in Postgres, sends them concurrently over the process's long-lived
HTTP client (in order per recipient), records the outcomes in one transaction, and settles
the Redis entries. Then it releases the sender, or hands it on if work remains.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field

import aiohttp
import redis.asyncio as aredis

from wanotify.config import SenderConfig, Settings
from wanotify.delivery import ClaimedJob, Decision, Outcome, claim, decide, record
from wanotify.phones import mask_phone
from wanotify.providers.whatsapp import SendResult, send_message
from wanotify.throttle import AsyncLanes, Pace, now_ms, parse_entry

log = logging.getLogger("wanotify.dispatch")

MAX_RELEASE = 200


class Pacer:
    """The gate every send of one sender passes, at the moment it is fired.

    Slots from Redis are already spaced by the GCRA interval; this keeps the *actual* send
    instants spaced too. If a claim or the event loop runs late, the late sends go out one
    interval apart instead of in a burst, so what reaches Meta never exceeds the rate.
    """

    def __init__(self, interval_ms: float):
        self.interval_ms = interval_ms
        self.last = 0.0
        self.lock = asyncio.Lock()

    async def wait_turn(self, slot_ms: float) -> None:
        async with self.lock:
            t = max(slot_ms, self.last + self.interval_ms)
            delay = t - now_ms()
            if delay > 0:
                await asyncio.sleep(delay / 1000)
            # Waking a little late is caught up (half an interval at most), never in a burst.
            self.last = max(t, now_ms() - self.interval_ms / 2)


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
    depth_left: int = 0
    next_due_ms: float | None = None
    errors: dict[int, int] = field(default_factory=dict)


class Dispatcher:
    def __init__(self, settings: Settings, client: aiohttp.ClientSession, redis_client: aredis.Redis):
        self.settings = settings
        self.client = client
        self.lanes = AsyncLanes(redis_client)
        self.sem = asyncio.Semaphore(settings.send_concurrency)
        self.pair_hits: dict[tuple[str, str], int] = defaultdict(int)

    async def drain(self, sender: SenderConfig, slice_s: float | None = None) -> DrainStats:
        """Own ``sender`` for a time slice: reserve slots, claim, send each at its time."""
        settings = self.settings
        stats = DrainStats(sender.name)
        token = secrets.token_hex(8)
        lease_ms = int(settings.lease_s * 1000)
        if not await self.lanes.claim(sender.name, token, lease_ms):
            stats.owned = False
            return stats
        pace = Pace.for_sender(sender, settings)
        horizon = settings.reserve_horizon_ms
        lead = min(horizon / 2, 30.0)
        pacer = Pacer(pace.interval_ms)
        deadline = time.monotonic() + (slice_s if slice_s is not None else settings.dispatch_slice_s)
        last_renew = time.monotonic()
        tasks: set[asyncio.Task[None]] = set()
        chains: dict[str, asyncio.Future[None]] = {}
        try:
            while True:
                rel = await self.lanes.release(sender.name, pace, MAX_RELEASE, lease_ms, horizon)
                if rel.entries:
                    stats.released += len(rel.entries)
                    t = asyncio.create_task(
                        self._batch(sender, rel.entries, rel.slots, token, stats, chains, pacer)
                    )
                    tasks.add(t)
                    t.add_done_callback(tasks.discard)
                now = time.monotonic()
                if now - last_renew > 1.0:
                    await self.lanes.claim(sender.name, token, lease_ms)
                    last_renew = now
                if now >= deadline:
                    break
                wall = now_ms()
                due_soon = rel.next_due_ms is not None and rel.next_due_ms - wall < 1000
                if not rel.entries and rel.depth == 0 and not tasks and not due_soon:
                    break
                if rel.entries:
                    # Come back just before the reserved slots run out.
                    wake = rel.slots[-1] - lead
                elif rel.depth > 0:
                    wake = wall + min(max(rel.wait_ms, 1.0), horizon) - lead
                elif due_soon and rel.next_due_ms is not None:
                    wake = min(rel.next_due_ms, wall + 200.0)
                else:
                    wake = wall + 20.0
                await asyncio.sleep(max(1.0, wake - wall) / 1000)
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            _released, depth, next_due = await self.lanes.finish(sender.name, token, force=True)
            stats.depth_left = depth
            stats.next_due_ms = next_due
        return stats

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
        by_id = {parse_entry(e)[1]: e for e in entries}
        slot_of = {parse_entry(e)[1]: t for e, t in zip(entries, slots, strict=True)}
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
            e = by_id[str(job.id)]
            if d.action in ("retry", "throttle"):
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
        if res.error_code == 131056:
            self.pair_hits[key] += 1
        elif res.ok:
            self.pair_hits.pop(key, None)
        return decide(res, job, self.pair_hits.get(key, 1))

    async def _feedback(self, sender: SenderConfig, outcomes: list[Outcome]) -> None:
        """Meta's throttling answers slow the number (130429) or the recipient (131056) down."""
        if any(o.result.error_code in (130429, 4, 80007) for o in outcomes):
            log.warning("sender %s hit Meta's rate limit; slowing down for 30 s", sender.name)
            await self.lanes.slow_down(sender.name, 1.25, 30_000)
        for o in outcomes:
            if o.result.error_code == 131056:
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
            await pacer.wait_turn(slot_ms)
            async with self.sem:
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
