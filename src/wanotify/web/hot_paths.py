"""A thin ASGI layer for the two busiest endpoints (job enqueue, Meta's webhook).

FastAPI's routing, dependency solving and exception wrapping cost more per request than the
work these endpoints do; this middleware hands their raw body and headers straight to the
same handler functions the FastAPI routes call, and passes everything else through.
Their answers carry the same security headers as every other (precomputed lists, appended).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from wanotify.web.security_headers import api_headers

Handler = Callable[[Mapping[str, str], bytes], Awaitable[Response]]
Route = tuple[int, Callable[[], Response], Handler]  # body limit, "too large" answer, handler


def declared_over(headers: Mapping[str, str], limit: int) -> bool:
    """The request says (Content-Length) that its body is over ``limit`` bytes."""
    length = headers.get("content-length")
    return length is not None and length.isdigit() and int(length) > limit


class HotPaths:
    def __init__(self, app: ASGIApp, routes: dict[str, Route]):
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self.routes.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if route is None:
            await self.app(scope, receive, send)
            return
        limit, too_large, handler = route
        headers = Headers(scope=scope)
        if declared_over(headers, limit):
            await _secured(too_large(), scope)(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message: dict[str, Any] = dict(await receive())
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _secured(too_large(), scope)(scope, receive, send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        response = await handler(headers, b"".join(chunks))
        response.raw_headers.extend(api_headers(scope))
        await response(scope, receive, send)


def _secured(response: Response, scope: Scope) -> Response:
    response.raw_headers.extend(api_headers(scope))
    return response
