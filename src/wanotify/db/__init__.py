"""Postgres access: one engine per process, short transactions through ``session_scope``."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import orjson
import psycopg.types.json
from sqlalchemy import Connection, Engine, create_engine
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, sessionmaker

from wanotify.config import get_settings

# What "Postgres is away" looks like to callers (connection refused, server gone, a timeout):
# answered as unavailable (HTTP 503, a task retry), never as a bug.
POSTGRES_DOWN: tuple[type[Exception], ...] = (
    sa_exc.OperationalError, sa_exc.InterfaceError, psycopg.OperationalError, psycopg.InterfaceError,
)

_engine: Engine | None = None
_factory: sessionmaker[Session] | None = None
_pid: int | None = None
_lock = threading.Lock()

# jsonb columns come back through orjson (payloads are read on every claim).
psycopg.types.json.set_json_loads(orjson.loads)


def get_engine() -> Engine:
    """The process's engine (re-created after fork, so prefork children never share sockets)."""
    global _engine, _factory, _pid
    with _lock:
        if _engine is None or _pid != os.getpid():
            url = get_settings().database_url
            _engine = create_engine(
                url,
                pool_size=10,
                max_overflow=20,
                # No ping per checkout (a round trip per transaction on the hot path): a dead
                # connection fails its transaction once, is invalidated, and the retry reconnects.
                pool_pre_ping=False,
                pool_recycle=1800,
                connect_args={"connect_timeout": 5, "application_name": "wanotify"},
            )
            _factory = sessionmaker(_engine, expire_on_commit=False)
            _pid = os.getpid()
        return _engine


def dispose_engine() -> None:
    global _engine, _factory, _pid
    with _lock:
        if _engine is not None:
            _engine.dispose()
        _engine = _factory = _pid = None


@contextmanager
def connection_scope() -> Iterator[Connection]:
    """A Core connection in a transaction, for the hot paths' hand-written statements."""
    with get_engine().begin() as conn:
        yield conn


@contextmanager
def autocommit_scope() -> Iterator[Connection]:
    """A Core connection in autocommit: one statement, one round trip, atomic on its own."""
    with get_engine().connect() as conn:
        yield conn.execution_options(isolation_level="AUTOCOMMIT")


@contextmanager
def session_scope() -> Iterator[Session]:
    """A transaction: commit on success, roll back on error."""
    get_engine()
    assert _factory is not None
    session = _factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
