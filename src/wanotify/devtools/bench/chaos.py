"""``wanotify bench chaos``: 2,000 mixed jobs through the sandbox while things break.

One run: the sandbox (failure injection on), the web app and two workers; then, while the
jobs flow: a worker is SIGKILLed mid-batch (and started again), Redis is "restarted" (its
database flushed and every client connection dropped, as a restart without persistence
does), Postgres refuses connections for 20 s (the database is closed to connections and its
sessions terminated), and the sandbox answers 500s and times out for a while. Then it waits
for every job to reach an outcome and counts, from Postgres and from the sandbox's own log:
jobs lost, duplicate sends, fallbacks sent twice, status events lost, and the retry delays.
"""

from __future__ import annotations

import random
import statistics
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

import httpx
import psycopg
import redis
from rich.console import Console
from rich.table import Table
from sqlalchemy import make_url, text

from wanotify.core.status import OUTCOMES
from wanotify.db import session_scope
from wanotify.devtools.bench.common import (
    BenchEnv,
    bench_env,
    sandbox_log,
    start_sandbox,
    wait_until,
)
from wanotify.devtools.procs import Proc, free_port, wait_http, wait_worker

console = Console()


def _jobs(n: int, seed: int = 3) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    for i in range(n):
        roll = rng.random()
        suffix = f"{(i * 7919) % 10000:04d}"
        if roll < 0.03:
            suffix = "0000"  # undeliverable: failed webhook → fallback
        elif roll < 0.06:
            suffix = "0001"  # transient 131000, then accepted
        if suffix in ("0002",):
            suffix = "1234"
        to = f"+9197{i % 10000:04d}{suffix}"
        kind = rng.choices(["otp", "transactional", "marketing"], [0.25, 0.5, 0.25])[0]
        if kind == "otp":
            job = {"to": to, "template": "otp_code", "kind": "otp", "params": {"body": [f"{rng.randrange(10**6):06d}"]},
                   "fallback": {"sms_to": to}}
        elif kind == "transactional":
            job = {"to": to, "template": "order_confirmation_v2", "kind": "transactional",
                   "params": {"body": [f"Customer {i}", f"ZEC-{i:05d}", "₹1,299"]}}
            if i % 2:
                job["fallback"] = {"sms_to": to}
        else:
            job = {"to": to, "template": "seasonal_sale", "kind": "marketing",
                   "params": {"body": [f"Customer {i}", "20%"]}}
        job["idempotency_key"] = f"chaos-{seed}-{i}"
        out.append(job)
    return out


def _admin_sql(env: BenchEnv, sql: str) -> None:
    u = make_url(env.database_url)
    admin = u.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql)  # our own fixed statements


def run(jobs: int = 2000, pg_down_s: float = 20.0, timeout: float = 300.0) -> dict[str, Any]:
    extra = {"WANOTIFY_HTTP_TIMEOUT_S": "2", "WANOTIFY_LEASE_S": "20", "WANOTIFY_SWEEP_INTERVAL_S": "3",
             "WANOTIFY_BROKER_VISIBILITY_TIMEOUT_S": "30", "WANOTIFY_OTP_DELIVERY_DEADLINE_S": "30"}
    events: list[tuple[float, str]] = []
    t0 = time.monotonic()

    def mark(what: str) -> None:
        events.append((time.monotonic() - t0, what))
        console.print(f"[dim]{time.monotonic() - t0:6.1f}s[/dim] {what}")

    with bench_env("chaos", extra_env=extra) as env:
        dbname = make_url(env.database_url).database
        web_port = free_port()
        sb_url = _start_sandbox_and_web(env, web_port)
        workers: list[Proc] = []
        _start_worker(env, workers, 0)
        w1 = _start_worker(env, workers, 1)
        ids = _enqueue(env, web_port, _jobs(jobs), mark)

        time.sleep(1.5)
        mark("SIGKILL worker 1 mid-batch")
        w1.kill()
        time.sleep(2)
        _start_worker(env, workers, 1)
        mark("worker 1 started again")
        _restart_redis(env, mark)
        _refuse_postgres(env, str(dbname), pg_down_s, mark)
        _sandbox_trouble(sb_url, mark)

        done = wait_until(lambda: sum(v for k, v in _counts().items() if k in OUTCOMES) >= len(ids), timeout, 1.0)
        mark("every job has an outcome" if done else f"gave up after {timeout:.0f}s")
        httpx.post(f"{sb_url}/_sandbox/flush", timeout=60)
        time.sleep(5)
        final = _counts()
        log = sandbox_log(sb_url)
        sms = httpx.get(f"{sb_url}/_sandbox/sms", params={"limit": 100000}).json()["data"]
        wamids, evented, retry_gaps = _stored_sends()
        env.stop()
    res = _tally(ids, final, log, sms, wamids, evented)
    res.update(retry_gaps=retry_gaps, events=events)
    _print(res)
    return res


