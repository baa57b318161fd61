"""The pacing gate (delivery/gate.py) and the bounds ``Pace.for_sender`` gives it: sends in
the order of their slots, spaced by the interval, at most ``cap`` per sliding second, and
none later after its slot than the pacing allows (refused, to be re-held). Real timers on
a real event loop; the e2e pacing tests and ``wanotify bench pacing`` measure it under load.
"""

from __future__ import annotations

import asyncio
import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wanotify.config import SANDBOX_SENDER, SenderConfig, Settings
from wanotify.delivery.gate import Pacer
from wanotify.pacing.lanes import MIN_LATE_MS, Pace, now_ms


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


async def _fire(p: Pacer, slot: float, out: list[tuple[float, float, bool, str]], tag: str = "") -> None:
    ok = await p.wait_turn(slot)
    out.append((now_ms(), slot, ok, tag))


def test_never_before_its_slot_and_spaced_by_the_interval() -> None:
    async def go() -> list[tuple[float, float, bool, str]]:
        p = Pacer(interval_ms=20, cap=1000, pair_interval_ms=0, pair_burst=1)
        t = now_ms() + 30
        out: list[tuple[float, float, bool, str]] = []
        # Slots closer than the interval (as a burst tolerance would hand out): still spaced.
        await asyncio.gather(*(_fire(p, t + i * 5, out) for i in range(6)))
        return out

    out = run(go())
    assert all(ok for *_, ok, _ in out)
    fired = sorted(f for f, *_ in out)
    assert all(f >= s - 0.5 for f, s, *_ in out)
    gaps = [b - a for a, b in itertools.pairwise(fired)]
    assert min(gaps) >= 19.0, gaps


def test_an_earlier_slot_arriving_later_goes_first() -> None:
    """An OTP released after marketing sends that wait for later slots does not queue
    behind them: the gate serves by slot, not by arrival."""
    async def go() -> list[tuple[float, float, bool, str]]:
        p = Pacer(interval_ms=30, cap=1000, pair_interval_ms=0, pair_burst=1)
        t = now_ms()
        out: list[tuple[float, float, bool, str]] = []
        mkt = [asyncio.create_task(_fire(p, t + 60 + i * 30, out, "m")) for i in range(4)]
        await asyncio.sleep(0.01)
        otp = asyncio.create_task(_fire(p, t + 20, out, "otp"))
        await asyncio.gather(*mkt, otp)
        return out

    out = run(go())
    assert next(tag for *_, tag in sorted(out)) == "otp"
    assert all(ok for *_, ok, _ in out)


async def _fire_urgent(p: Pacer, slot: float, out: list[tuple[float, float, bool, str]], tag: str) -> None:
    ok = await p.wait_turn(slot, urgent=True)
    out.append((now_ms(), slot, ok, tag))


def test_an_otp_takes_the_earliest_slot_of_another_lane_which_takes_the_otps() -> None:
    """An OTP whose slot comes after marketing sends already reserved (the reservation
    horizon) exchanges slots with the earliest of them: it goes at the next slot, that send
    at the OTP's, and the sends still go one interval apart, at the same instants."""
    async def go() -> tuple[list[tuple[float, float, bool, str]], float, int]:
        p = Pacer(interval_ms=30, cap=1000, pair_interval_ms=0, pair_burst=1)
        t = now_ms() + 40
        out: list[tuple[float, float, bool, str]] = []
        mkt = [asyncio.create_task(_fire(p, t + i * 30, out, f"m{i}")) for i in range(4)]
        await asyncio.sleep(0.005)
        otp = asyncio.create_task(_fire_urgent(p, t + 4 * 30, out, "otp"))  # after all four
        await asyncio.gather(*mkt, otp)
        return out, t, p.advanced

    out, t, advanced = run(go())
    assert all(ok for *_, ok, _ in out)
    order = [tag for *_, tag in sorted(out)]
    assert order == ["otp", "m1", "m2", "m3", "m0"], order
    assert advanced == 1
    fired = sorted(f for f, *_ in out)
    assert fired[0] >= t - 0.5 and fired[0] < t + 25, fired[0] - t  # the first slot, not the fifth
    gaps = [b - a for a, b in itertools.pairwise(fired)]
    assert min(gaps) >= 29.0, gaps


def test_an_otp_never_displaces_another_otp_nor_goes_further_ahead_than_allowed() -> None:
    async def go() -> list[tuple[float, float, bool, str]]:
        p = Pacer(interval_ms=20, cap=1000, pair_interval_ms=0, pair_burst=1, max_advance_ms=50)
        t = now_ms() + 30
        out: list[tuple[float, float, bool, str]] = []
        first = asyncio.create_task(_fire_urgent(p, t, out, "otp1"))
        far = asyncio.create_task(_fire(p, t + 20, out, "m-far"))  # 80 ms before otp3's slot
        near = asyncio.create_task(_fire(p, t + 60, out, "m-near"))  # 40 ms before it
        await asyncio.sleep(0.005)
        second = asyncio.create_task(_fire_urgent(p, t + 100, out, "otp3"))
        await asyncio.gather(first, far, near, second)
        return out

    order = [tag for *_, tag in sorted(run(go()))]
    # otp3 takes m-near's slot (within 50 ms), not m-far's (80 ms) nor otp1's.
    assert order == ["otp1", "m-far", "otp3", "m-near"], order


