"""Per-sender pacing queues in Redis, released by atomic Lua (see ``lua/*.lua``).

Each sender (business phone number) has three FIFO lanes — OTP, transactional, marketing —
of entries ``lane|job_id|recipient``. A dispatcher that owns the sender calls ``release``,
which hands out exactly as many jobs as the number's rate allows right now (GCRA shared by
every worker on every host), honouring Meta's per-recipient pair limit, and parks them in an
inflight set under a lease: a worker that dies holding jobs loses nothing, the lease expires
and the next release puts them back at the head of their lane.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import redis
import redis.asyncio as aredis

from wanotify.config import SenderConfig, Settings
from wanotify.core.kinds import LANE_FOR_KIND, LANE_NAMES
from wanotify.queues import enqueue
from wanotify.redis import get_redis

KICK_TTL_MS = 5_000
SENDERS_KEY = "wn:senders"
# An OTP pushed to a sender some drain owns is announced here (the message is the sender's
# name): the owner, in whichever worker process, releases at once instead of at its next
# planned look. Published by push.lua; every worker runtime listens (delivery/wakes.py).
WAKE_CHANNEL = "wn:wake"
PAIR_MARGIN = 1.10
# The least lateness a send is allowed (a pacing safety of 1.0 leaves no room at all; the
# timer and the event loop need a few milliseconds).
MIN_LATE_MS = 5.0
# One marketing pick after this many transactional picks when both lanes wait.
MARKETING_WEIGHT = 4


def _script(name: str) -> str:
    return resources.files("wanotify").joinpath(f"lua/{name}.lua").read_text(encoding="utf-8")


SCRIPTS = {n: _script(n) for n in ("push", "release", "settle", "finish", "claim")}


def prefix(sender: str) -> str:
    return f"wn:{{{sender}}}:"


def waba_key(waba_id: str) -> str:
    """The account cap's GCRA state (one key per WABA, whatever its numbers)."""
    return f"wn:waba:{{{waba_id}}}:tat"


def entry(kind: str, job_id: str, recipient: str) -> str:
    return f"{LANE_FOR_KIND[kind]}|{job_id}|{recipient}"


def parse_entry(e: str) -> tuple[str, str, str]:
    lane, job_id, rcpt = e.lstrip("!").split("|", 2)
    return lane, job_id, rcpt


def now_ms() -> float:
    return time.time() * 1000.0


def _age_s(head: bytes | str | None, now: float) -> float:
    """Seconds since the job at the head of a lane was created (0 for an empty lane)."""
    if not head:
        return 0.0
    text = head.decode() if isinstance(head, bytes) else head
    try:
        ms = uuid.UUID(parse_entry(text)[1]).int >> 80
    except ValueError:
        return 0.0
    return max(0.0, (now - ms) / 1000.0)


