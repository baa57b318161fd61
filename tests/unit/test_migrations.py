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


def test_many_processes_migrate_one_new_database_at_once(services: dict[str, str]) -> None:
    """Every web process (or container) may run `wanotify migrate`: the advisory lock lets
    one migrate while the others wait, then find the schema at head."""
    import os
    import subprocess
    import sys

    from sqlalchemy import make_url

    from wanotify.db.migrate import at_head

    url = make_url(services["database_url"])
    db_url = url.set(database=f"{url.database}_concurrent").render_as_string(hide_password=False)
    drop_database(db_url)
    try:
        env = {**os.environ, "WANOTIFY_DATABASE_URL": db_url}
        procs = [subprocess.Popen([sys.executable, "-m", "wanotify", "migrate"], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for _ in range(4)]
        outs = [p.communicate(timeout=120)[0] for p in procs]
        assert [p.returncode for p in procs] == [0, 0, 0, 0], "\n".join(outs)
        assert at_head(db_url)
    finally:
        drop_database(db_url)


def test_migrate_waits_for_a_server_that_is_not_up_yet(services: dict[str, str]) -> None:
    """A container's Postgres may refuse connections for a while after its healthcheck:
    migrate retries until it answers (here a forwarder opens the port 3 s late)."""
    import os
    import socket
    import subprocess
    import sys
    import threading
    import time

    from sqlalchemy import make_url

    real = make_url(services["database_url"])
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    late_url = real.set(host="127.0.0.1", port=port).render_as_string(hide_password=False)
    stop = threading.Event()

    def pump(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def forward() -> None:
        time.sleep(3)
        server = socket.create_server(("127.0.0.1", port))
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                client, _ = server.accept()
            except TimeoutError:
                continue
            upstream = socket.create_connection((real.host or "127.0.0.1", real.port or 5432))
            threading.Thread(target=pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=pump, args=(upstream, client), daemon=True).start()
        server.close()

    thread = threading.Thread(target=forward, daemon=True)
    thread.start()
    try:
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "wanotify", "migrate", "--wait", "30"],
                              env={**os.environ, "WANOTIFY_DATABASE_URL": late_url},
                              capture_output=True, text=True, timeout=90)
        assert done.returncode == 0, done.stdout + done.stderr
        assert time.monotonic() - started >= 3
        assert "database at revision" in done.stdout
    finally:
        stop.set()
        thread.join(5)


def test_migrate_gives_up_with_a_clear_error(services: dict[str, str]) -> None:
    import os
    import socket
    import subprocess
    import sys

    from sqlalchemy import make_url

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dead = make_url(services["database_url"]).set(host="127.0.0.1", port=port)
    done = subprocess.run([sys.executable, "-m", "wanotify", "migrate", "--wait", "1"],
                          env={**os.environ, "WANOTIFY_DATABASE_URL":
                               dead.render_as_string(hide_password=False)},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "did not accept connections within 1s" in done.stderr
