"""The pacing gate: every send of one sender passes it at the moment it is fired.

Slots come from Redis already spaced by the number's GCRA (``lua/release.lua``, shared by
every worker on every host); this gate checks the *actual* send instants on this process.
"""

from __future__ import annotations

import asyncio
from collections import deque

from wanotify.pacing.lanes import now_ms


class Pacer:
    """The gate every send of one sender passes, at the moment it is fired.

    Slots from Redis are already spaced by the GCRA; this gate checks the *actual* send
    instants: no send before its slot, and never more than ``cap`` sends in any sliding
    second. When a claim or a busy event loop made sends late, they catch up as far as the
    window allows instead of being lost, and never burst past the limit.
    """

    def __init__(self, interval_ms: float, cap: int, pair_interval_ms: float, pair_burst: int):
        self.interval_ms = interval_ms
        self.cap = max(1, cap)
        self.sent: deque[float] = deque()
        self.lock = asyncio.Lock()
        self.pending = 0  # sends claimed and waiting at the gate
        self.planned = 0.0
        self.head_slot: float | None = None
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

    async def wait_turn(self, slot_ms: float) -> None:
        self.pending += 1
        try:
            await self._wait_turn(slot_ms)
        finally:
            self.pending -= 1

    async def _wait_turn(self, slot_ms: float) -> None:
        async with self.lock:
            self.head_slot = slot_ms
            try:
                await self._pass(slot_ms)
            finally:
                self.head_slot = None

    @property
    def lag_ms(self) -> float:
        """How late the send at the head of the gate is (0 when the gate keeps up)."""
        head = self.head_slot
        return 0.0 if head is None else max(0.0, now_ms() - head)

    async def _pass(self, slot_ms: float) -> None:
        # Planned instants are spaced by the interval; the timer's own lateness is not
        # carried forward (at most one interval is caught up, so no burst after a stall).
        planned = max(slot_ms, self.planned + self.interval_ms)
        while True:
            now = now_ms()
            if planned > now:
                await asyncio.sleep((planned - now) / 1000)
                continue
            while self.sent and self.sent[0] <= now - 1000.0:
                self.sent.popleft()
            if len(self.sent) < self.cap:
                self.sent.append(now)
                # A late timer may be caught up by one interval, or 5 ms at high rates.
                self.planned = max(planned, now - max(self.interval_ms, 5.0))
                return
            # The hard cap: never more than `cap` sends in any sliding second.
            await asyncio.sleep(max(0.0005, (self.sent[0] + 1000.0 - now) / 1000))
