"""Backoff, in one place: exponential with full jitter, capped; the retry schedule per kind.

Every wait after a failure in wanotify comes from :func:`backoff` (the send path's retry
schedule, Celery task retries) or from Meta's own advice (:func:`pair_backoff_s`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass


def backoff(attempt: int, base_s: float, cap_s: float, *, jitter: bool = True,
            floor_s: float | None = None, rng: random.Random | None = None) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based).

    Full jitter (AWS architecture blog): uniform(0, min(cap, base * 2^(attempt-1))); without
    ``jitter``, the ceiling itself. ``floor_s`` (e.g. a provider's Retry-After) is a floor.
    """
    ceiling = min(cap_s, base_s * (2 ** max(0, attempt - 1)))
    d = (rng or random).uniform(0, ceiling) if jitter else ceiling
    return d if floor_s is None else max(d, floor_s)


@dataclass(frozen=True)
class RetrySchedule:
    max_attempts: int
    base_s: float
    cap_s: float

    def delay(self, attempt: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt ``attempt``; a provider's Retry-After is a floor."""
        return backoff(attempt, self.base_s, self.cap_s, floor_s=retry_after, rng=rng)


SCHEDULES: dict[str, RetrySchedule] = {
    "otp": RetrySchedule(max_attempts=3, base_s=0.5, cap_s=4.0),
    "transactional": RetrySchedule(max_attempts=6, base_s=1.0, cap_s=120.0),
    "marketing": RetrySchedule(max_attempts=8, base_s=5.0, cap_s=900.0),
}


def task_retry_s(retries: int, cap_s: float) -> float:
    """A Celery task's wait before retry ``retries + 1`` while Postgres or Redis is away:
    1, 2, 4 … seconds up to ``cap_s`` (no jitter: the broker spreads redeliveries)."""
    return backoff(min(retries, 6) + 1, 1.0, cap_s, jitter=False)


def pair_backoff_s(times: int) -> float:
    """Meta recommends waiting 4^X seconds after the X-th 131056 for the same pair."""
    return float(4 ** max(1, min(times, 6)))