@dataclass(frozen=True)
class Pace:
    """The numbers release.lua needs for one sender."""

    interval_ms: float
    burst_ms: float
    pair_interval_ms: float
    pair_burst_ms: float
    window_cap: int = 1_000_000  # most sends in any sliding second (the dispatcher's gate)
    # The account's cap (WANOTIFY_WABA_LIMITS), a GCRA shared by every number of the WABA:
    # its key ('' = none), interval and burst tolerance.
    waba_key: str = ""
    waba_interval_ms: float = 0.0
    waba_burst_ms: float = 0.0
    # How late after its slot a send may still be fired (the gate re-holds a later one).
    late_ms: float = 1_000_000.0
    # How much earlier than its slot an OTP may go by taking another lane's slot in the gate:
    # within the pair GCRA's margin over Meta's interval (PAIR_MARGIN), so the recipient's
    # pair limit, checked by release.lua at the OTP's own slot, still holds at Meta's.
    max_advance_ms: float = 1_000_000.0

    @classmethod
    def for_sender(cls, s: SenderConfig, settings: Settings) -> Pace:
        """The sender's GCRA: one slot every ``I = 1000 / (mps × pacing_safety)`` ms, no
        burst tolerance, and a bound ``L`` on how late after its slot a send may go.

        Slots are shared by every worker on every host; the sends Meta sees are the slots
        plus each one's lateness (a busy event loop, a slow claim, a handoff between
        workers). In any closed 1-second window of *send instants* there are then at most
        floor((1000 + L) / I) + 1 sends, whoever sent them. ``L`` is the largest that keeps
        that at ``mps - 1`` (one message of margin for jitter on the way to Meta); where the
        share leaves no such room (20 mps at safety 0.95: 19 slots a second already span
        1,000 ms), at ``mps`` with half the room left for that jitter. A burst tolerance
        would use the same room (and the gate spaces sends by ``I`` anyway, so a burst of
        slots only turned into lateness), so there is none.
        """
        interval = 1000.0 / (s.mps * settings.pacing_safety)
        margin_one = (s.mps - 1) * interval - 1000.0  # room for L with mps - 1 per second
        margin_at = s.mps * interval - 1000.0  # room for L with mps per second
        late = max(margin_one, margin_at / 2) - 0.01
        tau = 0.0
        pair = s.pair_interval_s * 1000.0 * PAIR_MARGIN
        waba = settings.waba_limit_map.get(s.waba_id)
        w_key, w_interval, w_tau = "", 0.0, 0.0
        if waba is not None:
            # The same rule over the cap's own period: every sliding period holds at most
            # count - 1 messages at count × pacing_safety.
            # Unlike one number's sends, an account's come from several dispatchers, each a
            # little late on its slots at times, and no per-process gate sees them all: the
            # slots of any period plus that lateness (the reservation horizon + 100 ms) hold
            # at most count - 1, so the sends Meta sees in any period stay within the cap.
            period_ms = waba.period_s * 1000.0
            late_ms = settings.reserve_horizon_ms + 100.0
            w_interval = period_ms / (waba.count * settings.pacing_safety)
            if waba.count > 1:
                w_interval = max(w_interval, (period_ms + late_ms) / (waba.count - 1) + 0.001)
            w_tau = max(0.0, (waba.count - 1) * w_interval - period_ms - late_ms - 0.01)
            w_key = waba_key(s.waba_id)
        return cls(
            interval_ms=interval,
            burst_ms=tau,
            pair_interval_ms=pair,
            pair_burst_ms=pair * (s.pair_burst - 1),
            # The gate's hard cap on actual send instants: the same mps - 1 as the slots (one
            # message of margin for jitter on the way to Meta). Above the share, so that a
            # late send can be caught up: a cap at the share itself would let lateness heal by
            # only one message per second, and every jitter would become lasting lag.
            window_cap=max(1, s.mps - 1),
            late_ms=max(MIN_LATE_MS, late),
            max_advance_ms=s.pair_interval_s * 1000.0 * (PAIR_MARGIN - 1.0),
            waba_key=w_key,
            waba_interval_ms=w_interval,
            waba_burst_ms=w_tau,
        )


