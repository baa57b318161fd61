"""``wanotify bench pacing``: do many workers together keep every number within Meta's limits?

One run, same machine, same sandbox:

1. wanotify: 4 worker processes (as 4 hosts would be) drain a marketing backlog across
   10 senders at 80 mps and one at 1,000 mps, with realistic recipient repetition, while
   OTPs keep arriving;
2. the textbook baseline: the same load as one Celery task per message with Celery's own
   ``rate_limit`` per sender, on 4 worker processes.

At the sandbox it counts messages per phone number in every 1-second window (aligned and
sliding) and per recipient pair, and prints violations, 130429/131056 answers, utilisation,
OTP latency and CPU per 1,000 messages.
"""

from __future__ import annotations

import os
import random
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import httpx
import redis
from celery import Celery
from rich.console import Console
from rich.table import Table
from sqlalchemy import text

from wanotify.db import session_scope
from wanotify.devtools.bench.common import (
    BenchEnv,
    CpuMeter,
    bench_env,
    median,
    pair_violations,
    percentile,
    sandbox_log,
    server_pid,
    start_sandbox,
    wait_until,
    window_counts,
)
from wanotify.devtools.procs import wait_worker
from wanotify.intake.service import notify, notify_many, prepare
from wanotify.pacing.lanes import prefix
from wanotify.queues.enqueue import dispatch as kick
from wanotify.queues.names import NOTIFY, QUEUES, TASK_NOTIFY
from wanotify.redis import get_redis

console = Console()

PAIR_BURST = 5
PAIR_INTERVAL_S = 6.0


def make_senders(n_slow: int, slow_mps: int, fast_mps: int,
                 mps_list: list[int] | None = None) -> list[dict[str, Any]]:
    """``n_slow`` numbers at ``slow_mps`` (or one per entry of ``mps_list``), and one more at
    ``fast_mps`` unless it is 0."""
    rates = mps_list if mps_list else [slow_mps] * n_slow
    senders = [
        {"name": f"s{i:02d}", "phone_number_id": f"1000000000{i:05d}", "waba_id": "2000000000001",
         "access_token": f"bench-token-{i}", "mps": mps, "pair_burst": PAIR_BURST,
         "pair_interval_s": PAIR_INTERVAL_S, "display_phone_number": f"+1555010{i:04d}"}
        for i, mps in enumerate(rates, start=1)
    ]
    if fast_mps:
        senders.append({"name": "fast", "phone_number_id": "100000000099999", "waba_id": "2000000000001",
                        "access_token": "bench-token-fast", "mps": fast_mps, "pair_burst": PAIR_BURST,
                        "pair_interval_s": PAIR_INTERVAL_S, "display_phone_number": "+15550199999"})
    return senders


def make_backlog(senders: list[dict[str, Any]], seconds: float, seed: int) -> list[dict[str, Any]]:
    """Marketing jobs with realistic repetition: most recipients get one message, some two or
    three (order updates), a few up to eight (over the pair limit's burst, so they must be
    held and paced), spread through the backlog."""
    rng = random.Random(seed)
    jobs: list[dict[str, Any]] = []
    serial = 0
    for s in senders:
        n = int(s["mps"] * seconds)
        picks: list[str] = []
        while len(picks) < n:
            serial += 1
            to = f"+9199{serial:08d}"
            r = rng.random()
            times = 1 if r < 0.80 else 2 if r < 0.95 else 3 if r < 0.99 else rng.randint(6, 8)
            picks.extend([to] * times)
        del picks[n:]
        rng.shuffle(picks)
        for i, to in enumerate(picks):
            jobs.append({"to": to, "template": "seasonal_sale", "language": "en", "kind": "marketing",
                         "sender": s["name"], "params": {"body": [f"Customer {i}", f"{10 + i % 40}%"]}})
    rng.shuffle(jobs)
    return jobs


