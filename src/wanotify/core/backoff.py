"""The retry schedule: exponential backoff with full jitter, capped, per kind."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class RetrySchedule:
    max_attempts: int
    base_s: float
    cap_s: float

    def delay(self, attempt: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based).

        Full jitter (AWS architecture blog): uniform(0, min(cap, base * 2^(attempt-1))).
        A provider's Retry-After is a floor.
        """
        r = rng or random
        ceiling = min(self.cap_s, self.base_s * (2 ** max(0, attempt - 1)))
        d = r.uniform(0, ceiling)
        if retry_after is not None:
            d = max(d, retry_after)
        return d


SCHEDULES: dict[str, RetrySchedule] = {
    "otp": RetrySchedule(max_attempts=3, base_s=0.5, cap_s=4.0),
    "transactional": RetrySchedule(max_attempts=6, base_s=1.0, cap_s=120.0),
    "marketing": RetrySchedule(max_attempts=8, base_s=5.0, cap_s=900.0),
}

# Meta recommends waiting 4^X seconds after the X-th 131056 for the same pair.
def pair_backoff_s(times: int) -> float:
    return float(4 ** max(1, min(times, 6)))
