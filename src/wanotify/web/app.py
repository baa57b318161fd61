"""HTTP surface (stable paths in DESIGN.md): the notifications API, Meta's webhook, health."""

from __future__ import annotations

import hmac
import logging
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from wanotify import __version__
from wanotify.config import Settings, get_settings
from wanotify.core.errors import IdempotencyConflict, InvalidJob
from wanotify.inbound.parse import verify_signature
from wanotify.ops.metrics import JOBS_ACCEPTED, JOBS_REJECTED, WEBHOOKS, register_collectors
from wanotify.web.group_commit import GroupCommit
from wanotify.web.hot_paths import HotPaths, declared_over
from wanotify.web.openapi_doc import install as document_api
from wanotify.web.routing import allowed_methods, strict_path_params
from wanotify.web.security_headers import SecurityHeaders

log = logging.getLogger("wanotify.web")

MAX_JOB_BYTES = 64 * 1024
MAX_BATCH_BYTES = 16 * 1024 * 1024
MAX_BATCH = 1000
MAX_WEBHOOK_BYTES = 3 * 1024 * 1024
MAX_AUDIENCE_BYTES = 64 * 1024 * 1024  # ~1M CSV rows per upload; larger: several uploads or the CLI


def _error(status: int, code: str, message: str, fields: list[dict[str, str]] | None = None,
           headers: dict[str, str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"error": {"code": code, "message": message}}
    if fields is not None:
        body["error"]["fields"] = fields
    return JSONResponse(body, status_code=status, headers=headers)


def _webhook_too_large() -> JSONResponse:
    return _error(413, "too_large", "webhook body over 3 MB")


def _too_large_args(limit: int) -> tuple[int, str, str, list[dict[str, str]]]:
    e = _too_large(limit)
    return e.status, e.code, e.message, e.fields or []


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, fields: list[dict[str, str]] | None = None,
                 headers: dict[str, str] | None = None):
        self.status, self.code, self.message, self.fields, self.headers = status, code, message, fields, headers


async def _body(request: Request, limit: int) -> bytes:
    """The raw body, refused (413) past ``limit`` whether declared or actual."""
    if declared_over(request.headers, limit):
        raise _too_large(limit)
    raw = await request.body()
    if len(raw) > limit:
        raise _too_large(limit)
    return raw


async def _json_body(request: Request, limit: int) -> Any:
    return _parse_json(await _body(request, limit), limit)


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "too_large", f"body larger than {limit} bytes",
                    [{"field": "body", "reason": f"over {limit} bytes"}])