@dataclass
class RunResult:
    name: str
    jobs: int = 0
    sent: int = 0
    seconds: float = 0.0
    fixed_violations: int = 0
    worst_sliding_pct: float = 0.0
    r130429: int = 0
    r131056: int = 0
    pair_violations: int = 0
    util_slow_min: float | None = None
    util_slow_mean: float | None = None
    util_fast: float | None = None
    otp_p50_ms: float | None = None
    otp_p99_ms: float | None = None
    otp_count: int = 0
    otp_stored_p99_ms: float | None = None
    otp_after_store_p99_ms: float | None = None
    intake_s: float | None = None  # burst intake: first to last backlog job stored
    cpu_per_1000: float | None = None
    notes: list[str] = field(default_factory=list)


def _tally(log: list[dict[str, Any]], by_pnid: dict[str, Any], res: RunResult
           ) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[tuple[str, str], list[float]]]:
    """Request times per number, accepted ones per number and per pair; 130429/131056 counts."""
    per_sender: dict[str, list[float]] = defaultdict(list)
    accepted: dict[str, list[float]] = defaultdict(list)
    pairs: dict[tuple[str, str], list[float]] = defaultdict(list)
    for m in log:
        if m["phone_number_id"] not in by_pnid:
            continue
        per_sender[m["phone_number_id"]].append(m["t"])
        if m["code"] == 130429:
            res.r130429 += 1
        elif m["code"] == 131056:
            res.r131056 += 1
        if m["code"] == 0:
            accepted[m["phone_number_id"]].append(m["t"])
            pairs[(m["phone_number_id"], m["to"])].append(m["t"])
    return per_sender, accepted, pairs


def utilisation(accepted: list[float], limit: float) -> float | None:
    """Sent ÷ allowed from the first send until 90% were sent (None: too few to tell)."""
    if len(accepted) < 10:
        return None
    k = max(1, int(len(accepted) * 0.9)) - 1
    span = accepted[k] - accepted[0]
    return (k / span / limit) if span > 0 else None


def _debug_counts(name: str, log: list[dict[str, Any]], per_sender: dict[str, list[float]]) -> None:
    """WANOTIFY_BENCH_DEBUG: each number's per-second counts and the history of its 131056s."""
    for pnid, times in sorted(per_sender.items()):
        fixed, sliding = window_counts(times)
        t0 = min(fixed)
        for m in log:
            if m["code"] == 131056 and m["phone_number_id"] == pnid:
                hist = [(round(x["t"] - m["t"], 3), x["code"], (x["biz_opaque_callback_data"] or "")[-6:])
                        for x in log if x["to"] == m["to"] and x["phone_number_id"] == pnid]
                console.print(f"131056 for {m['to']}: {hist}")
        console.print(f"{name} {pnid}: sliding max {sliding}; per second: "
                      + " ".join(str(fixed.get(t0 + k, 0)) for k in range(max(fixed) - t0 + 1)))


