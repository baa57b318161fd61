"""End to end through the public surface: HTTP API → worker → sandbox → signed webhooks → Postgres."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid

import pytest

from conftest import Stack, statuses, wait_for

pytestmark = pytest.mark.slow

ORDER = {
    "to": "+919876543210",
    "template": "order_confirmation_v2",
    "language": "en",
    "params": {"body": ["Rahul Sharma", "ZEC-2026-0042", "₹45,000"]},
    "kind": "transactional",
}


def _to(i: int) -> str:
    return f"+9197{i % 10000:04d}{(i * 37) % 9000 + 1000:04d}"


def test_http_enqueue_reaches_read_with_full_timeline(stack: Stack, db) -> None:
    with stack.sandbox() as sb:
        sb.post("/_sandbox/config", json={"read_ratio": 1.0, "duplicate_ratio": 0.0, "reorder_ratio": 0.0})
    try:
        with stack.api() as api:
            r = api.post("/v1/notifications", json={**ORDER, "to": _to(1)})
            assert r.status_code == 202, r.text
            job_id = r.json()["id"]
            assert r.json()["status"] == "queued"
            view = wait_for(lambda: (v := api.get(f"/v1/notifications/{job_id}").json())["status"] == "read" and v,
                            what="status read")
    finally:
        with stack.sandbox() as sb:
            sb.post("/_sandbox/config", json={"read_ratio": 0.5, "duplicate_ratio": 0.05, "reorder_ratio": 0.05})
    assert view["kind"] == "transactional"
    assert view["channel"] == "whatsapp"
    assert len(view["attempts"]) == 1
    att = view["attempts"][0]
    assert att["http_status"] == 200 and att["provider_message_id"].startswith("wamid.")
    assert att["provider_message_id"] == view["provider_message_id"]
    seen = [e["status"] for e in view["events"]]
    assert seen[0] == "queued"
    for s in ("accepted", "sent", "delivered", "read"):
        assert s in seen
    # What reached the sandbox is exactly the rendered Graph API template payload.
    with stack.sandbox() as sb:
        log = sb.get("/_sandbox/messages", params={"limit": 100000}).json()
    entries = log["data"]
    mine = [m for m in entries if m.get("biz_opaque_callback_data") == job_id]
    assert len(mine) == 1 and mine[0]["template"] == "order_confirmation_v2"


def test_send_task_from_a_process_that_never_imports_wanotify(stack: Stack, db) -> None:
    key = f"celery-{uuid.uuid4().hex}"
    body = {**ORDER, "to": _to(2), "idempotency_key": key}
    script = textwrap.dedent(
        f"""
        import json, sys
        from celery import Celery
        app = Celery(broker={stack.env['WANOTIFY_REDIS_URL']!r})
        app.send_task("wanotify.notify", args=[json.loads(sys.argv[1])], queue="notify")
        app.send_task("wanotify.notify", args=[{{"to": "12345", "template": "nope"}}], queue="notify")
        assert "wanotify" not in sys.modules
        print("sent")
        """
    )
    out = subprocess.run([sys.executable, "-c", script, json.dumps(body)], capture_output=True, text=True,
                         timeout=60, env={k: v for k, v in os.environ.items() if not k.startswith("WANOTIFY_")})
    assert out.returncode == 0, out.stderr
    from sqlalchemy import text

    def job() -> tuple[str, str] | None:
        with db() as s:
            row = s.execute(text("SELECT id::text, status FROM notifications WHERE idempotency_key = :k"),
                            {"k": key}).one_or_none()
        return (row[0], row[1]) if row else None

    job_id, _ = wait_for(job, what="job stored from send_task")
    wait_for(lambda: statuses(db, [job_id])[job_id] in ("delivered", "read"), what="delivered")

    def rejected() -> list[dict[str, str]]:
        with db() as s:
            rows = s.execute(text("SELECT errors FROM rejected_jobs WHERE body LIKE '%\"nope\"%'")).scalars().all()
        return rows

    errs = wait_for(rejected, what="rejected body recorded")[0]["errors"]
    assert {e["field"] for e in errs} >= {"to"}


def test_send_task_burst_stored_once_each_and_foreign_tasks_refused(stack: Stack, db) -> None:
    """A producer's burst on the notify queue is taken in batches by the workers: every job
    stored exactly once, and a task of another name published to the queue is refused with a
    reason (recorded), not run and not left on the queue."""
    run = uuid.uuid4().hex[:10]
    bodies = [{**ORDER, "to": _to(500 + i), "idempotency_key": f"burst-{run}-{i}"} for i in range(300)]
    script = textwrap.dedent(
        f"""
        import json, sys
        from celery import Celery
        app = Celery(broker={stack.env['WANOTIFY_REDIS_URL']!r})
        for b in json.loads(sys.stdin.read()):
            app.send_task("wanotify.notify", args=[b], queue="notify")
        app.send_task("someone.elses.task", args=[{{"marker": "foreign-{run}"}}], queue="notify")
        print("sent")
        """
    )
    out = subprocess.run([sys.executable, "-c", script], input=json.dumps(bodies), capture_output=True,
                         text=True, timeout=120,
                         env={k: v for k, v in os.environ.items() if not k.startswith("WANOTIFY_")})
    assert out.returncode == 0, out.stderr
    from sqlalchemy import text

    def stored() -> int | None:
        with db() as s:
            n = s.execute(text("SELECT count(*) FROM notifications WHERE idempotency_key LIKE :k"),
                          {"k": f"burst-{run}-%"}).scalar_one()
        return n if n >= 300 else None

    wait_for(stored, what="the burst stored", timeout=120)

    def foreign() -> list[dict[str, str]]:
        with db() as s:
            return s.execute(text("SELECT errors FROM rejected_jobs WHERE body LIKE :m"),
                             {"m": f"%foreign-{run}%"}).scalars().all()

    errs = wait_for(foreign, what="foreign task refused")[0]["errors"]
    assert errs[0]["field"] == "task" and "someone.elses.task" in errs[0]["reason"]
    with db() as s:  # exactly once each (the keys are unique; the count shows no job twice)
        n = s.execute(text("SELECT count(*) FROM notifications WHERE idempotency_key LIKE :k"),
                      {"k": f"burst-{run}-%"}).scalar_one()
    assert n == 300


def test_idempotency_key_same_body_same_id_no_second_send(stack: Stack, db) -> None:
    key = f"order-42-confirmation-{uuid.uuid4().hex[:8]}"
    body = {**ORDER, "to": _to(3)}
    with stack.api() as api:
        r1 = api.post("/v1/notifications", json=body, headers={"Idempotency-Key": key})
        r2 = api.post("/v1/notifications", json=body, headers={"Idempotency-Key": key})
        r3 = api.post("/v1/notifications", json={**body, "idempotency_key": key})
        assert r1.status_code == 202 and r2.status_code == 200 and r3.status_code == 200
        assert r1.json()["id"] == r2.json()["id"] == r3.json()["id"]
        r4 = api.post("/v1/notifications", json={**body, "params": {"body": ["X", "Y", "Z"]}},
                      headers={"Idempotency-Key": key})
        assert r4.status_code == 409
        assert key in r4.json()["error"]["message"]
        # A 422 does not bind its key.
        k2 = f"bad-{uuid.uuid4().hex}"
        bad = api.post("/v1/notifications", json={**body, "to": "+91123"}, headers={"Idempotency-Key": k2})
        assert bad.status_code == 422
        good = api.post("/v1/notifications", json=body, headers={"Idempotency-Key": k2})
        assert good.status_code == 202
    job_id = r1.json()["id"]
    wait_for(lambda: statuses(db, [job_id])[job_id] in ("delivered", "read"), what="delivered")
    with stack.sandbox() as sb:
        log = sb.get("/_sandbox/messages", params={"limit": 100000}).json()
    entries = log["data"]
    assert len([m for m in entries if m.get("biz_opaque_callback_data") == job_id]) == 1


def test_batch_one_bad_job_never_rejects_the_rest(stack: Stack, db) -> None:
    jobs = [{**ORDER, "to": _to(10 + i)} for i in range(5)]
    jobs[2] = {**ORDER, "to": "not-a-number"}
    jobs[4] = {**ORDER, "template": "no_such_template"}
    with stack.api() as api:
        r = api.post("/v1/notifications:batch", json=jobs)
    assert r.status_code == 202
    res = r.json()["results"]
    assert len(res) == 5
    assert "id" in res[0] and "id" in res[1] and "id" in res[3]
    assert res[2]["error"]["fields"][0]["field"] == "to"
    assert res[4]["error"]["fields"][0]["field"] == "template"
    ids = [res[i]["id"] for i in (0, 1, 3)]
    wait_for(lambda: all(s in ("delivered", "read") for s in statuses(db, ids).values()), what="batch delivered")


def test_undeliverable_and_transient_failures(stack: Stack, db) -> None:
    # Sandbox defaults: *0000 → failed status webhook 131026; *0001 → 500/131000 twice then ok.
    with stack.api() as api:
        a = api.post("/v1/notifications", json={**ORDER, "to": "+919812340000"}).json()["id"]
        b = api.post("/v1/notifications", json={**ORDER, "to": "+919812350001"}).json()["id"]
        wait_for(lambda: statuses(db, [a])[a] == "failed", what="a failed")
        wait_for(lambda: statuses(db, [b])[b] in ("delivered", "read"), timeout=40, what="b delivered after retries")
        va = api.get(f"/v1/notifications/{a}").json()
        vb = api.get(f"/v1/notifications/{b}").json()
    assert va["error_code"] == 131026
    assert any(e["status"] == "failed" and e["error_code"] == 131026 for e in va["events"])
    assert [x["error_code"] for x in vb["attempts"]][:2] == [131000, 131000]
    assert vb["attempts"][-1]["http_status"] == 200
