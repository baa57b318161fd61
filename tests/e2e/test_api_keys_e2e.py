"""API keys over real HTTP (uvicorn, Postgres, Redis): made by the CLI, stored hashed, scoped to
senders (a key scoped to one sender can neither send from nor read another's notifications or
campaigns), rate limited with 429 + Retry-After, refused within a second or so of revocation."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from conftest import Stack, wait_for

pytestmark = pytest.mark.slow

JOB = {
    "to": "+919876543210",
    "template": "order_confirmation_v2",
    "language": "en",
    "params": {"body": ["Rahul Sharma", "ZEC-2026-0042", "₹45,000"]},
}


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wanotify", *args], capture_output=True, text=True,
                          env=env, timeout=60)


def _name(base: str) -> str:
    return f"{base}-{uuid.uuid4().hex[:8]}"


def _create(stack: Stack, *args: str) -> dict[str, Any]:
    r = _cli("keys", "create", *args, "--json", env=stack.env)
    assert r.returncode == 0, r.stderr
    out: dict[str, Any] = json.loads(r.stdout)
    return out


def _client(stack: Stack, key: str) -> httpx.Client:
    return httpx.Client(base_url=stack.web_url, headers={"Authorization": f"Bearer {key}"}, timeout=15)


def _fields(r: httpx.Response) -> list[str]:
    return [f["field"] for f in r.json()["error"]["fields"]]


@pytest.fixture(scope="module")
def scoped(stack: Stack) -> dict[str, str]:
    """Key A scoped to sender main, key B to backup."""
    return {"a": _create(stack, "--name", _name("svc-a"), "--sender", "main")["key"],
            "b": _create(stack, "--name", _name("svc-b"), "--sender", "backup")["key"]}


def test_cli_creates_a_key_shown_once_and_stores_only_its_hash(stack: Stack, db: Any) -> None:
    name = _name("billing")
    r = _cli("keys", "create", "--name", name, "--sender", "main", "--sender", "backup", "--rate", "50/s",
             env=stack.env)
    assert r.returncode == 0, r.stderr
    key = r.stdout.strip()
    assert key.startswith("wn_live_") and len(key) > 40 and "\n" not in key
    assert "not shown again" in r.stderr and key not in r.stderr
    with db() as s:
        rows = [dict(row._mapping) for row in s.execute(text("SELECT * FROM api_keys")).all()]
        dump = s.execute(text("SELECT string_agg(t::text, '|') FROM api_keys t")).scalar_one()
    assert key not in dump and key not in repr(rows)  # the key itself is nowhere in the table
    mine = next(row for row in rows if row["name"] == name)
    assert mine["hash"] == hashlib.sha256(key.encode()).hexdigest()
    assert mine["prefix"] == key[:12] and mine["senders"] == ["main", "backup"]
    assert mine["rate_per_s"] == 50 and mine["burst"] == 50 and mine["revoked_at"] is None
    with _client(stack, key) as api:  # usable at once
        assert api.get(f"/v1/notifications/{uuid.uuid4()}").status_code == 404
    listed = _cli("keys", "list", env=stack.env)
    assert listed.returncode == 0 and name in listed.stdout and key[:12] in listed.stdout
    assert key not in listed.stdout and mine["hash"] not in listed.stdout
    as_json = _cli("keys", "list", "--json", env=stack.env)
    assert key not in as_json.stdout and mine["hash"] not in as_json.stdout
    # Bad input: exit code 2 and the option at fault.
    bad = _cli("keys", "create", "--name", _name("x"), "--sender", "nobody", env=stack.env)
    assert bad.returncode == 2 and "--sender" in bad.stderr and "nobody" in bad.stderr
    again = _cli("keys", "create", "--name", name, env=stack.env)
    assert again.returncode == 2 and "--name" in again.stderr
    rate = _cli("keys", "create", "--name", _name("x"), "--rate", "lots", env=stack.env)
    assert rate.returncode == 2 and "--rate" in rate.stderr
    missing = _cli("keys", "revoke", "no-such-key", env=stack.env)
    assert missing.returncode == 2 and "no-such-key" in missing.stderr


def test_a_key_scoped_to_one_sender_sees_nothing_of_another(stack: Stack, scoped: dict[str, str]) -> None:
    with _client(stack, scoped["a"]) as a, _client(stack, scoped["b"]) as b, stack.api() as admin:
        # Sending: only from its own sender; none given means its own.
        r = a.post("/v1/notifications", json={**JOB, "sender": "backup"})
        assert r.status_code == 403, r.text
        assert r.json()["error"]["code"] == "forbidden" and _fields(r) == ["sender"]
        assert a.post("/v1/notifications", json={**JOB, "sender": "nobody"}).status_code == 403
        ra = a.post("/v1/notifications", json=JOB)
        rb = b.post("/v1/notifications", json=JOB)
        assert ra.status_code == rb.status_code == 202, (ra.text, rb.text)
        a_job, b_job = ra.json()["id"], rb.json()["id"]
        assert a.get(f"/v1/notifications/{a_job}").json()["sender"] == "main"
        assert b.get(f"/v1/notifications/{b_job}").json()["sender"] == "backup"
        # Reading: another sender's job does not exist for this key.
        for client, other in ((a, b_job), (b, a_job)):
            r = client.get(f"/v1/notifications/{other}")
            assert r.status_code == 404, r.text
            assert r.json() == client.get(f"/v1/notifications/{uuid.uuid4()}").json() | {
                "error": {**r.json()["error"], "message": f"no notification {other}"}}
        # The unscoped key from WANOTIFY_API_KEYS still sees and sends everything.
        assert admin.get(f"/v1/notifications/{a_job}").status_code == 200
        assert admin.get(f"/v1/notifications/{b_job}").status_code == 200
        assert admin.post("/v1/notifications", json={**JOB, "sender": "backup"}).status_code == 202
        # Batch: out-of-scope items refused one by one, the rest accepted.
        r = a.post("/v1/notifications:batch", json=[JOB, {**JOB, "sender": "backup"}, {**JOB, "sender": "main"},
                                                    {**JOB, "to": "+91"}])
        assert r.status_code == 202, r.text
        res = r.json()["results"]
        assert "id" in res[0] and "id" in res[2]
        assert res[1]["error"]["code"] == "forbidden" and res[1]["error"]["fields"][0]["field"] == "sender"
        assert res[3]["error"]["code"] == "invalid_job"
        assert {a.get(f"/v1/notifications/{res[i]['id']}").json()["sender"] for i in (0, 2)} == {"main"}
        # Idempotency keys are global, but a conflict does not reveal the other sender's job.
        idem = f"shared-{uuid.uuid4().hex}"
        assert b.post("/v1/notifications", json={**JOB, "idempotency_key": idem}).status_code == 202
        r = a.post("/v1/notifications", json={**JOB, "idempotency_key": idem})
        assert r.status_code == 409 and b_job not in r.text
        # Campaigns: created only for its own senders; another sender's is not found.
        camp = {"name": "Winter sale", "template": "seasonal_sale", "language": "en"}
        r = a.post("/v1/campaigns", json={**camp, "sender": "backup"})
        assert r.status_code == 403 and _fields(r) == ["sender"]
        rb = b.post("/v1/campaigns", json=camp)
        assert rb.status_code == 201, rb.text
        cid = rb.json()["id"]
        assert b.get(f"/v1/campaigns/{cid}").json()["sender"] == "backup"
        assert admin.get(f"/v1/campaigns/{cid}").status_code == 200
        csv = "to,body_1,body_2\n+919876500001,Asha,20%\n"
        for r in (a.get(f"/v1/campaigns/{cid}"),
                  a.post(f"/v1/campaigns/{cid}/audience", content=csv, headers={"content-type": "text/csv"}),
                  *(a.post(f"/v1/campaigns/{cid}:{action}") for action in ("start", "pause", "resume", "cancel"))):
            assert r.status_code == 404, r.text
            assert r.json()["error"]["code"] == "not_found" and _fields(r) == ["id"]
        # ... and nothing changed: B still imports its audience into a draft.
        r = b.post(f"/v1/campaigns/{cid}/audience", content=csv, headers={"content-type": "text/csv"})
        assert r.status_code == 200 and r.json()["accepted"] == 1
        assert b.get(f"/v1/campaigns/{cid}").json()["status"] == "draft"
        ra = a.post("/v1/campaigns", json=camp)
        assert ra.status_code == 201 and a.get(f"/v1/campaigns/{ra.json()['id']}").json()["sender"] == "main"
        # Dead letters span every sender: unscoped keys only.
        assert a.get("/v1/dead-letters").status_code == 403
        assert admin.get("/v1/dead-letters").status_code == 200


def test_rate_limit_answers_429_with_retry_after_then_recovers(stack: Stack) -> None:
    made = _create(stack, "--name", _name("limited"), "--rate", "1/s", "--burst", "2")
    assert made["rate"] == "1/s" and made["burst"] == 2
    with _client(stack, made["key"]) as api, stack.api() as admin:
        # The hot path (POST /v1/notifications) and the framework routes share the key's bucket.
        assert api.post("/v1/notifications", json=JOB).status_code == 202
        assert api.get(f"/v1/notifications/{uuid.uuid4()}").status_code == 404
        r = api.post("/v1/notifications", json=JOB)
        assert r.status_code == 429, r.text
        err = r.json()["error"]
        assert err["code"] == "rate_limited" and err["message"] and err["fields"][0]["field"] == "Authorization"
        retry = int(r.headers["Retry-After"])
        assert retry >= 1 and r.headers["RateLimit-Remaining"] == "0" and r.headers["RateLimit-Limit"] == "2"
        assert api.get(f"/v1/notifications/{uuid.uuid4()}").status_code == 429
        # Other keys are not affected.
        assert admin.post("/v1/notifications", json=JOB).status_code == 202
        time.sleep(retry + 0.1)
        assert api.post("/v1/notifications", json=JOB).status_code == 202


def test_revoked_key_is_refused_within_the_bound(stack: Stack, db: Any) -> None:
    from wanotify.accounts.api_keys import REFRESH_S

    name = _name("leaving")
    made = _create(stack, "--name", name, "--sender", "main")
    with _client(stack, made["key"]) as api:
        assert api.post("/v1/notifications", json=JOB).status_code == 202
        time.sleep(REFRESH_S + 0.2)
        assert api.get(f"/v1/notifications/{uuid.uuid4()}").status_code == 404  # reloads: last use written
        with db() as s:
            used = s.execute(text("SELECT last_used_at FROM api_keys WHERE name = :n"), {"n": name}).scalar_one()
        assert used is not None
        r = _cli("keys", "revoke", name, env=stack.env)
        assert r.returncode == 0 and "revoked" in r.stdout, r.stderr
        revoked_at = time.monotonic()
        wait_for(lambda: api.get(f"/v1/notifications/{uuid.uuid4()}").status_code == 401, timeout=10,
                 what="the revoked key refused")
        assert time.monotonic() - revoked_at <= REFRESH_S + 1.0
        r = api.post("/v1/notifications", json=JOB)
        assert r.status_code == 401 and _fields(r) == ["Authorization"]
        assert r.headers["WWW-Authenticate"] == "Bearer"
    again = _cli("keys", "revoke", name, env=stack.env)
    assert again.returncode == 0 and "already revoked" in again.stdout
    # The name is free again for a new key.
    assert _create(stack, "--name", name)["name"] == name
