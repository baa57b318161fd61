"""``wanotify bench hosts``: workers on three hosts share two numbers; one host drops off.

The "hosts" are Linux network namespaces (root only): a bridge in the root namespace with
its own address, and per host a namespace joined to it by a veth pair. Redis and Postgres
(private servers of the run), the sandbox and the web app listen on the bridge's address
in the root namespace; each host runs its workers inside its namespace
(``ip netns exec HOST python -m wanotify worker …``), reaching them over its veth as
another machine would over the network.

One run: two numbers at 80 mps, a marketing backlog enqueued through the web app's batch
endpoint (held until every worker is up, so all hosts start together), OTPs arriving
through ``POST /v1/notifications`` all along; ``--cut-at`` seconds into the drain the
network of the busiest host is cut (``ip netns exec HOST ip link set eth0 down``) for
``--cut-seconds``, then restored. Its leases expire, the other hosts take the numbers over.

Measured at the sandbox (``/_sandbox/messages``, which logs each request's peer address):
per-number utilisation over the backlog (sends per second ÷ the configured limit),
130429 answers, the busiest sliding second, OTP enqueue → sandbox p50/p99, duplicate sends
per job (and whether each is a request the cut host had in flight), jobs lost, how long
each number paused after the cut, and which host sent what.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import redis
from rich.console import Console
from rich.table import Table
from sqlalchemy import create_engine, text

from wanotify.config import reset_settings
from wanotify.core.status import OUTCOMES
from wanotify.db import dispose_engine
from wanotify.db.migrate import upgrade
from wanotify.devtools.bench.common import (
    BenchEnv,
    median,
    percentile,
    sandbox_log,
    start_sandbox,
    wait_until,
    window_counts,
)
from wanotify.devtools.bench.pacing import make_senders
from wanotify.devtools.procs import Proc, free_port, wait_http, wait_worker
from wanotify.devtools.servers import PrivatePostgres, PrivateRedis
from wanotify.pacing.lanes import prefix
from wanotify.queues.app import make_app
from wanotify.queues.names import QUEUE_FOR_KIND, TASK_DISPATCH
from wanotify.redis import reset_clients

console = Console()

# Settings of every process of the run: a lease short enough for the others to take over
# well inside the cut, the sweeper looking often, sends timing out after 2 s.
RUN_ENV = {
    "WANOTIFY_LEASE_S": "3",
    "WANOTIFY_SWEEP_INTERVAL_S": "1",
    "WANOTIFY_HTTP_TIMEOUT_S": "2",
    "WANOTIFY_BROKER_VISIBILITY_TIMEOUT_S": "20",
    "WANOTIFY_WORKER_METRICS_PORT": "0",
    "WANOTIFY_OTP_DELIVERY_DEADLINE_S": "600",
}
# Requests the sandbox received from the cut host this long before the cut count as in
# flight (answers take milliseconds; a busy host's jitter is tens of ms).
IN_FLIGHT_WINDOW_S = 0.5


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip() or done.returncode}")
    return done


def require_root() -> None:
    """Refuse clearly where network namespaces cannot be made."""
    if os.geteuid() != 0:
        raise PermissionError("bench hosts needs root: it creates network namespaces (ip netns) and veth pairs")
    if shutil.which("ip") is None:
        raise RuntimeError("bench hosts needs iproute2's `ip` on the PATH")


@dataclass
class Host:
    name: str  # host1, host2 …
    netns: str
    veth: str  # the root side, on the bridge; the host's side is eth0 in its namespace
    addr: str

    @property
    def exec_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.netns]


class Network:
    """A bridge in the root namespace (``10.77.K.1/24``) and one namespace per host, each
    joined to it by a veth pair (``10.77.K.(10+N)``); ``down()`` removes all of it."""

    def __init__(self, hosts: int) -> None:
        self.tag = uuid.uuid4().hex[:4]
        used = _ip("-o", "-4", "addr").stdout
        k = next((k for k in range(77, 250) if f"10.77.{k}." not in used), None) if "10.77.77." in used else 77
        if k is None:
            raise RuntimeError("no free 10.77.K.0/24 subnet for the bench network")
        self.gateway = f"10.77.{k}.1"
        self.cidr = f"10.77.{k}.0/24"
        self.bridge = f"wnbr{self.tag}"
        self.hosts = [Host(f"host{n}", f"wn{self.tag}-host{n}", f"wnh{n}{self.tag}", f"10.77.{k}.{10 + n}")
                      for n in range(1, hosts + 1)]

    def up(self) -> None:
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for h in self.hosts:
            _ip("netns", "add", h.netns)
            _ip("link", "add", h.veth, "type", "veth", "peer", "name", "eth0", "netns", h.netns)
            _ip("link", "set", h.veth, "master", self.bridge)
            _ip("link", "set", h.veth, "up")
            _ip("-n", h.netns, "addr", "add", f"{h.addr}/24", "dev", "eth0")
            _ip("-n", h.netns, "link", "set", "eth0", "up")
            _ip("-n", h.netns, "link", "set", "lo", "up")

    def cut(self, h: Host) -> None:
        _ip("netns", "exec", h.netns, "ip", "link", "set", "eth0", "down")

    def restore(self, h: Host) -> None:
        _ip("netns", "exec", h.netns, "ip", "link", "set", "eth0", "up")

    def down(self) -> None:
        for h in self.hosts:
            _ip("netns", "del", h.netns, check=False)  # takes its veth pair with it
            _ip("link", "del", h.veth, check=False)
        _ip("link", "del", self.bridge, check=False)

    def host_of(self, addr: str | None) -> str:
        return next((h.name for h in self.hosts if h.addr == addr), addr or "?")


@contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP unwind like Ctrl-C, so every ``finally`` cleans up."""
    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    saved = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in saved.items():
            signal.signal(s, h)


