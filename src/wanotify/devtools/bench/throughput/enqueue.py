"""Enqueue: ``POST /v1/notifications`` from concurrent clients, the batch endpoint, and the
Python API in bulk."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import orjson

from wanotify.devtools.bench.common import BenchEnv, percentile
from wanotify.devtools.bench.throughput.figures import job_bodies
from wanotify.devtools.bench.throughput.load import _quiet_gc
from wanotify.intake.service import notify_many


def _api_headers(env: BenchEnv) -> dict[str, str]:
    key = env.env["WANOTIFY_API_KEYS"].split(",")[0]
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}


def run_http_enqueue(env: BenchEnv, web_url: str, senders: list[dict[str, Any]], n: int,
                     clients: int = 32, offset: int = 0) -> tuple[float | None, float | None, float]:
    """``POST /v1/notifications`` from ``clients`` concurrent clients: p50, p99 (ms), jobs/s."""
    bodies = [orjson.dumps(b) for b in job_bodies(n, senders, offset=offset)]
    lat: list[float] = []
    errors: list[int] = []

    async def client(conn: aiohttp.ClientSession, mine: list[bytes]) -> None:
        for b in mine:
            t = time.perf_counter()
            async with conn.post(f"{web_url}/v1/notifications", data=b) as resp:
                await resp.read()
                if resp.status != 202:
                    errors.append(resp.status)
            lat.append((time.perf_counter() - t) * 1000)

    async def main() -> float:
        async with aiohttp.ClientSession(headers=_api_headers(env),
                                         connector=aiohttp.TCPConnector(limit=clients)) as conn:
            # warm the connections and the app
            await asyncio.gather(*(client(conn, bodies[i : i + 1]) for i in range(clients)))
            lat.clear()
            rest = bodies[clients:]
            t0 = time.perf_counter()
            await asyncio.gather(*(client(conn, rest[i::clients]) for i in range(clients)))
            return len(rest) / (time.perf_counter() - t0)

    _quiet_gc()
    rate = asyncio.run(main())
    if errors:
        raise RuntimeError(f"enqueue refused: HTTP {errors[:5]}")
    return percentile(lat, 0.5), percentile(lat, 0.99), rate


def run_batch_enqueue(env: BenchEnv, web_url: str, senders: list[dict[str, Any]], n: int,
                      batch: int = 500, clients: int = 4, offset: int = 0) -> float:
    """``POST /v1/notifications:batch``, ``batch`` jobs per request: jobs/s."""
    bodies = job_bodies(n, senders, offset=offset)
    chunks = [orjson.dumps(bodies[k : k + batch]) for k in range(0, n, batch)]
    errors: list[int] = []

    async def client(conn: aiohttp.ClientSession, mine: list[bytes]) -> None:
        for b in mine:
            async with conn.post(f"{web_url}/v1/notifications:batch", data=b) as resp:
                await resp.read()
                if resp.status not in (200, 202, 207):
                    errors.append(resp.status)

    async def main() -> float:
        async with aiohttp.ClientSession(headers=_api_headers(env)) as conn:
            t0 = time.perf_counter()
            await asyncio.gather(*(client(conn, chunks[i::clients]) for i in range(clients)))
            return n / (time.perf_counter() - t0)

    _quiet_gc()
    rate = asyncio.run(main())
    if errors:
        raise RuntimeError(f"batch enqueue refused: HTTP {errors[:5]}")
    return rate


def run_bulk_enqueue(senders: list[dict[str, Any]], n: int, offset: int = 0) -> float:
    """The Python API in bulk (``notify_many``), in this process: jobs/s."""
    bodies = job_bodies(n, senders, offset=offset)
    t0 = time.perf_counter()
    for acc in notify_many(bodies):
        if not hasattr(acc, "id"):
            raise RuntimeError(f"bench job refused: {acc}")
    return n / (time.perf_counter() - t0)