def _parse_json(raw: bytes, limit: int) -> Any:
    if len(raw) > limit:
        raise _too_large(limit)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(422, "invalid_json", "malformed JSON", [{"field": "body", "reason": f"malformed JSON: {exc}"}]) from None


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    register_collectors()
    app = FastAPI(
        title="wanotify",
        version=__version__,
        description="Outbound WhatsApp Business notifications: enqueue, track, receive Meta's webhooks.",
    )

    from wanotify.accounts.api_keys import (
        Authenticator,
        KeyRecord,
        KeyRejected,
        campaign_sender,
        scope_job,
    )
    from wanotify.inbound.ingest import store_webhooks_and_kick
    from wanotify.intake.service import store

    # API keys: WANOTIFY_API_KEYS (unscoped, unlimited) and those made by `wanotify keys`
    # (cached in this process; see wanotify.accounts.api_keys for the revocation bound).
    keys = Authenticator(settings.api_key_set, settings.redis_url)

    def _rejected(exc: KeyRejected) -> ApiError:
        return ApiError(exc.status, exc.code, exc.message, exc.fields, exc.headers)

    async def _authorize(headers: Mapping[str, str]) -> KeyRecord:
        try:
            return await keys.authenticate(headers)
        except KeyRejected as exc:
            raise _rejected(exc) from None

    def _scoped(record: KeyRecord, data: Any) -> Any:
        try:
            return scope_job(record, data)
        except KeyRejected as exc:
            raise _rejected(exc) from None

    def _conflict(record: KeyRecord, exc: IdempotencyConflict) -> str:
        # A scoped key is not told the id of a job it may not see.
        return f"idempotency key {exc.key!r} was already used with a different body" if record.scoped else str(exc)

    def _unscoped(record: KeyRecord, what: str = "dead letters need") -> None:
        if record.scoped:
            raise ApiError(403, "forbidden", f"{what} an API key not scoped to senders",
                           [{"field": "Authorization", "reason": "API key scoped to senders"}])

    async def _campaign_in_scope(record: KeyRecord, cid: uuid.UUID) -> None:
        """Another sender's campaign is, for a scoped key, a campaign that does not exist."""
        if record.scoped:
            sender = await run_in_threadpool(campaign_sender, cid)
            if sender is None or not record.allows(sender):
                raise ApiError(404, "not_found", "no such campaign", [{"field": "id", "reason": "no such campaign"}])

    # Concurrent requests share transactions (see group_commit): each answer still waits
    # for its own commit.
    enqueue_writes: GroupCommit[Any, Any] = GroupCommit(store)
    webhook_writes: GroupCommit[bytes, int] = GroupCommit(store_webhooks_and_kick, max_batch=100)

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.code, exc.message, exc.fields, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        fields = [{"field": ".".join(str(x) for x in e["loc"]), "reason": e["msg"]} for e in exc.errors()]
        return _error(422, "invalid_request", "request validation failed", fields)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = allowed_methods(app, request.scope)
        return _error(exc.status_code, "http_error", str(exc.detail), headers=headers)

    # ---- notifications -------------------------------------------------------------

    async def enqueue_one(headers: Mapping[str, str], raw: bytes) -> Response:
        """``POST /v1/notifications`` on the raw request (shared by the route and the hot path)."""
        try:
            record = await _authorize(headers)
            data = _scoped(record, _parse_json(raw, MAX_JOB_BYTES))
            key = headers.get("idempotency-key")
            if key is not None and not (1 <= len(key) <= 255):
                raise ApiError(422, "invalid_job", "invalid Idempotency-Key",
                               [{"field": "Idempotency-Key", "reason": "must be 1 to 255 characters"}])
            from wanotify.intake.service import prepare

            try:
                prepared = prepare(data, idempotency_key=key)
                acc = await enqueue_writes.submit(prepared)
                if isinstance(acc, (IdempotencyConflict, InvalidJob)):
                    raise acc
            except InvalidJob as exc:
                JOBS_REJECTED.labels("api").inc()
                raise ApiError(422, "invalid_job", str(exc), exc.as_json()) from None
            except IdempotencyConflict as exc:
                raise ApiError(409, "idempotency_conflict", _conflict(record, exc),
                               [{"field": "Idempotency-Key" if key else "idempotency_key",
                                 "reason": _conflict(record, exc)}]) from None
        except ApiError as exc:
            return _error(exc.status, exc.code, exc.message, exc.fields, exc.headers)
        if not acc.duplicate:
            JOBS_ACCEPTED.labels(prepared.body.kind, "api").inc()
        return JSONResponse({"id": acc.id, "status": acc.status}, status_code=200 if acc.duplicate else 202)

    @app.post("/v1/notifications", status_code=202, tags=["notifications"])
    async def create_notification(request: Request) -> Response:
        return await enqueue_one(request.headers, await _body(request, MAX_JOB_BYTES))

    @app.post("/v1/notifications:batch", status_code=202, tags=["notifications"])
    async def create_batch(request: Request) -> JSONResponse:
        record = await _authorize(request.headers)
        data = await _json_body(request, MAX_BATCH_BYTES)
        if not isinstance(data, list):
            raise ApiError(422, "invalid_batch", "body must be a JSON array of jobs",
                           [{"field": "body", "reason": "must be a JSON array"}])
        if len(data) > MAX_BATCH:
            raise ApiError(422, "invalid_batch", f"at most {MAX_BATCH} jobs per batch",
                           [{"field": "body", "reason": f"{len(data)} jobs; the limit is {MAX_BATCH}"}])
        from wanotify.intake.service import notify_many

        # A scoped key's out-of-scope items are refused one by one; the rest go on.
        out: list[dict[str, Any]] = [{} for _ in data]
        todo: list[tuple[int, Any]] = []
        for i, item in enumerate(data):
            try:
                todo.append((i, scope_job(record, item)))
            except KeyRejected as exc:
                out[i] = {"error": {"code": exc.code, "message": exc.message, "fields": exc.fields}}
        results = await run_in_threadpool(notify_many, [item for _, item in todo])
        for (i, _), r in zip(todo, results, strict=True):
            if isinstance(r, InvalidJob):
                out[i] = {"error": {"code": "invalid_job", "message": str(r), "fields": r.as_json()}}
            elif isinstance(r, IdempotencyConflict):
                out[i] = {"error": {"code": "idempotency_conflict", "message": _conflict(record, r),
                                    "fields": [{"field": "idempotency_key", "reason": _conflict(record, r)}]}}
            else:
                out[i] = {"id": r.id, "status": r.status}
        return JSONResponse({"results": out}, status_code=202)

    @app.get("/v1/notifications/{job_id}", tags=["notifications"])
    async def get_notification(job_id: str, request: Request) -> JSONResponse:
        record = await _authorize(request.headers)
        try:
            jid = uuid.UUID(job_id)
        except ValueError:
            raise ApiError(422, "invalid_id", "not a valid id",
                           [{"field": "id", "reason": "must be a UUID"}]) from None
        from wanotify.ops.views import notification_view

        view = await run_in_threadpool(notification_view, jid)
        if view is None or not record.allows(view["sender"]):  # another sender's: as if unknown
            raise ApiError(404, "not_found", f"no notification {job_id}", [{"field": "id", "reason": "unknown"}])
        return JSONResponse(view)

    # ---- dead letters ---------------------------------------------------------------

    @app.get("/v1/dead-letters", tags=["dead letters"])
    async def dead_letters(request: Request, limit: int = 100, replayed: bool = False) -> JSONResponse:
        _unscoped(await _authorize(request.headers))
        from wanotify.ops.dlq import list_dead

        rows = await run_in_threadpool(list_dead, max(1, min(limit, 1000)), replayed)
        return JSONResponse({"dead_letters": rows})

    @app.get("/v1/dead-letters/{job_id}", tags=["dead letters"])
    async def dead_letter(job_id: str, request: Request) -> JSONResponse:
        _unscoped(await _authorize(request.headers))
        from wanotify.ops.dlq import show

        got = await run_in_threadpool(show, _uuid_or_422(job_id))
        if got is None:
            raise ApiError(404, "not_found", f"no dead letter {job_id}", [{"field": "id", "reason": "unknown"}])
        return JSONResponse(got)

    @app.post("/v1/dead-letters/{job_id}:replay", tags=["dead letters"])
    async def replay_dead_letter(job_id: str, request: Request) -> JSONResponse:
        _unscoped(await _authorize(request.headers))
        from wanotify.ops.dlq import ReplayRefused, replay

        try:
            out = await run_in_threadpool(replay, _uuid_or_422(job_id))
        except ReplayRefused as exc:
            raise ApiError(409, "replay_refused", str(exc), [{"field": "id", "reason": str(exc)}]) from None
        return JSONResponse(out, status_code=202)

    async def _object_body(request: Request, code: str, fields: set[str]) -> dict[str, Any]:
        """A small JSON object body with only the given fields (a 422 naming the first other)."""
        data = await _json_body(request, MAX_JOB_BYTES)
        if not isinstance(data, dict):
            raise ApiError(422, code, "body must be a JSON object",
                           [{"field": "body", "reason": "must be a JSON object"}])
        unknown = sorted(set(data) - fields)
        if unknown:
            raise ApiError(422, code, "unknown field", [{"field": unknown[0], "reason": "unknown field"}])
        return data

    # ---- campaigns -----------------------------------------------------------------

    from wanotify.campaigns.service import CampaignError

    def _campaign_error(exc: CampaignError) -> ApiError:
        code = {404: "not_found", 409: "conflict"}.get(exc.status, "invalid_campaign")
        return ApiError(exc.status, code, exc.reason, [{"field": exc.field, "reason": exc.reason}])

    @app.post("/v1/campaigns", status_code=201, tags=["campaigns"])
    async def create_campaign(request: Request) -> JSONResponse:
        record = await _authorize(request.headers)
        data = await _object_body(request, "invalid_campaign",
                                  {"name", "template", "language", "sender", "kind", "start_at", "cron"})
        for f in ("name", "template"):
            if not isinstance(data.get(f), str):
                raise ApiError(422, "invalid_campaign", f"{f} is required", [{"field": f, "reason": "required string"}])
        data = _scoped(record, data)  # a scoped key: its first sender by default, no other
        start_at = None
        if data.get("start_at") is not None:
            try:
                start_at = datetime.fromisoformat(str(data["start_at"]).replace("Z", "+00:00"))
            except ValueError:
                raise ApiError(422, "invalid_campaign", "start_at is not an ISO time",
                               [{"field": "start_at", "reason": "not an ISO 8601 time"}]) from None
        from wanotify.campaigns.service import create

        try:
            out = await run_in_threadpool(
                create, data["name"], data["template"], str(data.get("language", "en")), data.get("sender"),
                str(data.get("kind", "marketing")), start_at, data.get("cron"))
        except CampaignError as exc:
            raise _campaign_error(exc) from None
        return JSONResponse(out, status_code=201)

    @app.post("/v1/campaigns/{campaign_id}/audience", tags=["campaigns"])
    async def campaign_audience(campaign_id: str, request: Request) -> JSONResponse:
        record = await _authorize(request.headers)
        cid = _uuid_or_422(campaign_id)
        await _campaign_in_scope(record, cid)
        body = await _body(request, MAX_AUDIENCE_BYTES)
        from wanotify.campaigns.service import import_bytes

        try:
            report = await run_in_threadpool(import_bytes, cid, body, request.headers.get("content-type", ""))
        except CampaignError as exc:
            raise _campaign_error(exc) from None
        return JSONResponse(report.as_json())

    @app.get("/v1/campaigns/{campaign_id}", tags=["campaigns"])
    async def get_campaign(campaign_id: str, request: Request) -> JSONResponse:
        record = await _authorize(request.headers)
        cid = _uuid_or_422(campaign_id)
        await _campaign_in_scope(record, cid)
        from wanotify.campaigns.service import status

        try:
            return JSONResponse(await run_in_threadpool(status, cid))
        except CampaignError as exc:
            raise _campaign_error(exc) from None

    def _campaign_action(action: str) -> Any:
        async def handler(campaign_id: str, request: Request) -> JSONResponse:
            record = await _authorize(request.headers)
            cid = _uuid_or_422(campaign_id)
            await _campaign_in_scope(record, cid)
            from wanotify.campaigns.service import change

            try:
                return JSONResponse(await run_in_threadpool(change, cid, action))
            except CampaignError as exc:
                raise _campaign_error(exc) from None

        handler.__name__ = f"campaign_{action}"
        return handler

    for _action in ("start", "pause", "resume", "cancel"):
        app.post(f"/v1/campaigns/{{campaign_id}}:{_action}", tags=["campaigns"])(_campaign_action(_action))

    # ---- erasure (privacy.py) ------------------------------------------------------

    @app.post("/v1/erasures", tags=["privacy"])
    async def create_erasure(request: Request) -> JSONResponse:
        """Erase everything about one number (``{"phone": "+…", "dry_run": false}``); answers
        what was touched per table. Only an unscoped key may erase (a person spans senders)."""
        _unscoped(await _authorize(request.headers), "erasure needs")
        data = await _object_body(request, "invalid_erasure", {"phone", "dry_run"})
        if not isinstance(data.get("phone"), str) or not isinstance(data.get("dry_run", False), bool):
            bad = "phone" if not isinstance(data.get("phone"), str) else "dry_run"
            raise ApiError(422, "invalid_erasure", f"{bad} is invalid",
                           [{"field": bad, "reason": "required string" if bad == "phone" else "must be a boolean"}])
        from wanotify.compliance.retention import erase
        from wanotify.core.phones import normalize_e164

        try:
            normalize_e164(data["phone"])
        except ValueError as exc:
            raise ApiError(422, "invalid_erasure", "phone is not a number",
                           [{"field": "phone", "reason": str(exc)}]) from None
        report = await run_in_threadpool(erase, data["phone"], bool(data.get("dry_run", False)))
        return JSONResponse(report.as_json())

    # ---- Meta's webhook ------------------------------------------------------------

    @app.get("/webhooks/whatsapp", tags=["webhooks"])
    async def verify_webhook(request: Request) -> Response:
        q = request.query_params
        token = settings.verify_token.get_secret_value() if settings.verify_token else None
        given = q.get("hub.verify_token", "")
        if (
            q.get("hub.mode") == "subscribe"
            and token is not None
            and hmac.compare_digest(token.encode(), given.encode())
            and q.get("hub.challenge") is not None
        ):
            return PlainTextResponse(q["hub.challenge"])
        return _error(403, "forbidden", "verification failed",
                      [{"field": "hub.verify_token", "reason": "does not match"}])

    async def webhook_post(headers: Mapping[str, str], raw: bytes) -> Response:
        """Meta's webhook POST on the raw body (shared by the route and the hot path)."""
        if settings.app_secret is None:
            WEBHOOKS.labels("no_secret").inc()
            return _error(403, "forbidden", "WANOTIFY_APP_SECRET is not configured; webhooks are refused")
        if len(raw) > MAX_WEBHOOK_BYTES:
            return _webhook_too_large()
        header = headers.get("x-hub-signature-256")
        if not header:
            WEBHOOKS.labels("unsigned").inc()
            return _error(401, "unauthorized", "missing X-Hub-Signature-256",
                          [{"field": "X-Hub-Signature-256", "reason": "missing"}])
        if not verify_signature(settings.app_secret.get_secret_value(), raw, header):
            WEBHOOKS.labels("bad_signature").inc()
            return _error(403, "forbidden", "signature does not match the body",
                          [{"field": "X-Hub-Signature-256", "reason": "does not match"}])
        from wanotify.inbound.ingest import spool_webhook

        try:
            await webhook_writes.submit(raw)
        except Exception:
            # Postgres away: keep the body in Redis (the sweeper moves it to the inbox when
            # Postgres is back). Only if Redis is away too does Meta get a 503 and retry.
            log.warning("webhook inbox unavailable; spooling the body in Redis", exc_info=True)
            try:
                await run_in_threadpool(spool_webhook, raw)
            except Exception:
                WEBHOOKS.labels("unavailable").inc()
                return _error(503, "unavailable", "cannot store the webhook now; retry later")
            WEBHOOKS.labels("spooled").inc()
            return PlainTextResponse("OK")
        WEBHOOKS.labels("accepted").inc()
        return PlainTextResponse("OK")

    @app.post("/webhooks/whatsapp", tags=["webhooks"])
    async def receive_webhook(request: Request) -> Response:
        if declared_over(request.headers, MAX_WEBHOOK_BYTES):
            return _webhook_too_large()
        return await webhook_post(request.headers, await request.body())

    app.add_middleware(SecurityHeaders)  # inside HotPaths, which adds the same headers itself
    # The two busiest endpoints skip the framework's per-request machinery (routing,
    # dependency solving, exception wrapping); the routes above stay for the schema and
    # behave the same.
    app.add_middleware(HotPaths, routes={
        "/v1/notifications": (MAX_JOB_BYTES, lambda: _error(*_too_large_args(MAX_JOB_BYTES)), enqueue_one),
        "/webhooks/whatsapp": (MAX_WEBHOOK_BYTES, _webhook_too_large, webhook_post),
    })

    # ---- operations ----------------------------------------------------------------

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    @app.get("/readyz", tags=["operations"])
    async def readyz() -> JSONResponse:
        checks = await run_in_threadpool(_readiness, settings)
        ok = all(v == "ok" for v in checks.values())
        return JSONResponse({"status": "ok" if ok else "unavailable", "checks": checks}, status_code=200 if ok else 503)

    @app.get("/metrics", tags=["operations"])
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    strict_path_params(app)
    document_api(app)
    return app


def _uuid_or_422(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise ApiError(422, "invalid_id", "not a valid id",
                       [{"field": "id", "reason": "must be a UUID"}]) from None


def _readiness(settings: Settings) -> dict[str, str]:
    checks: dict[str, str] = {}
    try:
        from wanotify.db.migrate import at_head

        checks["postgres"] = "ok"
        checks["migrations"] = "ok" if at_head(settings.database_url) else "not at head: run wanotify migrate"
    except Exception as exc:
        checks["postgres"] = f"error: {type(exc).__name__}"
        checks.setdefault("migrations", "unknown")
    try:
        from wanotify.intake.service import get_redis

        get_redis().ping()
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"error: {type(exc).__name__}"
    return checks
