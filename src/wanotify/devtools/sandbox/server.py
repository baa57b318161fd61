"""Run the sandbox under uvicorn (``wanotify sandbox``)."""

from __future__ import annotations

import gc
import importlib.util
import logging
import os

import uvicorn

from wanotify.config import Settings
from wanotify.devtools.sandbox.app import create_app

log = logging.getLogger("wanotify.devtools.sandbox")


def uvicorn_config(
    host: str, port: int, webhook_url: str | None, settings: Settings | None = None
) -> uvicorn.Config:
    """The uvicorn configuration ``run_sandbox`` uses (tests start it in a thread with it)."""
    app = create_app(settings, webhook_url=webhook_url)
    loop = "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") is not None else "h11"
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop=loop,
        http=http,
        log_level="warning",
        access_log=False,
        lifespan="on",
        backlog=4096,
        timeout_keep_alive=30,
        server_header=False,
    )


# The real-time priority ``--realtime`` asks for (SCHED_FIFO, low in its 1–99 range).
REALTIME_PRIORITY = 10


def ask_realtime() -> bool:
    """Schedule this thread (the event loop's) first whenever it is runnable (SCHED_FIFO).

    The sandbox stands in for Meta's servers, which do not share the machine with the load
    under test, and it counts arrivals per second to answer 130429. On a saturated host a
    process at normal priority can be kept off the CPU for 100 ms and more, then read the
    requests that queued meanwhile all at once: measured with a packet capture during
    ``wanotify bench pacing --intake burst`` on 2 cores, wire → sandbox timestamp p99 134 ms
    (max 166 ms), which put 81 arrivals in one second from sends spaced for 76. The loop
    spends most of its time waiting on sockets, so it takes little from the rest (and the
    kernel's real-time throttling leaves 5% of each CPU to others). Needs root or
    CAP_SYS_NICE; False (and a warning) where it is not allowed.
    """
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(REALTIME_PRIORITY))
    except (AttributeError, PermissionError, OSError) as exc:
        log.warning("sandbox: real-time scheduling not available (%s); arrival times may "
                    "be skewed when the machine is saturated", exc)
        return False
    return True


def run_sandbox(
    host: str, port: int, webhook_url: str | None, settings: Settings | None = None,
    realtime: bool = False,
) -> None:
    """Serve the sandbox until interrupted (one process, one event loop).

    The sandbox timestamps arrivals to enforce Meta's per-second limits, so its event loop
    must not stall: long-lived objects are moved out of the collector's sight and full
    collections (which scan the request log) are made rare; with ``realtime`` it is also
    scheduled ahead of everything else on the machine (``ask_realtime``).
    """
    if realtime:
        ask_realtime()
    server = uvicorn.Server(uvicorn_config(host, port, webhook_url, settings))
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 1000)
    server.run()
