"""The pacing gate: every send of one sender passes it at the moment it is fired.

Slots come from Redis already spaced by the number's GCRA (``lua/release.lua``, shared by
every worker on every host); this gate checks the *actual* send instants on this process.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import deque

from wanotify.pacing.lanes import now_ms


class Pacer:
    """The gate every send of one sender passes, at the moment it is fired.

    Slots from Redis are already spaced by the GCRA; this gate checks the *actual* send
    instants: no send before its slot, sends at least one interval apart, and never more
    than ``cap`` sends in any sliding second. When a claim or a busy event loop made sends
    late, they catch up as far as the window allows instead of being lost, and never burst
    past the limit.

    Waiting sends pass in the order of their slots, not of their arrival. An urgent send (an
    OTP) released while sends of other lanes already hold earlier slots of this gate takes
    the earliest of those slots, and that send takes the OTP's: the GCRA handed the OTP the
    slot after everything reserved ahead (up to the reservation horizon, ~100 ms), and the
    exchange lets it go at the next one. The set of slots is unchanged, so are the rate,
    the window bound and the account cap; the OTP goes at most ``max_advance_ms`` before the
    slot Redis checked its pair limit at (within the pair GCRA's margin, PAIR_MARGIN). An
    urgent send the gate reaches too late for its slot is not the one refused: it takes the
    earliest slot of another lane's send still in time, and that send is refused instead.
    """

    def __init__(self, interval_ms: float, cap: int, pair_interval_ms: float, pair_burst: int,
                 late_ms: float = float("inf"), max_advance_ms: float = float("inf")):
        self.interval_ms = interval_ms
        self.cap = max(1, cap)
        self.late_ms = late_ms
        self.max_advance_ms = max_advance_ms
        self.too_late = 0  # sends refused for lateness (re-held by the dispatcher)
        self.advanced = 0  # urgent sends that took an earlier slot of another lane's send
        self.sent: deque[float] = deque()
        # heap by (slot, arrival); the flag marks an urgent send (never displaced)
        self.waiting: list[tuple[float, int, asyncio.Future[bool], bool]] = []
        self.seq = itertools.count()
        self.alarm: asyncio.Future[None] | None = None  # the server's sleep, cut short by an earlier slot
        self.server: asyncio.Task[None] | None = None
        self.planned = 0.0
        self.pair_interval_ms = pair_interval_ms
        self.pair_tolerance_ms = pair_interval_ms * max(0, pair_burst - 1)
        self.pair_tat: dict[str, float] = {}
        self.pruned_at = 0.0

    async def wait_recipient(self, rcpt: str) -> None:
        """Meta's pair limit, checked against actual send times (a GCRA per recipient)."""
        tat = self.pair_tat.get(rcpt)
        if tat is not None:
            wait = tat - self.pair_tolerance_ms - now_ms()
            if wait > 0:
                await asyncio.sleep(wait / 1000)

    def sent_to(self, rcpt: str) -> None:
        now = now_ms()
        self.pair_tat[rcpt] = max(self.pair_tat.get(rcpt, 0.0), now) + self.pair_interval_ms
        if now - self.pruned_at > 1000.0:
            # Once a second, forget recipients whose slots are all in the past (such an entry
            # constrains nothing): the map holds only the last pair interval's recipients.
            self.pruned_at = now
            self.pair_tat = {k: v for k, v in self.pair_tat.items() if v > now}

    async def wait_turn(self, slot_ms: float, urgent: bool = False) -> bool:
        """Return at the moment this send may be fired (its slot, or later): True; or False
        when it could not be fired within ``late_ms`` of its slot, and must not be sent now
        (the slot is spent; the dispatcher holds the job for a new one). An ``urgent`` send
        may take an earlier slot from a waiting send that is not (see the class)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bool] = loop.create_future()
        head = self._head()
        if urgent:
            slot_ms = self._exchange(slot_ms)
        heapq.heappush(self.waiting, (slot_ms, next(self.seq), fut, urgent))
        if head is not None and slot_ms < head[0]:
            _ring(self.alarm)  # the server sleeps for a later slot than this one: look again
        if self.server is None or self.server.done():
            self.server = loop.create_task(self._serve())
        return await fut  # (a cancelled waiter is skipped by the server)

    @property
    def lag_ms(self) -> float:
        """How late the send at the head of the gate is (0 when the gate keeps up)."""
        head = self._head()
        return 0.0 if head is None else max(0.0, now_ms() - head[0])

    def _exchange(self, slot_ms: float) -> float:
        """The slot an urgent send takes: the earliest slot waiting here that is held by a
        send that is not urgent, if earlier than its own (that send is given ``slot_ms``)."""
        best = -1
        # Not a slot the gate is already too late for (the OTP would be refused at once).
        oldest = now_ms() - self.late_ms / 2
        for i, (slot, _seq, fut, urgent) in enumerate(self.waiting):
            if (not urgent and not fut.done() and oldest < slot < slot_ms and slot_ms - slot <= self.max_advance_ms
                    and (best < 0 or slot < self.waiting[best][0])):
                best = i
        if best < 0:
            return slot_ms
        taken, seq, fut, _ = self.waiting[best]
        self.waiting[best] = (slot_ms, seq, fut, False)
        heapq.heapify(self.waiting)
        self.advanced += 1
        return taken

    def _rescue(self) -> bool:
        """The urgent send at the head is too late for its slot: give it the earliest slot a
        send of another lane holds that is still in time, and that send the stale one (it is
        refused in its place and re-held). False when there is none."""
        now = now_ms()
        best = -1
        for i, (slot, _seq, fut, urgent) in enumerate(self.waiting):
            if (i > 0 and not urgent and not fut.done() and now - slot <= self.late_ms
                    and (best < 0 or slot < self.waiting[best][0])):
                best = i
        if best < 0:
            return False
        stale, seq, fut, _ = self.waiting[0]
        slot, oseq, ofut, _ = self.waiting[best]
        self.waiting[0] = (stale, oseq, ofut, False)
        self.waiting[best] = (slot, seq, fut, True)
        heapq.heapify(self.waiting)
        return True

    def _head(self) -> tuple[float, int, asyncio.Future[bool], bool] | None:
        while self.waiting and self.waiting[0][2].done():
            heapq.heappop(self.waiting)
        return self.waiting[0] if self.waiting else None

    async def _serve(self) -> None:
        """Fire the waiting sends one at a time, earliest slot first, while any wait."""
        while (head := self._head()) is not None:
            slot_ms = head[0]
            if now_ms() - slot_ms > self.late_ms:
                # Later than the pacing allows (see Pace.for_sender): sent now, it could make
                # a window busier than the limit with the slots others are sending on time.
                if head[3] and self._rescue():
                    continue  # an OTP took a later slot from another lane's send, refused instead
                heapq.heappop(self.waiting)
                self.too_late += 1
                head[2].set_result(False)
                continue
            # Planned instants are spaced by the interval; the timer's own lateness is not
            # carried forward (at most one interval is caught up, so no burst after a stall).
            planned = max(slot_ms, self.planned + self.interval_ms)
            now = now_ms()
            if planned > now:
                # Sleep until then, unless a send with an earlier slot arrives meanwhile.
                loop = asyncio.get_running_loop()
                alarm = self.alarm = loop.create_future()
                timer = loop.call_later((planned - now) / 1000, _ring, alarm)
                try:
                    await alarm
                finally:
                    timer.cancel()
                    self.alarm = None
                continue
            while self.sent and self.sent[0] <= now - 1000.0:
                self.sent.popleft()
            if len(self.sent) >= self.cap:
                # The hard cap: never more than `cap` sends in any sliding second.
                await asyncio.sleep(max(0.0005, (self.sent[0] + 1000.0 - now) / 1000))
                continue
            heapq.heappop(self.waiting)
            self.sent.append(now)
            # A late timer may be caught up by one interval, or 5 ms at high rates.
            self.planned = max(planned, now - max(self.interval_ms, 5.0))
            head[2].set_result(True)


def _ring(alarm: asyncio.Future[None] | None) -> None:
    if alarm is not None and not alarm.done():
        alarm.set_result(None)