@dataclass(frozen=True)
class Tier:
    """A portfolio's daily unique-recipient limit (Meta's messaging tier)."""

    portfolio: str
    limit: int
    marketing_share: float = 0.8

    @classmethod
    def for_sender(cls, s: SenderConfig) -> Tier | None:
        if s.daily_unique_limit is None:
            return None
        return cls(s.portfolio or s.waba_id, s.daily_unique_limit, s.marketing_share)

    def key(self, now: float) -> str:
        day = time.strftime("%Y%m%d", time.gmtime(now / 1000))
        return f"wn:tier:{{{self.portfolio}}}:{day}"

    def used(self, r: Any, now: float | None = None) -> int:
        """Unique recipients messaged today (UTC) across the portfolio."""
        return int(r.scard(self.key(now if now is not None else time.time() * 1000)))

    def args(self, now: float) -> list[Any]:
        day_end = (int(now // 86_400_000) + 1) * 86_400_000
        mkt = max(0, int(self.limit * self.marketing_share))
        return [self.key(now), self.limit, mkt, day_end]


@dataclass
class Released:
    entries: list[str]
    wait_ms: float
    depth: int
    next_due_ms: float | None
    slots: list[float] = field(default_factory=list)  # send time (ms) of each entry


class Lanes:
    """Synchronous side (producers, sweeper, CLI)."""

    def __init__(self, client: redis.Redis):
        self.r = client
        self._push = client.register_script(SCRIPTS["push"])

    def push(self, sender: str, kind: str, entries: list[str]) -> bool:
        """Append entries; True when the caller must kick a dispatcher for this sender."""
        if not entries:
            return False
        res = self._push(args=[prefix(sender), LANE_FOR_KIND[kind], KICK_TTL_MS, sender, *entries])
        return bool(res)

    def contains(self, sender: str, job_ids: list[str]) -> list[bool]:
        if not job_ids:
            return []
        return [bool(x) for x in self.r.smismember(prefix(sender) + "ids", job_ids)]

    def depths(self, sender: str) -> dict[str, Any]:
        """Queue depth per lane, held and inflight counts, and how long the oldest job in
        each lane has waited (job ids are time-ordered UUIDs, so no extra state is kept)."""
        p = prefix(sender)
        pipe = self.r.pipeline(transaction=False)
        for lane in ("o", "t", "m"):
            pipe.llen(p + "q:" + lane)
        pipe.zcard(p + "delay")
        pipe.zcard(p + "inflight")
        pipe.exists(p + "owner")
        for lane in ("o", "t", "m"):
            pipe.lindex(p + "q:" + lane, 0)
        o, t, m, d, i, owner, ho, ht, hm = pipe.execute()
        now = now_ms()
        return {
            "otp": o,
            "transactional": t,
            "marketing": m,
            "held": d,
            "inflight": i,
            "owned": int(owner),
            "wait_s": {
                "otp": _age_s(ho, now),
                "transactional": _age_s(ht, now),
                "marketing": _age_s(hm, now),
            },
        }

    def paused(self, sender: str) -> dict[str, Any] | None:
        raw = self.r.get(paused_key(sender))
        return json.loads(raw) if raw else None

    def pause(self, sender: str, reason: dict[str, Any]) -> None:
        self.r.set(paused_key(sender), json.dumps(reason))

    def resume(self, sender: str) -> bool:
        return bool(self.r.delete(paused_key(sender)))

    def needs_dispatch(self, sender: str) -> str | None:
        """The lane to kick for a sender with work and no live dispatcher (used by the sweeper)."""
        if self.r.exists(paused_key(sender)):
            return None
        p = prefix(sender)
        pipe = self.r.pipeline(transaction=False)
        pipe.exists(p + "owner")
        for lane in ("o", "t", "m"):
            pipe.llen(p + "q:" + lane)
        pipe.zrange(p + "delay", 0, 0, withscores=True)
        pipe.zrange(p + "inflight", 0, 0, withscores=True)
        owner, o, t, m, delay, inflight = pipe.execute()
        if owner:
            return None
        now = now_ms()
        for lane, n in (("o", o), ("t", t), ("m", m)):
            if n:
                return lane
        if delay and delay[0][1] <= now + 1000:
            return "t"
        if inflight and inflight[0][1] <= now:
            return "t"
        return None

    def next_due(self, sender: str) -> float | None:
        d = self.r.zrange(prefix(sender) + "delay", 0, 0, withscores=True)
        return float(d[0][1]) if d else None


def paused_key(sender: str) -> str:
    return prefix(sender) + "paused"


def push_entries(groups: dict[tuple[str, str], list[str]]) -> None:
    """Append entries to their (sender, kind) lanes, kicking a dispatcher wherever the
    lane says none is coming (committed jobs only: Redis never holds the only copy)."""
    lanes = Lanes(get_redis())
    for (sender, kind), entries in groups.items():
        for start in range(0, len(entries), 500):
            if lanes.push(sender, kind, entries[start : start + 500]):
                enqueue.dispatch(sender, kind)


def kick_lane(sender: str, lane: str, countdown: float | None = None) -> None:
    """Kick a dispatcher for ``sender`` on the queue of ``lane``'s kind."""
    enqueue.dispatch(sender, LANE_NAMES[lane], countdown)


class AsyncLanes:
    """Dispatcher side (runs on the worker's event loop)."""

    def __init__(self, client: aredis.Redis):
        self.r = client
        self._release = client.register_script(SCRIPTS["release"])
        self._settle = client.register_script(SCRIPTS["settle"])
        self._finish = client.register_script(SCRIPTS["finish"])
        self._claim = client.register_script(SCRIPTS["claim"])
        self._hold = client.register_script(
            "local cur = tonumber(redis.call('GET', KEYS[1]) or '0') "
            "if tonumber(ARGV[1]) > cur then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) end "
            "return 1"
        )

    async def is_paused(self, sender: str) -> bool:
        return bool(await self.r.exists(paused_key(sender)))

    async def pause(self, sender: str, reason: dict[str, Any]) -> None:
        await self.r.set(paused_key(sender), json.dumps(reason))

    async def claim(self, sender: str, token: str, ttl_ms: int) -> bool:
        return bool(await self._claim(args=[prefix(sender), token, ttl_ms]))

    async def release(
        self,
        sender: str,
        pace: Pace,
        max_n: int,
        lease_ms: int,
        horizon_ms: float = 0.0,
        tier: Tier | None = None,
    ) -> Released:
        """Release what may be sent now, or reserve slots up to ``horizon_ms`` ahead."""
        t = tier.args(now_ms()) if tier is not None else ["", 0, 0, 0]
        res: list[Any] = await self._release(
            args=[
                prefix(sender),
                f"{now_ms():.3f}",
                max_n,
                f"{pace.interval_ms:.6f}",
                f"{pace.burst_ms:.3f}",
                lease_ms,
                f"{pace.pair_interval_ms:.3f}",
                f"{pace.pair_burst_ms:.3f}",
                MARKETING_WEIGHT,
                f"{horizon_ms:.3f}",
                *t,
                pace.waba_key,
                f"{pace.waba_interval_ms:.6f}",
                f"{pace.waba_burst_ms:.3f}",
            ]
        )
        wait, depth, nd = float(res[0]), int(res[1]), float(res[2])
        rest = [x.decode() if isinstance(x, bytes) else str(x) for x in res[3:]]
        slots = [float(x) for x in rest[0::2]]
        return Released(rest[1::2], wait, depth, None if nd < 0 else nd, slots)

    async def settle(self, sender: str, done: list[str], hold: list[tuple[float, str]]) -> None:
        if not done and not hold:
            return
        args: list[Any] = [prefix(sender), len(done), *done]
        for due, e in hold:
            args.extend([f"{due:.3f}", e])
        await self._settle(args=args)

    async def finish(self, sender: str, token: str, force: bool) -> tuple[bool, int, float | None]:
        res = await self._finish(args=[prefix(sender), token, "1" if force else "0"])
        nd = float(res[2])
        return bool(res[0]), int(res[1]), None if nd < 0 else nd

    async def slow_down(self, sender: str, factor: float, for_ms: int) -> None:
        """After a 130429: stretch the sender's interval for a while and pause it for 1 s."""
        p = prefix(sender)
        pipe = self.r.pipeline(transaction=True)
        pipe.set(p + "slow", f"{factor:.3f}", px=for_ms)
        pipe.set(p + "tat", f"{now_ms() + 1000:.3f}", px=for_ms + 60_000)
        await pipe.execute()

    async def hold_recipient(
        self, sender: str, recipient: str, delay_ms: float, burst_ms: float = 0.0
    ) -> None:
        """After a 131056: hold the recipient for ``delay_ms`` (Meta recommends 4^X s).

        The pair GCRA lets a recipient through while its TAT is within ``burst_ms`` of now,
        so the TAT moves to now + delay + burst; never backwards (reserved slots stay).
        """
        key = prefix(sender) + "p:" + recipient
        until = now_ms() + delay_ms + burst_ms
        await self._hold(keys=[key], args=[f"{until:.3f}", int(delay_ms + burst_ms + 60_000)])
