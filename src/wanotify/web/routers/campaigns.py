"""``/v1/campaigns``: create, import an audience, read, and the state changes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from wanotify.campaigns.audience import import_bytes
from wanotify.campaigns.records import CampaignError
from wanotify.campaigns.service import change, create, status
from wanotify.web.auth import ApiKey, campaign_in_scope, scoped
from wanotify.web.errors import (
    MAX_AUDIENCE_BYTES,
    ApiError,
    field_error,
    parse_id,
    read_body,
    read_object,
)

router = APIRouter(prefix="/v1", tags=["campaigns"])
ACTIONS = ("start", "pause", "resume", "cancel")


def campaign_error(exc: CampaignError) -> ApiError:
    code = {404: "not_found", 409: "conflict"}.get(exc.status, "invalid_campaign")
    return field_error(exc.status, code, exc.reason, exc.field, exc.reason)


@router.post("/campaigns", status_code=201)
async def create_campaign(record: ApiKey, request: Request) -> JSONResponse:
    data = await read_object(request, "invalid_campaign",
                             {"name", "template", "language", "sender", "kind", "start_at", "cron"})
    for f in ("name", "template"):
        if not isinstance(data.get(f), str):
            raise field_error(422, "invalid_campaign", f"{f} is required", f, "required string")
    data = scoped(record, data)  # a scoped key: its first sender by default, no other
    start_at = None
    if data.get("start_at") is not None:
        try:
            start_at = datetime.fromisoformat(str(data["start_at"]).replace("Z", "+00:00"))
        except ValueError:
            raise field_error(422, "invalid_campaign", "start_at is not an ISO time", "start_at",
                              "not an ISO 8601 time") from None
    try:
        out = await run_in_threadpool(
            create, data["name"], data["template"], str(data.get("language", "en")), data.get("sender"),
            str(data.get("kind", "marketing")), start_at, data.get("cron"))
    except CampaignError as exc:
        raise campaign_error(exc) from None
    return JSONResponse(out, status_code=201)


@router.post("/campaigns/{campaign_id:segment}/audience")
async def campaign_audience(campaign_id: str, record: ApiKey, request: Request) -> JSONResponse:
    cid = parse_id(campaign_id)
    await campaign_in_scope(record, cid)
    body = await read_body(request, MAX_AUDIENCE_BYTES)
    try:
        report = await run_in_threadpool(import_bytes, cid, body, request.headers.get("content-type", ""))
    except CampaignError as exc:
        raise campaign_error(exc) from None
    return JSONResponse(report.as_json())


@router.get("/campaigns/{campaign_id:segment}")
async def get_campaign(campaign_id: str, record: ApiKey) -> JSONResponse:
    cid = parse_id(campaign_id)
    await campaign_in_scope(record, cid)
    try:
        return JSONResponse(await run_in_threadpool(status, cid))
    except CampaignError as exc:
        raise campaign_error(exc) from None


def _action(action: str) -> Callable[[str, ApiKey], Awaitable[JSONResponse]]:
    async def handler(campaign_id: str, record: ApiKey) -> JSONResponse:
        cid = parse_id(campaign_id)
        await campaign_in_scope(record, cid)
        try:
            return JSONResponse(await run_in_threadpool(change, cid, action))
        except CampaignError as exc:
            raise campaign_error(exc) from None

    handler.__name__ = f"campaign_{action}"
    return handler


for _name in ACTIONS:
    router.post(f"/campaigns/{{campaign_id:segment}}:{_name}")(_action(_name))
