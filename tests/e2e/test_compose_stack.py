"""docker-compose.yml for real: the project's Dockerfile and compose file, a real engine.

The engine is tests/e2e/compose_engine.py's: Debian's docker.io and docker-compose 1.29 in a
network namespace holding only loopback, the base images stand-ins from Debian's packages.
The compose file is used as it is but for its ``ports:`` (compose 1.29 refuses published
ports with host networking; tests/unit/test_deploy_files.py checks them), with one override
file: every service on the engine's network (``network_mode: host``, so they share that
loopback; the service names resolve to it), and the image's pip fed the wheels the host
downloaded (a build container cannot reach the package registry), through the Dockerfile's
ordinary PIP_* build arguments.

It checks what a user of ``docker compose up --build`` meets: the stack comes up and stays
up (no restarts: beat's schedule is writable), two workers on one network share it
(metrics on consecutive ports), a notification goes through the API to ``read`` (the sandbox
signs webhooks back to web), a Redis restart loses no job of a batch enqueued around it,
and after ``down`` and ``up`` Redis's data and Flower's generated login are unchanged.

Select it with ``-m compose``. Cold, it runs debootstrap and builds every image (minutes);
warm (/var/cache/wanotify-compose kept), about two minutes.
"""

from __future__ import annotations

import ctypes
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import compose_engine as ce
import httpx
import pytest
import yaml

from wanotify.core.status import OUTCOMES

pytestmark = [pytest.mark.compose, pytest.mark.slow, pytest.mark.timeout(2400)]

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "wanotifye2e"
WHEELS_PORT = 8799
NAMES = ["postgres", "redis", "web", "sandbox"]
LONG_RUNNING = ["postgres", "redis", "web", "worker", "beat", "flower", "sandbox"]
T = TypeVar("T")
CLONE_NEWNET = 0x40000000


