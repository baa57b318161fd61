"""``wanotify bench throughput``: wanotify's own overhead against the textbook baseline.

Everything runs on this machine against the sandbox (Meta's limits raised so pacing does
not cap the figures): the baselines (a Celery no-op drain, the naive and the pooled
one-task-per-message send) and wanotify's send path at 0 ms and 50 ms of API latency,
enqueue over HTTP and in bulk, and webhook ingest against an ORM-one-row-per-commit
baseline. Each figure is the median of several runs; ratios are taken within this run.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson
import psutil
import redis as redis_lib

from wanotify.devtools.bench.common import (
    BenchEnv,
    CpuMeter,
    last_seq,
    percentile,
    sandbox_log,
    server_pid,
    wait_until,
)

SENDERS = 4
SENDER_MPS = 10_000  # far above what this machine can send: pacing never caps the figure


def make_senders(n: int = SENDERS) -> list[dict[str, Any]]:
    return [
        {"name": f"tp{i}", "phone_number_id": f"9100000{i:05d}", "waba_id": f"8100000{i:05d}",
         "access_token": f"EAAGtp{i}token", "mps": SENDER_MPS, "pair_interval_s": 0.001,
         "pair_burst": 100}
        for i in range(n)
    ]


def job_bodies(n: int, senders: list[dict[str, Any]], offset: int = 0) -> list[dict[str, Any]]:
    return [
        {"to": f"+9198{(offset + i) % 100_000_000:08d}", "template": "order_confirmation_v2",
         "params": {"body": ["Rahul Sharma", f"ZEC-{offset + i:07d}", "₹45,000"]},
         "sender": senders[i % len(senders)]["name"]}
        for i in range(n)
    ]


@dataclass
class Drain:
    """A drain measured from the sandbox's arrival log (or a completion counter)."""

    name: str
    n: int
    rate: float | None = None  # messages/s between 5% and 95% of arrivals
    wall_s: float | None = None
    cpu_per_1000: float | None = None  # worker + broker CPU seconds per 1,000 messages
    db_cpu_per_1000: float | None = None
    rss_mb: float | None = None
    notes: list[str] = field(default_factory=list)


def steady_rate(times: list[float]) -> float | None:
    """Messages per second between the 5th and the 95th percentile of arrival times."""
    if len(times) < 20:
        return None
    s = sorted(times)
    lo, hi = int(len(s) * 0.05), int(len(s) * 0.95)
    span = s[hi] - s[lo]
    return (hi - lo) / span if span > 0 else None


