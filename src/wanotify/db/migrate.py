"""Run Alembic programmatically: ``wanotify migrate`` and the demo/tests call ``upgrade``.

``upgrade`` waits for the server to accept connections (a container's Postgres may still be
initialising) and holds a Postgres advisory lock while it migrates, so any number of
processes may run it at once: one migrates, the others wait and find the schema at head.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, make_url, pool

MIGRATIONS = Path(__file__).parent / "migrations"
# pg_advisory_lock key of the migrations (any 64-bit constant of our own: "wanotify").
MIGRATION_LOCK_KEY = 0x77616E6F74696679 - (1 << 63)
DEFAULT_WAIT_S = 60.0

log = logging.getLogger("wanotify.migrate")


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def ensure_database(url: str) -> bool:
    """Create the database named in ``url`` if it does not exist. Returns True if created."""
    u = make_url(url)
    name = u.database
    if not name:
        return False
    admin = u.set(drivername="postgresql", database="postgres").render_as_string(
        hide_password=False
    )
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists:
            return False
        try:
            conn.execute(f'CREATE DATABASE "{name}"')  # name comes from our own settings
        except (psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
            return False  # created concurrently by another process
        return True


def _libpq_url(url: str, database: str | None = None) -> str:
    u = make_url(url).set(drivername="postgresql")
    if database is not None:
        u = u.set(database=database)
    return u.render_as_string(hide_password=False)


def wait_for_server(url: str, timeout_s: float = DEFAULT_WAIT_S) -> None:
    """Return once the server of ``url`` accepts a connection; raise after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    delay = 0.2
    while True:
        try:
            psycopg.connect(_libpq_url(url, "postgres"), connect_timeout=3).close()
            return
        except psycopg.OperationalError as exc:
            if time.monotonic() + delay > deadline:
                raise
            log.info("postgres not ready (%s); retrying in %.1fs",
                     str(exc).strip().splitlines()[-1] if str(exc).strip() else "no answer",
                     delay)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


@contextmanager
def migration_lock(url: str) -> Iterator[None]:
    """Session-level advisory lock: one migrating process at a time, per database."""
    with psycopg.connect(_libpq_url(url), autocommit=True, connect_timeout=5) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        try:
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))


def upgrade(url: str, *, wait_s: float = DEFAULT_WAIT_S) -> None:
    wait_for_server(url, wait_s)
    ensure_database(url)
    with migration_lock(url):
        command.upgrade(alembic_config(url), "head")


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config("postgresql://x/y")).get_current_head()


def current_revision(url: str) -> str | None:
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def at_head(url: str) -> bool:
    return current_revision(url) == head_revision()