@dataclass
class HostsResult:
    jobs: int = 0
    otps: int = 0
    cut_host: str = ""
    cut_at: float = 0.0  # wall clock
    restored_at: float = 0.0
    seconds: float = 0.0
    util_min: float | None = None
    util_mean: float | None = None
    util_outside_pause_min: float | None = None
    r130429: int = 0
    busiest_sliding_pct: float = 0.0
    otp_p50_ms: float | None = None
    otp_p99_ms: float | None = None
    otp_p99_outside_pause_ms: float | None = None
    otp_post_p50_ms: float | None = None  # the API's answer to the OTP's POST
    duplicates: int = 0
    duplicates_unexplained: int = 0
    in_flight_at_cut: int = 0
    jobs_lost: int = 0
    not_final: int = 0
    pause_after_cut_s: float | None = None
    cut_host_sent_after_restore: int = 0
    cut_host_workers_alive: bool = False
    workers_died: list[str] = field(default_factory=list)
    sends_by_host: dict[str, int] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class Stack:
    env: BenchEnv
    net: Network
    web: str
    sandbox: str
    api: httpx.Client
    workers: dict[str, list[Proc]] = field(default_factory=dict)


def _backlog(senders: list[dict[str, Any]], seconds: float) -> list[dict[str, Any]]:
    """Marketing jobs, each to its own recipient (the pair limit is not under test here)."""
    jobs: list[dict[str, Any]] = []
    for s_i, s in enumerate(senders):
        for i in range(int(s["mps"] * seconds)):
            jobs.append({"to": f"+9199{s_i:02d}{i:06d}", "template": "seasonal_sale", "language": "en",
                         "kind": "marketing", "sender": s["name"],
                         "params": {"body": [f"Customer {i}", f"{10 + i % 40}%"]}})
    return jobs


def _enqueue(api: httpx.Client, bodies: list[dict[str, Any]]) -> list[str]:
    ids: list[str] = []
    for k in range(0, len(bodies), 1000):
        r = api.post("/v1/notifications:batch", json=bodies[k : k + 1000])
        r.raise_for_status()
        for x in r.json()["results"]:
            if "id" not in x:
                raise RuntimeError(f"bench job refused: {x}")
            ids.append(x["id"])
    return ids


