"""``/v1/notifications``: enqueue one (also served by the hot path), a batch, read one, list."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from wanotify.accounts.api_keys import KeyRecord, KeyRejected, out_of_scope, scope_job
from wanotify.config import get_settings
from wanotify.core.errors import IdempotencyConflict, InvalidJob
from wanotify.core.jobs import Accepted
from wanotify.core.kinds import KINDS
from wanotify.core.phones import normalize_e164
from wanotify.core.status import ALL as STATUSES
from wanotify.intake.cancel import cancel
from wanotify.intake.service import notify_many, prepare
from wanotify.metrics import JOBS_ACCEPTED, JOBS_REJECTED
from wanotify.ops.listing import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    ListFilter,
    decode_cursor,
    list_notifications,
)
from wanotify.ops.views import notification_view
from wanotify.web.auth import ApiKey, authorize, rejected, scoped
from wanotify.web.errors import (
    DEPENDENCY_DOWN,
    MAX_BATCH,
    MAX_BATCH_BYTES,
    MAX_JOB_BYTES,
    ApiError,
    error_body,
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


@router.post("/notifications/{job_id:segment}:cancel")
async def cancel_notification(job_id: str, record: ApiKey) -> JSONResponse:
    """200 while the job was still queued (nothing handed to a provider), else 409."""
    got = await run_in_threadpool(cancel, parse_id(job_id), record.senders)
    if not got.found:  # another sender's: as if unknown
        raise field_error(404, "not_found", f"no notification {job_id}", "id", "unknown")
    if not got.cancelled:
        reason = f"the job is {got.status}: past cancelling once it has gone to a provider or ended"
        body = error_body("not_cancellable", reason, [{"field": "id", "reason": reason}])
        body["error"]["status"] = got.status
        return JSONResponse(body, status_code=409)
    return JSONResponse({"id": str(parse_id(job_id)), "status": "cancelled"})


@router.get("/notifications/{job_id:segment}")
async def get_notification(job_id: str, record: ApiKey) -> JSONResponse:
    view = await run_in_threadpool(notification_view, parse_id(job_id))
    if view is None or not record.allows(view["sender"]):  # another sender's: as if unknown
        raise field_error(404, "not_found", f"no notification {job_id}", "id", "unknown")
    return JSONResponse(view)


# -- listing -------------------------------------------------------------------------------
LIST_PARAMS = frozenset({"status", "kind", "sender", "to", "idempotency_key", "created_after", "created_before",
                         "limit", "cursor"})
MULTI = frozenset({"status", "kind", "sender"})  # repeated or comma-separated: any of them


def _bad(name: str, reason: str) -> ApiError:
    return field_error(422, "invalid_query", f"{name}: {reason}", name, reason)


def _time(name: str, value: str) -> datetime:
    # A "+" of an offset sent unencoded arrives as a space ("...T03:00:00 05:30").
    raw = re.sub(r" (\d\d:?\d\d)$", r"+\1", value.strip())
    try:
        at = datetime.fromisoformat(raw)
    except ValueError:
        raise _bad(name, "must be an ISO 8601 time with a zone, e.g. 2026-12-08T09:30:00+05:30") from None
    if at.tzinfo is None:
        raise _bad(name, "needs a time zone (Z or an offset such as +05:30)")
    return at


def _collect(params: list[tuple[str, str]]) -> tuple[dict[str, list[str]], dict[str, str]]:
    multi: dict[str, list[str]] = {k: [] for k in MULTI}
    one: dict[str, str] = {}
    for name, value in params:
        if name not in LIST_PARAMS:
            raise _bad(name[:64] or "(a parameter without a name)", f"unknown parameter (known: {', '.join(sorted(LIST_PARAMS))})")
        if name in MULTI:
            multi[name] += [v.strip() for v in value.split(",") if v.strip()]
        elif name in one:
            raise _bad(name, "given more than once")
        else:
            one[name] = value
    return multi, one


def _check_choices(multi: dict[str, list[str]], record: KeyRecord) -> None:
    for name, allowed in (("status", STATUSES), ("kind", KINDS)):
        bad = next((v for v in multi[name] if v not in allowed), None)
        if bad is not None:
            raise _bad(name, f"unknown {name} {bad[:64]!r} (one of: {', '.join(allowed)})")
    known = get_settings().sender_map
    for sender in multi["sender"]:
        if sender not in known:
            raise _bad("sender", f"unknown sender {sender[:64]!r}")
        if not record.allows(sender):
            raise rejected(out_of_scope(record, sender))


def list_filter(params: list[tuple[str, str]], record: KeyRecord) -> ListFilter:
    """The query of ``GET /v1/notifications`` checked: a 422 naming the first bad parameter
    (unknown ones included, so a misspelt filter is never silently ignored), a 403 for a
    sender outside a scoped key's."""
    multi, one = _collect(params)
    _check_choices(multi, record)
    to = None
    if "to" in one:
        try:
            to = normalize_e164(one["to"])
        except ValueError as exc:
            raise _bad("to", str(exc)) from None
    key = one.get("idempotency_key")
    if key is not None and not 0 < len(key) <= 255:
        raise _bad("idempotency_key", "must be 1 to 255 characters")
    limit, after_id = _page(one)
    ca = _time("created_after", one["created_after"]) if "created_after" in one else None
    cb = _time("created_before", one["created_before"]) if "created_before" in one else None
    return ListFilter(tuple(dict.fromkeys(multi["status"])), tuple(dict.fromkeys(multi["kind"])),
                      tuple(dict.fromkeys(multi["sender"])), to, key, ca, cb, limit, after_id)


def _page(one: dict[str, str]) -> tuple[int, Any]:
    limit = DEFAULT_LIMIT
    if "limit" in one:
        try:
            limit = int(one["limit"])
        except ValueError:
            raise _bad("limit", f"must be a whole number from 1 to {MAX_LIMIT}") from None
        if not 1 <= limit <= MAX_LIMIT:
            raise _bad("limit", f"must be a whole number from 1 to {MAX_LIMIT}")
    after_id = None
    if "cursor" in one:
        after_id = decode_cursor(one["cursor"].strip())
        if after_id is None:
            raise _bad("cursor", "not a cursor this API gave (use next_cursor of the previous page)")
    return limit, after_id


@router.get("/notifications")
async def list_jobs(record: ApiKey, request: Request) -> JSONResponse:
    """Jobs newest first: ``{"items": [...], "next_cursor"}`` (see ``ops.listing``)."""
    f = list_filter(request.query_params.multi_items(), record)
    page = await run_in_threadpool(list_notifications, f, record.senders)
    return JSONResponse(page)
