"""``wanotify bench campaign``: a large scheduled campaign drained through the sandbox while
OTPs keep arriving on the same number.

A generated CSV (1% bad rows, 1% opted-out numbers) is imported, the campaign is scheduled a
few seconds ahead, and the workers' own machinery (the scheduler tick, the fan-out in
chunks, the pacing lanes) drains it. Printed: import rows/s and peak memory, fan-out rate,
drain rate against the number's allowed rate, OTP p99 latency during the drain, the final
counts and the checks (bad rows reported, opted-out skipped, nothing sent twice).
"""

from __future__ import annotations

import random
import resource
import threading
import time
import tracemalloc
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from sqlalchemy import text

from wanotify.campaigns.audience import import_file
from wanotify.campaigns.service import change, create, status
from wanotify.compliance.consent import Preference, record_preferences
from wanotify.config import get_settings
from wanotify.db import session_scope
from wanotify.devtools.bench.common import (
    BenchEnv,
    bench_env,
    percentile,
    sandbox_log,
    start_sandbox,
    wait_until,
)
from wanotify.devtools.procs import wait_worker
from wanotify.intake.service import notify

console = Console(width=120)


def make_csv(path: Path, rows: int, seed: int = 5) -> tuple[list[str], int, int]:
    """An audience with 1% bad rows and 1% numbers to be opted out: (opted-out numbers,
    bad rows, good rows)."""
    rng = random.Random(seed)
    opted: list[str] = []
    bad = 0
    with path.open("w", encoding="utf-8") as f:
        f.write("to,body_1,body_2,tz\n")
        for i in range(rows):
            phone = f"+9199{i:08d}"
            if i % 100 == 37:
                f.write(f"+91{i % 1000},Guest {i},{rng.randrange(5, 60)}%,\n")  # not a number
                bad += 1
                continue
            if i % 100 == 73:
                opted.append(phone)
            f.write(f"{phone},Guest {i},{rng.randrange(5, 60)}%,Asia/Kolkata\n")
    return opted, bad, rows - bad - len(opted)


def run(rows: int = 100_000, mps: int = 1000, otp_rate: float = 5.0, timeout: float = 900.0) -> dict[str, Any]:
    senders = [{"name": "promo", "phone_number_id": "920000000001", "waba_id": "820000000001",
                "access_token": "EAAGpromo", "mps": mps}]
    console.print(f"[bold]bench campaign[/bold]: {rows:,} recipients, 1 number at {mps} mps, OTPs at "
                  f"{otp_rate}/s during the drain")
    out: dict[str, Any] = {}
    with bench_env("campaign", senders=senders) as env:
        _, sb_url = start_sandbox(env)
        path = env.workdir / "audience.csv"
        opted, bad, good = make_csv(path, rows)
        with session_scope() as s:
            record_preferences(s, [Preference(p, True, datetime.now(UTC), "keyword") for p in opted])
        cid = _import_and_schedule(path, rows, out)
        assert change(cid, "start")["status"] == "scheduled"
        ok, st, otps, fan = _drain(env, cid, otp_rate, timeout)
        log = sandbox_log(sb_url)
    campaign_sends = [m for m in log if m["code"] == 0 and m.get("biz_opaque_callback_data") not in otps]
    by_to: dict[str, int] = {}
    for m in campaign_sends:
        by_to[m["to"]] = by_to.get(m["to"], 0) + 1
    times = sorted(m["t"] for m in campaign_sends)
    lo, hi = int(len(times) * 0.05), int(len(times) * 0.95)
    drain = (hi - lo) / (times[hi] - times[lo]) if len(times) > 20 and times[hi] > times[lo] else None
    accepted_at = {m["biz_opaque_callback_data"]: m["t"] for m in log if m["code"] == 0}
    otp_lat = [accepted_at[k] - t for k, t in otps.items() if k in accepted_at]
    out.update({
        "completed": ok, "counts": st["counts"], "drain_rate": drain,
        "allowed_rate": mps * get_settings().pacing_safety,
        "fanout_rate": _fan_rate(fan, good + len(opted)), "otp_p50_ms": (percentile(otp_lat, 0.5) or 0) * 1000,
        "otp_p99_ms": (percentile(otp_lat, 0.99) or 0) * 1000, "otps": len(otps), "otps_accepted": len(otp_lat),
        "bad_rows": bad, "opted": len(opted), "sent_twice": sum(n - 1 for n in by_to.values() if n > 1),
        "recipients_sent": len(by_to),
    })
    _print(out, rows)
    return out


def _import_and_schedule(path: Path, rows: int, out: dict[str, Any]) -> uuid.UUID:
    """A draft campaign, its audience imported (timed; then the peak heap of a second import),
    scheduled a few seconds from now; the import's figures and report go into ``out``."""
    cid = uuid.UUID(create("bench", "seasonal_sale", "en", "promo", "marketing",
                           datetime.now(UTC) + timedelta(hours=1))["id"])
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    report = import_file(cid, str(path))
    import_s = time.perf_counter() - t0
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Peak Python heap of a second, smaller import (tracemalloc slows it: not timed).
    probe = uuid.UUID(create("probe", "seasonal_sale", "en", "promo", "marketing")["id"])
    tracemalloc.start()
    import_file(probe, str(path))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    out["import_rows_per_s"] = rows / import_s
    out["import_peak_mib"] = peak / 2**20
    out["import_rss_growth_mib"] = (rss1 - rss0) / 1024
    with session_scope() as s:  # the schedule: a few seconds from now
        s.execute(text("UPDATE campaigns SET start_at = now() + interval '5 seconds' WHERE id = :c"),
                  {"c": cid})
    out["report"] = {"accepted": report.accepted, "duplicates": report.duplicates,
                     "opted_out": report.opted_out, "rejected": len(report.rejected)}
    console.print(f"imported {rows:,} rows in {import_s:.1f} s ({out['import_rows_per_s']:,.0f} rows/s); "
                  f"Python peak {out['import_peak_mib']:.1f} MiB")
    return cid


