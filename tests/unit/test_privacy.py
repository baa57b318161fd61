"""Retention and erasure: the spec, the keyed hashes, the OTP-code policy, purge and erase on
real Postgres (the end-to-end run through the sandbox is in test_privacy_e2e.py)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from wanotify.config import DEFAULT_RETENTION, parse_retention


def test_retention_spec_parses_units_and_keeps_defaults() -> None:
    got = parse_retention("otp=24h, transactional=90d,marketing=2w,inbound=30m,webhooks=45s,rejected=never")
    assert got["otp"] == timedelta(hours=24)
    assert got["transactional"] == timedelta(days=90)
    assert got["marketing"] == timedelta(weeks=2)
    assert got["inbound"] == timedelta(minutes=30)
    assert got["webhooks"] == timedelta(seconds=45)
    assert got["rejected"] is None
    assert got["opt_outs"] == DEFAULT_RETENTION["opt_outs"]
    assert parse_retention("") == DEFAULT_RETENTION
    assert parse_retention("otp=1.5h")["otp"] == timedelta(minutes=90)


@pytest.mark.parametrize(("spec", "message"), [
    ("otp", "is not kind=period"),
    ("otp=", "is not kind=period"),
    ("sms=1d", "unknown kind 'sms'"),
    ("otp=24", "expected a number and a unit"),
    ("otp=1y", "expected a number and a unit"),
    ("otp=0h", "more than zero"),
    ("otp=1h,otp=2h", "given twice"),
])
def test_retention_spec_errors_name_the_item(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_retention(spec)


def test_a_bad_retention_setting_fails_at_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from wanotify.config import Settings

    monkeypatch.setenv("WANOTIFY_RETENTION", "otp=forever-ish")
    with pytest.raises(ValidationError, match="WANOTIFY_RETENTION: otp="):
        Settings()


def test_sql_hmac_is_the_python_hmac(db: Any) -> None:
    from wanotify.compliance.hashing import hmac_pads, keyed, pseudo_sql, pseudonym

    phone = "+919876543210"
    with db() as s:
        got = s.execute(text(f"SELECT {pseudo_sql(':x')}"), {"x": phone, **hmac_pads()}).scalar_one()
    assert got == pseudonym(phone) and len(got) == 20
    assert keyed("phone", phone) != keyed("phone", "+919876543211")


def test_the_env_key_wins_over_the_database_key(monkeypatch: pytest.MonkeyPatch, db: Any) -> None:
    from wanotify.compliance.hashing import phone_hash
    from wanotify.config import reset_settings

    default = phone_hash("+919876543210")
    monkeypatch.setenv("WANOTIFY_PII_HASH_KEY", "a-long-random-key")
    reset_settings()
    try:
        assert phone_hash("+919876543210") != default
    finally:
        monkeypatch.delenv("WANOTIFY_PII_HASH_KEY")
        reset_settings()
    assert phone_hash("+919876543210") == default


@pytest.fixture(autouse=True)
def _senders_paused(request: pytest.FixtureRequest) -> Any:
    """Jobs these tests enqueue stay where the test puts them, even when a worker of the
    stack (started by an earlier test file) is running."""
    if "db" not in request.fixturenames:
        yield
        return
    from wanotify.config import get_settings
    from wanotify.pacing.lanes import Lanes
    from wanotify.redis import get_redis

    request.getfixturevalue("db")
    lanes = Lanes(get_redis())
    names = [s.name for s in get_settings().sender_list]
    for name in names:
        lanes.pause(name, {"error_code": 0, "error": "paused by tests/unit/test_privacy.py"})
    try:
        yield
    finally:
        for name in names:
            lanes.resume(name)


def _phone() -> str:
    return f"+9198{uuid.uuid4().int % 10**8:08d}"


def _set(db: Any, job_id: str, sql: str, **params: Any) -> None:
    with db() as s:
        s.execute(text(f"UPDATE notifications SET {sql} WHERE id = :id"), {"id": job_id, **params})


def _row(db: Any, job_id: str) -> Any:
    with db() as s:
        return s.execute(text("SELECT * FROM notifications WHERE id = :id"), {"id": job_id}).one()


def test_an_otp_code_is_wiped_once_nothing_can_send_it(db: Any) -> None:
    from wanotify.intake.service import notify
    from wanotify.privacy.retention import wipe_otp_codes

    def otp(code: str, **extra: Any) -> str:
        return notify({"to": _phone(), "template": "otp_code", "kind": "otp", "params": {"body": [code]},
                       **extra}).id

    queued = otp("111111")
    sending = otp("222222")
    delivered = otp("333333", idempotency_key=f"otp-{uuid.uuid4()}")
    failed_fallback_pending = otp("444444", fallback={"sms_to": _phone()})
    failed_fallback_done = otp("555555", fallback={"sms_to": _phone()})
    accepted_with_fallback = otp("666666", fallback={"email_to": "a@example.com"})
    expired_in_queue = otp("777777")
    _set(db, sending, "status = 'sending'")
    _set(db, delivered, "status = 'delivered'")
    _set(db, failed_fallback_pending, "status = 'failed'")
    _set(db, failed_fallback_done, "status = 'fallback_sms', fallback_state = 'done'")
    _set(db, accepted_with_fallback, "status = 'accepted'")
    _set(db, expired_in_queue, "expires_at = now() - interval '1 second'")
    assert wipe_otp_codes() >= 3
    kept = {queued: "111111", sending: "222222", failed_fallback_pending: "444444",
            accepted_with_fallback: "666666"}
    for job, code in kept.items():
        row = _row(db, job)
        assert row.redacted_at is None and row.params == {"body": [code]}, job
    for job, code in {delivered: "333333", failed_fallback_done: "555555", expired_in_queue: "777777"}.items():
        row = _row(db, job)
        assert row.redacted_at is not None and row.params is None and row.text_body is None
        assert code not in str(row.payload) and row.payload == {"redacted": "otp_code"}
    # The fallback's end (or the code's expiry) lets it go.
    _set(db, failed_fallback_pending, "fallback_state = 'exhausted'")
    _set(db, accepted_with_fallback, "expires_at = now() - interval '1 second'")
    wipe_otp_codes()
    assert _row(db, failed_fallback_pending).params is None
    assert _row(db, accepted_with_fallback).params is None


def test_idempotency_still_answers_after_the_code_is_wiped(db: Any) -> None:
    from wanotify.core.errors import IdempotencyConflict
    from wanotify.intake.service import notify
    from wanotify.privacy.retention import wipe_otp_codes

    key = f"otp-{uuid.uuid4()}"
    body = {"to": _phone(), "template": "otp_code", "kind": "otp", "params": {"body": ["918273"]},
            "idempotency_key": key}
    first = notify(body)
    _set(db, first.id, "status = 'delivered'")
    wipe_otp_codes()
    fp = _row(db, first.id).request_hash
    assert fp.startswith("k:")
    again = notify(body)
    assert again.id == first.id and again.duplicate
    with pytest.raises(IdempotencyConflict):
        notify({**body, "params": {"body": ["000000"]}})


def test_a_wiped_dead_letter_is_not_replayed(db: Any) -> None:
    from wanotify.delivery.fallback import dead_letter
    from wanotify.intake.service import notify
    from wanotify.ops.dlq import ReplayRefused, replay
    from wanotify.privacy.retention import wipe_otp_codes

    job = notify({"to": _phone(), "template": "otp_code", "kind": "otp", "params": {"body": ["123123"]},
                  "fallback": {"sms_to": _phone()}}).id
    _set(db, job, "status = 'failed', fallback_state = 'exhausted'")
    dead_letter(uuid.UUID(job), "every channel failed")
    wipe_otp_codes()
    with pytest.raises(ReplayRefused, match="content was removed"):
        replay(uuid.UUID(job))


def test_an_erased_persons_opt_out_still_holds_by_hash(db: Any) -> None:
    from wanotify.compliance.consent import Preference, opted_out, record_preferences
    from wanotify.compliance.hashing import phone_hash
    from wanotify.core.errors import InvalidJob
    from wanotify.delivery.outcomes import claim
    from wanotify.intake.service import notify
    from wanotify.privacy.erasure import erase

    phone = _phone()
    sale = {"to": phone, "template": "seasonal_sale", "kind": "marketing", "params": {"body": ["Asha", "20%"]}}
    queued = notify(sale).id  # queued before the opt-out arrives
    with db() as s:
        record_preferences(s, [Preference(phone, True, datetime.now(UTC), "keyword", "STOP")])
    report = erase(phone)
    assert report.touched["opt_outs"] == 1 and report.touched["notifications_cancelled"] == 1
    with db() as s:
        row = s.execute(text("SELECT phone, detail, opted_out FROM opt_outs WHERE phone_hash = :h"),
                        {"h": phone_hash(phone)}).one()
        assert row.phone is None and row.detail is None and row.opted_out
        assert opted_out(s, [phone]) == {phone}
    assert _row(db, queued).status == "cancelled"
    with pytest.raises(InvalidJob, match="opted out"):
        notify(sale)
    # A job queued after the erasure by another path is still stopped at the claim.
    later = notify({**sale, "kind": "transactional", "template": "order_confirmation_v2",
                    "params": {"body": ["A", "B", "C"]}}).id
    _set(db, later, "kind = 'marketing', to_hash = :h", h=phone_hash(phone))
    jobs, finished = claim([uuid.UUID(later)], "tok", 60)
    assert jobs == [] and finished == [uuid.UUID(later)]
    # Opting back in (START) is a new preference from the person: it is honoured.
    with db() as s:
        record_preferences(s, [Preference(phone, False, datetime.now(UTC), "keyword", "START")])
        assert opted_out(s, [phone]) == set()


def test_erase_refuses_a_bad_number_and_its_dry_run_changes_nothing(db: Any) -> None:
    from wanotify.intake.service import notify
    from wanotify.privacy.erasure import erase

    with pytest.raises(ValueError):
        erase("12345")
    phone = _phone()
    job = notify({"to": phone, "template": "order_confirmation_v2",
                  "params": {"body": ["Ravi Kumar", "ORD-1", "₹5"]}}).id
    dry = erase(phone, dry_run=True)
    assert dry.touched["notifications"] == 1 and dry.touched["notifications_cancelled"] == 1
    row = _row(db, job)
    assert row.status == "queued" and row.to_number == phone and row.params == {"body": ["Ravi Kumar", "ORD-1", "₹5"]}


def test_purge_dry_run_counts_and_changes_nothing_then_purge_keeps_counts(db: Any) -> None:
    from wanotify.intake.service import notify
    from wanotify.privacy.retention import purge

    phone = _phone()
    job = notify({"to": phone, "template": "order_confirmation_v2",
                  "params": {"body": ["Meera Iyer", "ORD-9", "₹9"]}, "metadata": {"customer": "Meera Iyer"},
                  "fallback": {"email_to": "meera@example.com"}}).id
    _set(db, job, "status = 'delivered', created_at = now() - interval '100 days'")
    with db() as s:
        s.execute(text("INSERT INTO attempts (notification_id, channel, provider_message_id, outcome, error_message)"
                       " VALUES (:id, 'whatsapp', 'wamid.X', 'done', :m)"),
                  {"id": job, "m": f"recipient {phone} unknown; wrote to meera@example.com"})
        s.execute(text("INSERT INTO status_events (notification_id, provider_message_id, dedupe_key, status,"
                       " source, at, pricing) VALUES (:id, 'wamid.X', :k, 'delivered', 'webhook', now(),"
                       " CAST(:p AS jsonb))"),
                  {"id": job, "k": f"wamid.X|delivered|{uuid.uuid4()}", "p": '{"category": "utility"}'})
    dry = purge(dry_run=True)
    steps = {(r.table, r.what): r.rows for r in dry.rows}
    assert steps[("notifications", "transactional jobs")] >= 1
    assert _row(db, job).to_number == phone
    rep = purge()
    assert rep.totals()["notifications"] >= 1
    row = _row(db, job)
    assert row.status == "delivered" and row.kind == "transactional" and row.template == "order_confirmation_v2"
    assert row.to_number.startswith("h:") and row.params is None and row.metadata is None
    assert row.fallback == {"redacted": True} and row.anonymised_at is not None
    with db() as s:
        att = s.execute(text("SELECT provider_message_id, error_message FROM attempts WHERE notification_id = :id"),
                        {"id": job}).one()
        ev = s.execute(text("SELECT provider_message_id, pricing, status FROM status_events"
                            " WHERE notification_id = :id"), {"id": job}).one()
    assert att.provider_message_id is None and phone not in att.error_message
    assert "meera@example.com" not in att.error_message
    assert ev.provider_message_id is None and ev.pricing == {"category": "utility"} and ev.status == "delivered"
    again = purge()  # idempotent: nothing more to do for this job
    assert _row(db, job).to_number == row.to_number
    assert again.totals().get("notifications", 0) <= rep.totals()["notifications"]


def test_migration_0007_hashes_existing_opt_outs_and_waiting_marketing(services: dict[str, str]) -> None:
    """Upgrading a database that has opt-outs and queued marketing: both get the keyed hash
    the application computes; the downgrade gives the phone key back."""
    import hashlib
    import hmac

    import psycopg
    from alembic import command
    from sqlalchemy import create_engine, make_url, pool

    from wanotify.db.migrate import alembic_config, ensure_database

    url = make_url(services["database_url"])
    scratch = url.set(database=f"{url.database}_mig").render_as_string(hide_password=False)
    admin = url.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{url.database}_mig" WITH (FORCE)')
    ensure_database(scratch)
    cfg = alembic_config(scratch)
    command.upgrade(cfg, "0005")
    engine = create_engine(scratch, poolclass=pool.NullPool)
    job = uuid.uuid4()
    try:
        with engine.begin() as c:
            c.execute(text("INSERT INTO opt_outs (phone, opted_out, source, at) VALUES ('+919876543210', true,"
                           " 'keyword', now())"))
            c.execute(text("INSERT INTO notifications (id, kind, channel, status, sender, to_number, payload)"
                           " VALUES (:id, 'marketing', 'whatsapp', 'queued', 'main', '+919876543210', '{}')"),
                      {"id": job})
        command.upgrade(cfg, "0007")
        with engine.begin() as c:
            key = bytes(c.execute(text("SELECT key FROM privacy_key")).scalar_one())
            want = hmac.new(key, b"phone:+919876543210", hashlib.sha256).hexdigest()
            assert c.execute(text("SELECT phone_hash FROM opt_outs")).scalar_one() == want
            assert c.execute(text("SELECT to_hash FROM notifications WHERE id = :id"), {"id": job}).scalar_one() == want
        command.downgrade(cfg, "0005")
        with engine.begin() as c:
            assert c.execute(text("SELECT phone FROM opt_outs")).scalar_one() == "+919876543210"
    finally:
        engine.dispose()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{url.database}_mig" WITH (FORCE)')


def test_beat_runs_the_purge_hourly() -> None:
    from wanotify.queues.app import celery_app
    from wanotify.worker.tasks import purge_task

    entry = celery_app.conf.beat_schedule["privacy-purge"]
    assert entry["task"] == "wanotify.purge" == purge_task.name and entry["schedule"] == 3600.0
    assert celery_app.conf.task_routes["wanotify.purge"] == {"queue": "bulk"}


def test_a_redelivered_inbound_message_after_its_purge_does_not_break_the_next_purge(db: Any) -> None:
    """Meta redelivers a webhook after its message was anonymised: the raw copy has the same wamid, whose
    hash the anonymised twin already holds (a unique column). The next purge deletes the copy."""
    from wanotify.privacy.retention import purge

    wamid = f"wamid.IN-{uuid.uuid4().hex}"
    sql = text("INSERT INTO inbound_messages (wamid, from_number, phone_number_id, type, text, payload, at)"
               " VALUES (:w, :f, 'PNID', 'text', 'hello', '{}'::jsonb, now() - interval '400 days')")
    phone = _phone()
    with db() as s:
        s.execute(sql, {"w": wamid, "f": phone})
    purge()
    with db() as s:
        s.execute(sql, {"w": wamid, "f": phone})  # the redelivery, stored raw once more
    rep = purge()
    steps = {(r.table, r.what): r.rows for r in rep.rows}
    assert steps[("inbound_messages", "redelivered copies of anonymised messages")] >= 1
    with db() as s:
        rows = s.execute(text("SELECT wamid, from_number, text FROM inbound_messages"
                              " WHERE wamid = :w OR from_number = :f"), {"w": wamid, "f": phone}).all()
    assert rows == []  # neither the raw copy nor anything in clear is left
    with db() as s:
        hashed = s.execute(text("SELECT count(*) FROM inbound_messages WHERE wamid LIKE 'h:%' AND text IS NULL"
                                " AND at < now() - interval '399 days'")).scalar_one()
    assert hashed >= 1
