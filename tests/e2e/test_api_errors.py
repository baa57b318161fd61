"""Every bad input gets a clear error naming the field, over real HTTP; nothing accepted is lost."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import httpx
import pytest

from conftest import Stack, statuses, wait_for

pytestmark = pytest.mark.slow

GOOD = {
    "to": "+919876543210",
    "template": "order_confirmation_v2",
    "language": "en",
    "params": {"body": ["Rahul Sharma", "ZEC-2026-0042", "₹45,000"]},
}

BAD: list[tuple[str, dict[str, Any], str]] = [
    ("invalid phone", {**GOOD, "to": "+91123"}, "to"),
    ("not E.164", {**GOOD, "to": "9876543210"}, "to"),
    ("letters in phone", {**GOOD, "to": "+91abcdefghij"}, "to"),
    ("unknown template", {**GOOD, "template": "order_confirmation_v9"}, "template"),
    ("unknown language", {**GOOD, "language": "fr"}, "language"),
    ("too few params", {**GOOD, "params": {"body": ["Rahul", "ZEC-1"]}}, "params.body"),
    ("too many params", {**GOOD, "params": {"body": ["a", "b", "c", "d"]}}, "params.body"),
    ("empty param", {**GOOD, "params": {"body": ["Rahul", "", "₹1"]}}, "params.body[1]"),
    ("param too long", {**GOOD, "params": {"body": ["R" * 1025, "ZEC-1", "₹1"]}}, "params.body[0]"),
    ("rendered body over 1024", {**GOOD, "params": {"body": ["R" * 500, "Z" * 500, "₹1"]}}, "params.body"),
    ("OTP code too long", {"to": GOOD["to"], "template": "otp_code", "kind": "otp",
                           "params": {"body": ["1234567890123456"]}}, "params.body[0]"),
    ("oversized text", {"to": GOOD["to"], "text": "x" * 4097}, "text"),
    ("template and text", {**GOOD, "text": "hi"}, "body"),
    ("unknown field", {**GOOD, "priority": "high"}, "priority"),
    ("bad kind", {**GOOD, "kind": "urgent"}, "kind"),
    ("unknown sender", {**GOOD, "sender": "nobody"}, "sender"),
    ("naive expires_at", {**GOOD, "expires_at": "2026-11-25T10:10:00"}, "expires_at"),
    ("bad fallback email", {**GOOD, "fallback": {"email_to": "not-an-email"}}, "fallback.email_to"),
]


@pytest.mark.parametrize(("case", "body", "field"), BAD, ids=[c for c, _, _ in BAD])
def test_bad_job_is_422_naming_the_field(stack: Stack, case: str, body: dict[str, Any], field: str) -> None:
    with stack.api() as api:
        r = api.post("/v1/notifications", json=body)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "invalid_job"
    fields = [f["field"] for f in err["fields"]]
    assert field in fields, fields
    assert all(f["reason"] for f in err["fields"])


def test_malformed_json_and_wrong_shapes(stack: Stack) -> None:
    with stack.api() as api:
        r = api.post("/v1/notifications", content=b'{"to": "+9198', headers={"Content-Type": "application/json"})
        assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "body"
        r = api.post("/v1/notifications", json=[GOOD])
        assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "body"
        r = api.post("/v1/notifications:batch", json=GOOD)
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_batch"
        r = api.post("/v1/notifications:batch", json=[GOOD] * 1001)
        assert r.status_code == 422
        r = api.get("/v1/notifications/not-a-uuid")
        assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "id"
        r = api.get("/v1/notifications/01a2131d-2462-7d96-862c-4e9dfd0b74d3")
        assert r.status_code == 404 and "error" in r.json()
        r = api.post("/v1/notifications", content=b"x" * 70_000)
        assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"

        def chunks() -> Any:  # no Content-Length: the limit holds while the body streams in
            for _ in range(20):
                yield b"x" * 8192

        r = api.post("/v1/notifications", content=chunks())
        assert r.status_code == 413 and r.json()["error"]["fields"][0]["field"] == "body"
    r = httpx.post(f"{stack.web_url}/webhooks/whatsapp", content=(b"x" * 65536 for _ in range(50)))
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"


def test_api_keys(stack: Stack) -> None:
    no = httpx.post(f"{stack.web_url}/v1/notifications", json=GOOD)
    assert no.status_code == 401 and no.json()["error"]["fields"][0]["field"] == "Authorization"
    wrong = httpx.post(f"{stack.web_url}/v1/notifications", json=GOOD, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    second = httpx.post(f"{stack.web_url}/v1/notifications", json=GOOD,
                        headers={"Authorization": "Bearer test-key-2"})
    assert second.status_code == 202


def test_python_api_in_process(stack: Stack, db: Any) -> None:
    from wanotify import notify
    from wanotify.core.errors import InvalidJob

    acc = notify({**GOOD, "to": "+919811112222"}, idempotency_key="py-api-1")
    again = notify({**GOOD, "to": "+919811112222"}, idempotency_key="py-api-1")
    assert again.id == acc.id and again.duplicate
    with pytest.raises(InvalidJob) as exc:
        notify({**GOOD, "to": "+91"})
    assert exc.value.errors[0][0] == "to"
    wait_for(lambda: statuses(db, [acc.id])[acc.id] in ("delivered", "read"), what="delivered")


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wanotify", *args], capture_output=True, text=True,
                          env=env, timeout=60)


def test_cli_send_and_status(stack: Stack, db: Any) -> None:
    ok = _cli("send", "--to", "+919833334444", "--template", "otp_code", "--param", "483920", "--kind", "otp",
              env=stack.env)
    assert ok.returncode == 0, ok.stderr
    job_id = ok.stdout.strip()
    wait_for(lambda: statuses(db, [job_id])[job_id] in ("delivered", "read"), what="delivered")
    bad = _cli("send", "--to", "+91", "--template", "otp_code", "--param", "1", env=stack.env)
    assert bad.returncode == 2
    assert "to:" in bad.stderr
    unknown = _cli("send", "--to", "+919833334444", "--template", "nope", env=stack.env)
    assert unknown.returncode == 2 and "template" in unknown.stderr
    st = _cli("status", job_id, env=stack.env)
    assert st.returncode == 0 and job_id in st.stdout
    overview = _cli("status", "--json", env=stack.env)
    assert overview.returncode == 0 and '"senders"' in overview.stdout
    assert '"stages_oldest_s"' in overview.stdout and '"last_webhook_at"' in overview.stdout
    screen = _cli("status", env=stack.env)
    assert screen.returncode == 0
    assert "last webhook received: 20" in screen.stdout and "slowest stage right now:" in screen.stdout


def test_metrics_and_status_show_queue_depth_and_wait(stack: Stack, redis_client: Any) -> None:
    from wanotify.core.ids import uuid7
    from wanotify.pacing.lanes import Lanes, entry

    # A job waiting in a lane of a sender with no dispatcher: what ops would see in a backlog.
    lanes = Lanes(redis_client)
    job = str(uuid7())
    redis_client.set("wn:{main}:owner", "someone-else", px=3000)  # keep the dispatcher away
    lanes.push("main", "marketing", [entry("marketing", job, "919800000001")])
    try:
        time.sleep(0.3)
        text = httpx.get(f"{stack.web_url}/metrics").text
        line = [x for x in text.splitlines()
                if x.startswith('wanotify_queue_depth{lane="marketing",sender="main"}')]
        assert line and float(line[0].split()[-1]) >= 1
        waits = [x for x in text.splitlines()
                 if x.startswith('wanotify_queue_wait_seconds{lane="marketing",sender="main"}')]
        assert waits and float(waits[0].split()[-1]) >= 0.2
        st = _cli("status", "--json", env=stack.env)
        assert '"marketing": 1' in st.stdout.replace("\n", " ").replace("  ", " ") or '"marketing":1' in st.stdout
    finally:
        redis_client.delete("wn:{main}:owner")
        redis_client.lrem("wn:{main}:q:m", 0, entry("marketing", job, "919800000001"))
