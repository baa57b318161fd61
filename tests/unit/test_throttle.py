"""Per-sender pacing lanes (throttle.py + lua/*.lua) against a real Redis, database 14.

Time is controlled: ``wanotify.pacing.lanes.now_ms`` is replaced by a fake clock, so the GCRA
arithmetic, leases and holds are checked exactly (one test also paces with real sleeps).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest
import redis
import redis.asyncio as aredis

from wanotify.pacing import lanes as throttle
from wanotify.pacing.lanes import (
    MARKETING_WEIGHT,
    AsyncLanes,
    Lanes,
    Pace,
    Released,
    entry,
    parse_entry,
    prefix,
)


def _db14(url: str) -> str:
    base, _, tail = url.rpartition("/")
    return f"{base}/14" if tail.isdigit() else f"{url.rstrip('/')}/14"


S = "s1"
P = prefix(S)
LEASE = 60_000
T = TypeVar("T")


@pytest.fixture()
def r(services: dict[str, str]) -> Iterator[redis.Redis]:
    """Redis database 14 of the test run's Redis (the local one, or an embedded one)."""
    client = redis.Redis.from_url(_db14(services["redis_url"]), socket_timeout=5)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


class Clock:
    def __init__(self) -> None:
        self.t = float(int(time.time() * 1000))

    def __call__(self) -> float:
        return self.t

    def advance(self, ms: float) -> float:
        self.t += ms
        return self.t


@pytest.fixture()
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(throttle, "now_ms", c)
    return c


def arun(fn: Callable[[AsyncLanes], Awaitable[T]]) -> T:
    async def main() -> T:
        client = aredis.Redis.from_url(_db14(os.environ["WANOTIFY_REDIS_URL"]), socket_timeout=5)
        try:
            return await fn(AsyncLanes(client))
        finally:
            await client.aclose()

    return asyncio.run(main())


def rcpt(i: int) -> str:
    return f"9198{i:08d}"


def ids(entries: list[str]) -> list[str]:
    return [parse_entry(e)[1] for e in entries]


def push(r: redis.Redis, kind: str, names: list[str], recipient: str | None = None) -> None:
    entries = [entry(kind, n, recipient or rcpt(abs(hash(n)) % 10**8)) for n in names]
    Lanes(r).push(S, kind, entries)


FAST = Pace(interval_ms=1, burst_ms=100_000, pair_interval_ms=0, pair_burst_ms=0)


# ---- entries ----------------------------------------------------------------------------


def test_entry_format() -> None:
    e = entry("otp", "job-1", "919876543210")
    assert e == "o|job-1|919876543210"
    assert parse_entry(e) == ("o", "job-1", "919876543210")
    assert parse_entry("!" + entry("marketing", "j", "1")) == ("m", "j", "1")
    assert P == "wn:{s1}:"


# ---- GCRA -------------------------------------------------------------------------------


def sweep(clock: Clock, pace: Pace, window_ms: int, step_ms: int = 10,
          max_n: int = 100) -> list[tuple[float, list[str]]]:
    async def go(la: AsyncLanes) -> list[tuple[float, list[str]]]:
        out = []
        end = clock.t + window_ms
        while clock.t <= end:
            rel = await la.release(S, pace, max_n, LEASE)
            if rel.entries:
                out.append((clock.t, rel.entries))
            clock.advance(step_ms)
        return out

    return arun(go)


def test_gcra_releases_one_per_interval(r: redis.Redis, clock: Clock) -> None:
    push(r, "transactional", [f"j{i:03d}" for i in range(50)])
    t0 = clock.t
    pace = Pace(interval_ms=100, burst_ms=0, pair_interval_ms=0, pair_burst_ms=0)
    got = sweep(clock, pace, window_ms=1000)
    # With a backlog: exactly window/interval + 1, evenly spaced, never two at once.
    assert len(got) == 1000 // 100 + 1
    assert all(len(e) == 1 for _, e in got)
    assert [t - t0 for t, _ in got] == [i * 100.0 for i in range(11)]
    assert ids([e[0] for _, e in got]) == [f"j{i:03d}" for i in range(11)]
    assert r.llen(P + "q:t") == 50 - 11
    assert r.zcard(P + "inflight") == 11


def test_gcra_never_exceeds_rate_at_any_step(r: redis.Redis, clock: Clock) -> None:
    push(r, "transactional", [f"j{i:03d}" for i in range(200)])
    pace = Pace(interval_ms=100, burst_ms=0, pair_interval_ms=0, pair_burst_ms=0)
    got = sweep(clock, pace, window_ms=3000, step_ms=7)
    times = [t for t, e in got for _ in e]
    for i, start in enumerate(times):
        for window in (100, 350, 1000, 2000):
            n = sum(1 for t in times[i:] if t < start + window)
            assert n <= window / 100 + 1


