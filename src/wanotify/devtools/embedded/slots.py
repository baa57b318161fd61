"""The embedded folder, its slots and their state files, and this process's own servers.

Files live in ``$WANOTIFY_EMBEDDED_DIR`` or ``{tempfile.gettempdir()}/wanotify-embedded-{uid}``,
split into slots (``slot-N``) that processes lock while they own servers. A slot's
``state.json`` names its owner and servers, so servers that outlived a dead owner are
recognised and stopped at the next start.

This module holds the process-wide record of the slot this process owns (``_slot``,
``_owner_pid``, and ``_lock`` guarding them). Other modules read it through the module
(``slots._slot``), never ``from ... import _slot``: a fork rebinds ``_slot`` and ``_lock``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from wanotify.devtools.embedded.constants import (
    _PROCESS_NAMES,
    _STATE_FILE,
    _STOP_SIGNALS,
    _VALKEY_PIDFILE,
    DIR_ENV,
    MAX_SLOTS,
    POSTGRES,
    REDIS,
    STOP_TIMEOUT_S,
)

if sys.platform != "win32":
    import fcntl

log = logging.getLogger("wanotify.devtools.embedded")  # one logger for the whole package


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


# ------------------------------------------------------------------ this process's slot


_lock = threading.RLock()
_slot: _Slot | None = None
_owner_pid: int | None = None


def _owned() -> bool:
    return _owner_pid == os.getpid()


def _adopt(slot: _Slot) -> _Slot:
    """Record that this process owns ``slot`` (the caller holds ``_lock``)."""
    global _slot, _owner_pid
    _slot = slot
    _owner_pid = os.getpid()
    return slot


def _server_pids() -> dict[str, int]:
    """Pids of the embedded servers this process runs (for tests and diagnostics)."""
    with _lock:
        if _slot is None or not _owned():
            return {}
        return {name: s.proc.pid for name, s in _slot.servers.items()}


def _forget_after_fork() -> None:
    """In a forked child: drop the slot and our reference to its lock; a fresh ``_lock``."""
    global _slot, _lock
    if _slot is not None:
        with contextlib.suppress(OSError):
            os.close(_slot.lock_fd)
    _slot = None
    _lock = threading.RLock()


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
