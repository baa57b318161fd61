"""Two routing details the HTTP contract depends on.

- A path parameter is one path segment *without a colon*: ``/v1/campaigns/{campaign_id}``
  must not swallow ``/v1/campaigns/<id>:pause`` (the ``:action`` routes), or a wrong method
  on an action would be answered as if it were the plain resource. Routes write their
  parameters as ``{name:segment}``; this module registers that convertor (imported by
  ``web.routers`` before any route is declared).
- A 405 lists in ``Allow`` every method of the path, not only those of the first route
  Starlette happened to try (``GET`` and ``POST /webhooks/whatsapp`` are two routes). The
  methods are read from the app's own OpenAPI description, so this holds however FastAPI
  organises included routers internally.
"""

from __future__ import annotations

import re
from functools import lru_cache

from fastapi import FastAPI
from starlette.convertors import Convertor, register_url_convertor
from starlette.routing import compile_path


class SegmentConvertor(Convertor[str]):
    regex = "[^/:]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("segment", SegmentConvertor())

_PARAM = re.compile(r"{(\w+)}")


@lru_cache(maxsize=8)
def _path_methods(app: FastAPI) -> tuple[tuple[re.Pattern[str], frozenset[str]], ...]:
    out = []
    for path, ops in app.openapi().get("paths", {}).items():
        regex, _, _ = compile_path(_PARAM.sub(r"{\1:segment}", path))
        out.append((regex, frozenset(m.upper() for m in ops)))
    return tuple(out)


def allowed_methods(app: FastAPI, path: str) -> str:
    """The ``Allow`` value for a request whose path exists with other methods."""
    methods: set[str] = set()
    for regex, ops in _path_methods(app):
        if regex.match(path):
            methods |= ops
    return ", ".join(sorted(methods))
