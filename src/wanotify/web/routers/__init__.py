"""One router per resource of the HTTP API (stable paths: see the README).

Path parameters are written ``{name:segment}`` (one path segment without a colon); the
convertor is registered by ``web.routing``, imported here before any router is declared.
"""

from wanotify.web import routing  # noqa: F401  (registers the "segment" path convertor)