def test_gcra_wait_and_depth(r: redis.Redis, clock: Clock) -> None:
    push(r, "transactional", ["a", "b", "c"])
    pace = Pace(interval_ms=100, burst_ms=0, pair_interval_ms=0, pair_burst_ms=0)

    async def go(la: AsyncLanes) -> list[Released]:
        out = [await la.release(S, pace, 10, LEASE)]
        clock.advance(40)
        out.append(await la.release(S, pace, 10, LEASE))
        clock.advance(60)
        out.append(await la.release(S, pace, 10, LEASE))
        return out

    first, early, due = arun(go)
    assert ids(first.entries) == ["a"] and first.wait_ms == 100 and first.depth == 2
    assert early.entries == [] and early.wait_ms == 60 and early.depth == 2
    assert ids(due.entries) == ["b"] and due.depth == 1
    assert first.next_due_ms is None


def test_gcra_burst_tolerance(r: redis.Redis, clock: Clock) -> None:
    push(r, "transactional", [f"j{i:03d}" for i in range(50)])
    pace = Pace(interval_ms=100, burst_ms=300, pair_interval_ms=0, pair_burst_ms=0)
    got = sweep(clock, pace, window_ms=1000)
    assert len(got[0][1]) == 4  # burst/interval + 1 at once
    total = sum(len(e) for _, e in got)
    assert total == 1000 // 100 + 1 + 300 // 100


def test_gcra_max_n_caps_a_release(r: redis.Redis, clock: Clock) -> None:
    push(r, "transactional", [f"j{i:03d}" for i in range(20)])

    async def go(la: AsyncLanes) -> tuple[Released, Released]:
        a = await la.release(S, FAST, 5, LEASE)
        b = await la.release(S, FAST, 5, LEASE)
        return a, b

    a, b = arun(go)
    assert ids(a.entries) == [f"j{i:03d}" for i in range(5)]
    assert ids(b.entries) == [f"j{i:03d}" for i in range(5, 10)]
    assert b.depth == 10


def test_idle_sender_banks_no_credit(r: redis.Redis, clock: Clock) -> None:
    pace = Pace(interval_ms=100, burst_ms=0, pair_interval_ms=0, pair_burst_ms=0)

    async def go(la: AsyncLanes) -> list[Released]:
        out = [await la.release(S, pace, 10, LEASE)]  # nothing queued
        clock.advance(5000)
        push(r, "transactional", ["a", "b", "c"])
        out.append(await la.release(S, pace, 10, LEASE))
        out.append(await la.release(S, pace, 10, LEASE))
        return out

    empty, first, second = arun(go)
    assert empty.entries == [] and empty.wait_ms == 0 and empty.depth == 0
    assert ids(first.entries) == ["a"]  # burst 0: a long idle time is no licence to burst
    assert second.entries == []


def test_real_time_pacing(r: redis.Redis) -> None:
    """With the real clock and real sleeps: releases over a window stay within window/interval + 1."""
    push(r, "transactional", [f"j{i:03d}" for i in range(100)])
    pace = Pace(interval_ms=50, burst_ms=0, pair_interval_ms=0, pair_burst_ms=0)

    async def go(la: AsyncLanes) -> tuple[int, float]:
        n = 0
        start = time.monotonic()
        first_at: float | None = None
        last_at = start
        while time.monotonic() - start < 0.6:
            rel = await la.release(S, pace, 100, LEASE)
            if rel.entries:
                now = time.monotonic()
                first_at = first_at if first_at is not None else now
                last_at = now
                n += len(rel.entries)
            await asyncio.sleep(0.003)
        return n, (last_at - (first_at or last_at)) * 1000

    n, span_ms = arun(go)
    assert n <= span_ms / 50 + 1
    assert n >= 6  # about 0.6 s / 50 ms = 12, minus (generous) scheduling noise


# ---- priorities -------------------------------------------------------------------------


def test_lane_order_in_one_release(r: redis.Redis, clock: Clock) -> None:
    push(r, "transactional", [f"t{i}" for i in range(10)])
    push(r, "marketing", [f"m{i}" for i in range(10)])
    push(r, "otp", [f"o{i}" for i in range(3)])
    rel = arun(lambda la: la.release(S, FAST, 100, LEASE))
    got = ids(rel.entries)
    assert MARKETING_WEIGHT == 4
    assert got == [
        "o0", "o1", "o2",
        "t0", "t1", "t2", "t3", "m0",
        "t4", "t5", "t6", "t7", "m1",
        "t8", "t9",
        *[f"m{i}" for i in range(2, 10)],
    ]
    assert [parse_entry(e)[0] for e in rel.entries][:3] == ["o", "o", "o"]
    assert rel.depth == 0


