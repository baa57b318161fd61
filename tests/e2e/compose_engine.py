"""A private Docker engine for tests/e2e/test_compose_stack.py, on this machine only.

- Debian's ``docker.io`` and ``docker-compose`` (1.29), installed with apt when missing (root).
- A daemon of its own: its own data root (cached, so images and build layers survive runs),
  exec root and socket, inside a network namespace holding only loopback; no bridge, no
  iptables. Nothing it runs can reach, or be reached from, any other network.
- The base images the project names (``python:3.11-slim``, ``postgres:15``, ``redis:7``) are
  stand-ins built from Debian bookworm's packages: one ``debootstrap --variant=minbase`` root
  filesystem (cached as a tarball) ``docker import``-ed, then three small images from it with
  the entry points and users those images have. No registry is ever pulled from.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

CACHE = Path(os.environ.get("WANOTIFY_COMPOSE_CACHE", "/var/cache/wanotify-compose"))
ROOTFS_TAR = CACHE / "bookworm-standins.tar"
PACKAGES = ["docker.io", "docker-compose", "debootstrap"]
DEBIAN_MIRROR = "http://deb.debian.org/debian"
INCLUDE = ["python3", "python3-pip", "postgresql-15", "redis-server", "procps"]
BASE = "wanotify-standin/bookworm:latest"
# Debian's docker client, not another one earlier on PATH.
DOCKER = "/usr/bin/docker"
DOCKERD = "/usr/sbin/dockerd"
CONTAINERD = "/usr/bin/containerd"
COMPOSE = "/usr/bin/docker-compose"

POSTGRES_ENTRYPOINT = r"""#!/bin/sh
# Stand-in for the official postgres image's entry point, on Debian's postgresql-15: a new
# data folder gets initdb, POSTGRES_PASSWORD and POSTGRES_DB from an init-time server that,
# like the official one, listens on the socket only; then the real server on every address.
set -e
if [ "$1" = postgres ]; then
  PGDATA=${PGDATA:-/var/lib/postgresql/data}
  if [ ! -s "$PGDATA/PG_VERSION" ]; then
    pw=$(mktemp); printf '%s\n' "${POSTGRES_PASSWORD:?}" > "$pw"
    initdb -D "$PGDATA" -U postgres --pwfile="$pw" --auth-local=trust --auth-host=scram-sha-256
    rm -f "$pw"
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    pg_ctl -D "$PGDATA" -w -o "-c listen_addresses=''" start
    if [ -n "$POSTGRES_DB" ] && [ "$POSTGRES_DB" != postgres ]; then
      createdb -U postgres "$POSTGRES_DB"
    fi
    sleep "${STANDIN_INIT_SECONDS:-3}"  # the window a socket-only health check passes in
    pg_ctl -D "$PGDATA" -w -m fast stop
  fi
  exec postgres -D "$PGDATA" -c listen_addresses='*'
fi
exec "$@"
"""

REDIS_ENTRYPOINT = r"""#!/bin/sh
# Stand-in for the official redis image's entry point: no config file, so protected mode off.
if [ "$1" = redis-server ]; then shift; exec redis-server --protected-mode no "$@"; fi
exec "$@"
"""

STANDINS = {
    "python:3.11-slim": f"""FROM {BASE}
ENV LANG=C.UTF-8
CMD ["python3"]
""",
    "postgres:15": f"""FROM {BASE}
ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \\
    PGDATA=/var/lib/postgresql/data LANG=C.UTF-8
USER postgres
ENTRYPOINT ["/usr/local/bin/postgres-standin"]
CMD ["postgres"]
""",
    "redis:7": f"""FROM {BASE}
WORKDIR /data
USER redis
ENTRYPOINT ["/usr/local/bin/redis-standin"]
CMD ["redis-server"]
""",
}


def run(argv: Sequence[str], *, timeout: float = 600, check: bool = True,
        env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=cwd)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}:\n"
                           f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def unavailable() -> str | None:
    """Why no engine can run here (then the test skips), installing what is missing."""
    if os.geteuid() != 0:
        return "needs root (a network namespace, a private dockerd, debootstrap)"
    if subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode != 0:
        return "cannot create a network namespace here"
    missing = [p for p, exe in zip(PACKAGES, (DOCKERD, COMPOSE, "/usr/sbin/debootstrap"), strict=True)
               if not Path(exe).exists()]
    if missing:
        if not shutil.which("apt-get"):
            return f"{', '.join(missing)} missing and no apt-get"
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        got = subprocess.run(["apt-get", "install", "-y", "-q", *missing], capture_output=True,
                             text=True, env=env, timeout=900)
        if got.returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, timeout=600)
            got = subprocess.run(["apt-get", "install", "-y", "-q", *missing],
                                 capture_output=True, text=True, env=env, timeout=900)
        if got.returncode != 0:
            return f"could not install {', '.join(missing)}: {got.stderr[-500:]}"
    return None


def rootfs_tarball() -> Path:
    """The stand-ins' root filesystem: Debian bookworm minbase with Python, Postgres, Redis."""
    if ROOTFS_TAR.exists():
        return ROOTFS_TAR
    CACHE.mkdir(parents=True, exist_ok=True)
    root = CACHE / "rootfs.tmp"
    if not (root / "usr/lib/postgresql/15/bin/postgres").exists():
        shutil.rmtree(root, ignore_errors=True)
        run(["debootstrap", "--variant=minbase", f"--include={','.join(INCLUDE)}", "bookworm",
             str(root), DEBIAN_MIRROR], timeout=1800)
    # What the official images have that Debian's packages do not: python and pip by those
    # names, pip allowed to install system-wide, the data folders, the entry points.
    (root / "usr/bin/python").unlink(missing_ok=True)
    (root / "usr/bin/python").symlink_to("python3")
    (root / "usr/bin/pip").unlink(missing_ok=True)
    (root / "usr/bin/pip").symlink_to("pip3")
    for marker in (root / "usr/lib").glob("python3*/EXTERNALLY-MANAGED"):
        marker.unlink()
    for name, text in (("postgres-standin", POSTGRES_ENTRYPOINT), ("redis-standin", REDIS_ENTRYPOINT)):
        path = root / "usr/local/bin" / name
        path.write_text(text)
        path.chmod(0o755)
    # Debian's package made a cluster of its own at install: not used, not shipped.
    shutil.rmtree(root / "var/lib/postgresql/15", ignore_errors=True)
    shutil.rmtree(root / "etc/postgresql/15", ignore_errors=True)
    run(["chroot", str(root), "sh", "-c",
         "install -d -m 0700 -o postgres -g postgres /var/lib/postgresql/data"
         " && install -d -m 0775 -o postgres -g postgres /run/postgresql"
         " && install -d -m 0750 -o redis -g redis /data"
         " && apt-get clean && rm -rf /var/lib/apt/lists/*"])
    partial = ROOTFS_TAR.with_suffix(".partial")
    run(["tar", "-C", str(root), "--numeric-owner", "-cf", str(partial), "."], timeout=900)
    partial.rename(ROOTFS_TAR)
    shutil.rmtree(root, ignore_errors=True)
    return ROOTFS_TAR