def analyse(name: str, log: list[dict[str, Any]], senders: list[dict[str, Any]], jobs: int,
            otp_enqueued: dict[str, float], cpu_s: float | None) -> RunResult:
    res = RunResult(name, jobs=jobs)
    by_pnid = {s["phone_number_id"]: s for s in senders}
    per_sender, accepted, pairs = _tally(log, by_pnid, res)
    res.sent = sum(len(v) for v in accepted.values())
    worst = 0.0
    utils_slow: list[float] = []
    for pnid, times in per_sender.items():
        limit = by_pnid[pnid]["mps"]
        fixed, sliding = window_counts(times)
        res.fixed_violations += sum(1 for c in fixed.values() if c > limit)
        worst = max(worst, sliding / limit)
        util = utilisation(sorted(accepted.get(pnid, [])), limit)
        if util is not None:
            if limit >= 500:
                res.util_fast = util
            else:
                utils_slow.append(util)
    res.worst_sliding_pct = worst * 100
    if os.environ.get("WANOTIFY_BENCH_DEBUG"):
        _debug_counts(name, log, per_sender)
    if utils_slow:
        res.util_slow_min = min(utils_slow)
        res.util_slow_mean = sum(utils_slow) / len(utils_slow)
    for times in pairs.values():
        res.pair_violations += pair_violations(times, PAIR_BURST, PAIR_INTERVAL_S)
    first = min((t for v in accepted.values() for t in v), default=0.0)
    last = max((t for v in accepted.values() for t in v), default=0.0)
    res.seconds = last - first
    lat = []
    otp_seen = []
    for m in log:
        key = str(m.get("to") or "").lstrip("+")
        if key in otp_enqueued and m["code"] == 0:
            enq = otp_enqueued.pop(key)
            lat.append((m["t"] - enq) * 1000)
            otp_seen.append((m, enq))
    if os.environ.get("WANOTIFY_BENCH_DEBUG") and lat:
        t_first = min((t for v in accepted.values() for t in v), default=0.0)
        slow = sorted(((m["t"] - t_first, (m["t"] - enq) * 1000) for m, enq in otp_seen), key=lambda x: -x[1])[:8]
        console.print("slowest OTPs (s after first send, ms): " + ", ".join(f"{a:.1f}s:{b:.0f}" for a, b in slow))
    # Where an OTP's time goes: until its job is stored (the job id carries that instant),
    # and from there to Meta.
    with session_scope() as sess:
        rows = sess.execute(text("SELECT to_number, id::text FROM notifications WHERE kind = 'otp'")).all()
    stored_at = {str(n).lstrip("+"): (uuid.UUID(i).int >> 80) / 1000 for n, i in rows}
    split = [((stored_at[k] - enq) * 1000, (m["t"] - stored_at[k]) * 1000)
             for m, enq in otp_seen if (k := str(m.get("to") or "").lstrip("+")) in stored_at]
    res.otp_stored_p99_ms = percentile([a for a, _ in split], 0.99)
    res.otp_after_store_p99_ms = percentile([b for _, b in split], 0.99)
    res.otp_count = len(lat)
    res.otp_p50_ms = percentile(lat, 0.5)
    res.otp_p99_ms = percentile(lat, 0.99)
    if cpu_s is not None and res.sent:
        res.cpu_per_1000 = cpu_s / res.sent * 1000
    return res


def _otp_stream(stop: threading.Event, senders: list[dict[str, Any]], rate: float,
                submit: Any, enqueued: dict[str, float]) -> None:
    """OTPs at ``rate`` per second until ``stop``; ``enqueued`` maps each one's recipient
    (digits, unique per OTP) to the moment it was handed to ``submit``."""
    rng = random.Random(99)
    i = 0
    while not stop.wait(1.0 / rate):
        i += 1
        s = senders[i % len(senders)]["name"]
        body = {"to": f"+9198{7000000 + i:08d}", "template": "otp_code", "language": "en", "kind": "otp",
                "sender": s, "params": {"body": [f"{rng.randrange(10**6):06d}"]}}
        enqueued[body["to"].lstrip("+")] = time.time()
        submit(body)


def _count(sql: str) -> int:
    with session_scope() as s:
        return int(s.execute(text(sql)).scalar_one())


def _held_backlog(senders: list[dict[str, Any]], backlog: list[dict[str, Any]]) -> None:
    """The whole backlog stored before the numbers start: every sender's dispatch is held (its
    lease taken by the bench) while the jobs are enqueued and the workers boot."""
    r = get_redis()
    for s in senders:
        r.set(prefix(s["name"]) + "owner", "bench-hold", px=600_000)
    with console.status(f"wanotify: enqueueing {len(backlog)} marketing jobs"):
        for k in range(0, len(backlog), 1000):
            for acc in notify_many(backlog[k : k + 1000]):
                if not hasattr(acc, "id"):
                    raise RuntimeError(f"bench job refused: {acc}")


def producer_app(redis_url: str) -> Celery:
    """A producer as another codebase has it: a plain Celery app, no import of wanotify."""
    app = Celery("producer", broker=redis_url)
    app.conf.task_serializer = "json"
    return app


