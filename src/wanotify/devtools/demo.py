"""``wanotify demo``: the whole pipeline on this machine, end to end, in well under a minute.

Starts (or finds) Redis and Postgres, migrates, starts the sandbox, the web app and a
Celery worker, enqueues a realistic mix through the public HTTP API, waits until every job
has an outcome, prints a summary, and stops everything it started.
"""

from __future__ import annotations

import os
import random
import signal
import tempfile
import time
import types
import uuid
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import make_url, text

from wanotify.config import reset_settings
from wanotify.core.status import OUTCOMES
from wanotify.db import dispose_engine, session_scope
from wanotify.db.migrate import upgrade
from wanotify.devtools.embedded import services
from wanotify.devtools.procs import Proc, free_port, wait_http, wait_worker

console = Console()

FIRST = ["Rahul", "Priya", "Amit", "Sneha", "Vikram", "Ananya", "Arjun", "Kavya", "Rohan", "Meera"]
LAST = ["Sharma", "Iyer", "Patel", "Reddy", "Nair", "Gupta", "Singh", "Rao", "Das", "Mehta"]


def _number(i: int, rng: random.Random) -> str:
    """A valid Indian mobile number; a few end in the sandbox's failure suffixes."""
    roll = rng.random()
    if roll < 0.02:
        suffix = "0000"  # undeliverable (131026, by status webhook)
    elif roll < 0.04:
        suffix = "0001"  # transient 131000 twice, then accepted
    elif roll < 0.05:
        suffix = "0002"  # Meta chose not to deliver (131049)
    else:
        suffix = f"{(i * 7919) % 10000:04d}"
        if suffix in ("0000", "0001", "0002"):
            suffix = "1234"
    return f"+9198{i % 10000:04d}{suffix}"


def build_jobs(otp: int, orders: int, reminders: int, seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    run = uuid.uuid4().hex[:8]
    jobs: list[dict[str, Any]] = []
    n = 0

    def name() -> str:
        return f"{rng.choice(FIRST)} {rng.choice(LAST)}"

    for i in range(otp):
        n += 1
        to = _number(n, rng)
        jobs.append({"to": to, "template": "otp_code", "language": "en", "kind": "otp",
                     "params": {"body": [f"{rng.randrange(10**6):06d}"]},
                     "fallback": {"sms_to": to},
                     "idempotency_key": f"demo-{run}-otp-{i}"})
    for i in range(orders):
        n += 1
        amount = f"₹{rng.randrange(199, 99999):,}"
        jobs.append({"to": _number(n, rng), "template": "order_confirmation_v2", "language": "en",
                     "kind": "transactional",
                     "params": {"body": [name(), f"ZEC-2026-{i:04d}", amount]},
                     "idempotency_key": f"demo-{run}-order-{i}", "metadata": {"order_id": str(i)}})
    for i in range(reminders):
        n += 1
        day = 1 + rng.randrange(28)
        jobs.append({"to": _number(n, rng), "template": "appointment_reminder", "language": "en",
                     "kind": "transactional",
                     "params": {"body": [name(), f"{day} Dec 2026", f"{9 + rng.randrange(9)}:{rng.choice(['00', '30'])}"]},
                     "idempotency_key": f"demo-{run}-appt-{i}"})
    rng.shuffle(jobs)
    return jobs


def run_demo(otp: int = 200, orders: int = 500, reminders: int = 300, timeout: float = 150.0) -> int:
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="wanotify-demo-"))
    os.environ.setdefault("WANOTIFY_APP_SECRET", "demo-app-secret")
    os.environ.setdefault("WANOTIFY_VERIFY_TOKEN", "demo-verify-token")
    os.environ.setdefault("WANOTIFY_API_KEYS", "demo-api-key")
    api_key = os.environ["WANOTIFY_API_KEYS"].split(",")[0].strip()

    # SIGTERM behaves like Ctrl-C so every `finally` below runs.
    def _term(signum: int, frame: types.FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _term)

    with console.status("starting Redis and Postgres"), services() as urls:
        pass_through = _run(urls, api_key, workdir, otp, orders, reminders, timeout, started)
    return pass_through


