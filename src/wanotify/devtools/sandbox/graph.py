"""Plumbing shared by the sandbox's Graph API endpoints.

JSON replies, Graph errors raised as :class:`Reject` on validation paths, the API version
in the path, ``?fields=`` selection, cursor paging, and the answer to unknown paths.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from wanotify.devtools.sandbox import errors as E

VERSION = re.compile(r"^v\d{1,3}\.\d{1,2}$")
_JSON = "application/json"


def json_response(status: int, body: bytes, headers: dict[str, str] | None = None) -> Response:
    """An already-encoded JSON body."""
    return Response(body, status_code=status, media_type=_JSON, headers=headers)


def ok(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type=_JSON)


class Reject(Exception):
    """A Graph API error answer (raised on the validation path)."""

    def __init__(self, status: int, body: bytes, code: int) -> None:
        super().__init__(code)
        self.status = status
        self.body = body
        self.code = code


def reject(
    code: int,
    *,
    details: str | None = None,
    message: str | None = None,
    http_status: int | None = None,
) -> Reject:
    status, body = E.graph_error(code, details=details, message=message, http_status=http_status)
    return Reject(status, body, code)


def required(param: str) -> Reject:
    return reject(100, message=f"(#100) The parameter {param} is required.")


def invalid(details: str) -> Reject:
    return reject(100, details=details)


def unsupported(method: str, object_id: str) -> Reject:
    """Meta's 100 for an object the token may not see, or an edge the object lacks."""
    status, body = E.unsupported_request(method, object_id)
    return Reject(status, body, 100)


def major(version: str) -> int:
    """The major API version of ``v23.0`` (0 when it cannot be read)."""
    try:
        return int(version[1:].split(".", 1)[0])
    except ValueError:
        return 0


def select_fields(obj: dict[str, Any], fields: str | None) -> dict[str, Any]:
    """``?fields=a,b``: those keys (and ``id``); all of them without it."""
    if not fields:
        return obj
    wanted = {f.strip() for f in fields.split(",") if f.strip()}
    wanted.add("id")
    return {k: v for k, v in obj.items() if k in wanted}


def _cursor(index: int) -> str:
    return base64.urlsafe_b64encode(str(index).encode()).decode().rstrip("=")


def page(request: Request, data: list[dict[str, Any]], fields: str | None) -> Response:
    """One page of an edge (``?limit=``, ``?after=``), with Meta's ``paging`` cursors."""
    q = request.query_params
    try:
        limit = max(1, min(int(q.get("limit", "25")), 1000))
    except ValueError:
        limit = 25
    start = 0
    after = q.get("after")
    if after:
        try:
            start = int(base64.urlsafe_b64decode(after.encode() + b"==").decode()) + 1
        except (ValueError, binascii.Error):
            start = 0
    items = data[start : start + limit]
    out: dict[str, Any] = {"data": [select_fields(item, fields) for item in items]}
    if items:
        paging: dict[str, Any] = {
            "cursors": {"before": _cursor(start), "after": _cursor(start + len(items) - 1)}
        }
        if start + limit < len(data):
            paging["next"] = str(
                request.url.include_query_params(after=_cursor(start + len(items) - 1))
            )
        out["paging"] = paging
    return ok(out)


async def fallback(request: Request) -> Response:
    """Any other path: Meta's answer for an unknown edge or unknown path components."""
    parts = [p for p in request.url.path.split("/") if p]
    if len(parts) >= 2 and VERSION.match(parts[0]):
        status, body = E.unsupported_request(request.method, parts[1])
        return json_response(status, body)
    return json_response(
        *E.graph_error(
            2500, message=f"Unknown path components: {request.url.path}", http_status=400
        )
    )