def test_otp_jumps_ahead_across_releases(r: redis.Redis, clock: Clock) -> None:
    push(r, "transactional", [f"t{i}" for i in range(5)])
    push(r, "marketing", [f"m{i}" for i in range(5)])
    pace = Pace(interval_ms=100, burst_ms=0, pair_interval_ms=0, pair_burst_ms=0)

    async def go(la: AsyncLanes) -> list[str]:
        out = ids((await la.release(S, pace, 10, LEASE)).entries)
        push(r, "otp", ["o0", "o1"])
        for _ in range(4):
            clock.advance(100)
            out += ids((await la.release(S, pace, 10, LEASE)).entries)
        return out

    assert arun(go) == ["t0", "o0", "o1", "t1", "t2"]


def test_marketing_weighted_not_starved(r: redis.Redis, clock: Clock) -> None:
    push(r, "transactional", [f"t{i:02d}" for i in range(60)])
    push(r, "marketing", [f"m{i:02d}" for i in range(20)])

    async def go(la: AsyncLanes) -> list[str]:
        out: list[str] = []
        for _ in range(5):  # several releases: the weighting carries over between calls
            out += ids((await la.release(S, FAST, 7, LEASE)).entries)
        return out

    got = arun(go)
    assert len(got) == 35
    m_positions = [i for i, x in enumerate(got) if x.startswith("m")]
    assert m_positions == [4, 9, 14, 19, 24, 29, 34]
    # Each lane stays FIFO.
    assert [x for x in got if x.startswith("t")] == [f"t{i:02d}" for i in range(28)]
    assert [x for x in got if x.startswith("m")] == [f"m{i:02d}" for i in range(7)]


def test_marketing_alone_flows(r: redis.Redis, clock: Clock) -> None:
    push(r, "marketing", [f"m{i}" for i in range(6)])
    rel = arun(lambda la: la.release(S, FAST, 100, LEASE))
    assert ids(rel.entries) == [f"m{i}" for i in range(6)]


# ---- the pair limit ---------------------------------------------------------------------

A, B, C, D = rcpt(1), rcpt(2), rcpt(3), rcpt(4)


def test_pair_limit_holds_and_releases_fifo(r: redis.Redis, clock: Clock) -> None:
    lanes = Lanes(r)
    pace = Pace(interval_ms=1, burst_ms=100_000, pair_interval_ms=1000, pair_burst_ms=0)
    lanes.push(S, "transactional", [entry("transactional", "a1", A), entry("transactional", "a2", A),
                                    entry("transactional", "b1", B), entry("transactional", "a3", A),
                                    entry("transactional", "c1", C)])
    t0 = clock.t
    delay: list[tuple[bytes, float]] = []

    async def go(la: AsyncLanes) -> dict[float, Released]:
        out: dict[float, Released] = {}

        async def at(offset: float) -> None:
            clock.t = t0 + offset
            out[offset] = await la.release(S, pace, 100, LEASE)

        await at(0)
        delay.extend(await la.r.zrange(P + "delay", 0, -1, withscores=True))
        lanes.push(S, "transactional", [entry("transactional", "d1", D), entry("transactional", "b2", B)])
        await at(10)
        await at(999)
        await at(1000)
        lanes.push(S, "transactional", [entry("transactional", "a4", A)])
        await at(1200)
        await at(1999)
        await at(2000)
        await at(2999)
        await at(3000)
        return out

    got = arun(go)
    assert ids(got[0].entries) == ["a1", "b1", "c1"]
    assert got[0].next_due_ms == t0 + 1000
    # Held with their slots reserved ('!'), due when the recipient's pair slot comes.
    assert delay == [
        (("!" + entry("transactional", "a2", A)).encode(), t0 + 1000),
        (("!" + entry("transactional", "a3", A)).encode(), t0 + 2000),
    ]
    assert ids(got[10].entries) == ["d1"]  # other recipients flow meanwhile; b2 waits for b1
    assert got[999].entries == []
    assert sorted(ids(got[1000].entries)) == ["a2", "b2"]
    assert got[1200].entries == []  # a4 is behind a3
    assert got[1999].entries == []
    assert ids(got[2000].entries) == ["a3"]
    assert got[2999].entries == []
    assert ids(got[3000].entries) == ["a4"]
    assert got[3000].next_due_ms is None
    assert r.zcard(P + "delay") == 0