def _drain(env: BenchEnv, cid: uuid.UUID, otp_rate: float, timeout: float
           ) -> tuple[bool, dict[str, Any], dict[str, float], list[tuple[float, int]]]:
    """A worker drains the campaign while OTPs arrive: whether it completed, its final status,
    the OTPs (id: enqueued at) and the fan-out's progress (time, recipients past pending)."""
    node = f"camp-{uuid.uuid4().hex[:4]}"
    worker = env.start("worker", ["worker", "-n", f"{node}@%h"],
                       {"WANOTIFY_WORKER_METRICS_PORT": "0", "WANOTIFY_SWEEP_INTERVAL_S": "2"})
    wait_worker(env.redis_url, worker, timeout=60, node=node)
    otps: dict[str, float] = {}
    stop = threading.Event()

    def otp_stream() -> None:
        rng = random.Random(3)
        i = 0
        while not stop.wait(1.0 / otp_rate):
            i += 1
            t = time.time()
            acc = notify({"to": f"+9198{7000000 + i:08d}", "template": "otp_code", "kind": "otp",
                          "sender": "promo", "params": {"body": [f"{rng.randrange(10**6):06d}"]}})
            otps[acc.id] = t

    th = threading.Thread(target=otp_stream, daemon=True)
    th.start()
    fan: list[tuple[float, int]] = []

    def progress() -> bool:
        with session_scope() as s:
            n = s.execute(text("SELECT count(*) FROM campaign_recipients WHERE campaign_id = :c"
                               " AND state <> 'pending'"), {"c": cid}).scalar_one()
        fan.append((time.time(), int(n)))
        st = status(cid)
        return bool(st["status"] == "completed")

    with console.status("draining (scheduled start, fan-out, pacing)"):
        ok = wait_until(progress, timeout, 1.0)
    stop.set()
    th.join()
    wait_until(lambda: _all_done(list(otps)[-5:]), 15)
    st = status(cid)
    env.stop([worker])
    return ok, st, otps, fan


def _fan_rate(fan: list[tuple[float, int]], expected: int) -> float | None:
    """Recipients fanned out per second, from the first one past pending to all ``expected``."""
    started = [t for t, n in fan if n > 0]
    if not started:
        return None
    t_first = started[0]
    t_all = next((t for t, n in fan if n >= expected), fan[-1][0])
    return expected / max(1.0, t_all - t_first)


def _all_done(ids: list[str]) -> bool:
    with session_scope() as s:
        n = s.execute(text("SELECT count(*) FROM notifications WHERE id = ANY(CAST(:i AS uuid[]))"
                           " AND status IN ('queued', 'sending')"), {"i": ids}).scalar_one()
    return int(n) == 0


def _print(o: dict[str, Any], rows: int) -> None:
    t = Table(title=f"wanotify bench campaign — {rows:,} rows")
    t.add_column("figure")
    t.add_column("value", justify="right")
    t.add_column("check", justify="right")
    t.add_row("import rows/s", f"{o['import_rows_per_s']:,.0f}", "")
    t.add_row("import peak memory (Python heap / RSS growth)",
              f"{o['import_peak_mib']:.1f} / {o['import_rss_growth_mib']:.1f} MiB", "streamed")
    t.add_row("fan-out rate (recipients/s)", f"{o['fanout_rate'] or 0:,.0f}", "")
    t.add_row("drain rate vs allowed (messages/s)", f"{o['drain_rate'] or 0:,.0f} / {o['allowed_rate']:,.0f}",
              f"{(o['drain_rate'] or 0) / o['allowed_rate']:.1%}")
    t.add_row("OTP enqueue→accepted during the drain: p50 / p99",
              f"{o['otp_p50_ms']:.0f} / {o['otp_p99_ms']:.0f} ms", f"{o['otps_accepted']}/{o['otps']} OTPs")
    r, c = o["report"], o["counts"]
    t.add_row("bad rows reported", f"{r['rejected']:,}", "ok" if r["rejected"] == o["bad_rows"] else "MISMATCH")
    t.add_row("opted-out skipped", f"{r['opted_out']:,}", "ok" if r["opted_out"] == o["opted"] else "MISMATCH")
    t.add_row("recipients sent to", f"{o['recipients_sent']:,}",
              "ok" if o["recipients_sent"] == r["accepted"] else "MISMATCH")
    t.add_row("sent twice", f"{o['sent_twice']:,}", "ok" if o["sent_twice"] == 0 else "DUPLICATES")
    t.add_row("final counts", ", ".join(f"{k} {v:,}" for k, v in c.items() if v), "completed" if o["completed"] else
              "NOT COMPLETED")
    console.print(t)