def rss_mb(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            root = psutil.Process(pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        best = 0.0
        for p in procs:
            try:
                best = max(best, p.memory_info().rss / 2**20)
            except psutil.NoSuchProcess:
                pass
        total = max(total, best)
    return total


def _pg_pids() -> list[int]:
    out = []
    for p in psutil.process_iter(["name"]):
        if (p.info.get("name") or "").startswith("postgres"):
            out.append(p.pid)
    return out


class PgCpu:
    """CPU used by every postgres process (backends come and go; sum what is seen)."""

    def __init__(self) -> None:
        self.start = self._now()

    @staticmethod
    def _now() -> dict[int, float]:
        out: dict[int, float] = {}
        for pid in _pg_pids():
            try:
                t = psutil.Process(pid).cpu_times()
                out[pid] = t.user + t.system
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        return out

    def used(self) -> float:
        now = self._now()
        return sum(v - self.start.get(pid, 0.0) for pid, v in now.items())


def run_wanotify_send(env: BenchEnv, sb_url: str, senders: list[dict[str, Any]], n: int,
                      workers: int = 1, timeout: float = 300.0) -> Drain:
    """Jobs committed and waiting; then the workers start and drain them into the sandbox."""
    from wanotify.devtools.procs import wait_worker
    from wanotify.intake.service import notify_many
    from wanotify.pacing.lanes import prefix
    from wanotify.queues.enqueue import dispatch as kick
    from wanotify.redis import get_redis

    r = get_redis()
    for s in senders:
        r.set(prefix(s["name"]) + "owner", "bench-hold", px=600_000)
    start_seq = last_seq(sb_url)
    bodies = job_bodies(n, senders, offset=start_seq)
    for k in range(0, n, 2000):
        for acc in notify_many(bodies[k : k + 2000]):
            if not hasattr(acc, "id"):
                raise RuntimeError(f"bench job refused: {acc}")
    procs = []
    for i in range(workers):
        node = f"tp{i}-{uuid.uuid4().hex[:4]}"
        procs.append(env.start(f"worker{i}", ["worker", "-n", f"{node}@%h"],
                               {"WANOTIFY_WORKER_METRICS_PORT": "0"}))
    for p in procs:
        wait_worker(env.redis_url, p, timeout=60, node=p.args[-1].split("@")[0])
    time.sleep(1.0)
    broker = server_pid(int(env.redis_url.split(":")[-1].split("/")[0]))
    meter = CpuMeter([p.pid for p in procs] + ([broker] if broker else []))
    pg = PgCpu()
    t0 = time.time()
    for s in senders:
        r.delete(prefix(s["name"]) + "owner")
        kick(s["name"], "transactional")
    ok = wait_until(lambda: last_seq(sb_url) - start_seq >= n, timeout, 0.1)
    wall = time.time() - t0
    cpu, db_cpu = meter.used(), pg.used()
    mem = rss_mb([p.pid for p in procs])
    env.stop(procs)
    log = [m for m in sandbox_log(sb_url, after=start_seq) if m["code"] == 0]
    res = Drain("wanotify", n, steady_rate([m["t"] for m in log]), wall,
                cpu / n * 1000, db_cpu / n * 1000, mem)
    if not ok:
        res.notes.append(f"only {len(log)} of {n} sent within {timeout:.0f}s")
    return res


# --- the textbook Celery baselines ------------------------------------------------------


def run_celery_baseline(env: BenchEnv, sb_url: str, senders: list[dict[str, Any]], task: str,
                        pool: str, concurrency: int, prefill: int, window_s: float = 6.0) -> Drain:
    """Pre-fill the textbook queue, start its worker, and measure a steady window."""
    from wanotify.devtools.bench.textbook import COUNTER, QUEUE, celery
    from wanotify.devtools.procs import wait_worker

    r = redis_lib.Redis.from_url(env.redis_url)
    r.delete(QUEUE, COUNTER)
    s = senders[0]
    url = f"{sb_url}/v23.0/{s['phone_number_id']}/messages"
    with celery.producer_or_acquire() as producer:
        for i in range(prefill):
            if task == "noop":
                celery.send_task("textbook.noop", producer=producer)
            else:
                body = job_bodies(1, senders, offset=i)[0]
                payload = {"messaging_product": "whatsapp", "to": body["to"].lstrip("+"), "type": "text",
                           "text": {"body": f"Order {body['params']['body'][1]} confirmed"}}
                celery.send_task(f"textbook.{task}", args=[url, s["access_token"], payload], producer=producer)
    start_seq = last_seq(sb_url)

    def progress() -> int:
        if task == "noop":
            return int(r.get(COUNTER) or 0)
        return last_seq(sb_url) - start_seq

    node = f"tb-{uuid.uuid4().hex[:6]}"
    proc = env.start(f"textbook-{task}", ["bench", "textbook-worker", "--pool", pool,
                                          "--concurrency", str(concurrency), "--name", node])
    name = f"{task} ({pool}, c={concurrency})"
    try:
        wait_worker(env.redis_url, proc, timeout=60, node=node)
        if not wait_until(lambda: progress() > 0, 30, 0.05):
            return Drain(name, 0, notes=["nothing completed"])
        time.sleep(1.0)
        broker = server_pid(int(env.redis_url.split(":")[-1].split("/")[0]))
        meter = CpuMeter([proc.pid] + ([broker] if broker else []))
        c1, t1 = progress(), time.monotonic()
        time.sleep(window_s)
        c2, t2 = progress(), time.monotonic()
        cpu = meter.used()
        mem = rss_mb([proc.pid])
        res = Drain(name, c2 - c1, (c2 - c1) / (t2 - t1), t2 - t1,
                    cpu / max(1, c2 - c1) * 1000, None, mem)
        if r.llen(QUEUE) == 0:
            res.notes.append("the queue ran dry during the window: the rate is a lower bound")
        return res
    finally:
        env.stop([proc])
        r.delete(QUEUE, COUNTER)


# --- enqueue ----------------------------------------------------------------------------


@dataclass
class Enqueue:
    http_p50_ms: float | None = None
    http_p99_ms: float | None = None
    http_rate: float | None = None
    paced_rate: float | None = None  # requests/s of the open-loop probe
    paced_p50_ms: float | None = None
    paced_p99_ms: float | None = None
    batch_rate: float | None = None
    bulk_rate: float | None = None


def _api_headers(env: BenchEnv) -> dict[str, str]:
    key = env.env["WANOTIFY_API_KEYS"].split(",")[0]
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}


def _quiet_gc() -> None:
    """The load generator shares this process with everything the bench has kept so far:
    move that out of the collector's way so its pauses do not show up as server latency."""
    import gc

    gc.collect()
    gc.freeze()


def run_http_enqueue(env: BenchEnv, web_url: str, senders: list[dict[str, Any]], n: int,
                     clients: int = 32, offset: int = 0) -> tuple[float | None, float | None, float]:
    """``POST /v1/notifications`` from ``clients`` concurrent clients: p50, p99 (ms), jobs/s."""
    import asyncio

    import aiohttp
    import orjson

    bodies = [orjson.dumps(b) for b in job_bodies(n, senders, offset=offset)]
    lat: list[float] = []
    errors: list[int] = []

    async def client(conn: aiohttp.ClientSession, mine: list[bytes]) -> None:
        for b in mine:
            t = time.perf_counter()
            async with conn.post(f"{web_url}/v1/notifications", data=b) as resp:
                await resp.read()
                if resp.status != 202:
                    errors.append(resp.status)
            lat.append((time.perf_counter() - t) * 1000)

    async def main() -> float:
        async with aiohttp.ClientSession(headers=_api_headers(env),
                                         connector=aiohttp.TCPConnector(limit=clients)) as conn:
            # warm the connections and the app
            await asyncio.gather(*(client(conn, bodies[i : i + 1]) for i in range(clients)))
            lat.clear()
            rest = bodies[clients:]
            t0 = time.perf_counter()
            await asyncio.gather(*(client(conn, rest[i::clients]) for i in range(clients)))
            return len(rest) / (time.perf_counter() - t0)

    _quiet_gc()
    rate = asyncio.run(main())
    if errors:
        raise RuntimeError(f"enqueue refused: HTTP {errors[:5]}")
    return percentile(lat, 0.5), percentile(lat, 0.99), rate


def run_batch_enqueue(env: BenchEnv, web_url: str, senders: list[dict[str, Any]], n: int,
                      batch: int = 500, clients: int = 4, offset: int = 0) -> float:
    """``POST /v1/notifications:batch``, ``batch`` jobs per request: jobs/s."""
    import asyncio

    import aiohttp
    import orjson

    bodies = job_bodies(n, senders, offset=offset)
    chunks = [orjson.dumps(bodies[k : k + batch]) for k in range(0, n, batch)]
    errors: list[int] = []

    async def client(conn: aiohttp.ClientSession, mine: list[bytes]) -> None:
        for b in mine:
            async with conn.post(f"{web_url}/v1/notifications:batch", data=b) as resp:
                await resp.read()
                if resp.status not in (200, 202, 207):
                    errors.append(resp.status)

    async def main() -> float:
        async with aiohttp.ClientSession(headers=_api_headers(env)) as conn:
            t0 = time.perf_counter()
            await asyncio.gather(*(client(conn, chunks[i::clients]) for i in range(clients)))
            return n / (time.perf_counter() - t0)

    _quiet_gc()
    rate = asyncio.run(main())
    if errors:
        raise RuntimeError(f"batch enqueue refused: HTTP {errors[:5]}")
    return rate


def run_bulk_enqueue(senders: list[dict[str, Any]], n: int, offset: int = 0) -> float:
    """The Python API in bulk (``notify_many``), in this process: jobs/s."""
    from wanotify.intake.service import notify_many

    bodies = job_bodies(n, senders, offset=offset)
    t0 = time.perf_counter()
    for acc in notify_many(bodies):
        if not hasattr(acc, "id"):
            raise RuntimeError(f"bench job refused: {acc}")
    return n / (time.perf_counter() - t0)


# --- webhook ingest ---------------------------------------------------------------------


@dataclass
class Ingest:
    name: str
    events: int
    rate: float | None = None  # status events/s from the first POST to the last row
    p50_ms: float | None = None
    p99_ms: float | None = None
    paced_rate: float | None = None  # POSTs/s of the open-loop probe
    paced_p50_ms: float | None = None
    paced_p99_ms: float | None = None
    notes: list[str] = field(default_factory=list)


def status_posts(targets: list[tuple[str, str]], per_post: int, secret: str, pnid: str,
                 status: str, ts_offset: int = 0) -> list[tuple[bytes, str]]:
    """Signed webhook bodies in Meta's shape, ``per_post`` statuses each."""
    import orjson

    from wanotify.inbound.signature import sign

    out = []
    ts = str(int(time.time()) + ts_offset)
    for k in range(0, len(targets), per_post):
        statuses = [
            {"id": wamid, "status": status, "timestamp": ts, "recipient_id": rcpt,
             "conversation": {"id": f"c{rcpt}", "origin": {"type": "utility"}},
             "pricing": {"billable": True, "pricing_model": "PMP", "category": "utility",
                         "type": "regular"}}
            for wamid, rcpt in targets[k : k + per_post]
        ]
        body = orjson.dumps({"object": "whatsapp_business_account", "entry": [{
            "id": "810000000000", "changes": [{"field": "messages", "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": "15550000000", "phone_number_id": pnid},
                "statuses": statuses}}]}]})
        out.append((body, sign(secret, body)))
    return out


