"""What Flower shows and keeps of a job sent as a Celery task: no number, code or name."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest

from conftest import Stack, wait_for
from wanotify.devtools.procs import Proc, free_port, wait_http
from wanotify.logs import args_summary

pytestmark = pytest.mark.slow


def test_args_summary_keeps_only_what_is_not_personal() -> None:
    body = {"to": "+919876543210", "template": "order_confirmation_v2", "kind": "transactional",
            "params": {"body": ["Rahul Sharma", "ZEC-42", "₹45,000"]}, "fallback": {"email_to": "r@x.in"}}
    s = args_summary([body])
    assert "order_confirmation_v2" in s and "transactional" in s and "(5 fields)" in s
    for secret in ("9876543210", "Rahul", "ZEC-42", "r@x.in"):
        assert secret not in s
    assert args_summary(["text"]) == "(<str>,)" and args_summary([1, None]) == "(<int>, <NoneType>)"


def test_flower_task_list_shows_a_masked_job_body(stack: Stack, db: Any) -> None:
    from wanotify.queues.app import celery_app

    port = free_port()
    env = {**stack.env, "WANOTIFY_FLOWER_BASIC_AUTH": "ops:s3cret",
           "WANOTIFY_FLOWER_DB": str(stack.logdir / f"flower-{uuid.uuid4().hex[:6]}.db")}
    p = Proc("flower-privacy", ["flower", "--port", str(port)], env, stack.logdir / "flower-privacy.log")
    phone, code = "+919812345678", "731904"
    try:
        wait_http(f"http://127.0.0.1:{port}/healthcheck", p, timeout=40)
        auth = ("ops", "s3cret")

        def listed() -> list[dict[str, Any]] | None:
            celery_app.send_task("wanotify.notify", queue="notify", args=[{
                "to": phone, "template": "otp_code", "kind": "otp", "params": {"body": [code]}}])
            r = httpx.get(f"http://127.0.0.1:{port}/api/tasks", params={"taskname": "wanotify.notify"},
                          auth=auth, timeout=10)
            tasks = [t for t in r.json().values() if t.get("args")] if r.status_code == 200 else []
            # (earlier tests' wanotify.notify tasks may be listed too: find ours by its summary)
            mine = [t for t in tasks if "otp_code" in t["args"] and "+91********78" in t["args"]]
            return tasks if mine else None

        tasks = wait_for(listed, timeout=60, interval=2, what="Flower lists this test's wanotify.notify task")
        shown = json.dumps(tasks)
        assert "9812345678" not in shown and code not in shown
    finally:
        p.stop()


def test_a_producers_task_sent_event_carries_the_masked_summary(services: dict[str, str]) -> None:
    """wanotify's Celery app sends ``task-sent`` events (for Flower): they are built from
    the producer's argsrepr, which is the masked summary for a job body."""
    import threading
    import time

    from wanotify.queues.app import celery_app

    phone = "+919812340011"
    got: list[dict[str, Any]] = []
    with celery_app.connection_for_read() as conn:
        recv = celery_app.events.Receiver(conn, handlers={"task-sent": got.append})
        th = threading.Thread(target=lambda: recv.capture(limit=None, timeout=None, wakeup=False), daemon=True)
        th.start()
        time.sleep(0.5)  # (the receiver's fanout queue is bound)
        task_id = celery_app.send_task("wanotify.notify", queue="notify", args=[{
            "to": phone, "template": "no_such_template", "kind": "otp", "params": {"body": ["246802"]}}]).id
        wait_for(lambda: any(e.get("uuid") == task_id for e in got), timeout=15, what="the task-sent event")
        recv.should_stop = True
    mine = next(e for e in got if e.get("uuid") == task_id)
    assert "no_such_template" in mine["args"] and "+91********11" in mine["args"]
    assert "9812340011" not in json.dumps(mine) and "246802" not in json.dumps(mine)
