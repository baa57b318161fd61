"""``/v1/dead-letters``: jobs that exhausted every channel (list, show, replay once)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from wanotify.accounts.api_keys import KeyRecord
from wanotify.ops.dlq import ReplayRefused, list_dead, replay, show
from wanotify.web.auth import unscoped
from wanotify.web.errors import field_error, parse_id

router = APIRouter(prefix="/v1", tags=["dead letters"])
DeadLettersKey = Annotated[KeyRecord, Depends(unscoped("dead letters need"))]


@router.get("/dead-letters")
async def dead_letters(_: DeadLettersKey, limit: int = 100, replayed: bool = False) -> JSONResponse:
    rows = await run_in_threadpool(list_dead, max(1, min(limit, 1000)), replayed)
    return JSONResponse({"dead_letters": rows})


@router.get("/dead-letters/{job_id:segment}")
async def dead_letter(job_id: str, _: DeadLettersKey) -> JSONResponse:
    got = await run_in_threadpool(show, parse_id(job_id))
    if got is None:
        raise field_error(404, "not_found", f"no dead letter {job_id}", "id", "unknown")
    return JSONResponse(got)


@router.post("/dead-letters/{job_id:segment}:replay")
async def replay_dead_letter(job_id: str, _: DeadLettersKey) -> JSONResponse:
    try:
        out = await run_in_threadpool(replay, parse_id(job_id))
    except ReplayRefused as exc:
        raise field_error(409, "replay_refused", str(exc), "id", str(exc)) from None
    return JSONResponse(out, status_code=202)
