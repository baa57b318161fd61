"""The fallback chain end to end: WhatsApp → SMS (the sandbox's provider) → email (aiosmtpd)."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import pytest
from sqlalchemy import text

from conftest import Stack, statuses, wait_for

pytestmark = pytest.mark.slow

OTP = {"template": "otp_code", "kind": "otp", "params": {"body": ["483920"]}}
ORDER = {"template": "order_confirmation_v2", "params": {"body": ["Rahul Sharma", "ZEC-2026-0042", "₹45,000"]}}


def _sms_to(stack: Stack, to: str) -> list[dict[str, Any]]:
    with stack.sandbox() as sb:
        return [m for m in sb.get("/_sandbox/sms", params={"limit": 100000}).json()["data"] if m["to"] == to]


def _view(stack: Stack, job_id: str) -> dict[str, Any]:
    with stack.api() as api:
        return api.get(f"/v1/notifications/{job_id}").json()


def _enqueue(stack: Stack, body: dict[str, Any]) -> str:
    with stack.api() as api:
        r = api.post("/v1/notifications", json=body)
    assert r.status_code == 202, r.text
    return r.json()["id"]


def test_failed_webhook_falls_back_to_sms_once(stack: Stack, db: Any) -> None:
    # *0000: the sandbox accepts, then sends a `failed` webhook with 131026 (sometimes twice).
    job = _enqueue(stack, {**OTP, "to": "+919811100000", "fallback": {"sms_to": "+919811100000"}})
    wait_for(lambda: statuses(db, [job])[job] == "fallback_sms", timeout=30, what="fallback_sms")
    view = _view(stack, job)
    assert [a["channel"] for a in view["attempts"]] == ["whatsapp", "sms"]
    assert view["attempts"][1]["provider_message_id"].startswith("SM")
    assert view["error_code"] == 131026
    sms = _sms_to(stack, "+919811100000")
    assert len(sms) == 1 and "483920" in sms[0]["body"]
    time.sleep(1.5)  # late or duplicated webhooks and sweeps change nothing, send nothing more
    assert statuses(db, [job])[job] == "fallback_sms"
    assert len(_sms_to(stack, "+919811100000")) == 1


def test_undeliverable_code_falls_back_and_email_follows_a_failed_sms(stack: Stack, db: Any) -> None:
    with stack.sandbox() as sb:
        rules = sb.get("/_sandbox/failures").json()
        sb.post("/_sandbox/failures", json=[
            *rules,
            {"match": "*0472", "code": 130472, "mode": "sync"},
            {"match": "*0473", "code": 30006, "mode": "sync", "channel": "sms", "http_status": 400},
        ])
    try:
        job = _enqueue(stack, {**ORDER, "to": "+919811110472",
                               "fallback": {"sms_to": "+919811110473", "email_to": "rahul@example.com"}})
        wait_for(lambda: statuses(db, [job])[job] == "fallback_email", timeout=30, what="fallback_email")
    finally:
        with stack.sandbox() as sb:
            sb.post("/_sandbox/failures", json=rules)
    view = _view(stack, job)
    assert [(a["channel"], a["outcome"]) for a in view["attempts"]] == [
        ("whatsapp", "fallback"), ("sms", "fail"), ("email", "done")]
    assert view["attempts"][0]["error_code"] == 130472
    mails = [m for m in stack.mailbox.messages if m["To"] == "rahul@example.com"]
    assert len(mails) == 1
    assert mails[0]["Subject"] == "Order ZEC-2026-0042 confirmed"
    assert "Rahul Sharma" in mails[0].get_payload()


def test_every_channel_failing_lands_in_dead_letters(stack: Stack, db: Any) -> None:
    with stack.sandbox() as sb:
        rules = sb.get("/_sandbox/failures").json()
        sb.post("/_sandbox/failures", json=[
            *rules, {"match": "*0474", "code": 30006, "mode": "sync", "channel": "sms", "http_status": 400}])
    try:
        job = _enqueue(stack, {**ORDER, "to": "+919811120000", "fallback": {"sms_to": "+919811120474"}})
        wait_for(lambda: statuses(db, [job])[job] == "failed" and _dead(db, job), timeout=30, what="dead letter")
    finally:
        with stack.sandbox() as sb:
            sb.post("/_sandbox/failures", json=rules)
    reason, history = _dead(db, job)
    assert "every channel failed" in reason
    assert [a["channel"] for a in history["attempts"]] == ["whatsapp", "sms"]

    # Ops see it, and replay it once (the SMS provider works again now).
    listed = subprocess.run([sys.executable, "-m", "wanotify", "dlq", "list", "--json"], capture_output=True,
                            text=True, env=stack.env, timeout=60)
    assert listed.returncode == 0 and job in listed.stdout
    with stack.api() as api:
        shown = api.get(f"/v1/dead-letters/{job}").json()
        assert shown["reason"] == reason and len(shown["history"]["attempts"]) == 2
        assert api.post(f"/v1/dead-letters/{job}:replay").status_code == 202
        again = api.post(f"/v1/dead-letters/{job}:replay")
        assert again.status_code == 409 and "already replayed" in again.json()["error"]["message"]
    wait_for(lambda: statuses(db, [job])[job] == "fallback_sms", timeout=30, what="replayed job falls back to SMS")
    cli_again = subprocess.run([sys.executable, "-m", "wanotify", "dlq", "replay", job], capture_output=True,
                               text=True, env=stack.env, timeout=60)
    assert cli_again.returncode == 1 and "already replayed" in cli_again.stderr


def _dead(db: Any, job: str) -> Any:
    with db() as s:
        return s.execute(text("SELECT reason, history FROM dead_letters WHERE notification_id = :i"),
                         {"i": job}).one_or_none()


def test_delivery_deadline_sends_the_sms_and_a_late_delivered_changes_nothing(stack: Stack, db: Any) -> None:
    with stack.sandbox() as sb:
        cfg = sb.get("/_sandbox/config").json()
        sb.post("/_sandbox/config", json={"webhook_delay_ms": 6000})  # delivered comes too late
    try:
        job = _enqueue(stack, {**OTP, "to": "+919811135555", "fallback": {"sms_to": "+919811135555"}})
        wait_for(lambda: statuses(db, [job])[job] == "fallback_sms", timeout=30, what="deadline fallback")
        assert len(_sms_to(stack, "+919811135555")) == 1

        def late_delivered() -> bool:
            with db() as s:
                return bool(s.execute(text("SELECT 1 FROM status_events WHERE notification_id = :i"
                                           " AND status = 'delivered'"), {"i": job}).first())

        wait_for(late_delivered, timeout=30, what="the late delivered is recorded")
    finally:
        with stack.sandbox() as sb:
            sb.post("/_sandbox/config", json={"webhook_delay_ms": cfg.get("webhook_delay_ms", 40)})
    assert statuses(db, [job])[job] == "fallback_sms"
    assert len(_sms_to(stack, "+919811135555")) == 1
