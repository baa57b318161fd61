"""Meta's webhook through the real web app: signatures, dedupe, ordering, batching, inbound."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from conftest import Stack, wait_for
from wanotify.inbound.signature import sign

pytestmark = pytest.mark.slow

SECRET = "test-app-secret"
DATA = Path(__file__).resolve().parents[1] / "data" / "webhooks"


def _post(stack: Stack, body: bytes, signature: str | None) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["X-Hub-Signature-256"] = signature
    return httpx.post(f"{stack.web_url}/webhooks/whatsapp", content=body, headers=headers, timeout=10)


def _inbox_count(db: Any) -> int:
    with db() as s:
        return int(s.execute(text("SELECT count(*) FROM webhook_inbox")).scalar_one())


def _status_body(items: list[dict[str, Any]]) -> bytes:
    return json.dumps({
        "object": "whatsapp_business_account",
        "entry": [{"id": "102290129340398", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550100001", "phone_number_id": "106540352242922"},
            "statuses": items}}]}],
    }).encode()


def _status(wamid: str, status: str, ts: int, **extra: Any) -> dict[str, Any]:
    return {"id": wamid, "status": status, "timestamp": str(ts), "recipient_id": "919812345678", **extra}


def _accepted_job(db: Any) -> tuple[str, str]:
    """A job row as the worker leaves it after Meta accepted the send (no sandbox involved)."""
    job_id = uuid.uuid4()
    wamid = f"wamid.TEST{uuid.uuid4().hex}"
    with db() as s:
        s.execute(text(
            "INSERT INTO notifications (id, kind, channel, status, sender, to_number, template, language,"
            " payload, wamid, accepted_at) VALUES (:id, 'transactional', 'whatsapp', 'accepted', 'main',"
            " '+919812345678', 'order_confirmation_v2', 'en', '{}'::jsonb, :w, now())"),
            {"id": job_id, "w": wamid})
    return str(job_id), wamid


def _job(db: Any, job_id: str) -> Any:
    with db() as s:
        return s.execute(text("SELECT status, error_code, delivered_at, read_at FROM notifications WHERE id = :id"),
                         {"id": job_id}).one()


def _events(db: Any, wamid: str) -> list[tuple[str, int | None]]:
    with db() as s:
        return [(r[0], r[1]) for r in s.execute(text(
            "SELECT status, error_code FROM status_events WHERE provider_message_id = :w AND source = 'webhook'"
            " ORDER BY id"), {"w": wamid}).all()]


def test_verification_handshake(stack: Stack) -> None:
    ok = httpx.get(f"{stack.web_url}/webhooks/whatsapp", params={
        "hub.mode": "subscribe", "hub.verify_token": "test-verify-token", "hub.challenge": "1158201444"})
    assert ok.status_code == 200 and ok.text == "1158201444"
    bad = httpx.get(f"{stack.web_url}/webhooks/whatsapp", params={
        "hub.mode": "subscribe", "hub.verify_token": "wrong", "hub.challenge": "1158201444"})
    assert bad.status_code == 403 and "1158201444" not in bad.text
    assert bad.json()["error"]["fields"][0]["field"] == "hub.verify_token"


def test_missing_forged_and_stale_signatures_write_nothing(stack: Stack, db: Any) -> None:
    body = (DATA / "status_delivered.json").read_bytes()
    before = _inbox_count(db)
    missing = _post(stack, body, None)
    assert missing.status_code == 401
    forged = _post(stack, body, "sha256=" + "0" * 64)
    assert forged.status_code == 403
    wrong_secret = _post(stack, body, sign("not-the-secret", body))
    assert wrong_secret.status_code == 403
    other = (DATA / "status_read.json").read_bytes()
    stale = _post(stack, other, sign(SECRET, body))  # a signature of another (older) body
    assert stale.status_code == 403
    tampered = body.replace(b"delivered", b"read")
    assert _post(stack, tampered, sign(SECRET, body)).status_code == 403
    assert _post(stack, body, "sha1=" + sign(SECRET, body)[7:]).status_code == 403
    for r in (missing, forged, stale):
        assert r.headers["content-type"].startswith("application/json")
        assert r.json()["error"]["fields"][0]["field"] == "X-Hub-Signature-256"
    assert _inbox_count(db) == before


def test_signed_malformed_json_is_kept_and_reported(stack: Stack, db: Any) -> None:
    body = b'{"object": "whatsapp_business_account", "entry": [ {'
    r = _post(stack, body, sign(SECRET, body))
    assert r.status_code == 200
    with db() as s:
        row = wait_for(lambda: s.execute(text(
            "SELECT processed_at, error FROM webhook_inbox WHERE body = :b AND processed_at IS NOT NULL"),
            {"b": body}).one_or_none(), what="malformed body processed")
    assert "JSON" in row.error or "json" in row.error


def test_out_of_order_and_duplicate_statuses_only_move_forward(stack: Stack, db: Any) -> None:
    job_id, wamid = _accepted_job(db)
    t0 = int(time.time())
    bodies = [
        _status_body([_status(wamid, "read", t0 + 3)]),
        _status_body([_status(wamid, "delivered", t0 + 2)]),
        _status_body([_status(wamid, "read", t0 + 3)]),  # duplicate
        _status_body([_status(wamid, "sent", t0 + 1)]),
        _status_body([_status(wamid, "delivered", t0 + 2)]),  # duplicate
        _status_body([_status(wamid, "failed", t0 + 4, errors=[{
            "code": 131026, "title": "Message undeliverable", "message": "Message undeliverable",
            "error_data": {"details": "Message Undeliverable."}}])]),
    ]
    for b in bodies:
        assert _post(stack, b, sign(SECRET, b)).status_code == 200
    wait_for(lambda: len(_events(db, wamid)) == 4, what="4 distinct events")
    time.sleep(0.5)
    job = _job(db, job_id)
    assert job.status == "read"          # late delivered/sent never move it back
    assert job.error_code is None         # a failed after read changes nothing...
    assert ("failed", 131026) in _events(db, wamid)  # ...but is kept as an event
    assert job.delivered_at is not None and job.read_at is not None
    assert sorted(e[0] for e in _events(db, wamid)) == ["delivered", "failed", "read", "sent"]


def test_failed_before_delivered_fails_the_job(stack: Stack, db: Any) -> None:
    job_id, wamid = _accepted_job(db)
    t0 = int(time.time())
    b = _status_body([_status(wamid, "sent", t0), _status(wamid, "failed", t0 + 1, errors=[{
        "code": 131049, "title": "This message was not delivered to maintain healthy ecosystem engagement.",
        "message": "This message was not delivered to maintain healthy ecosystem engagement.",
        "error_data": {"details": "In order to maintain a healthy ecosystem engagement, the message failed to be delivered."},
        "href": "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/"}])])
    assert _post(stack, b, sign(SECRET, b)).status_code == 200
    wait_for(lambda: _job(db, job_id).status == "failed", what="failed")
    assert _job(db, job_id).error_code == 131049


def test_batched_webhook_with_many_statuses(stack: Stack, db: Any) -> None:
    jobs = [_accepted_job(db) for _ in range(60)]
    t0 = int(time.time())
    items = []
    for i, (_, w) in enumerate(jobs):
        items.append(_status(w, "sent", t0))
        items.append(_status(w, "delivered", t0 + 1))
        if i % 2 == 0:
            items.append(_status(w, "read", t0 + 2))
    body = json.dumps({"object": "whatsapp_business_account", "entry": [
        {"id": "102290129340398", "changes": [
            {"field": "messages", "value": {"messaging_product": "whatsapp", "metadata": {
                "display_phone_number": "15550100001", "phone_number_id": "106540352242922"},
                "statuses": items[k:k + 50]}} for k in range(0, len(items), 50)]}]}).encode()
    t = time.perf_counter()
    r = _post(stack, body, sign(SECRET, body))
    answered_ms = (time.perf_counter() - t) * 1000
    assert r.status_code == 200
    ids = [j for j, _ in jobs]

    def final() -> dict[str, int]:
        with db() as s:
            rows = s.execute(text("SELECT status, count(*) FROM notifications WHERE id = ANY(CAST(:i AS uuid[]))"
                                  " GROUP BY 1"), {"i": ids}).all()
        return {a: b for a, b in rows}

    wait_for(lambda: final() == {"read": 30, "delivered": 30}, what="all statuses applied")
    print(f"batched webhook answered in {answered_ms:.1f} ms")


def test_status_for_unknown_wamid_is_kept(stack: Stack, db: Any) -> None:
    wamid = f"wamid.UNKNOWN{uuid.uuid4().hex}"
    b = _status_body([_status(wamid, "delivered", int(time.time()))])
    assert _post(stack, b, sign(SECRET, b)).status_code == 200
    wait_for(lambda: _events(db, wamid) == [("delivered", None)], what="kept event")


def test_inbound_messages_and_template_events_are_stored(stack: Stack, db: Any) -> None:
    for name in ("message_text.json", "message_button_template_quick_reply.json", "message_interactive_button_reply.json",
                 "message_unsupported_errors.json", "template_status_paused.json", "template_quality_update_red.json"):
        body = (DATA / name).read_bytes()
        assert _post(stack, body, sign(SECRET, body)).status_code == 200, name
    text_body = json.loads((DATA / "message_text.json").read_bytes())
    wamid = text_body["entry"][0]["changes"][0]["value"]["messages"][0]["id"]
    with db() as s:
        row = wait_for(lambda: s.execute(text("SELECT type, text, from_number FROM inbound_messages WHERE wamid = :w"),
                                         {"w": wamid}).one_or_none(), what="inbound stored")
        assert row.type == "text" and row.text and row.from_number.startswith("+")
        kinds = wait_for(lambda: s.execute(text("SELECT kind, value FROM template_events")).all(), what="template events")
    assert ("status", "PAUSED") in [tuple(k) for k in kinds]


def test_webhooks_are_kept_while_postgres_is_away(stack: Stack, db: Any) -> None:
    """A web app whose Postgres is unreachable still answers Meta 200 and loses nothing."""
    from wanotify.devtools.procs import Proc, free_port, wait_http

    job_id, wamid = _accepted_job(db)
    port = free_port()
    env = {**stack.env, "WANOTIFY_DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/gone"}
    web = Proc("web-no-db", ["web", "--port", str(port)], env, stack.logdir / "web-no-db.log")
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", web)
        assert httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 503
        body = _status_body([_status(wamid, "delivered", int(time.time()))])
        r = httpx.post(f"http://127.0.0.1:{port}/webhooks/whatsapp", content=body,
                       headers={"X-Hub-Signature-256": sign(SECRET, body), "Content-Type": "application/json"})
        assert r.status_code == 200
    finally:
        web.stop()
    # When Postgres answers again, the worker's sweeper moves the body in and ingests it.
    wait_for(lambda: _job(db, job_id).status == "delivered", timeout=30, what="spooled status applied")
