"""The web app factory: routers by resource, one error envelope, the hot paths, the schema.

Stable paths are listed in the README; each lives in a router of ``web.routers``. API-key
auth is a dependency (``web.auth``); errors are raised as ``web.errors.ApiError``.
"""

from __future__ import annotations

from functools import partial

from fastapi import FastAPI

from wanotify import __version__
from wanotify.config import Settings, get_settings
from wanotify.ops.collectors import register_collectors
from wanotify.web.errors import (
    MAX_JOB_BYTES,
    MAX_WEBHOOK_BYTES,
    error_response,
    install_handlers,
    too_large,
    webhook_too_large,
)
from wanotify.web.hot_paths import HotPaths
from wanotify.web.openapi_doc import install as document_api
from wanotify.web.routers import (
    campaigns,
    dead_letters,
    erasures,
    notifications,
    operations,
    webhooks,
)
from wanotify.web.security_headers import SecurityHeaders
from wanotify.web.state import WebState


def create_app(settings: Settings | None = None) -> FastAPI:
    state = WebState.build(settings or get_settings())
    register_collectors()
    app = FastAPI(
        title="wanotify",
        version=__version__,
        description="Outbound WhatsApp Business notifications: enqueue, track, receive Meta's webhooks.",
    )
    app.state.wanotify = state
    install_handlers(app)
    for module in (notifications, dead_letters, campaigns, erasures, webhooks, operations):
        app.include_router(module.router)
    app.add_middleware(SecurityHeaders)  # inside HotPaths, which adds the same headers itself
    # The two busiest endpoints skip the framework's per-request machinery (routing,
    # dependency solving, exception wrapping); their routes stay for the schema and behave
    # the same.
    app.add_middleware(HotPaths, routes={
        "/v1/notifications": (MAX_JOB_BYTES, lambda: error_response(too_large(MAX_JOB_BYTES)),
                              partial(notifications.enqueue_one, state)),
        "/webhooks/whatsapp": (MAX_WEBHOOK_BYTES, lambda: error_response(webhook_too_large()),
                               partial(webhooks.webhook_post, state)),
    })
    document_api(app)
    return app
