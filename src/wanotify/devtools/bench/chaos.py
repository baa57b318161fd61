"""``wanotify bench chaos``: 2,000 mixed jobs through the sandbox while things break.

One run: a private Redis and a private Postgres of its own (``devtools.servers``), the
sandbox (failure injection on), the web app and two workers; then, while the jobs flow: a
worker is SIGKILLed mid-batch (and started again), Redis is SIGKILLed and started again
empty on the same port 3 s later, Postgres is stopped with ``pg_ctl stop -m immediate`` for
20 s and started again (crash recovery), and the sandbox answers 500s and times out for a
while. Producers keep enqueueing during each outage: every answer must be a 503 with the
JSON error body and a Retry-After, naming the job if it was stored. Then it waits for every
job to reach an outcome and counts, from Postgres and from the sandbox's own log: jobs lost,
duplicate sends, fallbacks sent twice, status events lost, processes that died, and the
retry delays.
"""

from __future__ import annotations

import os
import random
import statistics
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table
from sqlalchemy import create_engine, text

from wanotify.config import reset_settings
from wanotify.core.status import OUTCOMES
from wanotify.db import dispose_engine, session_scope
from wanotify.db.migrate import upgrade
from wanotify.devtools.bench.common import (
    BenchEnv,
    bench_env,
    sandbox_log,
    start_sandbox,
    wait_until,
)
from wanotify.devtools.procs import Proc, free_port, wait_http, wait_worker
from wanotify.devtools.servers import PrivatePostgres, PrivateRedis
from wanotify.queues.app import follow_settings
from wanotify.redis import reset_clients

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


def run(jobs: int = 2000, pg_down_s: float = 20.0, timeout: float = 300.0) -> dict[str, Any]:
    extra = {"WANOTIFY_HTTP_TIMEOUT_S": "2", "WANOTIFY_LEASE_S": "20", "WANOTIFY_SWEEP_INTERVAL_S": "3",
             "WANOTIFY_BROKER_VISIBILITY_TIMEOUT_S": "30", "WANOTIFY_OTP_DELIVERY_DEADLINE_S": "30"}
    events: list[tuple[float, str]] = []
    t0 = time.monotonic()

    def mark(what: str) -> None:
        events.append((time.monotonic() - t0, what))
        console.print(f"[dim]{time.monotonic() - t0:6.1f}s[/dim] {what}")

    with bench_env("chaos", extra_env=extra) as env:
        redis_srv, pg = _private_servers(env)
        probes: Counter[str] = Counter()
        try:
            web_port = free_port()
            sb_url = _start_sandbox_and_web(env, web_port)
            workers: list[Proc] = []
            _start_worker(env, workers, 0)
            w1 = _start_worker(env, workers, 1)
            api = _api(env, web_port)
            ids = _enqueue(api, _jobs(jobs), mark)

            time.sleep(1.5)
            mark("SIGKILL worker 1 mid-batch")
            w1.kill()
            time.sleep(2)
            _start_worker(env, workers, 1)
            mark("worker 1 started again")
            refused = _restart_redis(redis_srv, api, ids, probes, mark)
            refused += _stop_postgres(pg, api, pg_down_s, ids, probes, mark)
            _sandbox_trouble(sb_url, mark)

            done = wait_until(lambda: sum(v for k, v in _counts().items() if k in OUTCOMES) >= len(ids),
                              timeout, 1.0)
            mark("every job has an outcome" if done else f"gave up after {timeout:.0f}s")
            httpx.post(f"{sb_url}/_sandbox/flush", timeout=60)
            time.sleep(5)
            final = _counts()
            log = sandbox_log(sb_url)
            sms = httpx.get(f"{sb_url}/_sandbox/sms", params={"limit": 100000}).json()["data"]
            wamids, evented, retry_gaps = _stored_sends()
            probes["refused enqueues found stored"] = _keys_stored(refused)
            died = [p.name for p in env.procs if not p.alive() and p is not w1]
            env.stop()
        finally:
            env.stop()
            dispose_engine()
            redis_srv.kill()
            pg.remove()
    res = _tally(ids, final, log, sms, wamids, evented)
    res.update(retry_gaps=retry_gaps, events=events, outage_answers=dict(probes), died=died)
    _print(res)
    return res


def _private_servers(env: BenchEnv) -> tuple[PrivateRedis, PrivatePostgres]:
    """A Redis and a Postgres that this run really kills; every process of the run uses them."""
    redis_srv = PrivateRedis(env.workdir)
    redis_srv.start()
    pg = PrivatePostgres()
    pg.start()
    admin = create_engine(pg.url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text('CREATE DATABASE "wanotify"'))
    admin.dispose()
    db_url = pg.url("wanotify")
    upgrade(db_url)
    urls = {"WANOTIFY_REDIS_URL": redis_srv.url, "WANOTIFY_DATABASE_URL": db_url}
    env.env.update(urls)
    os.environ.update(urls)
    env.redis_url, env.database_url = redis_srv.url, db_url
    reset_settings()
    reset_clients()
    follow_settings()
    dispose_engine()
    return redis_srv, pg


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