def test_pair_burst_allows_a_few_then_spaces(r: redis.Redis, clock: Clock) -> None:
    pace = Pace(interval_ms=1, burst_ms=100_000, pair_interval_ms=1000, pair_burst_ms=1000)
    Lanes(r).push(S, "transactional", [entry("transactional", f"a{i}", A) for i in range(4)])
    t0 = clock.t

    async def go(la: AsyncLanes) -> list[list[str]]:
        out = []
        for offset in (0, 999, 1000, 2000):
            clock.t = t0 + offset
            out.append(ids((await la.release(S, pace, 100, LEASE)).entries))
        return out

    assert arun(go) == [["a0", "a1"], [], ["a2"], ["a3"]]


# ---- leases -----------------------------------------------------------------------------


def test_expired_lease_comes_back_at_the_head(r: redis.Redis, clock: Clock) -> None:
    pace = Pace(interval_ms=100, burst_ms=0, pair_interval_ms=10_000, pair_burst_ms=0)
    Lanes(r).push(S, "transactional", [entry("transactional", f"j{i}", rcpt(i)) for i in range(3)])
    t0 = clock.t

    async def go(la: AsyncLanes) -> list[list[str]]:
        out = []
        for offset in (0, 100, 300, 600, 700, 800):
            clock.t = t0 + offset
            out.append(ids((await la.release(S, pace, 10, lease_ms=500)).entries))
        return out

    # j0 is released and its worker dies; after the lease (t0+500) it is released again,
    # ahead of the rest of its lane, and the pair limit does not hold it a second time.
    assert arun(go) == [["j0"], ["j1"], ["j2"], ["j0"], ["j1"], ["j2"]]
    e0 = entry("transactional", "j0", rcpt(0))
    assert r.zscore(P + "inflight", e0) == t0 + 600 + 500
    assert r.sismember(P + "ids", "j0")


def test_dead_worker_entries_return_before_new_work(r: redis.Redis, clock: Clock) -> None:
    lanes = Lanes(r)
    pace = Pace(interval_ms=1, burst_ms=100_000, pair_interval_ms=5000, pair_burst_ms=0)
    lanes.push(S, "transactional", [entry("transactional", "x1", A), entry("transactional", "x2", B)])
    t0 = clock.t

    async def go(la: AsyncLanes) -> tuple[list[str], list[str], list[str]]:
        first = ids((await la.release(S, pace, 10, lease_ms=500)).entries)
        lanes.push(S, "transactional", [entry("transactional", "x3", C)])
        lanes.push(S, "otp", [entry("otp", "o1", D)])
        clock.t = t0 + 499
        mid = ids((await la.release(S, pace, 1, lease_ms=500)).entries)
        clock.t = t0 + 600
        again = ids((await la.release(S, pace, 10, lease_ms=500)).entries)
        return first, mid, again

    first, mid, again = arun(go)
    assert first == ["x1", "x2"]
    assert mid == ["o1"]  # lease not yet expired
    assert again == ["x1", "x2", "x3"]
    assert r.zcard(P + "inflight") == 4
    assert r.smembers(P + "ids") == {b"x1", b"x2", b"x3", b"o1"}


# ---- settle -----------------------------------------------------------------------------


def test_settle_acks_and_holds(r: redis.Redis, clock: Clock) -> None:
    e0, e1, e2 = (entry("transactional", f"j{i}", rcpt(i)) for i in range(3))
    Lanes(r).push(S, "transactional", [e0, e1, e2])
    t0 = clock.t
    seen: dict[str, Any] = {}

    async def go(la: AsyncLanes) -> None:
        seen["released"] = (await la.release(S, FAST, 10, LEASE)).entries
        await la.settle(S, [e0], [(t0 + 5000, e1)])
        await la.settle(S, [], [])  # nothing to do
        seen["inflight"] = {x.decode() for x in await la.r.zrange(P + "inflight", 0, -1)}
        seen["delay"] = await la.r.zrange(P + "delay", 0, -1, withscores=True)
        seen["ids"] = {x.decode() for x in await la.r.smembers(P + "ids")}
        clock.t = t0 + 4999
        seen["early"] = await la.release(S, FAST, 10, LEASE)
        clock.t = t0 + 5000
        seen["due"] = await la.release(S, FAST, 10, LEASE)
        await la.settle(S, [e1, e2], [])
        clock.t = t0 + 6000
        seen["empty"] = await la.release(S, FAST, 10, LEASE)

    arun(go)
    assert seen["released"] == [e0, e1, e2]
    assert seen["inflight"] == {e2}  # e0 acked, e1 held, e2 still out
    assert seen["delay"] == [(("!" + e1).encode(), t0 + 5000)]
    assert seen["ids"] == {"j1", "j2"}  # the acked job is forgotten
    assert seen["early"].entries == [] and seen["early"].next_due_ms == t0 + 5000
    assert seen["due"].entries == [e1]  # back from the delay set
    empty = seen["empty"]
    assert empty.entries == [] and empty.next_due_ms is None and empty.depth == 0
    assert r.zcard(P + "inflight") == 0 and r.zcard(P + "delay") == 0
    assert r.scard(P + "ids") == 0


