"""ASGI entry point for uvicorn: ``wanotify.web.main:app``."""

import gc

from wanotify.web.app import create_app

app = create_app()

# What is loaded now lives as long as the process: keep it out of every collection, and
# collect the young generation less often (request objects die young anyway); fewer,
# shorter pauses in the tail of the answer latency.
gc.collect()
gc.freeze()
gc.set_threshold(20_000, 50, 200)