def _api(env: BenchEnv, web_port: int) -> httpx.Client:
    key = env.env["WANOTIFY_API_KEYS"].split(",")[0]
    return httpx.Client(base_url=f"http://127.0.0.1:{web_port}", headers={"Authorization": f"Bearer {key}"},
                        timeout=60)


def _enqueue(api: httpx.Client, bodies: list[dict[str, Any]], mark: Callable[[str], None]) -> list[str]:
    """The jobs through the batch endpoint; the ids accepted."""
    ids: list[str] = []
    mark(f"enqueueing {len(bodies)} jobs over HTTP")
    for k in range(0, len(bodies), 250):
        r = api.post("/v1/notifications:batch", json=bodies[k : k + 250])
        r.raise_for_status()
        ids += [x["id"] for x in r.json()["results"] if "id" in x]
    mark(f"{len(ids)} jobs accepted by the API")
    return ids


def _probe(api: httpx.Client, n: int, what: str, ids: list[str], probes: Counter[str]) -> str | None:
    """One enqueue during an outage, as a producer would; the idempotency key if it was refused."""
    key = f"chaos-outage-{what}-{n}"
    body = {"to": f"+9198{n % 100000:05d}{n * 7 % 1000:03d}", "template": "otp_code", "kind": "otp",
            "params": {"body": [f"{n % 10**6:06d}"]}, "idempotency_key": key}
    try:
        r = api.post("/v1/notifications", json=body, timeout=10)
    except httpx.HTTPError:
        probes[f"{what}: no answer"] += 1
        return None
    json_body = r.headers.get("content-type", "").startswith("application/json")
    if r.status_code in (200, 202):
        probes[f"{what}: accepted"] += 1
        ids.append(r.json()["id"])
        return None
    if r.status_code == 503 and json_body and r.headers.get("retry-after"):
        data = r.json()
        if "id" in data:
            probes[f"{what}: 503 naming the stored job"] += 1
            ids.append(data["id"])
            return None
        probes[f"{what}: 503, nothing stored"] += 1
        return key
    probes[f"{what}: other answer {r.status_code}"] += 1
    return key


def _probing(api: httpx.Client, seconds: float, what: str, ids: list[str], probes: Counter[str]) -> list[str]:
    refused: list[str] = []
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        n += 1
        if (key := _probe(api, n, what, ids, probes)) is not None:
            refused.append(key)
        time.sleep(0.2)
    return refused


def _restart_redis(srv: PrivateRedis, api: httpx.Client, ids: list[str], probes: Counter[str],
                   mark: Callable[[str], None]) -> list[str]:
    mark("Redis SIGKILLed (restarted empty on the same port in 3 s)")
    srv.kill()
    refused = _probing(api, 3.0, "Redis down", ids, probes)
    srv.start()
    mark("Redis started again, empty")
    return refused


def _stop_postgres(pg: PrivatePostgres, api: httpx.Client, pg_down_s: float, ids: list[str],
                   probes: Counter[str], mark: Callable[[str], None]) -> list[str]:
    mark(f"Postgres stopped (pg_ctl stop -m immediate) for {pg_down_s:.0f} s")
    pg.stop_immediate()
    refused = _probing(api, pg_down_s, "Postgres down", ids, probes)
    pg.start()
    mark("Postgres started again (crash recovery)")
    return refused


def _keys_stored(keys: list[str]) -> int:
    if not keys:
        return 0
    with session_scope() as s:
        return int(s.execute(text("SELECT count(*) FROM notifications WHERE idempotency_key = ANY(:k)"),
                             {"k": keys}).scalar_one())


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
    for k, v in sorted(res["outage_answers"].items()):
        t.add_row(f"enqueues during outages — {k}", str(v))
    t.add_row("processes that died (other than the one SIGKILLed)", ", ".join(res["died"]) or "none")
    gaps = sorted(res["retry_gaps"])
    if gaps:
        q = statistics.quantiles(gaps, n=10) if len(gaps) >= 10 else gaps
        t.add_row("retry delays (s): n / min / p10 / p50 / p90 / max",
                  f"{len(gaps)} / {gaps[0]:.2f} / {q[0]:.2f} / {statistics.median(gaps):.2f} / {q[-1]:.2f} / {gaps[-1]:.2f}")
    console.print(t)


