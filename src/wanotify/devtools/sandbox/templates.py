"""The Graph API's view of the approved templates: the template-send check and the listing.

The worker renders template sends from the catalogue (:mod:`wanotify.core.templates`); the
sandbox checks what arrives as Meta does (:func:`check_send`, for ``type: template`` in
``POST /{phone_number_id}/messages``) and lists the catalogue as
``GET /{version}/{waba_id}/message_templates`` does (:func:`graph_templates`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from wanotify.core.templates import MEDIA_FORMATS, Catalogue
from wanotify.devtools.sandbox.graph import (
    VERSION,
    fallback,
    invalid,
    json_response,
    page,
    reject,
    required,
    unsupported,
)
from wanotify.devtools.sandbox.tokens import TokenBook


def check_send(
    catalogue: Catalogue, name: str, language: str, components: list[dict[str, Any]] | None
) -> tuple[int, str, int] | None:
    """Check a Graph API template send as Meta does: None, or (error code, details, HTTP status)."""
    t = catalogue.lookup(name, language)
    if t is None:
        return (132001, f"template name ({name}) does not exist in {language}", 404)
    comps = components or []
    if not isinstance(comps, list) or not all(isinstance(c, dict) for c in comps):
        return (100, "Invalid parameter: template.components must be an array of objects", 400)
    by_type: dict[str, list[dict[str, Any]]] = {}
    for c in comps:
        by_type.setdefault(str(c.get("type", "")).lower(), []).append(c)
    body_given = sum(len(c.get("parameters") or []) for c in by_type.get("body", []))
    if body_given != len(t.body_params):
        return (
            132000,
            f"body: number of localizable_params ({body_given}) does not match the expected "
            f"number of params ({len(t.body_params)})",
            400,
        )
    header_given = sum(len(c.get("parameters") or []) for c in by_type.get("header", []))
    header_expected = 1 if t.header_format in MEDIA_FORMATS else len(t.header_params)
    if header_given != header_expected:
        return (
            132000,
            f"header: number of localizable_params ({header_given}) does not match the "
            f"expected number of params ({header_expected})",
            400,
        )
    dynamic = {i for i, _ in t.dynamic_buttons}
    given_buttons: set[int] = set()
    for c in by_type.get("button", []):
        try:
            index = int(c.get("index", -1))
        except (TypeError, ValueError):
            return (100, "Invalid parameter: button index must be an integer", 400)
        if index not in dynamic or len(c.get("parameters") or []) != 1:
            return (132000, f"button at index {index}: unexpected parameters", 400)
        given_buttons.add(index)
    if given_buttons != dynamic:
        return (
            132000,
            f"buttons: expected parameters for button index(es) {sorted(dynamic)}, "
            f"got {sorted(given_buttons)}",
            400,
        )
    for kind in ("body", "header"):
        for c in by_type.get(kind, []):
            for p in c.get("parameters") or []:
                if isinstance(p, dict) and p.get("type") == "text":
                    text = p.get("text")
                    if not isinstance(text, str) or not text:
                        return (131008, f"{kind}: parameter text is required", 400)
    return None


def graph_templates(catalogue: Catalogue, waba_id: str) -> list[dict[str, Any]]:
    """Templates in the shape of Meta's ``GET /{waba_id}/message_templates`` listing."""
    out = []
    for n, t in enumerate(sorted(catalogue, key=lambda t: (t.name, t.language))):
        components = [
            {k.upper() if k == "type" else k: v for k, v in c.items()}
            for c in t.raw.get("components", [])
        ]
        for c in components:
            c["type"] = str(c.pop("TYPE", c.get("type", ""))).upper()
        out.append(
            {
                "name": t.name,
                "language": t.language,
                "status": "APPROVED",
                "category": t.category.upper(),
                "parameter_format": "NAMED" if t.named else "POSITIONAL",
                "components": components,
                "id": str(int(waba_id) * 1000 + n) if waba_id.isdigit() else str(n),
            }
        )
    return out


class Templates:
    """The approved templates of each WhatsApp Business Account, as Meta serves and checks them."""

    def __init__(self, catalogue: Catalogue, wabas: Iterable[str], tokens: TokenBook) -> None:
        self.catalogue = catalogue
        self.tokens = tokens
        self.listings: dict[str, list[dict[str, Any]]] = {
            waba: graph_templates(catalogue, waba) for waba in wabas
        }
        self.categories: dict[tuple[str, str], str] = {}
        for t in next(iter(self.listings.values())):
            self.categories[(t["name"], t["language"])] = str(t.get("category", "UTILITY")).lower()

    def check(self, obj: Any) -> tuple[str, str]:
        """The ``template`` object of a send: (name, category), or raise a Graph error."""
        if not isinstance(obj, dict):
            raise invalid("Param template must be an object.")
        name = obj.get("name")
        if not isinstance(name, str) or not name:
            raise required("template['name']")
        language = obj.get("language")
        if not isinstance(language, dict):
            raise required("template['language']")
        code = language.get("code")
        if not isinstance(code, str) or not code:
            raise required("template['language']['code']")
        components = obj.get("components")
        if components is not None and not isinstance(components, list):
            raise invalid("Param template['components'] must be an array.")
        problem = check_send(self.catalogue, name, code, components)
        if problem is not None:
            err_code, details, status = problem
            raise reject(err_code, details=details, http_status=status)
        return name, self.categories.get((name, code), "utility")

    async def message_templates(self, request: Request) -> Response:
        """``GET /{version}/{waba_id}/message_templates`` (``?name=``, ``?language=``,
        ``?status=``, ``?category=`` filters; paged)."""
        if not VERSION.match(request.path_params["version"]):
            return await fallback(request)
        waba: str = request.path_params["object_id"]
        denied = self.tokens.auth(request, "get", waba)
        if denied is None and waba not in self.listings:
            denied = unsupported("get", waba)
        if denied is not None:
            return json_response(denied.status, denied.body)
        q = request.query_params
        data = self.listings[waba]
        for key in ("name", "language", "status", "category"):
            want = q.get(key)
            if want:
                if key == "name":
                    data = [t for t in data if want.lower() in str(t.get("name", "")).lower()]
                else:
                    data = [t for t in data if str(t.get(key, "")).lower() == want.lower()]
        return page(request, data, q.get("fields"))
