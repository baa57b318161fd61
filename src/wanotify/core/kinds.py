"""The kinds of job, declared once: what each is called, its pacing lane, its priority.

``otp`` (short-lived codes: first out of every lane, fast fallback), ``transactional``
(the default) and ``marketing`` (opt-outs and quiet hours apply). Their Celery queues are
in ``worker.queues``; their retry schedules in ``core.backoff``.
"""

from __future__ import annotations

from typing import Literal

Kind = Literal["otp", "transactional", "marketing"]
# In priority order: a dispatcher releases OTPs first, then transactional, then marketing.
KINDS: tuple[Kind, ...] = ("otp", "transactional", "marketing")

# The one-letter name of each kind's pacing lane in Redis (``lua/*.lua`` use the letters).
LANE_FOR_KIND: dict[str, str] = {"otp": "o", "transactional": "t", "marketing": "m"}
LANE_NAMES: dict[str, str] = {lane: kind for kind, lane in LANE_FOR_KIND.items()}