def _publish(app: Celery, bodies: list[dict[str, Any]]) -> None:
    """``send_task("wanotify.notify", args=[body], queue="notify")`` for each body, as fast as
    one connection publishes."""
    with app.producer_or_acquire() as prod:
        for body in bodies:
            app.send_task(TASK_NOTIFY, args=[body], queue=NOTIFY, producer=prod)


def _intake_seconds() -> float | None:
    """From the first marketing job stored to the last (job ids carry their creation ms)."""
    with session_scope() as s:
        ids = s.execute(text("SELECT min(id::text), max(id::text) FROM notifications"
                             " WHERE kind = 'marketing'")).one()
    if ids[0] is None:
        return None
    first, last = (uuid.UUID(i).int >> 80 for i in ids)
    return (last - first) / 1000


def run_wanotify(env: BenchEnv, sb_url: str, senders: list[dict[str, Any]], backlog: list[dict[str, Any]],
                 workers: int, otp_rate: float, timeout: float, intake: str = "stored",
                 intake_workers: int = 0, intake_process: bool = False) -> RunResult:
    """``intake="stored"``: the backlog is stored before the workers start; ``"burst"``: the
    workers are running and the backlog arrives as a burst of ``wanotify.notify`` tasks
    (validated and stored by the sending workers themselves, or with ``intake_process`` by
    the intake child each of them starts), the OTPs by the same route."""
    burst = intake == "burst"
    if not burst:
        _held_backlog(senders, backlog)
    procs = []
    # With intake workers, the senders' workers leave the notify queue to them.
    send_queues = ["--queues", ",".join(q for q in QUEUES if q != NOTIFY)] if intake_workers else []
    for i in range(workers):
        node = f"bench{i}-{uuid.uuid4().hex[:4]}"
        procs.append(env.start(f"worker{i}", ["worker", "--concurrency", "16", *send_queues, "-n", f"{node}@%h"],
                               {"WANOTIFY_INTAKE_PROCESS": "true" if intake_process else "false"}))
    for i in range(intake_workers):
        node = f"intake{i}-{uuid.uuid4().hex[:4]}"
        procs.append(env.start(f"intake{i}", ["worker", "--concurrency", "4", "--queues", NOTIFY, "-n", f"{node}@%h"]))
    for p in procs:
        wait_worker(env.redis_url, p, timeout=60, node=p.args[-1].split("@")[0])
    time.sleep(1.0)  # let the booted workers settle (and drop the kicks that found no work)
    broker = server_pid(int(env.redis_url.split(":")[-1].split("/")[0]))
    # CPU is counted from here: the workers are up and the backlog is waiting.
    meter = CpuMeter([p.pid for p in procs] + ([broker] if broker else []))
    enqueued: dict[str, float] = {}
    stop = threading.Event()
    producer = producer_app(env.redis_url)
    if burst:
        def submit(body: dict[str, Any]) -> None:
            producer.send_task(TASK_NOTIFY, args=[body], queue=NOTIFY)
    else:
        r = get_redis()
        for s in senders:
            r.delete(prefix(s["name"]) + "owner")
            kick(s["name"], "marketing")

        def submit(body: dict[str, Any]) -> None:
            notify(body)

    t = threading.Thread(target=_otp_stream, args=(stop, senders, otp_rate, submit, enqueued), daemon=True)
    t.start()
    if burst:
        with console.status(f"wanotify: publishing {len(backlog)} wanotify.notify tasks"):
            _publish(producer, backlog)

    cpu_mark: dict[str, float] = {}

    def drained() -> bool:
        n = _count("SELECT count(*) FROM notifications WHERE kind = 'marketing'"
                   " AND status IN ('queued', 'sending')")
        if burst:  # still arriving
            n += len(backlog) - _count("SELECT count(*) FROM notifications WHERE kind = 'marketing'")
        # CPU per message is taken over the drain itself (95% of the backlog), not over
        # the pair-limited tail, where idle workers would dominate it.
        if "cpu" not in cpu_mark and n <= len(backlog) * 0.05:
            cpu_mark["cpu"], cpu_mark["sent"] = meter.used(), float(len(backlog) - n)
        return n == 0

    with console.status("wanotify: draining the backlog (OTPs arriving)"):
        ok = wait_until(drained, timeout)
        stop.set()
        t.join()
        wait_until(lambda: _count("SELECT count(*) FROM notifications WHERE kind = 'otp'") >= len(enqueued)
                   and _count("SELECT count(*) FROM notifications WHERE kind = 'otp'"
                              " AND status IN ('queued', 'sending')") == 0, 10)
    cpu = meter.used()
    env.stop(procs)
    log = sandbox_log(sb_url)
    res = analyse("wanotify, intake process" if intake_process else "wanotify", log, senders, len(backlog), dict(enqueued), cpu)
    res.intake_s = _intake_seconds() if burst else None
    if not ok:
        res.notes.append(f"backlog not drained within {timeout:.0f}s")
    return res


