"""Retention and erasure end to end: real jobs through the sandbox (attempts, status events,
raw webhooks, an inbound reply with the person's name, a fallback email, a campaign audience,
an opt-out, a rejected job), then ``erase`` one person and ``purge`` the rest, and scan every
column of every table for their numbers, names, codes and email addresses."""

from __future__ import annotations

import base64
import re
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from conftest import Stack, statuses, wait_for

pytestmark = pytest.mark.slow

_WAMID = re.compile(r"wamid\.([A-Za-z0-9+/=_-]{8,})")
# Timestamps and ids, which can hold any six digits in a row: not where a code could leak.
_NOISE = re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\.\d+)?([+-]\d\d(:\d\d)?)?"
                    r"|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _person(tag: str, undeliverable: bool = False) -> dict[str, str]:
    def rnd(k: int) -> int:  # an independent draw per field: no needle is inside another
        return uuid.uuid4().int % 10**k

    # The sandbox fails *0000 numbers by webhook (131026): their jobs take the fallbacks.
    phone = f"+9198{rnd(4):04d}0000" if undeliverable else f"+9198{rnd(8):08d}"
    return {"phone": phone, "digits": phone[1:], "national": phone[3:],
            "name": f"{tag}name Quarshie{chr(97 + rnd(2) % 26)}{chr(97 + rnd(3) % 26)}",
            # Eight digits: a six-digit needle turns up by chance in a database of many tests' rows.
            "code": f"{7 * 10**7 + rnd(7):08d}",
            "email": f"{tag.lower()}.{uuid.uuid4().hex[:10]}@example.org", "order": f"ORD-{rnd(9):09d}"}


def _needles(p: dict[str, str]) -> list[str]:
    return [p["phone"], p["digits"], p["national"], p["name"], p["code"], p["email"]]


def _dump(db: Any) -> dict[str, list[str]]:
    """Every row of every table as text (bytea decoded), by table."""
    out: dict[str, list[str]] = {}
    with db() as s:
        tables = s.execute(text("SELECT table_name FROM information_schema.tables"
                                " WHERE table_schema = 'public' AND table_type = 'BASE TABLE'")).scalars().all()
        for t in tables:
            cols = s.execute(text("SELECT column_name, data_type FROM information_schema.columns"
                                  " WHERE table_schema = 'public' AND table_name = :t ORDER BY ordinal_position"),
                             {"t": t}).all()
            exprs = [f"encode(\"{c}\", 'escape')" if dt == "bytea" else f"\"{c}\"::text" for c, dt in cols]
            sql = f"SELECT concat_ws(' | ', {', '.join(exprs)}) FROM \"{t}\""
            out[t] = [r or "" for r in s.execute(text(sql)).scalars().all()]
    return out


def _leaks(db: Any, people: list[dict[str, str]]) -> list[str]:
    found = []
    for table, rows in _dump(db).items():
        for row in rows:
            decoded = []  # Meta's (and the sandbox's) wamids encode the recipient's number
            for m in _WAMID.findall(row):
                try:
                    decoded.append(base64.b64decode(m + "==", altchars=b"-_").decode("latin-1"))
                except ValueError:
                    pass
            hay = _NOISE.sub(" ", row) + " " + " ".join(decoded)
            for p in people:
                for needle in _needles(p):
                    if needle in hay:
                        found.append(f"{table}: {needle!r} in {row[:300]!r}")
    return found


def _counts(db: Any, ids: list[str], campaigns: list[str]) -> dict[str, Any]:
    """What must survive a purge: statuses per kind, costs, attempts, events, campaign counts."""
    p = {"ids": ids, "c": campaigns}
    with db() as s:
        def q(sql: str) -> list[tuple[Any, ...]]:
            return sorted(tuple(str(x) for x in r) for r in s.execute(text(sql), p).all())

        return {
            "status": q("SELECT kind, status, template, category, count(*) FROM notifications"
                        " WHERE id = ANY(CAST(:ids AS uuid[])) GROUP BY 1, 2, 3, 4"),
            "pricing": q("SELECT pricing->>'category', count(*) FROM status_events WHERE pricing IS NOT NULL"
                         " AND notification_id = ANY(CAST(:ids AS uuid[])) GROUP BY 1"),
            "attempts": q("SELECT channel, outcome, error_code, count(*) FROM attempts"
                          " WHERE notification_id = ANY(CAST(:ids AS uuid[])) GROUP BY 1, 2, 3"),
            "events": q("SELECT status, error_code, count(*) FROM status_events"
                        " WHERE notification_id = ANY(CAST(:ids AS uuid[])) GROUP BY 1, 2"),
            "recipients": q("SELECT campaign_id, state, count(*) FROM campaign_recipients"
                            " WHERE campaign_id = ANY(CAST(:c AS uuid[])) GROUP BY 1, 2"),
        }


