"""Run the sandbox under uvicorn (``wanotify sandbox``)."""

from __future__ import annotations

import gc
import importlib.util
import logging

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


def run_sandbox(
    host: str, port: int, webhook_url: str | None, settings: Settings | None = None
) -> None:
    """Serve the sandbox until interrupted (one process, one event loop).

    The sandbox timestamps arrivals to enforce Meta's per-second limits, so its event loop
    must not stall: long-lived objects are moved out of the collector's sight and full
    collections (which scan the request log) are made rare.
    """
    server = uvicorn.Server(uvicorn_config(host, port, webhook_url, settings))
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 1000)
    server.run()
