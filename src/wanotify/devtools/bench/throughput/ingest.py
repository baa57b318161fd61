"""Webhook ingest: the same signed status bodies to wanotify's receiver and to the textbook
one (an ORM row and a commit per status), counted from the rows each stores."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import orjson
from sqlalchemy import text

from wanotify.db import session_scope
from wanotify.devtools.bench.common import BenchEnv, percentile, wait_until
from wanotify.devtools.bench.throughput.figures import Ingest
from wanotify.devtools.bench.throughput.load import _quiet_gc
from wanotify.inbound.signature import sign


def status_posts(targets: list[tuple[str, str]], per_post: int, secret: str, pnid: str,
                 status: str, ts_offset: int = 0) -> list[tuple[bytes, str]]:
    """Signed webhook bodies in Meta's shape, ``per_post`` statuses each."""
    out = []
    ts = str(int(time.time()) + ts_offset)
    for k in range(0, len(targets), per_post):
        statuses = [
            {"id": wamid, "status": status, "timestamp": ts, "recipient_id": rcpt,
             "conversation": {"id": f"c{rcpt}", "origin": {"type": "utility"}},
             "pricing": {"billable": True, "pricing_model": "PMP", "category": "utility",
                         "type": "regular"}}
            for wamid, rcpt in targets[k : k + per_post]
        ]
        body = orjson.dumps({"object": "whatsapp_business_account", "entry": [{
            "id": "810000000000", "changes": [{"field": "messages", "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": "15550000000", "phone_number_id": pnid},
                "statuses": statuses}}]}]})
        out.append((body, sign(secret, body)))
    return out


def post_all(url: str, posts: list[tuple[bytes, str]], clients: int = 32) -> tuple[list[float], float]:
    """POST every body with ``clients`` concurrent connections: latencies (ms) and the start time."""
    lat: list[float] = []
    errors: list[int] = []

    async def client(conn: aiohttp.ClientSession, mine: list[tuple[bytes, str]]) -> None:
        for body, sig in mine:
            t = time.perf_counter()
            async with conn.post(url, data=body, headers={
                    "Content-Type": "application/json", "X-Hub-Signature-256": sig}) as resp:
                await resp.read()
                if resp.status != 200:
                    errors.append(resp.status)
            lat.append((time.perf_counter() - t) * 1000)

    async def main() -> float:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as conn:
            t0 = time.time()
            await asyncio.gather(*(client(conn, posts[i::clients]) for i in range(clients)))
            return t0

    _quiet_gc()
    t0 = asyncio.run(main())
    if errors:
        raise RuntimeError(f"webhook refused: HTTP {errors[:5]}")
    return lat, t0


def _count(sql: str) -> int:
    with session_scope() as s:
        return int(s.execute(text(sql)).scalar_one())


def run_ingest(name: str, url: str, posts: list[tuple[bytes, str]], events: int, count_sql: str,
               timeout: float = 300.0) -> Ingest:
    before = _count(count_sql)
    lat, t0 = post_all(url, posts)
    done_at: list[float] = []

    def done() -> bool:
        if _count(count_sql) - before >= events:
            done_at.append(time.time())
            return True
        return False

    ok = wait_until(done, timeout, 0.05)
    got = _count(count_sql) - before
    res = Ingest(name, got, got / ((done_at[0] if done_at else time.time()) - t0),
                 percentile(lat, 0.5), percentile(lat, 0.99))
    if not ok:
        res.notes.append(f"only {got} of {events} events stored within {timeout:.0f}s")
    return res


def sent_targets(n: int) -> list[tuple[str, str]]:
    """(wamid, recipient) of messages the send phase got accepted."""
    with session_scope() as s:
        rows = s.execute(text("SELECT wamid, to_number FROM notifications WHERE wamid IS NOT NULL"
                              " ORDER BY id LIMIT :n"), {"n": n}).all()
    return [(r.wamid, r.to_number.lstrip("+")) for r in rows]


def run_ingest_pair(env: BenchEnv, web_url: str, baseline_url: str, targets: list[tuple[str, str]],
                    per_post: int, pnid: str) -> tuple[Ingest, Ingest]:
    """The same signed bodies (``delivered`` then ``read`` for each message) to wanotify's
    receiver and to the textbook one."""
    # In-function: the textbook module reads the settings (broker, database) when it is
    # imported, so only once bench_env has set them.
    from wanotify.devtools.bench.textbook import TABLE  # noqa: PLC0415 (reads the settings on import)

    secret = env.env["WANOTIFY_APP_SECRET"]
    posts = (status_posts(targets, per_post, secret, pnid, "delivered")
             + status_posts(targets, per_post, secret, pnid, "read"))
    events = 2 * len(targets)
    ours = run_ingest("wanotify", f"{web_url}/webhooks/whatsapp", posts, events,
                      "SELECT count(*) FROM status_events")
    base = run_ingest("ORM row per commit", f"{baseline_url}/webhooks/whatsapp", posts, events,
                      f"SELECT count(*) FROM {TABLE}")
    return ours, base