def post_all(url: str, posts: list[tuple[bytes, str]], clients: int = 32) -> tuple[list[float], float]:
    """POST every body with ``clients`` concurrent connections: latencies (ms) and the start time."""
    import asyncio

    import aiohttp

    lat: list[float] = []
    errors: list[int] = []

    async def client(conn: aiohttp.ClientSession, mine: list[tuple[bytes, str]]) -> None:
        for body, sig in mine:
            t = time.perf_counter()
            async with conn.post(url, data=body, headers={
                    "Content-Type": "application/json", "X-Hub-Signature-256": sig}) as resp:
                await resp.read()
                if resp.status != 200:
                    errors.append(resp.status)
            lat.append((time.perf_counter() - t) * 1000)

    async def main() -> float:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as conn:
            t0 = time.time()
            await asyncio.gather(*(client(conn, posts[i::clients]) for i in range(clients)))
            return t0

    _quiet_gc()
    t0 = asyncio.run(main())
    if errors:
        raise RuntimeError(f"webhook refused: HTTP {errors[:5]}")
    return lat, t0


def paced(url: str, requests: list[tuple[bytes, dict[str, str]]], rate: float,
          ok: tuple[int, ...] = (200, 202)) -> tuple[float | None, float | None]:
    """Open loop: request *i* starts at ``i / rate`` s whatever the answers before it (as
    Meta's webhooks or a service's enqueues arrive); latency is counted from that planned
    instant, so a slow server cannot hide its queue. p50, p99 in ms."""
    import asyncio

    import aiohttp

    lat: list[float] = []
    errors: list[int] = []

    async def one(conn: aiohttp.ClientSession, planned: float, body: bytes, headers: dict[str, str]) -> None:
        delay = planned - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        async with conn.post(url, data=body, headers=headers) as resp:
            await resp.read()
            if resp.status not in ok:
                errors.append(resp.status)
        lat.append((time.perf_counter() - planned) * 1000)

    async def main() -> None:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=512)) as conn:
            t0 = time.perf_counter() + 0.2
            await asyncio.gather(*(one(conn, t0 + i / rate, b, h) for i, (b, h) in enumerate(requests)))

    _quiet_gc()
    asyncio.run(main())
    if errors:
        raise RuntimeError(f"paced requests refused: HTTP {errors[:5]}")
    return percentile(lat, 0.5), percentile(lat, 0.99)


