"""Two routing details the HTTP contract depends on.

- A path parameter is one path segment *without a colon*: ``/v1/campaigns/{campaign_id}``
  must not swallow ``/v1/campaigns/<id>:pause`` (the ``:action`` routes), or a wrong method
  on an action would be answered as if it were the plain resource.
- A 405 lists in ``Allow`` every method of the path, not only those of the first route
  Starlette happened to try (``GET`` and ``POST /webhooks/whatsapp`` are two routes).
"""

from __future__ import annotations

import re

from fastapi import FastAPI
from starlette.convertors import Convertor, register_url_convertor
from starlette.routing import Match, Route, compile_path
from starlette.types import Scope


class SegmentConvertor(Convertor[str]):
    regex = "[^/:]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("segment", SegmentConvertor())

_PLAIN_PARAM = re.compile(r"{(\w+)}")


def strict_path_params(app: FastAPI) -> None:
    """Give every ``{param}`` without a convertor the colon-free ``segment`` convertor."""
    for route in app.router.routes:
        if isinstance(route, Route) and _PLAIN_PARAM.search(route.path):
            strict = _PLAIN_PARAM.sub(r"{\1:segment}", route.path)
            route.path_regex, route.path_format, route.param_convertors = compile_path(strict)


def allowed_methods(app: FastAPI, scope: Scope) -> str:
    """The ``Allow`` value for a request whose path exists with other methods."""
    methods: set[str] = set()
    for route in app.router.routes:
        if isinstance(route, Route) and route.methods:
            match, _ = route.matches(scope)
            if match != Match.NONE:
                methods |= route.methods
    return ", ".join(sorted(methods))
