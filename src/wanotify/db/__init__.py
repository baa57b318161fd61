"""Postgres access: one engine per process, short transactions through ``session_scope``."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

from wanotify.config import get_settings

_engine: Engine | None = None
_factory: sessionmaker[Session] | None = None
_pid: int | None = None
_lock = threading.Lock()


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
                pool_pre_ping=True,
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
