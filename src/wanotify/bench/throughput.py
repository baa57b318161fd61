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

import httpx
import psutil
import redis as redis_lib

from wanotify.bench.common import (
    BenchEnv,
    CpuMeter,
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
    from wanotify.intake import get_redis, kick, notify_many
    from wanotify.procs import wait_worker
    from wanotify.throttle import prefix

    r = get_redis()
    for s in senders:
        r.set(prefix(s["name"]) + "owner", "bench-hold", px=600_000)
    start_seq = _last_seq(sb_url)
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
    ok = wait_until(lambda: _last_seq(sb_url) - start_seq >= n, timeout, 0.1)
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


def _last_seq(url: str) -> int:
    return int(httpx.get(f"{url}/_sandbox/messages", params={"limit": 1}, timeout=10).json()["last_seq"])


# --- the textbook Celery baselines ------------------------------------------------------


def run_celery_baseline(env: BenchEnv, sb_url: str, senders: list[dict[str, Any]], task: str,
                        pool: str, concurrency: int, prefill: int, window_s: float = 6.0) -> Drain:
    """Pre-fill the textbook queue, start its worker, and measure a steady window."""
    from wanotify.bench.textbook import COUNTER, QUEUE, celery
    from wanotify.procs import wait_worker

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
    start_seq = _last_seq(sb_url)

    def progress() -> int:
        if task == "noop":
            return int(r.get(COUNTER) or 0)
        return _last_seq(sb_url) - start_seq

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
    batch_rate: float | None = None
    bulk_rate: float | None = None


def _api_headers(env: BenchEnv) -> dict[str, str]:
    key = env.env["WANOTIFY_API_KEYS"].split(",")[0]
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}


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

    rate = asyncio.run(main())
    if errors:
        raise RuntimeError(f"batch enqueue refused: HTTP {errors[:5]}")
    return rate


def run_bulk_enqueue(senders: list[dict[str, Any]], n: int, offset: int = 0) -> float:
    """The Python API in bulk (``notify_many``), in this process: jobs/s."""
    from wanotify.intake import notify_many

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
    notes: list[str] = field(default_factory=list)


def status_posts(targets: list[tuple[str, str]], per_post: int, secret: str, pnid: str,
                 status: str) -> list[tuple[bytes, str]]:
    """Signed webhook bodies in Meta's shape, ``per_post`` statuses each."""
    import orjson

    from wanotify.webhook_parse import sign

    out = []
    ts = str(int(time.time()))
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

    t0 = asyncio.run(main())
    if errors:
        raise RuntimeError(f"webhook refused: HTTP {errors[:5]}")
    return lat, t0


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
    from wanotify.bench.textbook import TABLE

    secret = env.env["WANOTIFY_APP_SECRET"]
    posts = (status_posts(targets, per_post, secret, pnid, "delivered")
             + status_posts(targets, per_post, secret, pnid, "read"))
    events = 2 * len(targets)
    ours = run_ingest("wanotify", f"{web_url}/webhooks/whatsapp", posts, events,
                      "SELECT count(*) FROM status_events")
    base = run_ingest("ORM row per commit", f"{baseline_url}/webhooks/whatsapp", posts, events,
                      f"SELECT count(*) FROM {TABLE}")
    return ours, base
