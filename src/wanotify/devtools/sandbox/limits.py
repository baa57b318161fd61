"""Meta's two send limits, as pure in-memory structures with an injectable clock.

* **Throughput** (per business phone number): at most ``mps`` messages in any trailing
  one-second window; one more gets ``130429`` ("Rate limit hit").
* **Pair rate** (per business number and recipient): a token bucket of ``pair_burst`` tokens
  refilled at one token per ``pair_interval_s`` (about one message per 6 s with short
  bursts); an empty bucket gets ``131056`` ("(Business Account, Consumer Account) pair rate
  limit hit").

Only sends that are accepted consume quota: :meth:`SendLimits.check` looks without taking,
:meth:`SendLimits.commit` takes. Nothing here awaits, so in one asyncio process a check
followed by a commit is atomic.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable

Clock = Callable[[], float]

RATE_LIMIT_HIT = 130429
PAIR_RATE_LIMIT_HIT = 131056


class SlidingWindowLimiter:
    """At most ``limit`` events in any trailing window of ``window_s`` seconds."""

    __slots__ = ("_events", "limit", "window_s")

    def __init__(self, limit: int, window_s: float = 1.0) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        if window_s <= 0:
            raise ValueError("window_s must be > 0")
        self.limit = limit
        self.window_s = window_s
        self._events: deque[float] = deque()

    def _expire(self, now: float) -> None:
        events = self._events
        horizon = now - self.window_s
        while events and events[0] <= horizon:
            events.popleft()

    def allows(self, now: float) -> bool:
        """Whether one more event at ``now`` fits (does not record it)."""
        self._expire(now)
        return len(self._events) < self.limit

    def record(self, now: float) -> None:
        self._events.append(now)

    def count(self, now: float) -> int:
        self._expire(now)
        return len(self._events)

    def retry_after(self, now: float) -> float:
        """Seconds until one more event would fit (0 if it fits now)."""
        self._expire(now)
        if len(self._events) < self.limit:
            return 0.0
        return max(0.0, self._events[len(self._events) - self.limit] + self.window_s - now)


class PairLimiter:
    """Token buckets per key (``capacity`` tokens, one more every ``interval_s``).

    A bucket that has refilled completely is the same as no bucket, so buckets are kept in
    least-recently-used order and full ones are dropped as time passes: memory stays
    proportional to the recipients messaged in the last ``capacity * interval_s`` seconds.
    """

    __slots__ = ("_buckets", "capacity", "interval_s")

    def __init__(self, capacity: int, interval_s: float) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        if interval_s <= 0:
            raise ValueError("interval_s must be > 0")
        self.capacity = capacity
        self.interval_s = interval_s
        # key -> (tokens after the last take, time of the last take)
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def _prune(self, now: float) -> None:
        full_after = self.capacity * self.interval_s
        buckets = self._buckets
        while buckets:
            key, (_tokens, last) = next(iter(buckets.items()))
            if now - last < full_after:
                break
            del buckets[key]

    def tokens(self, key: str, now: float) -> float:
        state = self._buckets.get(key)
        if state is None:
            return float(self.capacity)
        tokens, last = state
        return min(float(self.capacity), tokens + max(0.0, now - last) / self.interval_s)

    def allows(self, key: str, now: float) -> bool:
        return self.tokens(key, now) >= 1.0

    def take(self, key: str, now: float) -> None:
        tokens = self.tokens(key, now) - 1.0
        self._buckets[key] = (tokens, now)
        self._buckets.move_to_end(key)
        self._prune(now)

    def retry_after(self, key: str, now: float) -> float:
        missing = 1.0 - self.tokens(key, now)
        return max(0.0, missing * self.interval_s)

    def __len__(self) -> int:
        return len(self._buckets)


class SenderLimits:
    """Both limits of one business phone number."""

    __slots__ = ("mps", "pair")

    def __init__(self, mps: int, pair_burst: int, pair_interval_s: float) -> None:
        self.mps = SlidingWindowLimiter(mps, 1.0)
        self.pair = PairLimiter(pair_burst, pair_interval_s)

    def check(self, recipient: str, now: float) -> int | None:
        """None if a send to ``recipient`` at ``now`` is within both limits, else Meta's code."""
        if not self.mps.allows(now):
            return RATE_LIMIT_HIT
        if not self.pair.allows(recipient, now):
            return PAIR_RATE_LIMIT_HIT
        return None

    def commit(self, recipient: str, now: float) -> None:
        """Consume quota for one accepted send."""
        self.mps.record(now)
        self.pair.take(recipient, now)


class LimitRegistry:
    """The limits of every configured sender, keyed by phone_number_id."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self.clock = clock
        self._limits: dict[str, SenderLimits] = {}
        self._params: dict[str, tuple[int, int, float]] = {}

    def configure(
        self, phone_number_id: str, mps: int, pair_burst: int, pair_interval_s: float
    ) -> None:
        self._params[phone_number_id] = (mps, pair_burst, pair_interval_s)
        self._limits[phone_number_id] = SenderLimits(mps, pair_burst, pair_interval_s)

    def reset(self) -> None:
        for pnid, (mps, burst, interval) in self._params.items():
            self._limits[pnid] = SenderLimits(mps, burst, interval)

    def get(self, phone_number_id: str) -> SenderLimits:
        return self._limits[phone_number_id]

    def check(self, phone_number_id: str, recipient: str, now: float | None = None) -> int | None:
        return self._limits[phone_number_id].check(recipient, self.clock() if now is None else now)

    def commit(self, phone_number_id: str, recipient: str, now: float | None = None) -> None:
        self._limits[phone_number_id].commit(recipient, self.clock() if now is None else now)
