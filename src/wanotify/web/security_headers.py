"""Security headers on every response of the web app.

The header lists are built once; per request the work is choosing one of four lists (API or
docs page, plain or HTTPS) and appending it. The two hot paths (``hot_paths.py``) append the
same lists to their responses directly; :class:`SecurityHeaders` does it for everything
else (FastAPI's routes, its error handlers, the docs).

- ``X-Content-Type-Options: nosniff``, ``X-Frame-Options: DENY``,
  ``Referrer-Policy: no-referrer``, ``Cache-Control: no-store`` (API answers carry job
  statuses and masked numbers: no cache should keep them).
- ``Content-Security-Policy``: a JSON API loads nothing, so ``default-src 'none'``. The
  interactive docs (``/docs``, ``/redoc``) load Swagger UI / ReDoc from jsDelivr, with an
  inline bootstrap script; they get a policy that allows exactly that.
- ``Strict-Transport-Security`` when the request came over HTTPS: the ASGI scheme (uvicorn
  sets it from ``X-Forwarded-Proto`` for trusted proxies) or the ``X-Forwarded-Proto``
  header itself (browsers ignore HSTS received over plain HTTP, so trusting the header
  costs nothing).
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

RawHeaders = list[tuple[bytes, bytes]]

API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
DOCS_CSP = (
    "default-src 'none'; "
    "script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
    "font-src https://fonts.gstatic.com; "
    "img-src 'self' data: https://fastapi.tiangolo.com https://cdn.redoc.ly; "
    "connect-src 'self'; worker-src blob:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
HSTS = "max-age=31536000; includeSubDomains"
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc"})


def _raw(pairs: Iterable[tuple[str, str]]) -> RawHeaders:
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in pairs]


_COMMON = [
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    ("cache-control", "no-store"),
]
API_HEADERS: RawHeaders = _raw([*_COMMON, ("content-security-policy", API_CSP)])
API_HEADERS_TLS: RawHeaders = [*API_HEADERS, *_raw([("strict-transport-security", HSTS)])]
DOCS_HEADERS: RawHeaders = _raw([*_COMMON, ("content-security-policy", DOCS_CSP)])
DOCS_HEADERS_TLS: RawHeaders = [*DOCS_HEADERS, *_raw([("strict-transport-security", HSTS)])]
NAMES = frozenset(k for k, _ in API_HEADERS_TLS)


def is_https(scope: Scope) -> bool:
    if scope.get("scheme") == "https":
        return True
    for key, value in scope["headers"]:
        if key == b"x-forwarded-proto":
            return value.split(b",", 1)[0].strip().lower() == b"https"
    return False


def api_headers(scope: Scope) -> RawHeaders:
    """The (shared, constant) list for an API answer to this request."""
    return API_HEADERS_TLS if is_https(scope) else API_HEADERS


def headers_for(scope: Scope) -> RawHeaders:
    if scope["path"] in DOCS_PATHS:
        return DOCS_HEADERS_TLS if is_https(scope) else DOCS_HEADERS
    return api_headers(scope)


class SecurityHeaders:
    """ASGI middleware: adds :func:`headers_for` to every HTTP response it passes on.

    A header the application set itself (say a route's own ``Cache-Control``) wins.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = headers_for(scope)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                headers.extend(h for h in extra if h[0] not in present)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