def _otp_stream(stop: threading.Event, api_url: str, key: str, senders: list[dict[str, Any]], rate: float,
                enqueued: dict[str, float], answered_ms: list[float]) -> None:
    with httpx.Client(base_url=api_url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as api:
        i = 0
        while not stop.wait(1.0 / rate):
            i += 1
            body = {"to": f"+9198{7000000 + i:08d}", "template": "otp_code", "language": "en", "kind": "otp",
                    "sender": senders[i % len(senders)]["name"], "params": {"body": [f"{(i * 7919) % 10**6:06d}"]}}
            t0 = time.time()
            r = api.post("/v1/notifications", json=body)
            answered_ms.append((time.time() - t0) * 1000)
            if r.status_code == 202:
                enqueued[r.json()["id"]] = t0


@contextmanager
def private_env(net: Network, senders: list[dict[str, Any]]) -> Iterator[BenchEnv]:
    """A Redis and a Postgres of this run only, on the bridge's address (every host reaches
    them; no shared server is touched), and the settings every process of the run shares."""
    workdir = Path(tempfile.mkdtemp(prefix="wanotify-bench-hosts-"))
    os.chmod(workdir, 0o700)
    saved = dict(os.environ)
    redis_srv = PrivateRedis(workdir, bind=net.gateway)
    pg = PrivatePostgres(host=net.gateway)
    try:
        redis_srv.start()
        pg.allow(net.cidr)
        pg.start()
        db_url = pg.url("wanotify")
        os.environ.update({
            "WANOTIFY_DATABASE_URL": db_url,
            "WANOTIFY_REDIS_URL": redis_srv.url,
            "WANOTIFY_APP_SECRET": os.environ.get("WANOTIFY_APP_SECRET", "bench-secret"),
            "WANOTIFY_API_KEYS": os.environ.get("WANOTIFY_API_KEYS", "bench-key"),
            "WANOTIFY_LOG_LEVEL": "WARNING",
            "WANOTIFY_QUIET_HOURS": "off",  # marketing is not held at night
            "WANOTIFY_SENDERS": json.dumps(senders),
            **RUN_ENV,
        })
        reset_settings()
        reset_clients()
        dispose_engine()
        upgrade(db_url)
        env = BenchEnv(dict(os.environ), workdir, redis_srv.url, db_url)
        try:
            yield env
        finally:
            env.stop()
    finally:
        dispose_engine()
        redis_srv.kill()
        pg.remove()
        os.environ.clear()
        os.environ.update(saved)
        reset_settings()
        reset_clients()


def _start_stack(env: BenchEnv, net: Network) -> Stack:
    _, sb_url = start_sandbox(env, host=net.gateway, realtime=True)
    port = free_port(host=net.gateway)
    web_url = f"http://{net.gateway}:{port}"
    web = env.start("web", ["web", "--host", net.gateway, "--port", str(port)])
    wait_http(f"{web_url}/healthz", web)
    key = env.env["WANOTIFY_API_KEYS"].split(",")[0]
    api = httpx.Client(base_url=web_url, headers={"Authorization": f"Bearer {key}"}, timeout=60)
    return Stack(env, net, web_url, sb_url, api)


def _start_workers(st: Stack, workers_per_host: int) -> None:
    for h in st.net.hosts:
        st.workers[h.name] = []
        for i in range(workers_per_host):
            node = f"{h.name}w{i}-{uuid.uuid4().hex[:4]}"
            p = st.env.start(f"{h.name}-worker{i}", ["worker", "--concurrency", "16", "-n", f"{node}@%h"],
                             prefix=h.exec_prefix)
            st.workers[h.name].append(p)
    for procs in st.workers.values():
        for p in procs:
            wait_worker(st.env.redis_url, p, timeout=90, node=p.args[-1].split("@")[0])


def _busiest_host(st: Stack, window_s: float = 1.0) -> Host:
    """The host that sent most in the last second (it owns the most numbers now)."""
    with httpx.Client(base_url=st.sandbox, timeout=10) as c:
        last = int(c.get("/_sandbox/messages", params={"limit": 1}).json()["last_seq"])
        recent = c.get("/_sandbox/messages", params={"after": max(0, last - 400), "limit": 400}).json()["data"]
    now = time.time()
    counts = Counter(m["peer"] for m in recent if m["t"] >= now - window_s)
    by_addr = {h.addr: h for h in st.net.hosts}
    for addr, _ in counts.most_common():
        if addr in by_addr:
            return by_addr[addr]
    return st.net.hosts[0]


def _statuses(db_url: str) -> dict[str, str]:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT id::text, status FROM notifications")).all()
    finally:
        engine.dispose()
    return {r[0]: r[1] for r in rows}


def run_once(net: Network, senders: list[dict[str, Any]], backlog_s: float, workers_per_host: int,
             otp_rate: float, cut_at_s: float, cut_s: float, timeout: float) -> HostsResult:
    backlog = _backlog(senders, backlog_s)
    with private_env(net, senders) as env:
        return _drive(env, net, senders, backlog, workers_per_host, otp_rate, cut_at_s, cut_s, timeout)


def _drive(env: BenchEnv, net: Network, senders: list[dict[str, Any]], backlog: list[dict[str, Any]],
           workers_per_host: int, otp_rate: float, cut_at_s: float, cut_s: float, timeout: float) -> HostsResult:
    st = _start_stack(env, net)
    # The whole backlog is in place before the numbers start: each number's dispatch is
    # held (its lease taken by the bench) while the jobs are enqueued and the hosts boot.
    rds = redis.Redis.from_url(env.redis_url)
    for s in senders:
        rds.set(prefix(s["name"]) + "owner", "bench-hold", px=600_000)
    with console.status(f"enqueueing {len(backlog)} marketing jobs through {st.web}"):
        ids = _enqueue(st.api, backlog)
    with console.status(f"starting {workers_per_host} worker(s) on each of {len(net.hosts)} hosts"):
        _start_workers(st, workers_per_host)
    time.sleep(1.0)
    app = make_app()  # the broker of this run (the module's app read the settings at import)
    for s in senders:
        rds.delete(prefix(s["name"]) + "owner")
        app.send_task(TASK_DISPATCH, args=[s["name"]], queue=QUEUE_FOR_KIND["marketing"])
    enqueued: dict[str, float] = {}
    answered: list[float] = []
    stop = threading.Event()
    key = env.env["WANOTIFY_API_KEYS"].split(",")[0]
    otp = threading.Thread(target=_otp_stream, args=(stop, st.web, key, senders, otp_rate, enqueued, answered),
                           daemon=True)
    otp.start()
    res = HostsResult(jobs=len(ids))
    try:
        if cut_s > 0:
            time.sleep(cut_at_s)
            victim = _busiest_host(st)
            res.cut_host = victim.name
            with console.status(f"{victim.name}'s network cut for {cut_s:.0f}s"):
                net.cut(victim)
                res.cut_at = time.time()
                try:
                    time.sleep(cut_s)
                finally:
                    net.restore(victim)
                    res.restored_at = time.time()
            console.print(f"{victim.name} ({victim.addr}) cut at +{cut_at_s:.0f}s for {cut_s:.0f}s, restored")
        else:  # steady pacing only: no cut (every duplicate is then unexplained)
            res.cut_host = net.hosts[0].name
            res.cut_at = res.restored_at = math.inf

        def drained() -> bool:
            return not any(v in ("queued", "sending") for v in _statuses(env.database_url).values())

        with console.status("draining the backlog (OTPs arriving)"):
            ok = wait_until(drained, timeout, 1.0)
    finally:
        stop.set()
        otp.join()
    wait_until(lambda: all(_statuses(env.database_url).get(k) not in ("queued", "sending")
                           for k in list(enqueued)), 30, 0.5)
    if not ok:
        res.notes.append(f"backlog not drained within {timeout:.0f}s")
    res.workers_died = [p.name for procs in st.workers.values() for p in procs if not p.alive()]
    res.cut_host_workers_alive = all(p.alive() for p in st.workers[res.cut_host])
    log = sandbox_log(st.sandbox)
    final = _statuses(env.database_url)
    st.api.close()
    _analyse(res, log, senders, set(ids), dict(enqueued), final, net)
    res.otp_post_p50_ms = percentile(answered, 0.5)
    return res


def _analyse(res: HostsResult, log: list[dict[str, Any]], senders: list[dict[str, Any]], backlog: set[str],
             otps: dict[str, float], final: dict[str, str], net: Network) -> None:
    limits = {s["phone_number_id"]: float(s["mps"]) for s in senders}
    cut_addr = next(h.addr for h in net.hosts if h.name == res.cut_host)
    ours = [m for m in log if m["phone_number_id"] in limits]
    accepted = [m for m in ours if m["code"] == 0]
    res.otps = len(otps)
    res.r130429 = sum(1 for m in ours if m["code"] == 130429)
    res.sends_by_host = dict(sorted(Counter(net.host_of(m["peer"]) for m in accepted).items()))
    res.cut_host_sent_after_restore = sum(1 for m in ours if m["peer"] == cut_addr and m["t"] > res.restored_at)
    pauses = _pacing(res, ours, accepted, limits, backlog)
    _duplicates(res, ours, accepted, cut_addr, backlog | set(otps))
    _otp_latency(res, accepted, otps, pauses)
    sent = {m["biz_opaque_callback_data"] for m in accepted}
    res.jobs_lost = sum(1 for j in backlog | set(otps) if j not in sent)
    res.statuses = dict(Counter(final.get(j, "missing") for j in backlog | set(otps)))
    res.not_final = sum(1 for j in backlog | set(otps) if final.get(j) not in OUTCOMES | {"accepted", "sent"})


def _pacing(res: HostsResult, ours: list[dict[str, Any]], accepted: list[dict[str, Any]],
            limits: dict[str, float], backlog: set[str]) -> dict[str, tuple[float, float]]:
    """Utilisation, the busiest second and each number's pause after the cut (returned)."""
    pauses: dict[str, tuple[float, float]] = {}
    utils: list[float] = []
    utils_outside: list[float] = []
    busiest = 0.0
    for pnid, limit in limits.items():
        _, sliding = window_counts([m["t"] for m in ours if m["phone_number_id"] == pnid])
        busiest = max(busiest, sliding / limit)
        times = sorted(m["t"] for m in accepted if m["phone_number_id"] == pnid)
        bulk = sorted(m["t"] for m in accepted if m["phone_number_id"] == pnid
                      and m["biz_opaque_callback_data"] in backlog)
        before = [t for t in times if t <= res.cut_at]
        after = [t for t in times if t > res.cut_at]
        if after:
            start = before[-1] if before else res.cut_at
            pauses[pnid] = (start, after[0])
        # Over the backlog (its first send until 90% of it was sent), every send of the
        # number counts: the OTPs use the same limit.
        if len(bulk) >= 10:
            k = max(1, int(len(bulk) * 0.9)) - 1
            n = sum(1 for t in times if bulk[0] <= t <= bulk[k]) - 1
            span = bulk[k] - bulk[0]
            gap = pauses.get(pnid)
            pause = (gap[1] - gap[0]) if gap and bulk[0] <= gap[0] and gap[1] <= bulk[k] else 0.0
            if span > 0:
                utils.append(n / span / limit)
            if span - pause > 0:
                utils_outside.append(n / (span - pause) / limit)
    res.busiest_sliding_pct = busiest * 100
    if os.environ.get("WANOTIFY_BENCH_DEBUG"):
        _debug_counts(accepted, limits, res.cut_at)
    if utils:
        res.util_min, res.util_mean = min(utils), sum(utils) / len(utils)
    if utils_outside:
        res.util_outside_pause_min = min(utils_outside)
    if pauses:
        res.pause_after_cut_s = max(b - res.cut_at for _, b in pauses.values())
    first = min((m["t"] for m in accepted), default=0.0)
    last = max((m["t"] for m in accepted), default=0.0)
    res.seconds = last - first
    return pauses


def _debug_counts(accepted: list[dict[str, Any]], limits: dict[str, float], cut_at: float) -> None:
    """WANOTIFY_BENCH_DEBUG: each number's accepted sends per second, with the sending host."""
    t0 = int(min((m["t"] for m in accepted), default=cut_at))
    for pnid in limits:
        per: dict[int, Counter[str]] = defaultdict(Counter)
        for m in accepted:
            if m["phone_number_id"] == pnid:
                per[int(m["t"]) - t0][(m["peer"] or "?").rsplit(".", 1)[-1]] += 1
        cells = [f"{k}:{sum(c.values())}({'/'.join(sorted(c))})" for k, c in sorted(per.items())]
        console.print(f"{pnid} (cut at +{cut_at - t0:.1f}s): " + " ".join(cells))


def _duplicates(res: HostsResult, ours: list[dict[str, Any]], accepted: list[dict[str, Any]], cut_addr: str,
                jobs: set[str]) -> None:
    """Jobs accepted more than once; each is explained when one of its copies is a request
    the cut host had in flight (received from it just before the cut, or after the restore:
    bytes it wrote while cut off reach the sandbox once the link is back)."""
    copies: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for m in accepted:
        if m["biz_opaque_callback_data"] in jobs:
            copies[m["biz_opaque_callback_data"]].append(m)
    res.in_flight_at_cut = sum(1 for m in ours if m["peer"] == cut_addr
                               and res.cut_at - IN_FLIGHT_WINDOW_S <= m["t"] <= res.cut_at)
    for sends in copies.values():
        if len(sends) < 2:
            continue
        res.duplicates += len(sends) - 1
        in_flight = any(m["peer"] == cut_addr and m["t"] >= res.cut_at - IN_FLIGHT_WINDOW_S for m in sends)
        if not in_flight:
            res.duplicates_unexplained += len(sends) - 1


def _otp_latency(res: HostsResult, accepted: list[dict[str, Any]], otps: dict[str, float],
                 pauses: dict[str, tuple[float, float]]) -> None:
    first: dict[str, dict[str, Any]] = {}
    for m in accepted:
        key = m["biz_opaque_callback_data"]
        if key in otps and key not in first:
            first[key] = m
    lat = [(m["t"] - otps[k]) * 1000 for k, m in first.items()]
    # OTPs enqueued while their number had no dispatcher (cut → taken over) wait for it.
    outside = [(m["t"] - otps[k]) * 1000 for k, m in first.items()
               if not (m["phone_number_id"] in pauses
                       and pauses[m["phone_number_id"]][0] <= otps[k] <= pauses[m["phone_number_id"]][1])]
    res.otp_p50_ms = percentile(lat, 0.5)
    res.otp_p99_ms = percentile(lat, 0.99)
    res.otp_p99_outside_pause_ms = percentile(outside, 0.99)


def run(runs: int = 1, hosts: int = 3, senders: int = 2, mps: int = 80, backlog_s: float = 30.0,
        workers_per_host: int = 1, otp_rate: float = 5.0, cut_at_s: float = 10.0, cut_s: float = 10.0,
        json_path: str | None = None, quiet: bool = False) -> list[HostsResult]:
    """``runs`` runs (a fresh stack each, one network for all); the table shows medians."""
    require_root()
    cfg = make_senders(senders, mps, 0)
    console.print(f"[bold]bench hosts[/bold]: {hosts} hosts (network namespaces) × {workers_per_host} worker(s); "
                  f"{senders} numbers × {mps} mps; backlog {backlog_s:.0f}s per number; OTP {otp_rate}/s; "
                  + (f"the busiest host cut off at +{cut_at_s:.0f}s for {cut_s:.0f}s; " if cut_s > 0 else "no cut; ")
                  + f"{runs} run(s); "
                  f"{os.cpu_count()} cores")
    results: list[HostsResult] = []
    net = Network(hosts)
    with _terminate_as_interrupt():
        try:
            net.up()
            for i in range(runs):
                results.append(run_once(net, cfg, backlog_s, workers_per_host, otp_rate, cut_at_s, cut_s,
                                        timeout=backlog_s * 4 + cut_s + 120))
                console.print(f"run {i + 1}/{runs} done")
        finally:
            net.down()
    if not quiet:
        print_table(results, mps)
    if json_path:
        Path(json_path).write_text(json.dumps({"runs": [asdict(r) for r in results],
                                               "median": summary(results)}, indent=2))
    return results


ROWS: list[tuple[str, str, str]] = [
    ("jobs (marketing backlog, via the batch endpoint)", "jobs", ".0f"),
    ("OTPs (POST /v1/notifications during the drain)", "otps", ".0f"),
    ("seconds from first to last send", "seconds", ".1f"),
    ("utilisation %, worst number (all its sends ÷ limit, backlog's first send → 90%)", "util_min", ".1f"),
    ("utilisation %, mean", "util_mean", ".1f"),
    ("utilisation %, worst number, takeover pause left out", "util_outside_pause_min", ".1f"),
    ("130429 answers", "r130429", ".0f"),
    ("busiest sliding 1 s, % of the limit", "busiest_sliding_pct", ".1f"),
    ("OTP enqueue → sandbox p50 (ms)", "otp_p50_ms", ".0f"),
    ("OTP enqueue → sandbox p99 (ms)", "otp_p99_ms", ".0f"),
    ("OTP p99, those waiting for the takeover left out (ms)", "otp_p99_outside_pause_ms", ".0f"),
    ("OTP POST /v1/notifications answered, p50 (ms)", "otp_post_p50_ms", ".0f"),
    ("longest pause of a number after the cut (s)", "pause_after_cut_s", ".1f"),
    ("duplicate sends (same job accepted twice)", "duplicates", ".0f"),
    ("… not a request the cut host had in flight", "duplicates_unexplained", ".0f"),
    (f"cut host's requests in the {IN_FLIGHT_WINDOW_S} s before the cut", "in_flight_at_cut", ".0f"),
    ("jobs lost (never accepted at the sandbox)", "jobs_lost", ".0f"),
    ("jobs not in a final state", "not_final", ".0f"),
    ("cut host's requests after the restore", "cut_host_sent_after_restore", ".0f"),
]
PCT = {"util_min", "util_mean", "util_outside_pause_min"}


def summary(results: list[HostsResult]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for _, attr, _ in ROWS:
        v = median([getattr(r, attr) for r in results])
        out[attr] = v * 100 if (v is not None and attr in PCT) else v
    return out


def print_table(results: list[HostsResult], mps: int) -> None:
    med = summary(results)
    t = Table(title=f"bench hosts (median of {len(results)} run{'s' if len(results) > 1 else ''}; limit {mps} mps)")
    t.add_column("metric")
    t.add_column("value", justify="right")
    for label, attr, spec in ROWS:
        v = med[attr]
        t.add_row(label, "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:{spec}}")
    console.print(t)
    for i, r in enumerate(results, 1):
        alive = "alive" if r.cut_host_workers_alive else "[red]DEAD[/red]"
        cut = f"cut {r.cut_host} (workers {alive})" if math.isfinite(r.cut_at) else "no cut"
        console.print(f"run {i}: {cut}; sends by host {r.sends_by_host}; "
                      f"statuses {r.statuses}"
                      + (f"; workers died: {r.workers_died}" if r.workers_died else "")
                      + (f"; [yellow]{'; '.join(r.notes)}[/yellow]" if r.notes else ""))
