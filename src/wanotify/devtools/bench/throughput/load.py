"""The load generator's pieces shared by the enqueue and ingest phases."""

from __future__ import annotations

import asyncio
import gc
import time

import aiohttp

from wanotify.devtools.bench.common import percentile


def _quiet_gc() -> None:
    """The load generator shares this process with everything the bench has kept so far:
    move that out of the collector's way so its pauses do not show up as server latency."""
    gc.collect()
    gc.freeze()


def paced(url: str, requests: list[tuple[bytes, dict[str, str]]], rate: float,
          ok: tuple[int, ...] = (200, 202)) -> tuple[float | None, float | None]:
    """Open loop: request *i* starts at ``i / rate`` s whatever the answers before it (as
    Meta's webhooks or a service's enqueues arrive); latency is counted from that planned
    instant, so a slow server cannot hide its queue. p50, p99 in ms."""
    lat: list[float] = []
    errors: list[int] = []

    async def one(conn: aiohttp.ClientSession, planned: float, body: bytes, headers: dict[str, str]) -> None:
        delay = planned - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        async with conn.post(url, data=body, headers=headers) as resp:
            await resp.read()
            if resp.status not in ok:
                errors.append(resp.status)
        lat.append((time.perf_counter() - planned) * 1000)

    async def main() -> None:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=512)) as conn:
            t0 = time.perf_counter() + 0.2
            await asyncio.gather(*(one(conn, t0 + i / rate, b, h) for i, (b, h) in enumerate(requests)))

    _quiet_gc()
    asyncio.run(main())
    if errors:
        raise RuntimeError(f"paced requests refused: HTTP {errors[:5]}")
    return percentile(lat, 0.5), percentile(lat, 0.99)