def _count(sql: str) -> int:
    from sqlalchemy import text

    from wanotify.db import session_scope

    with session_scope() as s:
        return int(s.execute(text(sql)).scalar_one())


def run_ingest(name: str, url: str, posts: list[tuple[bytes, str]], events: int, count_sql: str,
               timeout: float = 300.0) -> Ingest:
    before = _count(count_sql)
    lat, t0 = post_all(url, posts)
    done_at: list[float] = []

    def done() -> bool:
        if _count(count_sql) - before >= events:
            done_at.append(time.time())
            return True
        return False

    ok = wait_until(done, timeout, 0.05)
    got = _count(count_sql) - before
    res = Ingest(name, got, got / ((done_at[0] if done_at else time.time()) - t0),
                 percentile(lat, 0.5), percentile(lat, 0.99))
    if not ok:
        res.notes.append(f"only {got} of {events} events stored within {timeout:.0f}s")
    return res


def sent_targets(n: int) -> list[tuple[str, str]]:
    """(wamid, recipient) of messages the send phase got accepted."""
    from sqlalchemy import text

    from wanotify.db import session_scope

    with session_scope() as s:
        rows = s.execute(text("SELECT wamid, to_number FROM notifications WHERE wamid IS NOT NULL"
                              " ORDER BY id LIMIT :n"), {"n": n}).all()
    return [(r.wamid, r.to_number.lstrip("+")) for r in rows]


def run_ingest_pair(env: BenchEnv, web_url: str, baseline_url: str, targets: list[tuple[str, str]],
                    per_post: int, pnid: str) -> tuple[Ingest, Ingest]:
    """The same signed bodies (``delivered`` then ``read`` for each message) to wanotify's
    receiver and to the textbook one."""
    from wanotify.devtools.bench.textbook import TABLE

    secret = env.env["WANOTIFY_APP_SECRET"]
    posts = (status_posts(targets, per_post, secret, pnid, "delivered")
             + status_posts(targets, per_post, secret, pnid, "read"))
    events = 2 * len(targets)
    ours = run_ingest("wanotify", f"{web_url}/webhooks/whatsapp", posts, events,
                      "SELECT count(*) FROM status_events")
    base = run_ingest("ORM row per commit", f"{baseline_url}/webhooks/whatsapp", posts, events,
                      f"SELECT count(*) FROM {TABLE}")
    return ours, base


# --- RSS over a long drain --------------------------------------------------------------


