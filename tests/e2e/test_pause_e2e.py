"""Account-level errors pause the sender (and alert) instead of burning through its queue."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import httpx
import pytest

from conftest import Stack, statuses, wait_for

pytestmark = pytest.mark.slow

ORDER = {"template": "order_confirmation_v2", "sender": "backup",
         "params": {"body": ["Rahul Sharma", "ZEC-2026-0042", "₹45,000"]}}


def _paused_metric(stack: Stack) -> float:
    for line in httpx.get(f"{stack.web_url}/metrics").text.splitlines():
        if line.startswith('wanotify_sender_paused{sender="backup"}'):
            return float(line.split()[-1])
    raise AssertionError("no wanotify_sender_paused metric for backup")


def test_expired_token_pauses_the_sender_and_resume_sends_what_waited(stack: Stack, db: Any) -> None:
    with stack.sandbox() as sb:
        rules = sb.get("/_sandbox/failures").json()
        sb.post("/_sandbox/failures", json=[*rules, {"match": "*0190", "code": 190, "mode": "sync",
                                                      "http_status": 401}])
    try:
        with stack.api() as api:
            a = api.post("/v1/notifications", json={**ORDER, "to": "+919811140190"}).json()["id"]
            wait_for(lambda: _paused_metric(stack) == 1.0, timeout=20, what="sender paused")
            b = api.post("/v1/notifications", json={**ORDER, "to": "+919811141234"}).json()["id"]
            time.sleep(2.0)
            # Nothing else goes out from a paused number; nothing is failed or lost.
            assert statuses(db, [a, b]) == {a: "queued", b: "queued"}
            va = api.get(f"/v1/notifications/{a}").json()
            assert [(x["error_code"], x["outcome"]) for x in va["attempts"]] == [(190, "pause")]
        out = subprocess.run([sys.executable, "-m", "wanotify", "senders", "list"], capture_output=True,
                             text=True, env=stack.env, timeout=60)
        assert out.returncode == 0 and "190" in out.stdout
    finally:
        with stack.sandbox() as sb:
            sb.post("/_sandbox/failures", json=rules)
    res = subprocess.run([sys.executable, "-m", "wanotify", "senders", "resume", "backup"],
                         capture_output=True, text=True, env=stack.env, timeout=60)
    assert res.returncode == 0 and "resumed" in res.stdout
    wait_for(lambda: all(s in ("delivered", "read") for s in statuses(db, [a, b]).values()), timeout=40,
             what="both delivered after resume")
    assert _paused_metric(stack) == 0.0
    from sqlalchemy import text

    with db() as s:
        assert s.execute(text("SELECT attempt_count FROM notifications WHERE id = :i"), {"i": a}).scalar_one() == 1
