"""One event loop per worker process, on its own thread, with the long-lived clients.

Celery tasks (in any pool) hand coroutines to it; the HTTP client and its connection pool
live as long as the process (re-created after a fork).
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import threading
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import aiohttp
import redis.asyncio as aredis

from wanotify.config import get_settings
from wanotify.delivery import wakes
from wanotify.delivery.dispatch import Dispatcher
from wanotify.providers.whatsapp import new_client
from wanotify.redis import async_client

T = TypeVar("T")


class Runtime:
    def __init__(self) -> None:
        self.settings = get_settings()
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._run, name="wanotify-loop", daemon=True)
        self.thread.start()
        self._ready.wait()
        self.http: aiohttp.ClientSession = self.run(self._make_http())
        self.redis: aredis.Redis = async_client()

        self.dispatcher = Dispatcher(self.settings, self.http, self.redis)
        # Wakes for OTPs pushed, by any process, to a sender a drain of this process owns
        # (delivery/wakes.py); on a client of its own, since a subscription holds a connection.
        self.wake_redis: aredis.Redis = async_client()
        self.wakes = asyncio.run_coroutine_threadsafe(
            wakes.listen(self.wake_redis, self.dispatcher.wake), self.loop)
        # The send loop paces messages to the millisecond: keep collector pauses short.
        gc.collect()
        gc.freeze()
        gc.set_threshold(20_000, 50, 200)
        # The send loop shares the GIL with Celery's threads (a campaign fan-out validating a
        # chunk, an ingest parsing bodies): hand it over every millisecond, not every 5 ms,
        # or the loop, and the OTPs it carries, wait behind them.
        sys.setswitchinterval(0.001)

    async def _make_http(self) -> aiohttp.ClientSession:
        return new_client(self.settings)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        # Claims and records run in threads; enough of them for every sender's batches.
        self.loop.set_default_executor(ThreadPoolExecutor(32, thread_name_prefix="wanotify-db"))
        self.loop.call_soon(self._ready.set)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.wakes.cancel()

        async def _close() -> None:
            await self.http.close()
            await self.redis.aclose()
            await self.wake_redis.aclose()

        try:
            self.run(_close(), timeout=5)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)


_runtime: Runtime | None = None
_pid: int | None = None
_lock = threading.Lock()


def get_runtime() -> Runtime:
    global _runtime, _pid
    with _lock:
        if _runtime is None or _pid != os.getpid():
            _runtime = Runtime()
            _pid = os.getpid()
        return _runtime


def shutdown_runtime() -> None:
    global _runtime, _pid
    with _lock:
        if _runtime is not None and _pid == os.getpid():
            _runtime.close()
        _runtime = _pid = None


def sending() -> bool:
    """True while this process's dispatcher owns a number (a drain is running); never builds
    the runtime (a process that has none sends nothing)."""
    rt = _runtime
    return rt is not None and _pid == os.getpid() and bool(rt.dispatcher.wakers)