def run_baseline(env: BenchEnv, sb_url: str, senders: list[dict[str, Any]], backlog: list[dict[str, Any]],
                 workers: int, otp_rate: float, timeout: float) -> RunResult:
    producer = Celery("baseline_producer", broker=env.redis_url)
    producer.conf.task_serializer = "json"
    before = int(httpx.get(f"{sb_url}/_sandbox/messages", params={"limit": 1}).json()["last_seq"])
    with console.status(f"baseline: enqueueing {len(backlog)} tasks"):
        with producer.producer_or_acquire() as prod:
            for job in backlog:
                pj = prepare(job)
                producer.send_task(f"baseline.send.{pj.sender}", args=[pj.payload], queue="baseline",
                                   producer=prod)
    # The workers boot consuming nothing; all start on the backlog together.
    procs = []
    nodes = []
    for i in range(workers):
        node = f"baseline{i}-{uuid.uuid4().hex[:4]}"
        nodes.append(node)
        procs.append(env.start(f"baseline{i}", ["bench", "baseline-worker", "--name", node,
                                                 "--queue", "baseline-idle"]))
    for p, node in zip(procs, nodes, strict=True):
        wait_worker(env.redis_url, p, timeout=60, node=node)
    time.sleep(1.0)
    broker = server_pid(int(env.redis_url.split(":")[-1].split("/")[0]))
    meter = CpuMeter([p.pid for p in procs] + ([broker] if broker else []))
    producer.control.add_consumer("baseline", reply=True, timeout=5.0)
    enqueued: dict[str, float] = {}
    stop = threading.Event()

    def submit(body: dict[str, Any]) -> None:
        p = prepare(body)
        producer.send_task(f"baseline.send.{p.sender}", args=[p.payload], queue="baseline")

    t = threading.Thread(target=_otp_stream, args=(stop, senders, otp_rate, submit, enqueued), daemon=True)
    t.start()
    total = len(backlog)

    rds = redis.Redis.from_url(env.redis_url)
    last = {"seq": -1, "at": time.monotonic()}

    cpu_mark: dict[str, float] = {}

    def consumed() -> bool:
        seq = int(httpx.get(f"{sb_url}/_sandbox/messages", params={"limit": 1}).json()["last_seq"])
        if "cpu" not in cpu_mark and seq - before >= len(backlog) * 0.95:
            cpu_mark["cpu"], cpu_mark["sent"] = meter.used(), float(seq - before)
        return bool(rds.llen("baseline") == 0)

    def quiet() -> bool:
        """Nothing new at the sandbox for 2 s (rate_limit keeps consumed tasks waiting
        inside the workers after the queue itself is empty)."""
        seq = int(httpx.get(f"{sb_url}/_sandbox/messages", params={"limit": 1}).json()["last_seq"])
        if seq != last["seq"]:
            last["seq"], last["at"] = seq, time.monotonic()
            return False
        return time.monotonic() - last["at"] > 2.0

    started = time.monotonic()
    with console.status(f"baseline: draining (bounded at {timeout:.0f}s)"):
        ok = wait_until(consumed, timeout)
        stop.set()
        t.join()
        ok = wait_until(quiet, max(5.0, timeout - (time.monotonic() - started))) and ok
    if "cpu" not in cpu_mark:
        seq = int(httpx.get(f"{sb_url}/_sandbox/messages", params={"limit": 1}).json()["last_seq"])
        cpu_mark["cpu"], cpu_mark["sent"] = meter.used(), float(seq - before)
    env.stop(procs)
    log = [m for m in sandbox_log(sb_url, after=before)]
    res = analyse("celery rate_limit", log, senders, len(backlog), dict(enqueued), None)
    if cpu_mark["sent"]:
        # per request that reached the sandbox (accepted or refused)
        res.cpu_per_1000 = cpu_mark["cpu"] / cpu_mark["sent"] * 1000
    if not ok:
        res.notes.append(f"stopped after {timeout:.0f}s with {res.sent} of {total} sent")
    if res.sent < total:
        res.notes.append(f"{total - res.sent} of {total} messages never accepted (refused, not retried)")
    if res.otp_count < len(enqueued):
        res.notes.append(f"{len(enqueued) - res.otp_count} of {len(enqueued)} OTPs not delivered")
    return res


