"""The Alembic migrations against the models, and migration 0010 on existing rows (real Postgres)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text

from conftest import drop_database


def test_migrated_schema_matches_the_models(db: Any) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from wanotify.db import get_engine
    from wanotify.db.models import Base

    with get_engine().connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


@pytest.fixture()
def scratch(services: dict[str, str]) -> Iterator[tuple[Any, str]]:
    """An empty database of its own, with its Alembic config."""
    from sqlalchemy import make_url

    from wanotify.db.migrate import alembic_config, ensure_database

    url = make_url(services["database_url"])
    db_url = url.set(database=f"{url.database}_mig10").render_as_string(hide_password=False)
    drop_database(db_url)
    ensure_database(db_url)
    yield alembic_config(db_url), db_url
    drop_database(db_url)


def test_migration_0010_indexes_open_jobs_and_due_fallbacks_of_existing_rows(scratch: tuple[Any, str]) -> None:
    from alembic import command
    from sqlalchemy import create_engine, pool

    cfg, url = scratch
    command.upgrade(cfg, "0009")
    engine = create_engine(url, poolclass=pool.NullPool)
    ids = {k: uuid.uuid4() for k in ("queued", "sending", "accepted_fb", "accepted", "delivered_fb")}
    rows = [("queued", None), ("sending", None), ("accepted", '{"sms_text": "x"}'), ("accepted", None),
            ("delivered", '{"sms_text": "x"}')]
    try:
        with engine.begin() as c:
            for (key, jid), (status, fb) in zip(ids.items(), rows, strict=True):
                c.execute(text(
                    "INSERT INTO notifications (id, kind, channel, status, sender, to_number, payload, fallback,"
                    " accepted_at, updated_at) VALUES (:id, 'otp', 'whatsapp', :st, 'main', '+919876543210', '{}',"
                    " CAST(:fb AS jsonb), now() - CAST(:acc AS interval), now() - interval '2 hours')"),
                    {"id": jid, "st": status, "fb": fb,
                     "acc": "1 hour" if status in ("accepted", "delivered") else None})
        command.upgrade(cfg, "0010")
        with engine.begin() as c:
            got = {r.id: r for r in c.execute(text(
                "SELECT id, open_since IS NOT NULL AS open, fallback_due_since IS NOT NULL AS due,"
                " open_since = updated_at AS open_at_update, fallback_due_since = accepted_at AS due_at_accept"
                " FROM notifications"))}
            assert {k for k, jid in ids.items() if got[jid].open} == {"queued", "sending"}
            assert {k for k, jid in ids.items() if got[jid].due} == {"accepted_fb"}
            assert got[ids["queued"]].open_at_update and got[ids["accepted_fb"]].due_at_accept
            # The columns follow the row: delivered closes the fallback window, a claim opens
            # (and re-dates) a job; an attempt to write them is refused.
            c.execute(text("UPDATE notifications SET status = 'delivered' WHERE id = :id"),
                      {"id": ids["accepted_fb"]})
            c.execute(text("UPDATE notifications SET status = 'sending', updated_at = now() WHERE id = :id"),
                      {"id": ids["accepted"]})
            after = dict(c.execute(text("SELECT id, (open_since IS NOT NULL, fallback_due_since IS NOT NULL)"
                                        " FROM notifications")).all())
            assert after[ids["accepted_fb"]] == ("f", "f") and after[ids["accepted"]] == ("t", "f")
            c.execute(text("SET LOCAL enable_seqscan = off"))  # (five rows: a scan would do)
            plans = " ".join(r[0] for r in c.execute(text(
                "EXPLAIN SELECT id FROM notifications WHERE open_since < now() ORDER BY open_since LIMIT 5")))
            assert "ix_notifications_open_since" in plans
        with pytest.raises(Exception, match="generated"), engine.begin() as c:
            c.execute(text("UPDATE notifications SET open_since = now()"))
        command.downgrade(cfg, "0009")
        with engine.begin() as c:
            cols = set(c.execute(text("SELECT column_name FROM information_schema.columns"
                                      " WHERE table_name = 'notifications'")).scalars())
            assert not cols & {"open_since", "fallback_due_since"}
            assert c.execute(text("SELECT count(*) FROM notifications")).scalar_one() == 5
    finally:
        engine.dispose()
