"""Token rotation end to end: an expired token pauses its sender (jobs wait, the alert and the
reason are visible); a new token in the secret file resumes it, with no process restarted.
Then neither token is anywhere in the logs, in Postgres or in Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import API_KEY, TEST_ENV, Stack, statuses, wait_for

pytestmark = pytest.mark.slow

PNID, WABA = "106540352242931", "102290129340399"


def _write(path: Path, value: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(value + "\n")
    os.replace(tmp, path)


def _metric(web_url: str, name: str, sender: str) -> float | None:
    for line in httpx.get(f"{web_url}/metrics").text.splitlines():
        if line.startswith(f'{name}{{sender="{sender}"}}'):
            return float(line.split()[-1])
    return None


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wanotify", *args], capture_output=True, text=True,
                          env={**env, "COLUMNS": "400"}, timeout=90)  # tables unwrapped


def _leaks(db: Any, redis_client: Any, secrets: list[str]) -> list[str]:
    """Every place a secret shows up: any row of any table (cast to text), any Redis value."""
    from sqlalchemy import text

    found: list[str] = []
    with db() as s:
        tables = s.execute(text("SELECT table_name FROM information_schema.tables"
                                " WHERE table_schema = 'public' AND table_type = 'BASE TABLE'")).scalars().all()
        for t in tables:
            for sec in secrets:
                n = s.execute(text(f'SELECT count(*) FROM "{t}" x WHERE strpos(x::text, :s) > 0'),
                              {"s": sec}).scalar_one()
                if n:
                    found.append(f"postgres table {t}: {n} row(s)")
    for key in redis_client.scan_iter(count=1000):
        kind = redis_client.type(key).decode()
        if kind == "string":
            values = [redis_client.get(key) or b""]
        elif kind == "list":
            values = redis_client.lrange(key, 0, -1)
        elif kind == "hash":
            values = [k + b"=" + v for k, v in redis_client.hgetall(key).items()]
        elif kind == "set":
            values = list(redis_client.smembers(key))
        elif kind == "zset":
            values = redis_client.zrange(key, 0, -1)
        else:
            continue
        blob = key + b"".join(values)
        found += [f"redis key {key!r}" for sec in secrets if sec.encode() in blob]
    return found


def test_expired_token_pauses_and_a_new_one_in_the_secret_file_resumes(
    stack: Stack, db: Any, redis_client: Any, tmp_path: Path
) -> None:
    from wanotify.devtools.procs import Proc, free_port, wait_http, wait_worker
    from wanotify.providers.tokens import fingerprint

    old, new = f"EAAold{uuid.uuid4().hex}", f"EAAnew{uuid.uuid4().hex}"
    secret = tmp_path / "wa_token"
    _write(secret, old)
    senders = [*json.loads(TEST_ENV["WANOTIFY_SENDERS"]), {
        "name": "rot", "phone_number_id": PNID, "waba_id": WABA, "display_phone_number": "+15550100009",
        "access_token_file": str(secret), "mps": 80}]
    web_port, sb_port = free_port(), free_port()
    env = {**stack.env, "WANOTIFY_SENDERS": json.dumps(senders),
           "WANOTIFY_GRAPH_API_URL": f"http://127.0.0.1:{sb_port}",
           "WANOTIFY_WORKER_METRICS_PORT": str(free_port())}
    web_url, sb_url = f"http://127.0.0.1:{web_port}", f"http://127.0.0.1:{sb_port}"
    logs = {n: stack.logdir / f"tokens-{n}.log" for n in ("sandbox", "web", "worker")}
    procs: dict[str, Proc] = {}
    stack.procs.pop("worker").stop()  # its queues are ours for this test
    try:
        procs["sandbox"] = Proc("tokens-sandbox", ["sandbox", "--port", str(sb_port), "--webhook-url",
                                                   f"{web_url}/webhooks/whatsapp"], env, logs["sandbox"])
        procs["web"] = Proc("tokens-web", ["web", "--port", str(web_port)], env, logs["web"])
        wait_http(f"{sb_url}/_sandbox/healthz", procs["sandbox"])
        wait_http(f"{web_url}/healthz", procs["web"])
        node = f"tokens-{uuid.uuid4().hex[:6]}"
        procs["worker"] = Proc("tokens-worker", ["worker", "--concurrency", "8", "-n", f"{node}@%h"], env,
                               logs["worker"])
        wait_worker(env["WANOTIFY_REDIS_URL"], procs["worker"], timeout=40, node=node)
        pids = {n: p.pid for n, p in procs.items()}

        assert _cli(env, "senders", "check", "--sender", "rot").returncode == 0
        # Meta says the token expired an hour ago.
        r = httpx.post(f"{sb_url}/_sandbox/tokens", json={"sender": "rot", "expires_in_s": -3600})
        assert r.json()["data"][-1]["expired"] is True

        api = httpx.Client(base_url=web_url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=15)
        ids = [api.post("/v1/notifications", json={
            "to": f"+9198{uuid.uuid4().int % 10**7:07d}7", "template": "order_confirmation_v2", "sender": "rot",
            "params": {"body": ["Asha", f"ZEC-{i}", "₹10"]}}).json()["id"] for i in range(5)]
        wait_for(lambda: _metric(web_url, "wanotify_sender_token_invalid", "rot") == 1.0, timeout=30,
                 what="rot paused for its token")
        assert _metric(web_url, "wanotify_sender_paused", "rot") == 1.0
        time.sleep(1.5)
        assert set(statuses(db, ids).values()) == {"queued"}  # waiting, none failed
        with db() as s:
            from sqlalchemy import text

            rows = s.execute(text("SELECT error_code, outcome, http_status FROM attempts"
                                  " WHERE notification_id = ANY(CAST(:ids AS uuid[]))"), {"ids": ids}).all()
        assert rows and {tuple(r) for r in rows} == {(190, "pause", 401)}

        fp_old = fingerprint(old)
        listing = _cli(env, "senders", "list").stdout
        assert "190/463" in listing and fp_old in listing and "expired" in listing and old not in listing
        status = json.loads(_cli(env, "status", "--json").stdout)
        reason = status["senders"]["rot"]["paused"]
        assert (reason["kind"], reason["error_code"], reason["error_subcode"], reason["token_fingerprint"]) == (
            "token", 190, 463, fp_old)
        check = _cli(env, "senders", "check", "--sender", "rot", "--json")
        assert check.returncode == 1 and json.loads(check.stdout)[0]["token_valid"] is False
        assert old not in check.stdout + check.stderr

        def alert_line() -> dict[str, Any] | None:
            for line in logs["worker"].read_text().splitlines():
                if '"sender rot paused' in line:
                    return dict(json.loads(line))
            return None

        alert = wait_for(alert_line, timeout=5, what="the alert log line")
        assert alert["level"] == "error" and alert["alert"] is True and alert["token_fingerprint"] == fp_old
        assert "access token expired (190/463)" in alert["msg"] and str(secret) in alert["msg"]

        # Rotate: a new token in the secret file (the sandbox, like Meta, knows it already).
        _write(secret, new)
        t0 = time.monotonic()
        wait_for(lambda: _metric(web_url, "wanotify_sender_paused", "rot") == 0.0, timeout=15,
                 what="rot resumed by itself")
        resumed_after = time.monotonic() - t0
        wait_for(lambda: set(statuses(db, ids).values()) <= {"accepted", "sent", "delivered", "read"},
                 timeout=40, what="the waiting jobs sent")
        assert resumed_after < 5, resumed_after
        assert {n: p.pid for n, p in procs.items()} == pids and all(p.alive() for p in procs.values())
        with db() as s:
            counts = s.execute(text("SELECT attempt_count FROM notifications WHERE id = ANY(CAST(:ids AS uuid[]))"),
                               {"ids": ids}).scalars().all()
        assert set(counts) == {1}  # the refused call burned no attempt
        assert any("resumed: new access token" in line for line in logs["worker"].read_text().splitlines())
        assert _cli(env, "senders", "check", "--sender", "rot").returncode == 0
        api.close()
    finally:
        for p in procs.values():
            p.stop()
        stack.start_worker("worker")

    # Neither token in any log of any process of the run, in Postgres or in Redis.
    for path in stack.logdir.glob("*.log"):
        body = path.read_text(errors="replace")
        assert old not in body and new not in body, f"token in {path}"
    assert _leaks(db, redis_client, [old, new]) == []
