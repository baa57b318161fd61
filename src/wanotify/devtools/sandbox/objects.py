"""Graph objects: the phone number, the WhatsApp Business Account and its phone_numbers edge.

``GET /{version}/{phone_number_id}``, ``GET /{version}/{waba_id}`` and
``GET /{version}/{waba_id}/phone_numbers`` (``?fields=`` selects fields; the edge is paged).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from wanotify.devtools.sandbox.graph import (
    VERSION,
    fallback,
    json_response,
    ok,
    page,
    select_fields,
    unsupported,
)
from wanotify.devtools.sandbox.state import SandboxSender, SandboxState
from wanotify.devtools.sandbox.tokens import TokenBook


class Objects:
    """The senders as Graph objects."""

    def __init__(self, state: SandboxState, tokens: TokenBook) -> None:
        self.state = state
        self.tokens = tokens

    async def get_object(self, request: Request) -> Response:
        """``GET /{version}/{object_id}``: a phone number or a WhatsApp Business Account."""
        if not VERSION.match(request.path_params["version"]):
            return await fallback(request)
        oid: str = request.path_params["object_id"]
        denied = self.tokens.auth(request, "get", oid)
        if denied is not None:
            return json_response(denied.status, denied.body)
        sender = self.state.senders.get(oid)
        if sender is not None:
            obj = self.phone_object(sender)
        else:
            first = self.state.wabas[oid][0]
            obj = {
                "id": oid,
                "name": f"{first.config.name} (wanotify sandbox)",
                "currency": "USD",
                "timezone_id": "1",
                "message_template_namespace": f"sandbox_{oid}",
                "account_review_status": "APPROVED",
                "business_verification_status": "verified",
            }
        return ok(select_fields(obj, request.query_params.get("fields")))

    def phone_object(self, s: SandboxSender) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "verified_name": s.config.name,
            "code_verification_status": "VERIFIED",
            "display_phone_number": s.display_formatted,
            "quality_rating": "GREEN",
            "platform_type": "CLOUD_API",
            "throughput": {"level": "HIGH" if s.config.mps > 80 else "STANDARD"},
            "name_status": "APPROVED",
            "messaging_limit_tier": "TIER_UNLIMITED"
            if s.config.daily_unique_limit is None
            else f"TIER_{s.config.daily_unique_limit // 1000}K",
        }
        if self.state.dispatcher.url:
            obj["webhook_configuration"] = {"application": self.state.dispatcher.url}
        obj["id"] = s.phone_number_id
        return obj

    async def phone_numbers(self, request: Request) -> Response:
        """``GET /{version}/{waba_id}/phone_numbers``."""
        if not VERSION.match(request.path_params["version"]):
            return await fallback(request)
        waba: str = request.path_params["object_id"]
        denied = self.tokens.auth(request, "get", waba)
        if denied is None and waba not in self.state.wabas:
            denied = unsupported("get", waba)
        if denied is not None:
            return json_response(denied.status, denied.body)
        data = [self.phone_object(s) for s in self.state.wabas[waba]]
        return page(request, data, request.query_params.get("fields"))