# ---- push, claim, finish ----------------------------------------------------------------


def test_push_kick_semantics(r: redis.Redis, clock: Clock) -> None:
    lanes = Lanes(r)
    e = [entry("transactional", "j1", A)]
    assert lanes.push(S, "transactional", []) is False
    assert lanes.push(S, "transactional", e) is True  # nobody owns it: kick
    assert r.get(P + "kick") == b"t"
    assert 0 < r.pttl(P + "kick") <= throttle.KICK_TTL_MS
    assert lanes.push(S, "transactional", [entry("transactional", "j0", B)]) is False  # a kick is pending
    # An OTP does not wait behind a pending kick for slower work: its own kick, once.
    assert lanes.push(S, "otp", [entry("otp", "o1", B)]) is True
    assert r.get(P + "kick") == b"o"
    assert lanes.push(S, "otp", [entry("otp", "o2", B)]) is False
    assert r.sismember(throttle.SENDERS_KEY, S)
    assert lanes.contains(S, ["j1", "o1", "zz"]) == [True, True, False]
    assert lanes.contains(S, []) == []

    async def go(la: AsyncLanes) -> list[Any]:
        got: list[Any] = [await la.claim(S, "tok-a", 10_000)]
        got.append(await la.r.exists(P + "kick"))  # claiming consumes the kick
        got.append(lanes.push(S, "transactional", [entry("transactional", "j2", C)]))  # owned
        got.append(await la.finish(S, "tok-a", force=True))
        got.append(lanes.push(S, "marketing", [entry("marketing", "m1", D)]))  # free again
        return got

    claimed, kick_left, owned_push, finished, free_push = arun(go)
    assert claimed is True and kick_left == 0
    assert owned_push is False
    assert finished[0] is True
    assert free_push is True
    assert r.get(P + "kick") == b"m"
    d = lanes.depths(S)
    wait = d.pop("wait_s")
    assert d == {"otp": 2, "transactional": 3, "marketing": 1, "held": 0, "inflight": 0, "owned": 0}
    assert wait == {"otp": 0.0, "transactional": 0.0, "marketing": 0.0}  # ids here are not uuid7


def test_claim_and_finish_ownership(r: redis.Redis, clock: Clock) -> None:
    async def go(la: AsyncLanes) -> dict[str, Any]:
        g: dict[str, Any] = {}
        g["a"] = await la.claim(S, "A", 10_000)
        g["b"] = await la.claim(S, "B", 10_000)
        g["a_renew"] = await la.claim(S, "A", 20_000)
        g["ttl"] = await la.r.pttl(P + "owner")
        Lanes(r).push(S, "transactional", [entry("transactional", "j1", A),
                                           entry("transactional", "j2", B)])
        g["finish_keep"] = await la.finish(S, "A", force=False)
        g["owner_after_keep"] = await la.r.get(P + "owner")
        g["b_again"] = await la.claim(S, "B", 10_000)
        g["finish_other"] = await la.finish(S, "B", force=True)
        await la.release(S, FAST, 10, LEASE)
        await la.settle(S, [], [(clock.t + 7000, entry("transactional", "j2", B))])
        g["finish_empty"] = await la.finish(S, "A", force=False)
        g["owner_after"] = await la.r.get(P + "owner")
        g["b_now"] = await la.claim(S, "B", 10_000)
        Lanes(r).push(S, "transactional", [entry("transactional", "j3", C)])
        g["finish_force"] = await la.finish(S, "B", force=True)
        g["owner_end"] = await la.r.get(P + "owner")
        return g

    g = arun(go)
    assert g["a"] is True and g["b"] is False and g["a_renew"] is True
    assert 10_000 < g["ttl"] <= 20_000
    released, depth, next_due = g["finish_keep"]
    assert (released, depth, next_due) == (False, 2, None)  # work remains: A keeps it
    assert g["owner_after_keep"] == b"A"
    assert g["b_again"] is False
    assert g["finish_other"][0] is False  # B never owned it
    released, depth, next_due = g["finish_empty"]
    assert released is True and depth == 0 and next_due == clock.t + 7000
    assert g["owner_after"] is None
    assert g["b_now"] is True
    assert g["finish_force"][:2] == (True, 1)  # force gives up even with work left
    assert g["owner_end"] is None


def test_owner_lease_expires(r: redis.Redis) -> None:
    async def go(la: AsyncLanes) -> tuple[bool, bool, bool]:
        a = await la.claim(S, "A", 100)
        b_early = await la.claim(S, "B", 100)
        await asyncio.sleep(0.2)
        b_late = await la.claim(S, "B", 100)
        return a, b_early, b_late

    assert arun(go) == (True, False, True)


