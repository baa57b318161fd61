"""Shared pieces of the benchmarks: an isolated environment, processes, CPU and log analysis."""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg
import redis
from sqlalchemy import make_url

from wanotify.config import reset_settings
from wanotify.db import dispose_engine
from wanotify.db.migrate import upgrade
from wanotify.devtools.embedded import services
from wanotify.devtools.procs import Proc, free_port, wait_http
from wanotify.queues.app import follow_settings
from wanotify.redis import reset_clients


@dataclass
class BenchEnv:
    env: dict[str, str]
    workdir: Path
    redis_url: str
    database_url: str
    procs: list[Proc] = field(default_factory=list)

    def start(self, name: str, args: list[str], extra: dict[str, str] | None = None,
              prefix: Sequence[str] = ()) -> Proc:
        p = Proc(name, args, {**self.env, **(extra or {})}, self.workdir / f"{name}.log", prefix=prefix)
        self.procs.append(p)
        return p

    def stop(self, procs: Sequence[Proc] | None = None) -> None:
        for p in list(procs if procs is not None else self.procs):
            p.stop()
            if p in self.procs:
                self.procs.remove(p)


def _redis_db(url: str, db: int) -> str:
    base, _, tail = url.rpartition("/")
    return f"{base}/{db}" if tail.isdigit() else f"{url.rstrip('/')}/{db}"


@contextmanager
def bench_env(name: str, senders: list[dict[str, Any]] | None = None,
              extra_env: dict[str, str] | None = None) -> Iterator[BenchEnv]:
    """Redis and Postgres (embedded if needed), a fresh database and Redis db for the bench."""
    workdir = Path(tempfile.mkdtemp(prefix=f"wanotify-bench-{name}-"))
    saved = dict(os.environ)
    with services(database_name=f"wanotify_bench_{name}") as urls:
        u = make_url(urls.database_url)
        db_url = u.set(database=f"wanotify_bench_{name}").render_as_string(hide_password=False)
        admin = u.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "wanotify_bench_{name}" WITH (FORCE)')
        redis_url = _redis_db(urls.redis_url, 10)
        redis.Redis.from_url(redis_url).flushdb()
        os.environ.update({
            "WANOTIFY_DATABASE_URL": db_url,
            "WANOTIFY_REDIS_URL": redis_url,
            "WANOTIFY_APP_SECRET": os.environ.get("WANOTIFY_APP_SECRET", "bench-secret"),
            "WANOTIFY_API_KEYS": os.environ.get("WANOTIFY_API_KEYS", "bench-key"),
            "WANOTIFY_LOG_LEVEL": os.environ.get("WANOTIFY_BENCH_LOG_LEVEL", "WARNING"),
            # The benches measure machinery, not the clock: marketing is not held at night.
            "WANOTIFY_QUIET_HOURS": "off",
            **(extra_env or {}),
        })
        if senders is not None:
            os.environ["WANOTIFY_SENDERS"] = json.dumps(senders)
        reset_settings()
        reset_clients()
        follow_settings()  # kicks from this process (in-process intake) go to the bench's Redis
        dispose_engine()
        upgrade(db_url)
        env = BenchEnv(dict(os.environ), workdir, redis_url, db_url)
        try:
            yield env
        finally:
            env.stop()
            dispose_engine()
            os.environ.clear()
            os.environ.update(saved)
            reset_settings()
            reset_clients()
            follow_settings()


def start_sandbox(env: BenchEnv, latency_ms: float = 0.0, webhooks: bool = False,
                  web_url: str | None = None, host: str = "127.0.0.1", realtime: bool = False) -> tuple[Proc, str]:
    """The sandbox for a bench. ``realtime`` for the pacing benches, whose figures are its
    arrival counts: it is scheduled first (``wanotify sandbox --realtime``, root only)."""
    port = free_port(host=host)
    hook = f"{web_url}/webhooks/whatsapp" if (webhooks and web_url) else ""
    args = ["sandbox", "--host", host, "--port", str(port), "--webhook-url", hook]
    p = env.start("sandbox", [*args, "--realtime"] if realtime else args,
                  {"WANOTIFY_SANDBOX_LATENCY_MS": str(latency_ms), "WANOTIFY_SANDBOX_FAILURES": "[]"})
    url = f"http://{host}:{port}"
    wait_http(f"{url}/_sandbox/healthz", p)
    # The sandbox stands in for Meta's servers, which do not share our two cores: let it
    # run first so its arrival timestamps are not skewed by the load under test (root only).
    try:
        psutil.Process(p.pid).nice(-5)
    except (psutil.AccessDenied, PermissionError):
        pass
    env.env["WANOTIFY_GRAPH_API_URL"] = url
    os.environ["WANOTIFY_GRAPH_API_URL"] = url
    reset_settings()
    return p, url


def sandbox_log(url: str, after: int = 0) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    with httpx.Client(base_url=url, timeout=60) as c:
        while True:
            page = c.get("/_sandbox/messages", params={"after": after, "limit": 50000}).json()
            data = page["data"]
            out.extend(data)
            if not data:
                return out
            after = data[-1]["seq"]


def last_seq(url: str) -> int:
    return int(httpx.get(f"{url}/_sandbox/messages", params={"limit": 1}, timeout=10).json()["last_seq"])


class CpuMeter:
    """CPU seconds (user + system) used by a set of process trees between start and stop."""

    def __init__(self, pids: Sequence[int]):
        self.pids = list(pids)
        self.start_total = self._total()

    def _total(self) -> float:
        total = 0.0
        for pid in self.pids:
            try:
                root = psutil.Process(pid)
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
            for p in procs:
                try:
                    t = p.cpu_times()
                    total += t.user + t.system + getattr(t, "children_user", 0) + getattr(t, "children_system", 0)
                except psutil.NoSuchProcess:
                    pass
        return total

    def used(self) -> float:
        return self._total() - self.start_total


def server_pid(port: int) -> int | None:
    """The pid listening on a local TCP port (the broker), when this user may see it."""
    try:
        for c in psutil.net_connections("tcp"):
            if c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN and c.pid:
                return int(c.pid)
    except (psutil.AccessDenied, PermissionError):
        return None
    return None


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def median(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def window_counts(times: Sequence[float]) -> tuple[dict[int, int], int]:
    """Counts per aligned 1-second window, and the largest count in any sliding 1 s window."""
    fixed: dict[int, int] = defaultdict(int)
    for t in times:
        fixed[int(t)] += 1
    s = sorted(times)
    best = 0
    j = 0
    for i in range(len(s)):
        while s[i] - s[j] >= 1.0:
            j += 1
        best = max(best, i - j + 1)
    return dict(fixed), best


def pair_violations(times: Sequence[float], burst: int, interval_s: float) -> int:
    """Sends that a token bucket (capacity ``burst``, one token per ``interval_s``) refuses."""
    tokens = float(burst)
    last = None
    bad = 0
    for t in sorted(times):
        if last is not None:
            tokens = min(float(burst), tokens + (t - last) / interval_s)
        last = t
        if tokens >= 1.0 - 1e-9:
            tokens -= 1.0
        else:
            bad += 1
    return bad


def wait_until(pred: Any, timeout: float, interval: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval)
    return False
