"""Child processes for the demo, benchmarks and tests: start, wait until healthy, stop."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx
from celery import Celery

from wanotify.worker.intake_process import die_with_parent


def free_port(preferred: int | None = None, host: str = "127.0.0.1") -> int:
    if preferred:
        with socket.socket() as s:
            try:
                s.bind((host, preferred))
                return preferred
            except OSError:
                pass
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class Proc:
    """A ``python -m wanotify ...`` child in its own process group.

    ``prefix``: a command that execs the rest in place (``ip netns exec NS``), so the
    child's pid is still the Python process's."""

    def __init__(self, name: str, args: list[str], env: Mapping[str, str] | None = None,
                 log_path: Path | None = None, prefix: Sequence[str] = ()):
        self.name = name
        self.args = args
        self.log_path = log_path
        self._log = open(log_path, "ab") if log_path else subprocess.DEVNULL
        self.popen = subprocess.Popen(
            [*prefix, sys.executable, "-m", "wanotify", *args],
            env=dict(env) if env is not None else None,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,  # no stray worker outlives a test run or bench
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)

    def stop(self, timeout: float = 10.0) -> None:
        if self.alive():
            self.signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.popen.wait(5)
        else:
            self.signal(signal.SIGKILL)  # stray children of a dead leader
        if self._log is not subprocess.DEVNULL and hasattr(self._log, "close"):
            self._log.close()

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)

    def tail(self, n: int = 40) -> str:
        if not self.log_path or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])


def wait_http(url: str, proc: Proc | None = None, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.tail()}")
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.1)
    raise RuntimeError(f"{url} not up after {timeout:.0f}s ({last})\n{proc.tail() if proc else ''}")


def _ping_app(broker_url: str, transport_options: dict[str, object] | None) -> Celery:
    app = Celery("wanotify-ping", broker=broker_url)
    if transport_options:
        app.conf.broker_transport_options = transport_options
    return app


def wait_worker(broker_url: str, proc: Proc | None = None, timeout: float = 30.0,
                node: str | None = None, transport_options: dict[str, object] | None = None) -> None:
    """Wait until a Celery worker (the one whose node name starts with ``node``) answers ping
    (``transport_options``: a Sentinel broker's ``master_name``)."""
    app = _ping_app(broker_url, transport_options)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.tail()}")
        try:
            replies = app.control.ping(timeout=0.5)
        except Exception:  # the broker dropped our connection (a restart, a client kill): again
            app = _ping_app(broker_url, transport_options)
            time.sleep(0.2)
            continue
        names = [k for r in replies for k in r]
        if names and (node is None or any(n.split("@")[0] == node.split("@")[0] for n in names)):
            return
    raise RuntimeError(f"no Celery worker answered within {timeout:.0f}s\n{proc.tail() if proc else ''}")
