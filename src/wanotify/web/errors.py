"""The one error envelope of the HTTP API, and reading request bodies within their limits.

Every 4xx/5xx answer is ``{"error": {"code", "message", "fields": [{"field", "reason"}]}}``:
raised as :class:`ApiError` anywhere (a route, a dependency, a hot path) and turned into the
answer by :func:`error_response`, the only place that builds it.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from wanotify.db import POSTGRES_DOWN
from wanotify.redis import REDIS_DOWN
from wanotify.web.hot_paths import declared_over
from wanotify.web.routing import allowed_methods

MAX_JOB_BYTES = 64 * 1024
MAX_BATCH_BYTES = 16 * 1024 * 1024
MAX_BATCH = 1000
MAX_WEBHOOK_BYTES = 3 * 1024 * 1024
MAX_AUDIENCE_BYTES = 64 * 1024 * 1024  # ~1M CSV rows per upload; larger: several uploads or the CLI

Fields = list[dict[str, str]]


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, fields: Fields | None = None,
                 headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.fields = status, code, message, fields
        self.headers = dict(headers) if headers else None


def error_body(code: str, message: str, fields: Fields | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message}
    if fields is not None:
        body["fields"] = fields
    return {"error": body}


def error_response(exc: ApiError, **extra: Any) -> JSONResponse:
    return JSONResponse({**error_body(exc.code, exc.message, exc.fields), **extra},
                        status_code=exc.status, headers=exc.headers)


RETRY_AFTER_S = 5
# What the API answers while Postgres or Redis is away (also the type to catch them by).
DEPENDENCY_DOWN: tuple[type[Exception], ...] = (*POSTGRES_DOWN, *REDIS_DOWN)


def unavailable(exc: BaseException) -> ApiError:
    """503 with a Retry-After: nothing was stored (Postgres away), or the answer says what was."""
    which = "Postgres" if isinstance(exc, POSTGRES_DOWN) else "Redis"
    return ApiError(503, "unavailable", f"{which} is unavailable: nothing was stored; retry later",
                    headers={"Retry-After": str(RETRY_AFTER_S)})


def stored_not_queued(job_ids: list[str]) -> ApiError:
    """Stored in Postgres while Redis is away: safe, queued by the sweeper once Redis is back."""
    what = "the job was" if len(job_ids) == 1 else f"{len(job_ids)} jobs were"
    return ApiError(503, "unavailable", f"Redis is unavailable: {what} stored and will be sent once it"
                    " is back (do not enqueue again)", headers={"Retry-After": str(RETRY_AFTER_S)})


def field_error(status: int, code: str, message: str, field: str, reason: str) -> ApiError:
    """The usual case: one failing field and why."""
    return ApiError(status, code, message, [{"field": field, "reason": reason}])


def parse_id(value: str) -> uuid.UUID:
    """A resource id from the path (a 422 naming ``id`` if it is not a UUID)."""
    try:
        return uuid.UUID(value)
    except ValueError:
        raise field_error(422, "invalid_id", "not a valid id", "id", "must be a UUID") from None


def too_large(limit: int) -> ApiError:
    return field_error(413, "too_large", f"body larger than {limit} bytes", "body", f"over {limit} bytes")


def webhook_too_large() -> ApiError:
    return ApiError(413, "too_large", "webhook body over 3 MB")


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refused (413) past ``limit`` whether declared or actual."""
    if declared_over(request.headers, limit):
        raise too_large(limit)
    raw = await request.body()
    if len(raw) > limit:
        raise too_large(limit)
    return raw


def parse_json(raw: bytes, limit: int) -> Any:
    if len(raw) > limit:
        raise too_large(limit)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise field_error(422, "invalid_json", "malformed JSON", "body", f"malformed JSON: {exc}") from None


async def read_json(request: Request, limit: int) -> Any:
    return parse_json(await read_body(request, limit), limit)


async def read_object(request: Request, code: str, fields: set[str]) -> dict[str, Any]:
    """A small JSON object body with only the given fields (a 422 naming the first other)."""
    data = await read_json(request, MAX_JOB_BYTES)
    if not isinstance(data, dict):
        raise field_error(422, code, "body must be a JSON object", "body", "must be a JSON object")
    unknown = sorted(set(data) - fields)
    if unknown:
        raise field_error(422, code, "unknown field", unknown[0], "unknown field")
    return data


def install_handlers(app: FastAPI) -> None:
    """FastAPI's own errors (validation, 404, 405) in the same envelope."""

    async def api_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return error_response(exc)

    async def validation(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        fields = [{"field": ".".join(str(x) for x in e["loc"]), "reason": e["msg"]} for e in exc.errors()]
        return error_response(ApiError(422, "invalid_request", "request validation failed", fields))

    async def http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = allowed_methods(app, request.url.path)
        return error_response(ApiError(exc.status_code, "http_error", str(exc.detail), headers=headers))

    async def dependency_down(_: Request, exc: Exception) -> JSONResponse:
        return error_response(unavailable(exc))

    for kind in DEPENDENCY_DOWN:
        app.add_exception_handler(kind, dependency_down)
    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, validation)
    app.add_exception_handler(StarletteHTTPException, http)
