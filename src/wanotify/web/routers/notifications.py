"""``/v1/notifications``: enqueue one (also served by the hot path), a batch, read one."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from wanotify.accounts.api_keys import KeyRecord, KeyRejected, scope_job
from wanotify.core.errors import IdempotencyConflict, InvalidJob
from wanotify.core.jobs import Accepted
from wanotify.intake.service import notify_many, prepare
from wanotify.metrics import JOBS_ACCEPTED, JOBS_REJECTED
from wanotify.ops.views import notification_view
from wanotify.web.auth import ApiKey, authorize, scoped
from wanotify.web.errors import (
    DEPENDENCY_DOWN,
    MAX_BATCH,
    MAX_BATCH_BYTES,
    MAX_JOB_BYTES,
    ApiError,
    error_response,
    field_error,
    parse_id,
    parse_json,
    read_body,
    read_json,
    stored_not_queued,
    unavailable,
)
from wanotify.web.state import WebState, get_state

router = APIRouter(prefix="/v1", tags=["notifications"])


def _conflict(record: KeyRecord, exc: IdempotencyConflict) -> str:
    # A scoped key is not told the id of a job it may not see.
    return f"idempotency key {exc.key!r} was already used with a different body" if record.scoped else str(exc)


async def enqueue_one(state: WebState, headers: Mapping[str, str], raw: bytes) -> Response:
    """``POST /v1/notifications`` on the raw request (shared by the route and the hot path)."""
    try:
        record = await authorize(state.keys, headers)
        data = scoped(record, parse_json(raw, MAX_JOB_BYTES))
        key = headers.get("idempotency-key")
        if key is not None and not (1 <= len(key) <= 255):
            raise field_error(422, "invalid_job", "invalid Idempotency-Key", "Idempotency-Key",
                              "must be 1 to 255 characters")
        try:
            prepared = prepare(data, idempotency_key=key)
            acc = await state.enqueue_writes.submit(prepared)
            if isinstance(acc, (IdempotencyConflict, InvalidJob)):
                raise acc
        except DEPENDENCY_DOWN as exc:
            raise unavailable(exc) from None
        except InvalidJob as exc:
            JOBS_REJECTED.labels("api").inc()
            raise ApiError(422, "invalid_job", str(exc), exc.as_json()) from None
        except IdempotencyConflict as exc:
            raise field_error(409, "idempotency_conflict", _conflict(record, exc),
                              "Idempotency-Key" if key else "idempotency_key", _conflict(record, exc)) from None
    except ApiError as exc:
        return error_response(exc)
    if not acc.duplicate:
        JOBS_ACCEPTED.labels(prepared.body.kind, "api").inc()
    if acc.pending_push:
        return error_response(stored_not_queued([acc.id]), id=acc.id, status=acc.status)
    return JSONResponse({"id": acc.id, "status": acc.status}, status_code=200 if acc.duplicate else 202)


@router.post("/notifications", status_code=202)
async def create_notification(request: Request) -> Response:
    return await enqueue_one(get_state(request), request.headers, await read_body(request, MAX_JOB_BYTES))


@router.post("/notifications:batch", status_code=202)
async def create_batch(record: ApiKey, request: Request) -> JSONResponse:
    data = await read_json(request, MAX_BATCH_BYTES)
    if not isinstance(data, list):
        raise field_error(422, "invalid_batch", "body must be a JSON array of jobs", "body", "must be a JSON array")
    if len(data) > MAX_BATCH:
        raise field_error(422, "invalid_batch", f"at most {MAX_BATCH} jobs per batch", "body",
                          f"{len(data)} jobs; the limit is {MAX_BATCH}")
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
    waiting = [r.id for r in results if isinstance(r, Accepted) and r.pending_push]
    if waiting:  # every job in "results" with an id is stored: the producer must not resend them
        return error_response(stored_not_queued(waiting), results=out)
    return JSONResponse({"results": out}, status_code=202)


@router.get("/notifications/{job_id:segment}")
async def get_notification(job_id: str, record: ApiKey) -> JSONResponse:
    view = await run_in_threadpool(notification_view, parse_id(job_id))
    if view is None or not record.allows(view["sender"]):  # another sender's: as if unknown
        raise field_error(404, "not_found", f"no notification {job_id}", "id", "unknown")
    return JSONResponse(view)