def _run(urls: Any, api_key: str, workdir: Path, otp: int, orders: int, reminders: int,
         timeout: float, started: float) -> int:
    reset_settings()
    dispose_engine()
    console.print(f"[bold]wanotify demo[/bold]  redis={_redact(urls.redis_url)}  postgres={_redact(urls.database_url)}"
                  + (f"  (embedded: {', '.join(urls.started)})" if urls.started else ""))
    upgrade(urls.database_url)
    web_port = free_port(8000)
    sb_port = free_port(8900)
    env = dict(os.environ)
    env["WANOTIFY_GRAPH_API_URL"] = f"http://127.0.0.1:{sb_port}"
    # OTPs fall back to SMS through the sandbox's SMS provider unless one is configured.
    env.setdefault("WANOTIFY_SMS_URL", f"http://ACdemo0000000000:demo-sms-token@127.0.0.1:{sb_port}")
    env.setdefault("WANOTIFY_LOG_LEVEL", "INFO")
    os.environ["WANOTIFY_GRAPH_API_URL"] = env["WANOTIFY_GRAPH_API_URL"]
    reset_settings()
    procs: list[Proc] = []
    try:
        with console.status("starting the sandbox, the web app and a worker"):
            sb = Proc("sandbox", ["sandbox", "--port", str(sb_port), "--webhook-url",
                                  f"http://127.0.0.1:{web_port}/webhooks/whatsapp"], env, workdir / "sandbox.log")
            procs.append(sb)
            webp = Proc("web", ["web", "--port", str(web_port)], env, workdir / "web.log")
            procs.append(webp)
            wk = Proc("worker", ["worker", "--concurrency", "16", "-n", f"demo-{os.getpid()}@%h"], env,
                      workdir / "worker.log")
            procs.append(wk)
            wait_http(f"http://127.0.0.1:{sb_port}/_sandbox/healthz", sb)
            wait_http(f"http://127.0.0.1:{web_port}/healthz", webp)
            wait_worker(urls.redis_url, wk)
        console.print(f"sandbox :{sb_port}  web :{web_port}  worker pid {wk.pid}  logs in {workdir}")
        jobs = build_jobs(otp, orders, reminders)
        ids = _enqueue(f"http://127.0.0.1:{web_port}", api_key, jobs)
        done = _wait(ids, timeout)
        _summary(ids)
        elapsed = time.monotonic() - started
        console.print(f"[bold]{len(ids)} jobs, {done} with an outcome, in {elapsed:.1f} s[/bold]")
        return 0 if done == len(ids) else 1
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: stopping[/yellow]")
        return 130
    finally:
        for p in reversed(procs):
            p.stop()
        dispose_engine()


def _redact(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]


def _enqueue(base: str, api_key: str, jobs: list[dict[str, Any]]) -> list[uuid.UUID]:
    headers = {"Authorization": f"Bearer {api_key}"}
    ids: list[uuid.UUID] = []
    with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
        # A few through the single-job endpoint with Idempotency-Key, the rest in batches.
        singles, rest = jobs[:20], jobs[20:]
        for job in singles:
            key = job.pop("idempotency_key")
            r = client.post("/v1/notifications", json=job, headers={"Idempotency-Key": key})
            if r.status_code >= 300:
                raise RuntimeError(f"the API refused a demo job ({r.status_code}): {r.text}")
            ids.append(uuid.UUID(r.json()["id"]))
        for start in range(0, len(rest), 200):
            r = client.post("/v1/notifications:batch", json=rest[start : start + 200])
            if r.status_code >= 300:
                raise RuntimeError(f"the API refused a demo batch ({r.status_code}): {r.text}")
            for item in r.json()["results"]:
                if "id" not in item:
                    raise RuntimeError(f"the API refused a demo job: {item}")
                ids.append(uuid.UUID(item["id"]))
    return ids


def _wait(ids: list[uuid.UUID], timeout: float) -> int:
    deadline = time.monotonic() + timeout
    done = 0
    with Progress(TextColumn("delivering"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[detail]}"),
                  TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task("jobs", total=len(ids), detail="")
        while time.monotonic() < deadline:
            with session_scope() as s:
                rows = s.execute(
                    text("SELECT status, count(*) FROM notifications WHERE id = ANY(:ids) GROUP BY 1"),
                    {"ids": ids},
                ).all()
            counts = {r[0]: r[1] for r in rows}
            done = sum(n for st, n in counts.items() if st in OUTCOMES)
            detail = "  ".join(f"{k}={v}" for k, v in sorted(counts.items()))
            progress.update(task, completed=done, detail=detail)
            if done >= len(ids):
                break
            time.sleep(0.25)
    return done


def _summary(ids: list[uuid.UUID]) -> None:
    with session_scope() as s:
        counts = s.execute(
            text("SELECT kind, status, count(*) FROM notifications WHERE id = ANY(:ids) GROUP BY 1, 2 ORDER BY 1, 2"),
            {"ids": ids},
        ).all()
        lat = s.execute(
            text(
                "SELECT kind,"
                " percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY extract(epoch FROM accepted_at - created_at)),"
                " percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY extract(epoch FROM d.at - n.created_at)),"
                " count(accepted_at), count(d.at)"
                " FROM notifications n LEFT JOIN LATERAL (SELECT min(received_at) AS at FROM status_events e"
                "  WHERE e.notification_id = n.id AND e.status = 'delivered') d ON true"
                " WHERE n.id = ANY(:ids) GROUP BY ROLLUP(kind) ORDER BY kind NULLS LAST"
            ),
            {"ids": ids},
        ).all()
    t = Table(title="outcomes")
    t.add_column("kind")
    t.add_column("status")
    t.add_column("jobs", justify="right")
    for kind, st, n in counts:
        t.add_row(kind, st, str(n))
    console.print(t)
    t2 = Table(title="latency from enqueue (ms)")
    for col in ("kind", "→ accepted p50", "p95", "p99", "→ delivered p50", "p95", "p99"):
        t2.add_column(col, justify="right" if col != "kind" else "left")

    def ms(v: Any) -> str:
        return "—" if v is None else f"{float(v) * 1000:.0f}"

    for kind, acc, dlv, _, _ in lat:
        acc = acc or [None] * 3
        dlv = dlv or [None] * 3
        t2.add_row(kind or "all", *(ms(v) for v in acc), *(ms(v) for v in dlv))
    console.print(t2)
