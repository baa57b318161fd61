"""Group commit: requests that arrive while a write is in flight share the next one.

Each HTTP request still gets its answer only after *its* rows are committed; under load
many requests ride on one transaction (one round trip, one fsync) instead of one each, and
alone a request is written at once, with nothing added to its latency.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

from starlette.concurrency import run_in_threadpool

T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    """Batches items for ``write`` (a blocking function: items → one result per item)."""

    def __init__(self, write: Callable[[list[T]], list[R]], max_batch: int = 500):
        self.write = write
        self.max_batch = max_batch
        self.waiting: list[tuple[T, asyncio.Future[R]]] = []
        self.running = False

    async def submit(self, item: T) -> R:
        fut: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self.waiting.append((item, fut))
        if not self.running:
            self.running = True
            asyncio.get_running_loop().create_task(self._drain())
        return await fut

    async def _drain(self) -> None:
        try:
            while self.waiting:
                batch = self.waiting[: self.max_batch]
                del self.waiting[: self.max_batch]
                try:
                    results = await run_in_threadpool(self.write, [item for item, _ in batch])
                except BaseException as exc:  # every waiter hears of the failure
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                    if not isinstance(exc, Exception):
                        raise
                    continue
                for (_, fut), res in zip(batch, results, strict=True):
                    if not fut.done():
                        fut.set_result(res)
        finally:
            self.running = False