def test_needs_dispatch(r: redis.Redis, clock: Clock) -> None:
    lanes = Lanes(r)
    assert lanes.needs_dispatch(S) is None
    lanes.push(S, "marketing", [entry("marketing", "m1", A)])
    assert lanes.needs_dispatch(S) == "m"
    lanes.push(S, "otp", [entry("otp", "o1", B)])
    assert lanes.needs_dispatch(S) == "o"
    assert arun(lambda la: la.claim(S, "A", 10_000)) is True
    assert lanes.needs_dispatch(S) is None  # owned


# ---- feedback: slow_down, hold_recipient ------------------------------------------------


def test_slow_down_stretches_the_interval(r: redis.Redis, clock: Clock) -> None:
    push(r, "transactional", [f"j{i:03d}" for i in range(100)])
    pace = Pace(interval_ms=100, burst_ms=0, pair_interval_ms=0, pair_burst_ms=0)
    t0 = clock.t

    async def go(la: AsyncLanes) -> Released:
        await la.slow_down(S, 2.0, 60_000)
        return await la.release(S, pace, 10, LEASE)

    paused = arun(go)
    assert paused.entries == [] and paused.wait_ms == 1000  # paused for 1 s
    assert float(r.get(P + "slow") or 0) == 2.0
    assert 0 < r.pttl(P + "slow") <= 60_000
    clock.t = t0 + 1000
    got = sweep(clock, pace, window_ms=2000)
    assert len(got) == 2000 // 200 + 1  # half the normal rate
    assert [t - t0 for t, _ in got] == [1000.0 + 200 * i for i in range(11)]


def test_hold_recipient_delays_the_recipient(r: redis.Redis, clock: Clock) -> None:
    lanes = Lanes(r)
    pace = Pace(interval_ms=1, burst_ms=100_000, pair_interval_ms=1000, pair_burst_ms=0)
    t0 = clock.t

    async def go(la: AsyncLanes) -> list[list[str]]:
        await la.hold_recipient(S, A, 4000)
        lanes.push(S, "transactional", [entry("transactional", "a1", A), entry("transactional", "b1", B)])
        out = []
        for offset in (0, 3999, 4000):
            clock.t = t0 + offset
            out.append(ids((await la.release(S, pace, 10, LEASE)).entries))
        return out

    assert arun(go) == [["b1"], [], ["a1"]]
    assert r.pttl(P + "p:" + A) > 0


def test_hold_recipient_with_default_pair_burst(r: redis.Redis, clock: Clock) -> None:
    lanes = Lanes(r)
    pace = Pace(interval_ms=1, burst_ms=100_000, pair_interval_ms=6000, pair_burst_ms=24_000)

    async def go(la: AsyncLanes) -> list[str]:
        await la.hold_recipient(S, A, 4000, pace.pair_burst_ms)  # 4^1 s after the first 131056
        lanes.push(S, "transactional", [entry("transactional", "a1", A)])
        held = ids((await la.release(S, pace, 10, LEASE)).entries)
        clock.t += 4000
        return held + ids((await la.release(S, pace, 10, LEASE)).entries)

    assert arun(go) == ["a1"]


# ---- reservations ahead (horizon) and the daily unique-recipient tier -------------------


def test_horizon_reserves_spaced_slots_within_the_horizon(r: redis.Redis, clock: Clock) -> None:
    lanes = Lanes(r)
    pace = Pace(interval_ms=10, burst_ms=0, pair_interval_ms=1000, pair_burst_ms=0)
    lanes.push(S, "marketing", [entry("marketing", f"m{i}", rcpt(i)) for i in range(50)])
    t0 = clock.t

    async def go(la: AsyncLanes) -> list[list[float]]:
        first = await la.release(S, pace, 100, LEASE, horizon_ms=95)
        clock.advance(50)
        second = await la.release(S, pace, 100, LEASE, horizon_ms=95)
        return [[x - t0 for x in first.slots], [x - t0 for x in second.slots]]

    first, second = arun(go)
    assert first == [10.0 * k for k in range(10)]          # 0, 10 … 90: all within 95 ms
    assert second == [100.0 + 10 * k for k in range(5)]   # continues where the first stopped
    # reserved entries are leased until their slot plus the lease
    scores = sorted(s for _, s in r.zrange(P + "inflight", 0, -1, withscores=True))
    assert scores[0] == t0 + LEASE and scores[-1] == t0 + 140 + LEASE