def run(runs: int = 1, slow_senders: int = 10, slow_mps: int = 80, fast_mps: int = 1000,
        backlog_s: float = 8.0, workers: int = 4, otp_rate: float = 5.0, baseline: bool = True,
        baseline_timeout: float = 45.0, mps_list: list[int] | None = None, intake: str = "stored",
        intake_workers: int = 0, compare_intake_process: bool = False
        ) -> dict[str, list[tuple[RunResult, RunResult | None]]]:
    """Two phases in one run: many numbers at ``slow_mps``, then one number at ``fast_mps``.

    ``compare_intake_process``: instead of Celery's baseline, the same run with each worker's
    intake in a child process (``WANOTIFY_INTAKE_PROCESS=true``), in alternating order.

    The phases are separate because 10×80 + 1,000 mps is more than this 2-core machine can
    serve with the sandbox, Postgres and Redis on it; Meta's limits are per number, so each
    phase tests the same thing at its own rate.
    """
    phases: list[tuple[str, list[dict[str, Any]]]] = []
    if mps_list:
        phases.append(("/".join(map(str, mps_list)) + " mps", make_senders(0, 0, 0, mps_list)))
    elif slow_senders:
        phases.append((f"{slow_senders}×{slow_mps} mps", make_senders(slow_senders, slow_mps, 0)))
    if fast_mps:
        phases.append((f"1×{fast_mps} mps", make_senders(0, slow_mps, fast_mps)))
    console.print(f"[bold]bench pacing[/bold]: phases {', '.join(n for n, _ in phases)}; backlog "
                  f"{backlog_s:.0f}s per sender; {workers} worker processes"
                  + (f" + {intake_workers} intake-only (nice)" if intake_workers else "")
                  + f"; OTP {otp_rate}/s; intake {intake}; "
                  f"{runs} run(s); {os.cpu_count()} cores")
    out: dict[str, list[tuple[RunResult, RunResult | None]]] = {}
    for name, senders in phases:
        results: list[tuple[RunResult, RunResult | None]] = []
        for i in range(runs):
            backlog = make_backlog(senders, backlog_s, seed=i)

            def in_fresh_env(child: bool, with_baseline: bool, senders: list[dict[str, Any]] = senders,
                             backlog: list[dict[str, Any]] = backlog) -> tuple[RunResult, RunResult | None]:
                with bench_env("pacing", senders) as env:  # a fresh database, Redis db and sandbox
                    _, sb_url = start_sandbox(env, realtime=True)
                    got = run_wanotify(env, sb_url, senders, backlog, workers, otp_rate,
                                       timeout=backlog_s * 6 + 60, intake=intake,
                                       intake_workers=0 if child else intake_workers, intake_process=child)
                    base = (run_baseline(env, sb_url, senders, backlog, workers, otp_rate, baseline_timeout)
                            if with_baseline else None)
                return got, base

            base: RunResult | None
            if compare_intake_process:  # alternating which goes first
                first, _ = in_fresh_env(child=bool(i % 2), with_baseline=False)
                second, _ = in_fresh_env(child=not i % 2, with_baseline=False)
                ours, base = (second, first) if i % 2 else (first, second)
            else:
                ours, base = in_fresh_env(child=False, with_baseline=baseline)
            results.append((ours, base))
            console.print(f"{name}: run {i + 1}/{runs} done")
        out[name] = results
    for name, results in out.items():
        print_table(results, name)
    return out


