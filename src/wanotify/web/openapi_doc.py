"""The OpenAPI schema says what the app really answers.

The routes read raw bodies (size limits, the hot paths), so FastAPI cannot infer their
request bodies, and its default error schema (``{"detail": [...]}``) is not what wanotify
sends. :func:`install` post-processes the generated schema once: request bodies from the
pydantic job model, success bodies, and every error answer with wanotify's error body
``{"error": {"code", "message", "fields": [{"field", "reason"}]}}``. Routes added later get
the generic rules (bearer auth, 401, 413, 422, 404 for ids) without editing this file.
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI

from wanotify.core.jobs import JobBody

ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}

ERROR_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "description": "machine-readable, e.g. invalid_job, too_large"},
                "message": {"type": "string"},
                "fields": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["field", "reason"],
                        "properties": {"field": {"type": "string"}, "reason": {"type": "string"}},
                    },
                },
            },
        },
        # A 503 for an enqueue stored while Redis was away names what was stored.
        "id": {"type": "string", "description": "503 of a single enqueue: the stored job"},
        "status": {"type": "string", "description": "503 of a single enqueue: the stored job's status"},
        "results": {"type": "array", "items": {"type": "object"},
                    "description": "503 of a batch: one result per job, as in its 202"},
    },
}

ACCEPTED: dict[str, Any] = {
    "type": "object",
    "required": ["id", "status"],
    "properties": {"id": {"type": "string", "format": "uuid"}, "status": {"type": "string"}},
}

BATCH_RESULTS: dict[str, Any] = {
    "type": "object",
    "required": ["results"],
    "properties": {
        "results": {
            "type": "array",
            "items": {"anyOf": [{"$ref": "#/components/schemas/Accepted"}, ERROR_REF]},
        }
    },
}

CAMPAIGN_CREATE: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "template"],
    "properties": {
        "name": {"type": "string"},
        "template": {"type": "string"},
        "language": {"type": "string"},
        "sender": {"type": ["string", "null"]},
        "kind": {"type": "string", "enum": ["marketing", "transactional"]},
        "start_at": {"type": ["string", "null"], "format": "date-time"},
        "cron": {"type": ["string", "null"]},
    },
}

_OBJECT = {"type": "object"}
_TEXT = {"text/plain": {"schema": {"type": "string"}}}

# What each answer means, for the descriptions.
_WHY = {
    "401": "missing or unknown credentials",
    "403": "refused (API: the key is scoped to other senders; webhook: no app secret configured,"
           " or the signature does not match)",
    "404": "no such resource",
    "409": "conflict (idempotency key reused with another body, or the resource's state)",
    "413": "body over the size limit",
    "422": "invalid request: the fields and reasons are listed",
    "429": "the API key's request rate is spent: retry after Retry-After seconds",
    "503": "Postgres or Redis is unavailable: retry after Retry-After seconds. Nothing was stored,"
           " unless the body says otherwise: an enqueue stored while Redis is away names the job"
           " (id, status) or carries the batch's results; those are sent once Redis is back",
}


def _json(schema: dict[str, Any], description: str, **extra: Any) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}, **extra}


def _error(code: str) -> dict[str, Any]:
    resp = _json(ERROR_REF, _WHY[code])
    if code == "401":
        resp["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
    if code in ("429", "503"):
        resp["headers"] = {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}}
    return resp


def _job_schemas() -> dict[str, Any]:
    schema = JobBody.model_json_schema(ref_template="#/components/schemas/{model}")
    defs = schema.pop("$defs", {})
    return {**defs, "JobBody": schema}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


_ANY_OF = "one value, or several comma-separated or repeated (any of them)"
LIST_PARAMETERS: list[dict[str, Any]] = [
    _query("status", {"type": "string"}, f"job status: {_ANY_OF}"),
    _query("kind", {"type": "string"}, f"otp, transactional or marketing: {_ANY_OF}"),
    _query("sender", {"type": "string"}, f"sender name: {_ANY_OF}"),
    _query("to", {"type": "string"}, "the recipient, E.164"),
    _query("idempotency_key", {"type": "string", "minLength": 1, "maxLength": 255}, "exact"),
    _query("created_after", {"type": "string", "format": "date-time"}, "inclusive; ISO 8601 with a zone"),
    _query("created_before", {"type": "string", "format": "date-time"}, "exclusive; ISO 8601 with a zone"),
    _query("limit", {"type": "integer", "minimum": 1, "maximum": 500, "default": 100}, "jobs per page"),
    _query("cursor", {"type": "string"}, "next_cursor of the previous page (same filters)"),
]
NOTIFICATION_PAGE: dict[str, Any] = {
    "type": "object",
    "required": ["items", "next_cursor"],
    "properties": {
        "items": {"type": "array", "maxItems": 500, "items": {"type": "object", "required": ["id", "status", "kind"]}},
        "next_cursor": {"type": ["string", "null"], "description": "null on the last page"},
    },
}


def _patch(schema: dict[str, Any]) -> None:
    comps = schema.setdefault("components", {})
    schemas = comps.setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    schemas.update(_job_schemas())
    schemas["ErrorBody"] = ERROR_BODY
    schemas["Accepted"] = ACCEPTED
    comps["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer", "description": "an API key"}}

    for path, ops in schema.get("paths", {}).items():
        for method, op in ops.items():
            _operation(path, method, op)


def _operation(path: str, method: str, op: dict[str, Any]) -> None:
    responses: dict[str, Any] = op.setdefault("responses", {})
    for code, resp in list(responses.items()):  # FastAPI's "{}" and HTTPValidationError
        if code.startswith("2"):
            resp["content"] = {"application/json": {"schema": _OBJECT}}
        elif code == "422":
            responses[code] = _error("422")
    errors: list[str] = []
    has_id = "{" in path
    if path.startswith("/v1/"):
        op["security"] = [{"bearer": []}]
        errors += ["401", "403", "422", "429", "503"]
        if method == "post":
            errors.append("413")
        if has_id:
            errors.append("404")
    errors += _specific(path, method, op, responses)
    for code in errors:
        responses.setdefault(code, _error(code))


def _specific(path: str, method: str, op: dict[str, Any], responses: dict[str, Any]) -> list[str]:
    """What one operation documents beyond the generic rules; the extra error codes."""
    errors: list[str] = []
    key = (method, path)
    if key == ("post", "/v1/notifications"):
        op["requestBody"] = {"required": True, "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/JobBody"}}}}
        op["parameters"] = [{"name": "Idempotency-Key", "in": "header", "required": False,
                             "schema": {"type": "string", "minLength": 1, "maxLength": 255}}]
        responses.clear()
        responses["202"] = _json({"$ref": "#/components/schemas/Accepted"}, "queued")
        responses["200"] = _json({"$ref": "#/components/schemas/Accepted"},
                                 "the same idempotency key and body again: the first job")
        errors.append("409")
    elif key == ("get", "/v1/notifications"):
        op["parameters"] = LIST_PARAMETERS
        responses.clear()
        responses["200"] = _json(NOTIFICATION_PAGE, "a page of jobs, newest first")
    elif key == ("post", "/v1/notifications:batch"):
        # Items are JobBody; an item that is not gets its own error in ``results`` (one bad
        # job never rejects the rest), so the array takes any items.
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": {
            "type": "array", "maxItems": 1000,
            "items": {"description": "a job body (JobBody); an invalid one is answered in its result"}}}}}
        responses.clear()
        responses["202"] = _json(BATCH_RESULTS, "one result per job, in order")
    elif key == ("post", "/v1/campaigns"):
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": CAMPAIGN_CREATE}}}
        errors.append("404")
    elif method == "post" and path.endswith("/audience"):
        op["requestBody"] = {"required": True, "description": "CSV, or JSON lines with a JSON content type",
                             "content": {"text/csv": {"schema": {"type": "string"}}}}
        errors.append("409")
    elif method == "post" and path.startswith("/v1/") and ":" in path.rsplit("/", 1)[-1]:
        errors.append("409")  # :start, :pause, :resume, :cancel, :replay
    elif key == ("get", "/webhooks/whatsapp"):
        op["parameters"] = [{"name": n, "in": "query", "required": False, "schema": {"type": "string"}}
                            for n in ("hub.mode", "hub.verify_token", "hub.challenge")]
        responses.clear()
        responses["200"] = {"description": "the challenge, echoed", "content": _TEXT}
        errors.append("403")
    elif key == ("post", "/webhooks/whatsapp"):
        op["parameters"] = [{"name": "X-Hub-Signature-256", "in": "header", "required": True,
                             "schema": {"type": "string"},
                             "description": "sha256=<hex HMAC-SHA256 of the raw body, keyed with the app secret>"}]
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": _OBJECT}}}
        responses.clear()
        responses["200"] = {"description": "verified and stored", "content": _TEXT}
        errors += ["401", "403", "413", "503"]
    elif key == ("get", "/readyz"):
        responses["503"] = _json(_OBJECT, "not ready: the failing checks")
    elif key == ("get", "/metrics"):
        responses["200"] = {"description": "Prometheus text format", "content": _TEXT}
    return errors


def install(app: FastAPI) -> None:
    """Make ``app.openapi()`` (and so ``/openapi.json``) return the documented schema."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = copy.deepcopy(generate())
            _patch(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