@dataclass
class Engine:
    netns: str
    socket: Path

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "COMPOSE_"))}
        env["DOCKER_HOST"] = f"unix://{self.socket}"
        return env

    def docker(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run([DOCKER, *args], env=self.env, timeout=timeout, check=check)

    def in_netns(self, argv: Sequence[str]) -> list[str]:
        """A command line that runs ``argv`` in the engine's network namespace."""
        return ["nsenter", f"--net=/run/netns/{self.netns}", *argv]

    def has_image(self, name: str) -> bool:
        return self.docker("image", "inspect", name, check=False).returncode == 0

    def ensure_standins(self) -> None:
        if all(self.has_image(name) for name in STANDINS):
            return
        if not self.has_image(BASE):
            self.docker("import", str(rootfs_tarball()), BASE, timeout=1200)
        for name, dockerfile in STANDINS.items():
            if not self.has_image(name):
                ctx = CACHE / "standin-context"
                ctx.mkdir(parents=True, exist_ok=True)
                (ctx / "Dockerfile").write_text(dockerfile)
                self.docker("build", "-q", "-t", name, str(ctx), timeout=600)


@contextmanager
def private_engine(log: Path) -> Iterator[Engine]:
    """dockerd in a fresh network namespace holding only loopback; stopped and removed after."""
    name = f"wanotify-compose-{os.getpid()}"
    run_dir = Path(f"/run/{name}")
    run_dir.mkdir(parents=True, exist_ok=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    # One engine at a time on the cached data root (two test runs at once wait here).
    lock = (CACHE / "engine.lock").open("w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    socket = run_dir / "docker.sock"
    data_root = CACHE / "docker"
    data_root.mkdir(parents=True, exist_ok=True)
    run(["ip", "netns", "add", name])
    # nsenter, not `ip netns exec`: that one mounts a sysfs of its own over /sys, which hides
    # the cgroup mounts dockerd needs.
    enter = ["nsenter", f"--net=/run/netns/{name}"]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"])
        # A containerd of our own, started in the namespace: "host" networking in a container
        # is the network of containerd's shims, so it must be this namespace, never the machine's.
        (run_dir / "containerd.toml").write_text("version = 2\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n")
        containerd_sock = run_dir / "containerd.sock"
        with log.open("wb") as out:
            procs.append(subprocess.Popen(
                [*enter, CONTAINERD, f"--config={run_dir / 'containerd.toml'}",
                 f"--root={run_dir / 'containerd-root'}", f"--state={run_dir / 'containerd'}",
                 f"--address={containerd_sock}"],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            ))
            deadline = time.monotonic() + 30
            while not containerd_sock.exists():
                if procs[0].poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"containerd did not start:\n{log.read_text()[-3000:]}")
                time.sleep(0.2)
            procs.append(subprocess.Popen(
                [*enter, DOCKERD, f"--containerd={containerd_sock}",
                 f"--data-root={data_root}", f"--exec-root={run_dir / 'exec'}",
                 f"--pidfile={run_dir / 'dockerd.pid'}", f"--host=unix://{socket}",
                 "--bridge=none", "--iptables=false", "--ip6tables=false", "--ip-masq=false",
                 "--userland-proxy=false"],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            ))
        engine = Engine(name, socket)
        deadline = time.monotonic() + 60
        while engine.docker("version", check=False, timeout=10).returncode != 0:
            if procs[-1].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dockerd did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield engine
    finally:
        for proc in reversed(procs):  # dockerd first, then containerd
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        # dockerd leaves its namespace's bind mount behind when it is killed.
        subprocess.run(["umount", "-R", str(run_dir / "exec" / "netns" / "default")], capture_output=True)
        subprocess.run(["ip", "netns", "delete", name], capture_output=True)
        shutil.rmtree(run_dir, ignore_errors=True)
        lock.close()