def _start_sandbox_and_web(env: BenchEnv, web_port: int) -> str:
    """The sandbox (failure injection on, SMS through it) and the web app; the sandbox's URL."""
    _, sb_url = start_sandbox(env, webhooks=True, web_url=f"http://127.0.0.1:{web_port}")
    httpx.post(f"{sb_url}/_sandbox/failures", json=[
        {"match": "*0000", "code": 131026, "mode": "webhook"},
        {"match": "*0001", "code": 131000, "mode": "sync", "http_status": 500, "times": 2},
    ])
    env.env["WANOTIFY_SMS_URL"] = f"http://ACchaos000000:token@{sb_url.split('//')[1]}"
    web = env.start("web", ["web", "--port", str(web_port)], {"WANOTIFY_SMS_URL": env.env["WANOTIFY_SMS_URL"]})
    wait_http(f"http://127.0.0.1:{web_port}/healthz", web)
    return sb_url


def _start_worker(env: BenchEnv, workers: list[Proc], i: int) -> Proc:
    node = f"chaos{i}-{uuid.uuid4().hex[:4]}"
    p = env.start(f"worker{i}-{len(workers)}", ["worker", "--concurrency", "16", "-n", f"{node}@%h"],
                  {"WANOTIFY_SMS_URL": env.env["WANOTIFY_SMS_URL"]})
    wait_worker(env.redis_url, p, timeout=60, node=node)
    workers.append(p)
    return p


def _enqueue(env: BenchEnv, web_port: int, bodies: list[dict[str, Any]],
             mark: Callable[[str], None]) -> list[str]:
    """The jobs through the batch endpoint; the ids accepted."""
    ids: list[str] = []
    mark(f"enqueueing {len(bodies)} jobs over HTTP")
    api = httpx.Client(base_url=f"http://127.0.0.1:{web_port}", headers={"Authorization": f"Bearer {env.env['WANOTIFY_API_KEYS'].split(',')[0]}"},
                       timeout=60)
    for k in range(0, len(bodies), 250):
        r = api.post("/v1/notifications:batch", json=bodies[k : k + 250])
        r.raise_for_status()
        ids += [x["id"] for x in r.json()["results"] if "id" in x]
    mark(f"{len(ids)} jobs accepted by the API")
    return ids


def _restart_redis(env: BenchEnv, mark: Callable[[str], None]) -> None:
    r_admin = redis.Redis.from_url(env.redis_url)
    mark("Redis restart: database flushed, every client connection dropped")
    r_admin.flushdb()
    try:
        r_admin.client_kill_filter(_type="normal", skipme=True)
    except redis.RedisError:
        pass


