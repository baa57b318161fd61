"""A worker process holds at most WANOTIFY_MAX_IN_FLIGHT jobs between release and settlement
(real Redis, Postgres and the sandbox over HTTP; the drain runs in this process)."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

CAPPED = {"name": "capped", "phone_number_id": "106540352242931", "waba_id": "102290129340398",
          "display_phone_number": "+15550100031", "access_token": "sandbox-token-capped", "mps": 1000,
          "pair_interval_s": 0.001, "pair_burst": 100}


@pytest.fixture()
def capped_sender(services: dict[str, str], monkeypatch: pytest.MonkeyPatch, redis_client: Any,
                  tmp_path: Path) -> Iterator[Any]:
    """A sender only this process knows (a stack worker ignores its kicks), cap 40, and a
    sandbox of its own answering in 20 ms at 1,000 messages/s."""
    from wanotify.config import get_settings, reset_settings
    from wanotify.devtools.procs import Proc, free_port, wait_http
    from wanotify.pacing.lanes import prefix
    from wanotify.redis import reset_clients

    for key in redis_client.scan_iter(prefix("capped") + "*"):
        redis_client.delete(key)
    port = free_port()
    monkeypatch.setenv("WANOTIFY_SENDERS", json.dumps([CAPPED]))
    monkeypatch.setenv("WANOTIFY_GRAPH_API_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("WANOTIFY_MAX_IN_FLIGHT", "40")
    sandbox = Proc("sandbox", ["sandbox", "--port", str(port), "--webhook-url", ""],
                   {**os.environ, "WANOTIFY_SANDBOX_LATENCY_MS": "20", "WANOTIFY_SANDBOX_FAILURES": "[]"},
                   tmp_path / "sandbox.log")
    try:
        wait_http(f"http://127.0.0.1:{port}/_sandbox/healthz", sandbox)
        reset_settings()
        reset_clients()  # the lanes this process pushes to are the ones the drain reads
        yield get_settings()
    finally:
        sandbox.stop()
        monkeypatch.undo()
        reset_settings()
        reset_clients()


def test_a_drain_never_holds_more_than_the_cap_and_sends_everything(capped_sender: Any, db: Any) -> None:
    import redis.asyncio as aredis

    from wanotify.delivery.dispatch import Dispatcher
    from wanotify.intake.service import notify_many
    from wanotify.providers.whatsapp import new_client

    settings = capped_sender
    jobs = [{"to": f"+91981{n:07d}", "sender": "capped", "template": "order_confirmation_v2",
             "params": {"body": ["Asha", f"ORD-{n}", "₹1"]}} for n in range(600)]
    ids = [str(a.id) for a in notify_many(jobs)]  # type: ignore[union-attr]
    assert len(ids) == 600
    peak: list[int] = [0]

    async def main() -> Any:
        client = new_client(settings)
        r = aredis.Redis.from_url(settings.redis_url)
        d = Dispatcher(settings, client, r)
        real = d._batch

        async def watched(*args: Any, **kwargs: Any) -> None:
            peak[0] = max(peak[0], d.in_flight)
            await real(*args, **kwargs)

        d._batch = watched  # type: ignore[method-assign]
        try:
            sent = 0
            for _ in range(20):
                stats = await d.drain(settings.sender_map["capped"], slice_s=5)
                sent += stats.sent
                if not stats.depth_left:
                    break
            return sent, d.in_flight
        finally:
            await client.close()
            await r.aclose()

    sent, left = asyncio.run(main())
    assert 0 < peak[0] <= 40 and left == 0
    assert sent == 600
    with db() as s:
        got = dict(s.execute(text("SELECT status, count(*) FROM notifications"
                                  " WHERE id = ANY(CAST(:ids AS uuid[])) GROUP BY status"), {"ids": ids}).all())
    assert sum(got.get(k, 0) for k in ("accepted", "sent", "delivered", "read")) == 600, got