def _enqueue(api: Any, body: dict[str, Any]) -> str:
    r = api.post("/v1/notifications", json=body)
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def _traffic(stack: Stack, db: Any, p: dict[str, str]) -> dict[str, Any]:
    """Everything a person leaves behind, through the public surface."""
    from wanotify.queues.app import celery_app

    with stack.api() as api:
        ids = [
            _enqueue(api, {"to": p["phone"], "template": "otp_code", "kind": "otp",
                           "params": {"body": [p["code"]]}, "fallback": {"email_to": p["email"]}}),
            _enqueue(api, {"to": p["phone"], "template": "order_confirmation_v2",
                           "params": {"body": [p["name"], p["order"], "₹45,000"]},
                           "idempotency_key": f"order-{p['phone']}", "metadata": {"customer": p["name"]},
                           "fallback": {"sms_to": p["phone"], "email_to": p["email"]}}),
            _enqueue(api, {"to": p["phone"], "template": "seasonal_sale", "kind": "marketing",
                           "params": {"body": [p["name"], "20%"]}}),
        ]
        ends = {"delivered", "read", "fallback_sms", "fallback_email", "failed"}
        wait_for(lambda: set(statuses(db, ids).values()) <= ends, timeout=40, what="the person's jobs ended")
        # They write back (with their profile name), and then say STOP.
        with stack.sandbox() as sb:
            sb.post("/_sandbox/inbound", json={"from": p["phone"], "name": p["name"],
                                               "text": f"thanks, mail me at {p['email']}"})
            sb.post("/_sandbox/inbound", json={"from": p["phone"], "name": p["name"], "text": "STOP"})
            sb.post("/_sandbox/flush")
        from wanotify.compliance.consent import opted_out

        def out() -> bool:
            with db() as s:
                return bool(opted_out(s, [p["phone"]]))

        wait_for(out, timeout=20, what="the STOP reply recorded")
        # A campaign audience with them (opted out: counted, not sent) and a rejected job.
        c = api.post("/v1/campaigns", json={"name": f"sale {p['name'][:4]}", "template": "seasonal_sale"}).json()
        csv = f"to,body_1,body_2,email\n{p['phone']},{p['name']},20%,{p['email']}\n+919811199999,Anon,20%,\n"
        imported = api.post(f"/v1/campaigns/{c['id']}/audience", content=csv.encode(),
                            headers={"Content-Type": "text/csv"}).json()
        assert imported["opted_out"] == 1 and imported["accepted"] == 1
        assert api.post(f"/v1/campaigns/{c['id']}:cancel").status_code == 200
    celery_app.send_task("wanotify.notify", args=[{"to": p["phone"], "template": "otp_code", "kind": "otp",
                                                   "params": {"body": [p["code"]]}, "colour": p["name"]}],
                         queue="notify")

    def rejected() -> bool:
        with db() as s:
            return bool(s.execute(text("SELECT 1 FROM rejected_jobs WHERE strpos(body, :n) > 0"),
                                  {"n": p["name"]}).first())

    wait_for(rejected, timeout=20, what="the rejected job recorded")
    wait_for(lambda: _otp_wiped(db, ids[0]), timeout=20, what="the sweeper wipes the delivered OTP's code")
    return {"ids": ids, "campaign": c["id"]}


def _otp_wiped(db: Any, job_id: str) -> bool:
    with db() as s:
        return bool(s.execute(text("SELECT redacted_at IS NOT NULL FROM notifications WHERE id = :i"),
                              {"i": job_id}).scalar_one())


def _present(db: Any, p: dict[str, str]) -> list[str]:
    return _leaks(db, [p])