def _worst_util(r: RunResult) -> float | None:
    vals = [v for v in (r.util_slow_min, r.util_fast) if v is not None]
    return min(vals) * 100 if vals else None


def _mean_util(r: RunResult) -> float | None:
    vals = [v for v in (r.util_slow_mean, r.util_fast) if v is not None]
    return sum(vals) / len(vals) * 100 if vals else None


def _fmt(v: float | None, spec: str = ".1f", suffix: str = "") -> str:
    return "—" if v is None else f"{v:{spec}}{suffix}"


def print_table(results: list[tuple[RunResult, RunResult | None]], phase: str = "") -> None:
    def col(pick: Any, which: int) -> float | None:
        vals = [pick(r[which]) for r in results if r[which] is not None]
        return median(vals)

    rows: list[tuple[str, Any, str]] = [
        ("jobs (marketing backlog)", lambda r: r.jobs, ".0f"),
        ("messages accepted at the sandbox", lambda r: r.sent, ".0f"),
        ("seconds from first to last send", lambda r: r.seconds, ".1f"),
        ("burst intake: seconds from first to last job stored", lambda r: r.intake_s, ".1f"),
        ("violations: 1-s windows over the limit", lambda r: r.fixed_violations, ".0f"),
        ("busiest sliding 1 s, % of limit", lambda r: r.worst_sliding_pct, ".1f"),
        ("130429 answers (number rate)", lambda r: r.r130429, ".0f"),
        ("131056 answers (pair rate)", lambda r: r.r131056, ".0f"),
        ("pair-limit violations", lambda r: r.pair_violations, ".0f"),
        ("utilisation %, worst number", lambda r: _worst_util(r), ".1f"),
        ("utilisation %, mean", lambda r: _mean_util(r), ".1f"),
        ("OTP enqueue → sandbox p50 (ms)", lambda r: r.otp_p50_ms, ".0f"),
        ("OTP enqueue → sandbox p99 (ms)", lambda r: r.otp_p99_ms, ".0f"),
        ("  of which enqueue → job stored, p99 (ms)", lambda r: r.otp_stored_p99_ms, ".0f"),
        ("  of which job stored → sandbox, p99 (ms)", lambda r: r.otp_after_store_p99_ms, ".0f"),
        ("CPU s per 1,000 sends (workers + Redis)", lambda r: r.cpu_per_1000, ".2f"),
    ]
    t = Table(title=f"bench pacing {phase} (median of {len(results)} run{'s' if len(results) > 1 else ''})")
    t.add_column("metric")
    t.add_column("wanotify", justify="right")
    has_base = any(b is not None for _, b in results)
    if has_base:
        t.add_column(next(b.name for _, b in results if b is not None), justify="right")
    for label, pick, spec in rows:
        cells = [_fmt(col(pick, 0), spec)]
        if has_base:
            cells.append(_fmt(col(pick, 1), spec))
        t.add_row(label, *cells)
    console.print(t)
    for ours, base in results:
        for r in (ours, base):
            if r is not None and r.notes:
                console.print(f"[yellow]{r.name}:[/yellow] " + "; ".join(r.notes))