def run_rss(env: BenchEnv, sb_url: str, senders: list[dict[str, Any]], total: int,
            every: int = 10_000) -> list[tuple[int, float]]:
    """One worker sends ``total`` messages (fed while it drains); its RSS every ``every``."""
    import threading

    from wanotify.devtools.procs import wait_worker
    from wanotify.intake.service import notify_many

    node = f"rss-{uuid.uuid4().hex[:4]}"
    proc = env.start("worker-rss", ["worker", "-n", f"{node}@%h"], {"WANOTIFY_WORKER_METRICS_PORT": "0"})
    wait_worker(env.redis_url, proc, timeout=60, node=node)
    start_seq = last_seq(sb_url)
    failed: list[str] = []

    def feed() -> None:
        for k in range(0, total, 5000):
            # Keep the backlog short: the worker, not the lanes, is what is measured.
            wait_until(lambda k=k: last_seq(sb_url) - start_seq >= k - 15_000, 600, 0.2)
            for acc in notify_many(job_bodies(min(5000, total - k), senders, offset=start_seq + k)):
                if not hasattr(acc, "id"):
                    failed.append(str(acc))

    t = threading.Thread(target=feed, daemon=True)
    t.start()
    samples: list[tuple[int, float]] = []
    mark = every
    deadline = time.monotonic() + max(600.0, total / 100)
    while mark <= total and time.monotonic() < deadline:
        if last_seq(sb_url) - start_seq >= mark:
            samples.append((mark, rss_mb([proc.pid])))
            mark += every
        else:
            time.sleep(0.2)
    t.join(5)
    env.stop([proc])
    if failed:
        raise RuntimeError(f"bench jobs refused: {failed[:3]}")
    return samples


# --- the whole benchmark ----------------------------------------------------------------


@dataclass
class Sizes:
    send_jobs: int = 20_000
    noop_prefill: int = 8_000
    window_s: float = 6.0
    http_jobs: int = 6_000
    batch_jobs: int = 20_000
    bulk_jobs: int = 20_000
    ingest_messages: int = 10_000
    ingest_single_messages: int = 3_000
    rss_sends: int = 100_000

    @classmethod
    def quick(cls) -> Sizes:
        return cls(send_jobs=1_500, noop_prefill=5_000, window_s=1.5, http_jobs=600, batch_jobs=2_000,
                   bulk_jobs=2_000, ingest_messages=500, ingest_single_messages=200, rss_sends=2_000)


@dataclass
class RunFigures:
    drains: dict[str, Drain] = field(default_factory=dict)
    enqueue: Enqueue = field(default_factory=Enqueue)
    ingest: dict[str, Ingest] = field(default_factory=dict)


BASELINES: list[tuple[str, str, int, dict[float, int]]] = [
    # task, pool, concurrency, prefill per latency
    # (enough for a window at twice the rates measured here, so the queue never runs dry)
    ("naive_send", "prefork", 2, {0.0: 1_200, 50.0: 600}),
    ("pooled_send", "prefork", 2, {0.0: 8_000, 50.0: 800}),
    ("pooled_send", "threads", 32, {0.0: 8_000, 50.0: 8_000}),
]


def _scale(n: int, sizes: Sizes) -> int:
    return max(200, int(n * sizes.window_s / 6.0))