def test_purge_and_erase_leave_no_number_name_code_or_email(stack: Stack, db: Any, redis_client: Any) -> None:
    from wanotify.pacing.lanes import prefix
    from wanotify.privacy.retention import purge

    a, b = _person("Ayesha"), _person("Bilal", undeliverable=True)
    run_a = _traffic(stack, db, a)
    run_b = _traffic(stack, db, b)
    assert set(statuses(db, run_b["ids"]).values()) == {"fallback_email", "fallback_sms", "failed"}
    assert _present(db, a) and _present(db, b)  # the data is there to begin with
    # The OTP code is gone as soon as the job ended (the sweeper); the rest stays until purge.
    code_left = [leak for leak in _present(db, a) if a["code"] in leak and leak.startswith("notifications:")]
    assert code_left == []

    # A job for A still waiting (its sender is paused): erasure cancels it, it is never sent.
    redis_client.set(prefix("backup") + "paused", '{"error_code": 0}')
    with stack.api() as api:
        waiting = _enqueue(api, {"to": a["phone"], "sender": "backup", "template": "order_confirmation_v2",
                                 "params": {"body": [a["name"], a["order"], "₹1"]}})
        time.sleep(0.5)
        bad = api.post("/v1/erasures", json={"phone": "98765"})
        assert bad.status_code == 422 and bad.json()["error"]["fields"][0]["field"] == "phone"
        assert api.post("/v1/erasures", json={"phone": a["phone"]}, headers={"Authorization": "Bearer nope"}
                        ).status_code == 401
        dry = api.post("/v1/erasures", json={"phone": a["phone"], "dry_run": True}).json()
        assert _present(db, a) and statuses(db, [waiting])[waiting] == "queued"
        r = api.post("/v1/erasures", json={"phone": a["phone"]})
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["tables"] == dry["tables"]
    assert report["tables"]["notifications"] == 4 and report["tables"]["notifications_cancelled"] == 1
    assert report["tables"]["inbound_messages"] == 2 and report["tables"]["opt_outs"] == 1
    assert report["tables"]["campaign_recipients"] == 1 and report["tables"]["rejected_jobs"] >= 1
    assert report["tables"]["webhook_inbox"] >= 3 and report["cancelled"] == [waiting]
    assert report["phone"] != a["phone"] and a["digits"] not in str(report)
    assert statuses(db, [waiting])[waiting] == "cancelled"
    redis_client.delete(prefix("backup") + "paused")
    assert _present(db, a) == []  # erased: nothing left about A anywhere
    for key in redis_client.scan_iter("wn:*"):
        assert a["digits"] not in key.decode()
        kind = redis_client.type(key).decode()
        members = (redis_client.lrange(key, 0, -1) if kind == "list" else redis_client.zrange(key, 0, -1)
                   if kind == "zset" else redis_client.smembers(key) if kind == "set" else [])
        assert not any(a["digits"] in m.decode() for m in members), key
    with stack.api() as api:  # the opt-out still holds, by hash
        refused = api.post("/v1/notifications", json={"to": a["phone"], "template": "seasonal_sale",
                                                       "kind": "marketing", "params": {"body": ["x", "y"]}})
        assert refused.status_code == 422 and refused.json()["error"]["fields"][0]["field"] == "to"
        campaign = api.get(f"/v1/campaigns/{run_a['campaign']}").json()
    assert campaign["counts"]["total"] == 2 and campaign["counts"]["opted_out"] == 1
    with stack.sandbox() as sb:
        sent = sb.get("/_sandbox/messages", params={"limit": 100000}).json()["data"]
    assert not any(m.get("biz_opaque_callback_data") == waiting for m in sent)

    # Retention: a clock far ahead; the dry run changes nothing; then B is gone too.
    ids = run_a["ids"] + run_b["ids"] + [waiting]
    campaigns = [run_a["campaign"], run_b["campaign"]]

    def settled() -> bool:
        with db() as s:
            return not s.execute(text("SELECT 1 FROM notifications WHERE id = ANY(CAST(:ids AS uuid[]))"
                                      " AND (status IN ('queued', 'sending') OR fallback_state = 'running')"),
                                 {"ids": ids}).first()

    wait_for(settled, timeout=30, what="none of their jobs in flight")
    before = _counts(db, ids, campaigns)
    present_b = _present(db, b)
    later = datetime.now(UTC) + timedelta(days=400)
    dry_run = purge(now=later, dry_run=True)
    assert _present(db, b) == present_b and _counts(db, ids, campaigns) == before
    assert {(r.table, r.what): r.rows for r in dry_run.rows}[("notifications", "transactional jobs")] >= 1
    done = purge(now=later)
    assert done.totals()["webhook_inbox"] >= 3 and done.totals()["rejected_jobs"] >= 1
    assert _present(db, b) == []
    assert _counts(db, ids, campaigns) == before  # statuses, costs, attempts, campaign counts unchanged
    assert _leaks(db, [a, b]) == []

    # From the shell: a bad number is refused (exit 2); purge --dry-run prints its table.
    cli = [sys.executable, "-m", "wanotify"]
    bad_cli = subprocess.run([*cli, "erase", "--phone", "12345"], capture_output=True, text=True,
                             env=stack.env, timeout=60)
    assert bad_cli.returncode == 2 and "--phone" in bad_cli.stderr
    shown = subprocess.run([*cli, "purge", "--dry-run"], capture_output=True, text=True, env=stack.env, timeout=60)
    assert shown.returncode == 0 and "dry run" in shown.stdout and "webhook_inbox" in shown.stdout
    # The logs never named them either.
    for log in stack.logdir.glob("*.log"):
        body = log.read_text(errors="replace")
        for p in (a, b):
            assert p["digits"] not in body and p["email"] not in body, log.name