def test_pair_limit_is_checked_at_the_slot_time(r: redis.Redis, clock: Clock) -> None:
    lanes = Lanes(r)
    pace = Pace(interval_ms=300, burst_ms=0, pair_interval_ms=500, pair_burst_ms=0)
    lanes.push(S, "transactional", [entry("transactional", f"a{i}", A) for i in range(3)])
    t0 = clock.t

    async def go(la: AsyncLanes) -> list[tuple[str, float]]:
        rel = await la.release(S, pace, 10, LEASE, horizon_ms=1000)
        return [(parse_entry(e)[1], s - t0) for e, s in zip(rel.entries, rel.slots, strict=True)]

    got = arun(go)
    # slot 0 → a0; slot 300 is too close to a0 for A (500 ms), so a1 is held, not sent at 300
    assert got[0] == ("a0", 0.0)
    assert ("a1", 300.0) not in got
    assert r.zcard(P + "delay") >= 1


def test_daily_tier_holds_marketing_to_new_recipients_but_never_otp(r: redis.Redis, clock: Clock) -> None:
    from wanotify.pacing.lanes import Tier

    lanes = Lanes(r)
    pace = Pace(interval_ms=1, burst_ms=1000, pair_interval_ms=1, pair_burst_ms=1000)
    tier = Tier("portfolio-1", limit=3, marketing_share=2 / 3)  # marketing may reach 2 people
    lanes.push(S, "marketing", [entry("marketing", f"m{i}", rcpt(i)) for i in range(4)])
    lanes.push(S, "marketing", [entry("marketing", "m0b", rcpt(0))])  # same person again
    lanes.push(S, "otp", [entry("otp", f"o{i}", rcpt(100 + i)) for i in range(3)])

    async def go(la: AsyncLanes) -> list[str]:
        return ids((await la.release(S, pace, 100, LEASE, tier=tier)).entries)

    got = arun(go)
    # OTPs first and always (they count: 3 recipients, the whole tier); marketing to new
    # recipients waits because the tier is spent; nothing is dropped.
    assert got[:3] == ["o0", "o1", "o2"]
    assert not any(x.startswith("m") for x in got)
    held = [e.decode() for e in r.zrange(P + "delay", 0, -1)]
    assert sorted(parse_entry(e)[1] for e in held) == ["m0", "m0b", "m1", "m2", "m3"]
    day_end = (int(clock.t // 86_400_000) + 1) * 86_400_000
    assert all(s >= day_end for _, s in r.zrange(P + "delay", 0, -1, withscores=True))


def test_daily_tier_marketing_share_and_repeat_recipients(r: redis.Redis, clock: Clock) -> None:
    from wanotify.pacing.lanes import Tier

    lanes = Lanes(r)
    pace = Pace(interval_ms=1, burst_ms=1000, pair_interval_ms=1, pair_burst_ms=1000)
    tier = Tier("portfolio-2", limit=10, marketing_share=0.2)  # marketing: 2 new recipients
    lanes.push(S, "marketing", [entry("marketing", f"m{i}", rcpt(i % 3)) for i in range(6)])

    async def go(la: AsyncLanes) -> list[str]:
        return ids((await la.release(S, pace, 100, LEASE, tier=tier)).entries)

    got = arun(go)
    # recipients 0 and 1 fit the marketing share (repeat messages to them are free);
    # recipient 2 is new and over the share: its messages wait.
    assert got == ["m0", "m1", "m3", "m4"]
    assert sorted(parse_entry(e.decode())[1] for e in r.zrange(P + "delay", 0, -1)) == ["m2", "m5"]


def test_depths_report_the_wait_of_the_oldest_job(r: redis.Redis, clock: Clock) -> None:
    from wanotify.core.ids import uuid7

    lanes = Lanes(r)
    job = str(uuid7())
    lanes.push(S, "otp", [entry("otp", job, A)])
    clock.advance(2500)
    d = lanes.depths(S)
    assert d["otp"] == 1
    assert 2.4 <= d["wait_s"]["otp"] <= 2.7
    assert d["wait_s"]["marketing"] == 0.0


# ---- the account's cap (WANOTIFY_WABA_LIMITS) --------------------------------------------


def _two_senders(r: redis.Redis, a_kind: str, a_n: int, b_kind: str, b_n: int) -> None:
    Lanes(r).push("a", a_kind, [entry(a_kind, f"a{i:03d}", rcpt(i)) for i in range(a_n)])
    Lanes(r).push("b", b_kind, [entry(b_kind, f"b{i:03d}", rcpt(500 + i)) for i in range(b_n)])


def _sweep_two(clock: Clock, pace_a: Pace, pace_b: Pace, window_ms: int,
               step_ms: int = 5) -> list[tuple[float, str, str]]:
    """Both senders' dispatchers, in turns whose order changes (independent processes);
    (time, sender, job id) of every release."""
    async def go(la: AsyncLanes) -> list[tuple[float, str, str]]:
        out: list[tuple[float, str, str]] = []
        end = clock.t + window_ms
        rng = random.Random(7)
        while clock.t <= end:
            order = [("a", pace_a), ("b", pace_b)]
            rng.shuffle(order)
            for name, pace in order:
                rel = await la.release(name, pace, 100, LEASE)
                out += [(clock.t, name, parse_entry(e)[1]) for e in rel.entries]
            clock.advance(step_ms)
        return out

    return arun(go)


def _cap_pace(interval_ms: float, burst_ms: float) -> Pace:
    # The numbers themselves are fast (100 mps each); the account allows 10/s.
    return Pace(interval_ms=10, burst_ms=0, pair_interval_ms=0, pair_burst_ms=0,
                waba_key="wn:waba:{102290129340398}:tat", waba_interval_ms=interval_ms, waba_burst_ms=burst_ms)


def test_an_account_cap_holds_across_its_numbers(r: redis.Redis, clock: Clock) -> None:
    _two_senders(r, "transactional", 200, "marketing", 200)
    pace = _cap_pace(100, 0)
    got = _sweep_two(clock, pace, pace, window_ms=5000)
    times = [t for t, _, _ in got]
    for i, start in enumerate(times):  # every sliding second: at most 10 + 1 (GCRA's edge)
        assert sum(1 for t in times[i:] if t < start + 1000) <= 11
    assert 48 <= len(got) <= 52  # 5 s at 10/s, both numbers sharing it
    per_sender = {s: sum(1 for _, n, _ in got if n == s) for s in ("a", "b")}
    assert min(per_sender.values()) > 0
    # and without a cap the two numbers go at their own rates (20× more)
    r.flushdb()
    _two_senders(r, "transactional", 200, "marketing", 200)
    free = Pace(interval_ms=10, burst_ms=0, pair_interval_ms=0, pair_burst_ms=0)
    assert len(_sweep_two(clock, free, free, window_ms=1000)) > 150


def test_otps_go_first_under_a_busy_account_cap(r: redis.Redis, clock: Clock) -> None:
    """Number a keeps the cap busy with marketing; number b's OTPs use the cap's burst
    tolerance (bulk lanes do not), so they leave at once instead of queueing behind it."""
    _two_senders(r, "marketing", 300, "otp", 0)
    pace = _cap_pace(100, 500)
    _sweep_two(clock, pace, pace, window_ms=3000)  # a saturates the cap
    Lanes(r).push("b", "otp", [entry("otp", f"otp{i}", rcpt(900 + i)) for i in range(3)])
    t0 = clock.t
    got = _sweep_two(clock, pace, pace, window_ms=1000)
    otp_times = [t - t0 for t, name, job in got if name == "b"]
    assert otp_times == [0.0, 10.0, 20.0]  # paced by the number's own 100 mps, not the cap's 10/s
    # the cap still holds over the whole run: the OTPs' burst is taken from later bulk slots
    bulk_after = [t for t, name, _ in got if name == "a"]
    assert len(bulk_after) + 3 <= 11 + 5


def test_waba_limits_setting_parses_and_names_bad_entries() -> None:
    from wanotify.config import parse_waba_limits

    got = parse_waba_limits('{"102290129340398": "500/min", "102290129340399": "10/s"}')
    assert got["102290129340398"].per_second == pytest.approx(500 / 60)
    assert got["102290129340399"].per_second == 10
    assert parse_waba_limits(None) == {} and parse_waba_limits("") == {}
    for raw, needle in (('{"abc": "10/s"}', "'abc' is not a WABA id"),
                        ('{"102290129340398": "fast"}', "[102290129340398]: 'fast'"),
                        ('{"102290129340398": "0/s"}', "more than zero"),
                        ('["10/s"]', "must be a JSON object")):
        with pytest.raises(ValueError, match=__import__("re").escape(needle)):
            parse_waba_limits(raw)


def test_pace_for_a_capped_account_keeps_every_period_under_the_cap() -> None:
    from wanotify.config import SANDBOX_SENDER, SenderConfig, Settings

    settings = Settings(waba_limits='{"102290129340398": "500/min"}')
    pace = Pace.for_sender(SenderConfig.model_validate(SANDBOX_SENDER), settings)
    assert pace.waba_key == "wn:waba:{102290129340398}:tat"
    assert pace.waba_interval_ms == pytest.approx(60_000 / (500 * 0.95))
    # floor((period + tau) / interval) + 1 <= count - 1
    assert (60_000 + pace.waba_burst_ms) // pace.waba_interval_ms + 1 <= 499
    other = Pace.for_sender(SenderConfig.model_validate({**SANDBOX_SENDER, "waba_id": "555555555"}), settings)
    assert other.waba_key == ""