def one_run(i: int, sizes: Sizes, per_post: int, latencies: tuple[float, ...],
            log: Any) -> RunFigures:
    from wanotify.devtools.bench.common import bench_env, start_sandbox
    from wanotify.devtools.procs import free_port, wait_http, wait_worker

    figs = RunFigures()
    senders = make_senders()
    with bench_env("throughput", senders=senders) as env:
        for lat in latencies:
            sb, sb_url = start_sandbox(env, latency_ms=lat)
            tag = f"{lat:g} ms"
            if lat == latencies[0]:
                figs.drains["noop"] = run_celery_baseline(
                    env, sb_url, senders, "noop", "prefork", 2, sizes.noop_prefill, sizes.window_s)
                log(f"run {i}: celery no-op {figs.drains['noop'].rate or 0:.0f}/s")
            for task, pool, conc, prefill in BASELINES:
                key = f"{task}/{pool}/{tag}"
                figs.drains[key] = run_celery_baseline(
                    env, sb_url, senders, task, pool, conc, _scale(prefill.get(lat, 1000), sizes),
                    sizes.window_s)
                log(f"run {i}: {key} {figs.drains[key].rate or 0:.0f}/s")
            figs.drains[f"wanotify/{tag}"] = run_wanotify_send(env, sb_url, senders, sizes.send_jobs)
            log(f"run {i}: wanotify {tag} {figs.drains[f'wanotify/{tag}'].rate or 0:.0f}/s")
            if lat != latencies[-1]:
                env.stop([sb])
        # Enqueue: the web app alone (its jobs are set aside afterwards).
        port = free_port()
        web = env.start("web", ["web", "--port", str(port)])
        web_url = f"http://127.0.0.1:{port}"
        wait_http(f"{web_url}/healthz", web)
        base = 10_000_000 * (i + 1)
        run_http_enqueue(env, web_url, senders, min(1000, sizes.http_jobs), offset=base + 9_000_000)
        p50, p99, rate = run_http_enqueue(env, web_url, senders, sizes.http_jobs, offset=base)
        figs.enqueue = Enqueue(p50, p99, rate)
        # Latency at half the measured capacity, open loop (requests arrive on a clock).
        probe_rate = rate / 2
        probe = [(orjson.dumps(b), _api_headers(env)) for b in
                 job_bodies(int(probe_rate * sizes.window_s * 0.7), senders, offset=base + 3_000_000)]
        figs.enqueue.paced_rate = probe_rate
        figs.enqueue.paced_p50_ms, figs.enqueue.paced_p99_ms = paced(f"{web_url}/v1/notifications", probe,
                                                                     probe_rate)
        figs.enqueue.batch_rate = run_batch_enqueue(env, web_url, senders, sizes.batch_jobs,
                                                    offset=base + 1_000_000)
        figs.enqueue.bulk_rate = run_bulk_enqueue(senders, sizes.bulk_jobs, offset=base + 2_000_000)
        log(f"run {i}: enqueue http {rate:.0f}/s p99 {p99 or 0:.1f} ms, batch "
            f"{figs.enqueue.batch_rate:.0f}/s, bulk {figs.enqueue.bulk_rate:.0f}/s")
        _set_aside_queued(env)
        # Webhook ingest: the same signed bodies to wanotify (web + worker) and the baseline.
        bport = free_port()
        tb = env.start("textbook-web", ["bench", "textbook-web", "--port", str(bport)])
        node = f"ingest-{uuid.uuid4().hex[:4]}"
        worker = env.start("worker-ingest", ["worker", "-n", f"{node}@%h"],
                           {"WANOTIFY_WORKER_METRICS_PORT": "0"})
        wait_http(f"http://127.0.0.1:{bport}/docs", tb)
        wait_worker(env.redis_url, worker, timeout=60, node=node)
        targets = sent_targets(sizes.ingest_messages + sizes.ingest_single_messages + 300)
        pnid = senders[0]["phone_number_id"]
        # Warm both receivers (connections, caches, the worker's threads) on other messages.
        warm, targets = targets[-300:], targets[:-300]
        run_ingest_pair(env, web_url, f"http://127.0.0.1:{bport}", warm, per_post, pnid)
        ours, base_i = run_ingest_pair(env, web_url, f"http://127.0.0.1:{bport}",
                                       targets[: sizes.ingest_messages], per_post, pnid)
        figs.ingest["ours"], figs.ingest["base"] = ours, base_i
        ours1, base1 = run_ingest_pair(env, web_url, f"http://127.0.0.1:{bport}",
                                       targets[sizes.ingest_messages :], 1, pnid)
        figs.ingest["ours1"], figs.ingest["base1"] = ours1, base1
        # Webhook answer latency at half the measured capacity, open loop, while ingesting.
        if ours.rate:
            probe_rate = ours.rate / per_post / 2
            n_posts = int(probe_rate * sizes.window_s * 0.7)
            later = targets[: n_posts * per_post]
            bodies = status_posts(later, per_post, env.env["WANOTIFY_APP_SECRET"], pnid, "read",
                                  ts_offset=60)
            ours.paced_rate = probe_rate
            ours.paced_p50_ms, ours.paced_p99_ms = paced(
                f"{web_url}/webhooks/whatsapp",
                [(b, {"Content-Type": "application/json", "X-Hub-Signature-256": sig}) for b, sig in bodies],
                probe_rate, ok=(200,))
        log(f"run {i}: ingest {ours.rate or 0:.0f} vs {base_i.rate or 0:.0f} events/s"
            f" ({per_post}/POST); {ours1.rate or 0:.0f} vs {base1.rate or 0:.0f} (1/POST)")
        env.stop([web, tb, worker])
        if i == 1 and sizes.rss_sends:
            figs.drains["rss"] = Drain("rss", sizes.rss_sends)
            samples = run_rss(env, sb_url, senders, sizes.rss_sends, every=max(1000, sizes.rss_sends // 10))
            figs.drains["rss"].notes = [f"{n}:{mb:.1f}" for n, mb in samples]
            log("rss: " + ", ".join(f"{n:,} sends {mb:.0f} MB" for n, mb in samples))
    return figs


def _set_aside_queued(env: BenchEnv) -> None:
    """The enqueue phase's jobs are not to be sent: expire them and empty Redis."""
    from sqlalchemy import text

    from wanotify.db import session_scope

    with session_scope() as s:
        s.execute(text("UPDATE notifications SET status = 'expired', finished_at = now()"
                       " WHERE status IN ('queued', 'sending')"))
    redis_lib.Redis.from_url(env.redis_url).flushdb()


def run(runs: int = 3, quick: bool = False, per_post: int = 10,
        latencies: tuple[float, ...] = (0.0, 50.0), json_path: str | None = None) -> dict[str, Any]:
    import json
    import os

    from rich.console import Console

    console = Console(width=max(140, Console().width))
    sizes = Sizes.quick() if quick else Sizes()
    console.print(f"[bold]bench throughput[/bold]: {runs} run(s), {os.cpu_count()} cores, sandbox latency "
                  f"{', '.join(f'{x:g} ms' for x in latencies)}, {per_post} statuses per webhook POST")
    all_runs = [one_run(i + 1, sizes, per_post, latencies, console.print) for i in range(runs)]
    summary = summarise(all_runs, latencies, per_post)
    summary["cores"] = os.cpu_count()
    summary["runs"] = runs
    print_report(summary, console)
    if json_path:
        with open(json_path, "w") as f:
            json.dump(summary, f, indent=2)
    return summary


def _med(values: list[float | None]) -> float | None:
    from wanotify.devtools.bench.common import median

    return median(values)


def summarise(all_runs: list[RunFigures], latencies: tuple[float, ...], per_post: int) -> dict[str, Any]:
    def drain(key: str, attr: str) -> float | None:
        return _med([getattr(r.drains[key], attr) for r in all_runs if key in r.drains])

    out: dict[str, Any] = {"per_post": per_post, "send": {}, "notes": []}
    out["noop"] = drain("noop", "rate")
    for lat in latencies:
        tag = f"{lat:g} ms"
        row: dict[str, Any] = {}
        for task, pool, conc, _ in BASELINES:
            key = f"{task}/{pool}/{tag}"
            row[f"{task} ({pool}, c={conc})"] = {"rate": drain(key, "rate"),
                                                 "cpu_per_1000": drain(key, "cpu_per_1000")}
        pooled = max((v for k, v in row.items() if k.startswith("pooled")),
                     key=lambda v: v["rate"] or 0.0)
        ours = {"rate": drain(f"wanotify/{tag}", "rate"),
                "cpu_per_1000": drain(f"wanotify/{tag}", "cpu_per_1000"),
                "db_cpu_per_1000": drain(f"wanotify/{tag}", "db_cpu_per_1000"),
                "rss_mb": drain(f"wanotify/{tag}", "rss_mb")}
        row["wanotify"] = ours
        row["best_pooled"] = pooled
        row["x_pooled"] = _ratio(ours["rate"], pooled["rate"])
        row["x_noop"] = _ratio(ours["rate"], out["noop"])
        row["cpu_share_of_pooled"] = _ratio(ours["cpu_per_1000"], pooled["cpu_per_1000"])
        out["send"][tag] = row
        for r in all_runs:
            for key, d in r.drains.items():
                if key.endswith("/" + tag) and d.notes:
                    out["notes"].append(f"{key}: {'; '.join(d.notes)}")
    out["enqueue"] = {
        "http_p50_ms": _med([r.enqueue.http_p50_ms for r in all_runs]),
        "http_p99_ms": _med([r.enqueue.http_p99_ms for r in all_runs]),
        "http_rate": _med([r.enqueue.http_rate for r in all_runs]),
        "paced_rate": _med([r.enqueue.paced_rate for r in all_runs]),
        "paced_p50_ms": _med([r.enqueue.paced_p50_ms for r in all_runs]),
        "paced_p99_ms": _med([r.enqueue.paced_p99_ms for r in all_runs]),
        "batch_rate": _med([r.enqueue.batch_rate for r in all_runs]),
        "bulk_rate": _med([r.enqueue.bulk_rate for r in all_runs]),
    }
    ing: dict[str, Any] = {}
    for key in ("ours", "base", "ours1", "base1"):
        ing[key] = {"rate": _med([r.ingest[key].rate for r in all_runs]),
                    "p50_ms": _med([r.ingest[key].p50_ms for r in all_runs]),
                    "p99_ms": _med([r.ingest[key].p99_ms for r in all_runs]),
                    "paced_rate": _med([r.ingest[key].paced_rate for r in all_runs]),
                    "paced_p50_ms": _med([r.ingest[key].paced_p50_ms for r in all_runs]),
                    "paced_p99_ms": _med([r.ingest[key].paced_p99_ms for r in all_runs])}
        for r in all_runs:
            if r.ingest[key].notes:
                out["notes"].append(f"ingest {key}: {'; '.join(r.ingest[key].notes)}")
    ing["x_base"] = _ratio(ing["ours"]["rate"], ing["base"]["rate"])
    ing["x_base1"] = _ratio(ing["ours1"]["rate"], ing["base1"]["rate"])
    out["ingest"] = ing
    rss = [r.drains["rss"] for r in all_runs if "rss" in r.drains]
    out["rss"] = [[int(n), float(mb)] for n, mb in (x.split(":") for x in rss[0].notes)] if rss else []
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def print_report(s: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    def f(v: float | None, spec: str = ".0f", suffix: str = "") -> str:
        return "—" if v is None else f"{v:{spec}}{suffix}"

    t = Table(title=f"wanotify bench throughput — medians of {s['runs']} run(s), {s['cores']} cores")
    for col in ("figure", "wanotify", "baseline", "ratio", "goal"):
        t.add_column(col, justify="right" if col != "figure" else "left")
    t.add_row("Celery no-op task drain (ceiling of one task per message)", "", f(s["noop"], ".0f", "/s"), "", "")
    for tag, row in s["send"].items():
        for name, v in row.items():
            if name.startswith(("naive", "pooled")):
                t.add_row(f"  {name}, {tag}", "", f(v["rate"], ".0f", "/s"), "",
                          f"CPU {f(v['cpu_per_1000'], '.2f')} s/1k")
        ours, pooled = row["wanotify"], row["best_pooled"]
        t.add_row(f"send path, {tag} (sends/s)", f(ours["rate"], ".0f", "/s"), f(pooled["rate"], ".0f", "/s"),
                  f(row["x_pooled"], ".1f", "×"), "≥3× at 0 ms, ≥5× at 50 ms")
        t.add_row(f"  vs the no-op ceiling, {tag}", "", f(s["noop"], ".0f", "/s"), f(row["x_noop"], ".1f", "×"),
                  "≥1.5×")
        t.add_row(f"  CPU s per 1,000 sends (worker + broker), {tag}", f(ours["cpu_per_1000"], ".2f"),
                  f(pooled["cpu_per_1000"], ".2f"), f(row["cpu_share_of_pooled"], ".2f", "×"), "≤0.33×")
        t.add_row(f"  + Postgres CPU s per 1,000 sends, {tag}", f(ours["db_cpu_per_1000"], ".2f"), "—", "", "")
        t.add_row(f"  worker RSS after the drain, {tag}", f(ours["rss_mb"], ".0f", " MB"), "", "", "")
    e = s["enqueue"]
    t.add_row("POST /v1/notifications, 32 clients back to back: p50 / p99",
              f"{f(e['http_p50_ms'], '.1f')} / {f(e['http_p99_ms'], '.1f')} ms", "", "", "p99 < 20 ms")
    t.add_row("  jobs/s", f(e["http_rate"], ".0f", "/s"), "", "", "")
    t.add_row(f"  open loop at {f(e['paced_rate'], '.0f', '/s')} (half capacity): p50 / p99",
              f"{f(e['paced_p50_ms'], '.1f')} / {f(e['paced_p99_ms'], '.1f')} ms", "", "", "p99 < 20 ms")
    t.add_row("POST /v1/notifications:batch (500/request, 4 clients)", f(e["batch_rate"], ".0f", "/s"), "", "",
              "")
    t.add_row("Python API in bulk (notify_many)", f(e["bulk_rate"], ".0f", "/s"), "", "", "≥5,000/s")
    i = s["ingest"]
    t.add_row(f"webhook ingest, {s['per_post']} statuses/POST (events/s)", f(i["ours"]["rate"], ".0f", "/s"),
              f(i["base"]["rate"], ".0f", "/s"), f(i["x_base"], ".1f", "×"), "≥10×")
    t.add_row("  webhook answer p50 / p99 while ingesting",
              f"{f(i['ours']['p50_ms'], '.1f')} / {f(i['ours']['p99_ms'], '.1f')} ms",
              f"{f(i['base']['p50_ms'], '.1f')} / {f(i['base']['p99_ms'], '.1f')} ms", "", "p99 < 50 ms")
    t.add_row(f"  open loop at {f(i['ours']['paced_rate'], '.0f', ' POST/s')} (half capacity): p50 / p99",
              f"{f(i['ours']['paced_p50_ms'], '.1f')} / {f(i['ours']['paced_p99_ms'], '.1f')} ms", "", "",
              "p99 < 50 ms")
    t.add_row("webhook ingest, 1 status/POST (events/s)", f(i["ours1"]["rate"], ".0f", "/s"),
              f(i["base1"]["rate"], ".0f", "/s"), f(i["x_base1"], ".1f", "×"), "")
    t.add_row("  webhook answer p50 / p99 while ingesting",
              f"{f(i['ours1']['p50_ms'], '.1f')} / {f(i['ours1']['p99_ms'], '.1f')} ms",
              f"{f(i['base1']['p50_ms'], '.1f')} / {f(i['base1']['p99_ms'], '.1f')} ms", "", "")
    if s["rss"]:
        t.add_row("worker RSS during a long drain (sends: MB)",
                  ", ".join(f"{n // 1000}k: {mb:.0f}" for n, mb in s["rss"]), "", "", "< 250 MB, no growth")
    console.print(t)
    for n in s["notes"]:
        console.print(f"[yellow]note:[/yellow] {n}")
