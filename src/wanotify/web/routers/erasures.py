"""``POST /v1/erasures``: erase everything about one number (compliance.erasure)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from wanotify.accounts.api_keys import KeyRecord
from wanotify.core.phones import normalize_e164
from wanotify.privacy.erasure import erase
from wanotify.web.auth import unscoped
from wanotify.web.errors import field_error, read_object

router = APIRouter(prefix="/v1", tags=["privacy"])


@router.post("/erasures")
async def create_erasure(
    _: Annotated[KeyRecord, Depends(unscoped("erasure needs"))], request: Request
) -> JSONResponse:
    """Erase everything about one number (``{"phone": "+…", "dry_run": false}``); answers
    what was touched per table. Only an unscoped key may erase (a person spans senders)."""
    data = await read_object(request, "invalid_erasure", {"phone", "dry_run"})
    if not isinstance(data.get("phone"), str) or not isinstance(data.get("dry_run", False), bool):
        bad = "phone" if not isinstance(data.get("phone"), str) else "dry_run"
        raise field_error(422, "invalid_erasure", f"{bad} is invalid", bad,
                          "required string" if bad == "phone" else "must be a boolean")
    try:
        normalize_e164(data["phone"])
    except ValueError as exc:
        raise field_error(422, "invalid_erasure", "phone is not a number", "phone", str(exc)) from None
    report = await run_in_threadpool(erase, data["phone"], bool(data.get("dry_run", False)))
    return JSONResponse(report.as_json())
