"""Operations: Flower behind basic auth with every queue; logs never carry personal data."""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import Stack
from wanotify.devtools.procs import Proc, free_port, wait_http

pytestmark = pytest.mark.slow


def test_flower_needs_auth_and_shows_every_queue(stack: Stack, tmp_path: Path) -> None:
    # Open Flower only on loopback, and only when asked (without credentials it generates a
    # password: tests/unit/test_flower_auth.py).
    refused = subprocess.run([sys.executable, "-m", "wanotify", "flower", "--address", "0.0.0.0", "--no-auth"],
                             capture_output=True, text=True, env={**stack.env, "XDG_STATE_HOME": str(tmp_path)},
                             timeout=60)
    assert refused.returncode == 2 and "without authentication" in refused.stderr
    port = free_port()
    env = {**stack.env, "WANOTIFY_FLOWER_BASIC_AUTH": "ops:s3cret"}
    p = Proc("flower", ["flower", "--port", str(port)], env, stack.logdir / "flower.log")
    try:
        wait_http(f"http://127.0.0.1:{port}/healthcheck", p, timeout=40)
        assert httpx.get(f"http://127.0.0.1:{port}/").status_code == 401
        assert httpx.get(f"http://127.0.0.1:{port}/", auth=("ops", "wrong")).status_code == 401
        r = httpx.get(f"http://127.0.0.1:{port}/api/queues/length", auth=("ops", "s3cret"), timeout=20)
        assert r.status_code == 200
        names = {q["name"] for q in r.json()["active_queues"]}
        assert names >= {"notify", "otp", "transactional", "bulk", "fallback", "ingest"}
    finally:
        p.stop()


def test_a_demo_run_logs_no_phone_number_email_or_secret(services: dict[str, str], tmp_path: Path) -> None:
    """Run a (small) demo as a user would and grep every log line it wrote."""
    from wanotify.devtools.demo import build_jobs

    env = {k: v for k, v in __import__("os").environ.items()}
    env.update({"WANOTIFY_APP_SECRET": "demo-secret-Zq81", "WANOTIFY_API_KEYS": "demo-key-Xy42",
                "WANOTIFY_SENDERS": '[{"name": "main", "phone_number_id": "106540352242922", '
                '"waba_id": "102290129340398", "access_token": "EAAGtoken-Kp93", "mps": 80}]'})
    out = subprocess.run([sys.executable, "-m", "wanotify", "demo", "--otp", "20", "--orders", "30",
                          "--reminders", "10", "--timeout", "90"],
                         capture_output=True, text=True, env=env, timeout=240)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    m = re.search(r"logs in\s+(\S+)", out.stdout.replace("\n", " "))
    assert m, out.stdout
    logdir = Path(m.group(1))
    text = "\n".join(p.read_text(errors="replace") for p in logdir.glob("*.log"))
    assert len(text.splitlines()) > 20  # the processes did log
    numbers = {j["to"] for j in build_jobs(20, 30, 10)}
    for n in numbers:
        assert n not in text and n.lstrip("+") not in text, "a raw phone number reached the logs"
    for secret in ("demo-secret-Zq81", "demo-key-Xy42", "EAAGtoken-Kp93"):
        assert secret not in text
    assert not re.search(r"[A-Za-z0-9._%+-]{2,}@[A-Za-z0-9.-]+\.[a-z]{2,}", text.replace("***@", ""))


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    found = False
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.split()[-1])
            found = True
    assert found, f"{name} {labels} not exported"
    return total


def test_metrics_from_the_web_app_and_the_workers(stack: Stack, db: Any) -> None:
    from conftest import statuses, wait_for

    with stack.api() as api:
        job = api.post("/v1/notifications", json={
            "to": "+919811176543", "template": "order_confirmation_v2",
            "params": {"body": ["Rahul Sharma", "ZEC-2026-0042", "₹45,000"]}}).json()["id"]
    wait_for(lambda: statuses(db, [job])[job] in ("delivered", "read"), what="delivered")
    port = stack.env["WANOTIFY_WORKER_METRICS_PORT"]
    worker = wait_for(lambda: _try_get(f"http://127.0.0.1:{port}/metrics"), what="worker metrics")
    assert _metric(worker, "wanotify_sends_total", channel="whatsapp", outcome="done") >= 1
    assert _metric(worker, "wanotify_enqueue_to_accepted_seconds_count", kind="transactional") >= 1
    assert _metric(worker, "wanotify_webhook_ingest_lag_seconds_count") >= 1
    wait_for(lambda: "wanotify_accepted_to_delivered_seconds_count" in (_try_get(f"http://127.0.0.1:{port}/metrics") or ""),
             what="accepted→delivered histogram")
    web = httpx.get(f"{stack.web_url}/metrics").text
    assert _metric(web, "wanotify_celery_queue_depth", queue="otp") >= 0
    assert _metric(web, "wanotify_dead_letters") >= 0
    assert _metric(web, "wanotify_sender_paused", sender="main") == 0


def _try_get(url: str) -> str | None:
    try:
        r = httpx.get(url, timeout=2)
    except httpx.HTTPError:
        return None
    return r.text if r.status_code == 200 else None


def test_worker_metrics_under_the_prefork_pool(stack: Stack, db: Any) -> None:
    """Each prefork child counts its own sends; the worker's one metrics port shows their sum."""
    from conftest import statuses, wait_for
    from wanotify.devtools.procs import wait_worker

    port = free_port()
    env = {**stack.env, "WANOTIFY_WORKER_METRICS_PORT": str(port)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    stack.procs.pop("worker").stop()
    node = f"prefork-{uuid.uuid4().hex[:6]}"
    pre = Proc("prefork", ["worker", "--pool", "prefork", "--concurrency", "2", "-n", f"{node}@%h"], env,
               stack.logdir / "prefork.log")
    try:
        wait_worker(env["WANOTIFY_REDIS_URL"], pre, timeout=40, node=node)
        with stack.api() as api:
            ids = [api.post("/v1/notifications", json={
                "to": f"+91981117{6600 + i}", "template": "order_confirmation_v2",
                "params": {"body": ["Rahul Sharma", f"ZEC-2026-{i:04d}", "₹45,000"]}}).json()["id"]
                for i in range(6)]
        wait_for(lambda: all(v in ("delivered", "read") for v in statuses(db, ids).values()),
                 timeout=60, what="delivered under prefork")

        def scraped() -> str | None:
            text = _try_get(f"http://127.0.0.1:{port}/metrics")
            if text and "wanotify_sends_total{" in text and "wanotify_webhook_ingest_lag_seconds_count" in text:
                return text
            return None

        text = wait_for(scraped, what="prefork metrics")
        assert _metric(text, "wanotify_sends_total", channel="whatsapp", outcome="done") >= 6
        assert _metric(text, "wanotify_webhook_ingest_lag_seconds_count") >= 1
    finally:
        pre.stop()
        stack.start_worker("worker")