def _refuse_postgres(env: BenchEnv, dbname: str, pg_down_s: float, mark: Callable[[str], None]) -> None:
    mark(f"Postgres refuses connections for {pg_down_s:.0f} s")
    _admin_sql(env, f'ALTER DATABASE "{dbname}" WITH ALLOW_CONNECTIONS false')
    _admin_sql(env, f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{dbname}'")
    time.sleep(pg_down_s)
    _admin_sql(env, f'ALTER DATABASE "{dbname}" WITH ALLOW_CONNECTIONS true')
    mark("Postgres back")


def _sandbox_trouble(sb_url: str, mark: Callable[[str], None]) -> None:
    rules = httpx.get(f"{sb_url}/_sandbox/failures").json()
    httpx.post(f"{sb_url}/_sandbox/failures", json=[
        *rules,
        {"match": "*", "code": 131000, "mode": "sync", "http_status": 500, "probability": 0.3},
        {"match": "*5*", "latency_ms": 3000, "probability": 0.2},
    ])
    mark("sandbox: 30% 500s and 3 s stalls (timeouts) for 10 s")
    time.sleep(10)
    httpx.post(f"{sb_url}/_sandbox/failures", json=rules)
    mark("sandbox healthy again")


def _counts() -> Counter[str]:
    with session_scope() as s:
        rows = s.execute(text("SELECT status, count(*) FROM notifications GROUP BY 1")).all()
    return Counter({a: b for a, b in rows})


def _stored_sends() -> tuple[set[str], set[str], list[float]]:
    """From Postgres: the wamids stored, those with a webhook status event, the retry gaps."""
    with session_scope() as s:
        wamids: set[str] = set(s.execute(text("SELECT wamid FROM notifications WHERE wamid IS NOT NULL")).scalars())
        evented = set(s.execute(text(
            "SELECT DISTINCT provider_message_id FROM status_events WHERE source = 'webhook'")).scalars())
        retry_gaps = [float(x) for x in s.execute(text(
            "SELECT extract(epoch FROM at - lag(at) OVER (PARTITION BY notification_id ORDER BY id))"
            " FROM attempts WHERE channel = 'whatsapp'")).scalars() if x is not None]
    return wamids, evented, retry_gaps


def _tally(ids: list[str], final: Counter[str], log: list[dict[str, Any]], sms: list[dict[str, Any]],
           wamids: set[str], evented: set[str]) -> dict[str, Any]:
    """What was lost or sent twice, from Postgres and the sandbox's own log."""
    accepted: Counter[str] = Counter(m["biz_opaque_callback_data"] for m in log if m["code"] == 0)
    duplicates = sum(n - 1 for n in accepted.values() if n > 1)
    sms_per_body: dict[str, int] = defaultdict(int)
    for m in sms:
        if m.get("sid"):
            sms_per_body[m["to"] + "|" + m["body"]] += 1
    # every message the sandbox accepted gets at least one status webhook (sent / failed)
    accepted_wamids = {m["wamid"] for m in log if m["code"] == 0 and m.get("wamid")}
    lost_events = len([w for w in accepted_wamids if w in wamids and w not in evented])
    lost = len(ids) - sum(v for k, v in final.items() if k in OUTCOMES)
    return {
        "enqueued": len(ids), "final": dict(final), "lost": lost, "duplicate_sends": duplicates,
        "fallbacks_twice": sum(1 for v in sms_per_body.values() if v > 1), "status_events_lost": lost_events,
    }


def _print(res: dict[str, Any]) -> None:
    t = Table(title="bench chaos")
    t.add_column("measure")
    t.add_column("value", justify="right")
    t.add_row("jobs enqueued", str(res["enqueued"]))
    for k, v in sorted(res["final"].items()):
        t.add_row(f"  ending {k}", str(v))
    t.add_row("jobs lost (no outcome)", str(res["lost"]))
    t.add_row("duplicate WhatsApp sends (same job accepted twice)", str(res["duplicate_sends"]))
    t.add_row("status events lost", str(res["status_events_lost"]))
    t.add_row("fallbacks sent twice", str(res["fallbacks_twice"]))
    gaps = sorted(res["retry_gaps"])
    if gaps:
        q = statistics.quantiles(gaps, n=10) if len(gaps) >= 10 else gaps
        t.add_row("retry delays (s): n / min / p10 / p50 / p90 / max",
                  f"{len(gaps)} / {gaps[0]:.2f} / {q[0]:.2f} / {statistics.median(gaps):.2f} / {q[-1]:.2f} / {gaps[-1]:.2f}")
    console.print(t)