@dataclass
class Stack:
    engine: ce.Engine
    files: list[str]
    env: dict[str, str]
    api_key: str
    pool: ThreadPoolExecutor
    log_dir: Path

    def compose(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
        return ce.run([ce.COMPOSE, "-p", PROJECT, *self.files, *args], env=self.env,
                      timeout=timeout, check=check, cwd=ROOT)

    def net(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` in the engine's network namespace (a thread that entered it)."""
        return self.pool.submit(fn).result()

    def get(self, url: str, **kw: Any) -> httpx.Response:
        return self.net(lambda: httpx.get(url, timeout=10, **kw))

    def post(self, url: str, **kw: Any) -> httpx.Response:
        return self.net(lambda: httpx.post(url, timeout=30, **kw))

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}


def _enter_netns(path: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns")
    finally:
        os.close(fd)


def _override(wheels_url: str) -> dict[str, Any]:
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    hosts = [f"{n}:127.0.0.1" for n in NAMES]
    services: dict[str, Any] = {}
    for name in doc["services"]:
        services[name] = {"network_mode": "host", "extra_hosts": hosts}
    services["migrate"]["build"] = {
        "context": str(ROOT), "network": "host",
        "args": {"PIP_FIND_LINKS": wheels_url, "PIP_NO_INDEX": "1"},
    }
    # Every status webhook up to `read`, so the test can wait for it.
    services["sandbox"]["environment"] = {"WANOTIFY_SANDBOX_READ_RATIO": "1"}
    return {"services": services}


def _wheels(work: Path) -> Path:
    """The image's dependencies as wheels, downloaded by the host's pip (cached).

    Markers dropped: the image's Python (Debian's 3.11.2) may need what this one does not."""
    wheels = ce.CACHE / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    reqs = work / "requirements.txt"
    reqs.write_text("".join(
        line.split(";")[0].strip() + "\n"
        for line in (ROOT / "requirements.lock").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ))
    args = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--find-links", str(wheels),
            "-w", str(wheels), "-r", str(reqs), "setuptools>=68", "wheel"]
    # The cache first, offline: with every wheel there, asking an index costs nothing but, on
    # a machine without a network, pip's timeouts (minutes).
    offline = subprocess.run([*args, "--no-index"], capture_output=True, text=True, timeout=300)
    if offline.returncode != 0:
        ce.run(args, timeout=900)
    return wheels


def _wait(what: str, check: Callable[[], bool], timeout: float, stack: Stack | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except (httpx.HTTPError, OSError):
            pass
        if time.monotonic() > deadline:
            logs = stack.compose("logs", "--no-color", "--tail", "40", check=False).stdout if stack else ""
            raise AssertionError(f"{what}: not within {timeout:g}s\n{logs[-12000:]}")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    reason = ce.unavailable()
    if reason:
        pytest.skip(f"no container engine: {reason}")
    work = tmp_path_factory.mktemp("compose")
    wheels = _wheels(work)
    with ce.private_engine(work / "dockerd.log") as engine:
        engine.ensure_standins()
        server = subprocess.Popen(
            engine.in_netns([sys.executable, "-m", "http.server", "--bind", "127.0.0.1",
                             "--directory", str(wheels), str(WHEELS_PORT)]),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        base = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
        for svc in base["services"].values():
            svc.pop("ports", None)
        compose_file = work / "docker-compose.yml"
        compose_file.write_text(yaml.safe_dump(base, sort_keys=False))
        override = work / "compose.override.yml"
        override.write_text(yaml.safe_dump(_override(f"http://127.0.0.1:{WHEELS_PORT}/")))
        api_key = secrets.token_urlsafe(16)
        env_file = work / "env"
        env_file.write_text("".join(f"{k}={v}\n" for k, v in {
            "WANOTIFY_APP_SECRET": secrets.token_urlsafe(24),
            "WANOTIFY_VERIFY_TOKEN": secrets.token_urlsafe(12),
            "WANOTIFY_API_KEYS": api_key,
            "POSTGRES_PASSWORD": secrets.token_urlsafe(12),
        }.items()))
        # Only the env file: the shell's variables win over it in compose (and this test
        # process has the suite's WANOTIFY_* settings).
        env = {k: v for k, v in engine.env.items() if not k.startswith(("WANOTIFY_", "POSTGRES_"))}
        env["COMPOSE_HTTP_TIMEOUT"] = "300"
        files = ["-f", str(compose_file), "-f", str(override), "--env-file", str(env_file),
                 "--project-directory", str(ROOT)]
        pool = ThreadPoolExecutor(1, initializer=_enter_netns, initargs=(f"/run/netns/{engine.netns}",))
        s = Stack(engine, files, env, api_key, pool, work)
        try:
            yield s
        finally:
            (work / "compose.log").write_text(s.compose("logs", "--no-color", check=False).stdout)
            s.compose("down", "-v", "--remove-orphans", timeout=300, check=False)
            pool.shutdown()
            server.terminate()
            server.wait()


def _up(stack: Stack, *args: str) -> None:
    stack.compose("up", "-d", "--scale", "worker=2", *args, timeout=1200)
    _wait("web ready", lambda: stack.get("http://127.0.0.1:8000/readyz").status_code == 200, 180, stack)
    _wait("sandbox up", lambda: stack.get("http://127.0.0.1:8900/_sandbox/healthz").status_code == 200, 60, stack)
    _wait("flower up", lambda: stack.get("http://127.0.0.1:5555/healthcheck").status_code in (200, 401), 60, stack)


def _notify(stack: Stack, n: int) -> dict[str, Any]:
    return {"to": f"+9198765{n:05d}", "template": "order_confirmation_v2", "language": "en",
            "params": {"body": ["Rahul Sharma", f"ZEC-{n}", "₹45,000"]}}


def _status(stack: Stack, job_id: str) -> str:
    r = stack.get(f"http://127.0.0.1:8000/v1/notifications/{job_id}", headers=stack.auth())
    r.raise_for_status()
    return str(r.json()["status"])


def _flower_login(stack: Stack) -> str:
    return stack.compose("exec", "-T", "flower", "cat", "/var/lib/wanotify/flower-auth").stdout.strip()


def _flower_answers(stack: Stack, login: str) -> int:
    user, _, password = login.partition(":")
    return stack.get("http://127.0.0.1:5555/", auth=(user, password)).status_code


def _redis(stack: Stack, *args: str) -> str:
    return stack.compose("exec", "-T", "redis", "redis-cli", *args).stdout.strip()


def _restarts(stack: Stack) -> dict[str, int]:
    ids = stack.compose("ps", "-q").stdout.split()
    out = stack.engine.docker("inspect", "-f", '{{index .Config.Labels "com.docker.compose.service"}} {{.RestartCount}} {{.State.Status}}', *ids).stdout
    counts: dict[str, int] = {}
    for line in out.splitlines():
        name, count, state = line.split()
        counts[name] = counts.get(name, 0) + int(count) + (0 if state in ("running", "exited") else 100)
    return counts


def test_compose_stack_for_real(stack: Stack) -> None:
    t0 = time.monotonic()
    _up(stack, "--build")
    started = time.monotonic() - t0
    assert {n: c for n, c in _restarts(stack).items() if n in LONG_RUNNING} == dict.fromkeys(LONG_RUNNING, 0)

    # Only loopback in every container: nothing reaches another network.
    dev = stack.compose("exec", "-T", "web", "cat", "/proc/net/dev").stdout
    assert [ln.split(":")[0].strip() for ln in dev.splitlines()[2:]] == ["lo"], dev

    # One notification through the API to `read` (sandbox → signed webhooks → web).
    r = stack.post("http://127.0.0.1:8000/v1/notifications", headers=stack.auth(), json=_notify(stack, 1))
    assert r.status_code == 202, r.text
    first = r.json()["id"]
    _wait("first notification read", lambda: _status(stack, first) == "read", 90, stack)

    # Two workers on one network: each serves its metrics (9809 and the next free port).
    for port in (9809, 9810):
        _wait(f"worker metrics on {port}",
              lambda p=port: stack.get(f"http://127.0.0.1:{p}/metrics").status_code == 200, 60, stack)

    # Redis restarted under a batch: every job of it reaches an outcome.
    assert _redis(stack, "-n", "9", "set", "wanotify-e2e-marker", "kept") == "OK"
    batch = [_notify(stack, n) for n in range(100, 140)]
    r = stack.post("http://127.0.0.1:8000/v1/notifications:batch", headers=stack.auth(), json=batch[:20])
    assert r.status_code == 202, r.text
    ids = [x["id"] for x in r.json()["results"]]
    stack.compose("restart", "redis", timeout=120)
    ids_after: list[str] = []

    def second_half() -> bool:
        got = stack.post("http://127.0.0.1:8000/v1/notifications:batch", headers=stack.auth(), json=batch[20:])
        if got.status_code != 202:
            return False
        ids_after.extend(x["id"] for x in got.json()["results"])
        return True

    _wait("batch accepted after the Redis restart", second_half, 60, stack)
    ids += ids_after
    assert len(ids) == 40 and all(ids)
    pending = set(ids)

    def all_done() -> bool:
        for job_id in list(pending):
            if _status(stack, job_id) in OUTCOMES:
                pending.discard(job_id)
        return not pending

    _wait(f"all 40 jobs of the batch reach an outcome ({len(pending)} left)", all_done, 150, stack)
    outcomes = {_status(stack, job_id) for job_id in ids}
    assert outcomes == {"read"}, outcomes

    # Flower: the generated login works, a wrong one does not.
    login = _flower_login(stack)
    assert login.startswith("ops:"), "generated Flower login"
    assert _flower_answers(stack, login) == 200
    assert _flower_answers(stack, "ops:wrong") == 401

    # Nothing restarted: beat's schedule is writable, and the workers survived Redis's restart
    # (celery 5.7 + kombu 5.7 stopped them for good before wanotify.queues.broker).
    restarts = _restarts(stack)
    assert {n: restarts[n] for n in LONG_RUNNING} == dict.fromkeys(LONG_RUNNING, 0), restarts

    # down and up: Redis's data, Flower's login and the database are still there.
    stack.compose("down", timeout=300)
    _up(stack)
    assert _redis(stack, "-n", "9", "get", "wanotify-e2e-marker") == "kept"
    assert _flower_login(stack) == login
    assert _flower_answers(stack, login) == 200
    assert _status(stack, first) == "read"
    (stack.log_dir / "timings.json").write_text(json.dumps({"first_up_s": started, "total_s": time.monotonic() - t0}))