def test_an_otp_too_late_for_its_slot_takes_a_later_one_and_another_lane_is_refused() -> None:
    """A stalled loop made the OTP's slot stale: the OTP is not the one refused (re-held, it
    would wait for a new release); it takes the earliest in-time slot of a marketing send,
    and that send is refused in its place. As many slots are used as before."""
    async def go() -> list[tuple[float, float, bool, str]]:
        p = Pacer(interval_ms=20, cap=1000, pair_interval_ms=0, pair_burst=1, late_ms=15)
        t = now_ms()
        out: list[tuple[float, float, bool, str]] = []
        mkt = [asyncio.create_task(_fire(p, t + 30 + i * 20, out, f"m{i}")) for i in range(3)]
        await asyncio.sleep(0.005)
        otp = asyncio.create_task(_fire_urgent(p, t - 50, out, "otp"))  # 50 ms stale already
        await asyncio.gather(*mkt, otp)
        assert p.too_late == 1
        return out

    out = run(go())
    result = {tag: ok for _f, _s, ok, tag in out}
    assert result == {"otp": True, "m0": False, "m1": True, "m2": True}, result


def test_cap_holds_in_every_sliding_second() -> None:
    async def go() -> list[float]:
        p = Pacer(interval_ms=1, cap=10, pair_interval_ms=0, pair_burst=1)
        t = now_ms()
        out: list[tuple[float, float, bool, str]] = []
        await asyncio.gather(*(_fire(p, t, out) for i in range(15)))
        return sorted(f for f, *_ in out)

    fired = run(go())
    assert len(fired) == 15
    for i, f in enumerate(fired):
        assert sum(1 for g in fired[i:] if g - f < 1000.0) <= 10


def test_a_send_later_than_allowed_is_refused_not_fired() -> None:
    async def go() -> list[tuple[float, float, bool, str]]:
        p = Pacer(interval_ms=10, cap=1000, pair_interval_ms=0, pair_burst=1, late_ms=15)
        t = now_ms()
        out: list[tuple[float, float, bool, str]] = []
        # Slot 40 ms ago: too late. Slot now: fine. A cancelled waiter is skipped.
        waiter = asyncio.create_task(p.wait_turn(t - 5))
        waiter.cancel()
        await asyncio.gather(_fire(p, t - 40, out, "late"), _fire(p, t, out, "now"))
        return out

    out = {tag: ok for *_, ok, tag in run(go())}
    assert out == {"late": False, "now": True}


def test_late_refusals_are_counted_and_the_gate_keeps_serving() -> None:
    async def go() -> tuple[int, list[bool]]:
        p = Pacer(interval_ms=5, cap=1000, pair_interval_ms=0, pair_burst=1, late_ms=10)
        t = now_ms()
        out: list[tuple[float, float, bool, str]] = []
        await asyncio.gather(*(_fire(p, t - 50, out) for _ in range(3)), _fire(p, t + 20, out))
        return p.too_late, [ok for *_, ok, _ in out]

    late, oks = run(go())
    assert late == 3 and oks.count(True) == 1


def _closed_window_max(times: list[float], width: float = 1000.0) -> int:
    s = sorted(times)
    return max(sum(1 for u in s[i:] if u - t <= width) for i, t in enumerate(s))


@pytest.mark.parametrize("mps", [1, 5, 20, 21, 40, 80, 250, 1000])
def test_pace_bounds_keep_every_window_within_the_limit(mps: int) -> None:
    """Slots on the GCRA's grid, each sent up to ``late_ms`` late (the worst case: some on
    time, some as late as allowed): no closed 1-second window holds more than the limit,
    and where the share leaves room, not more than mps - 1."""
    pace = Pace.for_sender(SenderConfig.model_validate({**SANDBOX_SENDER, "mps": mps}),
                           Settings())
    assert pace.burst_ms == 0.0 and pace.late_ms >= MIN_LATE_MS
    n = min(4 * mps, 2000)
    slots = [k * pace.interval_ms for k in range(n)]
    # Alternate on-time and maximally late sends, in runs: the densest packing lateness allows.
    worst = [s + (pace.late_ms if (k // max(1, mps // 4)) % 2 else 0.0) for k, s in enumerate(slots)]
    limit = mps - 1 if (mps - 1) * pace.interval_ms - 1000.0 > pace.late_ms else mps
    assert _closed_window_max(worst) <= max(1, limit)
    assert pace.window_cap == max(1, mps - 1)


@settings(max_examples=200, deadline=None)
@given(mps=st.integers(1, 2000), safety=st.floats(0.5, 1.0))
def test_pace_lateness_bound_holds_for_any_rate_and_safety(mps: int, safety: float) -> None:
    """The arithmetic behind ``late_ms``: floor((1000 + L) / I) + 1 ≤ mps for every rate and
    pacing safety (MIN_LATE_MS aside, which only a safety of about 1.0 reaches)."""
    pace = Pace.for_sender(SenderConfig.model_validate({**SANDBOX_SENDER, "mps": mps}),
                           Settings(pacing_safety=safety))
    assert math.isclose(pace.interval_ms, 1000.0 / (mps * safety))
    if pace.late_ms > MIN_LATE_MS:
        assert math.floor((1000.0 + pace.late_ms) / pace.interval_ms) + 1 <= mps
