"""Starting and stopping the embedded servers' processes, and stopping them when we end.

Each server is a direct child, in its own session, on a free port of 127.0.0.1. It is
stopped by ``stop_services()``; at interpreter exit (atexit); on SIGTERM and SIGHUP (when
the process has no handler of its own); and on Linux by the kernel when the owning process
dies, even of SIGKILL (``PR_SET_PDEATHSIG``).

The spawner thread and the hooks installed are this module's state (read it here only);
the slot this process owns is ``slots``' state, read as ``slots._slot`` under ``slots._lock``.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import psutil

from wanotify.devtools.embedded import slots
from wanotify.devtools.embedded.constants import (
    _LOG_TAIL_LINES,
    _PR_SET_PDEATHSIG,
    _START_ATTEMPTS,
    _STATE_FILE,
    _STOP_SIGNALS,
    DEFAULT_PG_PORT,
    DEFAULT_REDIS_PORT,
    NO_PDEATHSIG_ENV,
    READY_TIMEOUT_S,
    STOP_TIMEOUT_S,
)
from wanotify.devtools.embedded.slots import _Server, _Slot, _write_state

log = logging.getLogger("wanotify.devtools.embedded")  # one logger for the whole package

T = TypeVar("T")


@dataclass(frozen=True)
class _RunAs:
    name: str
    uid: int
    gid: int


_spawner: _Spawner | None = None

_process_hooks_installed = False
_signal_hooks_installed = False
_previous_handlers: dict[int, Any] = {}


def stop_services() -> None:
    """Stop every embedded server this process started (idempotent)."""
    _stop_servers(None)


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
    with slots._lock:
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
    with slots._lock:
        slot = slots._slot
        if slot is None or not slots._owned():
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
            slots._release_slot()


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
    if slots._owned():
        stop_services()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _at_exit() -> None:
    if slots._owned():
        stop_services()


def _after_fork_in_child() -> None:
    """A forked child owns nothing: drop our state and our reference to the slot lock."""
    global _spawner
    slots._forget_after_fork()
    _spawner = None
