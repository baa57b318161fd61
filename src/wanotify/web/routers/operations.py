"""Liveness, readiness (Postgres, migrations, Redis) and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from wanotify import __version__
from wanotify.config import Settings
from wanotify.db.migrate import at_head
from wanotify.redis import get_redis
from wanotify.web.state import get_state

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok", "version": __version__}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    checks = await run_in_threadpool(readiness, get_state(request).settings)
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ok" if ok else "unavailable", "checks": checks}, status_code=200 if ok else 503)


@router.get("/metrics")
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def readiness(settings: Settings) -> dict[str, str]:
    checks: dict[str, str] = {}
    try:
        checks["postgres"] = "ok"
        checks["migrations"] = "ok" if at_head(settings.database_url) else "not at head: run wanotify migrate"
    except Exception as exc:
        checks["postgres"] = f"error: {type(exc).__name__}"
        checks.setdefault("migrations", "unknown")
    try:
        get_redis().ping()
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"error: {type(exc).__name__}"
    return checks
