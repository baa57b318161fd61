"""Meta's webhook: the verification handshake, and signed POSTs stored fast (200 at once).

Verify the signature over the raw body → store the body (group commit) → an ingest task
turns it into rows later. Postgres away: the body is kept in Redis (the sweeper moves it);
only if Redis is away too does Meta get a 503 and retry.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Mapping

from fastapi import APIRouter, Request, Response
from fastapi.responses import PlainTextResponse
from starlette.concurrency import run_in_threadpool

from wanotify.inbound.ingest import spool_webhook
from wanotify.inbound.signature import verify_signature
from wanotify.metrics import WEBHOOKS
from wanotify.web.errors import (
    MAX_WEBHOOK_BYTES,
    ApiError,
    error_response,
    field_error,
    webhook_too_large,
)
from wanotify.web.hot_paths import declared_over
from wanotify.web.state import WebState, get_state

log = logging.getLogger("wanotify.web")
router = APIRouter(tags=["webhooks"])


@router.get("/webhooks/whatsapp")
async def verify_webhook(request: Request) -> Response:
    q = request.query_params
    secret = get_state(request).settings.verify_token
    token = secret.get_secret_value() if secret else None
    given = q.get("hub.verify_token", "")
    if (
        q.get("hub.mode") == "subscribe"
        and token is not None
        and hmac.compare_digest(token.encode(), given.encode())
        and q.get("hub.challenge") is not None
    ):
        return PlainTextResponse(q["hub.challenge"])
    return error_response(field_error(403, "forbidden", "verification failed", "hub.verify_token",
                                      "does not match"))


async def webhook_post(state: WebState, headers: Mapping[str, str], raw: bytes) -> Response:
    """Meta's webhook POST on the raw body (shared by the route and the hot path)."""
    settings = state.settings
    if settings.app_secret is None:
        WEBHOOKS.labels("no_secret").inc()
        return error_response(ApiError(403, "forbidden",
                                       "WANOTIFY_APP_SECRET is not configured; webhooks are refused"))
    if len(raw) > MAX_WEBHOOK_BYTES:
        return error_response(webhook_too_large())
    header = headers.get("x-hub-signature-256")
    if not header:
        WEBHOOKS.labels("unsigned").inc()
        return error_response(field_error(401, "unauthorized", "missing X-Hub-Signature-256",
                                          "X-Hub-Signature-256", "missing"))
    if not verify_signature(settings.app_secret.get_secret_value(), raw, header):
        WEBHOOKS.labels("bad_signature").inc()
        return error_response(field_error(403, "forbidden", "signature does not match the body",
                                          "X-Hub-Signature-256", "does not match"))
    try:
        await state.webhook_writes.submit(raw)
    except Exception:
        # Postgres away: keep the body in Redis (the sweeper moves it to the inbox when
        # Postgres is back). Only if Redis is away too does Meta get a 503 and retry.
        log.warning("webhook inbox unavailable; spooling the body in Redis", exc_info=True)
        try:
            await run_in_threadpool(spool_webhook, raw)
        except Exception:
            WEBHOOKS.labels("unavailable").inc()
            return error_response(ApiError(503, "unavailable", "cannot store the webhook now; retry later"))
        WEBHOOKS.labels("spooled").inc()
        return PlainTextResponse("OK")
    WEBHOOKS.labels("accepted").inc()
    return PlainTextResponse("OK")


@router.post("/webhooks/whatsapp")
async def receive_webhook(request: Request) -> Response:
    if declared_over(request.headers, MAX_WEBHOOK_BYTES):
        return error_response(webhook_too_large())
    return await webhook_post(get_state(request), request.headers, await request.body())
