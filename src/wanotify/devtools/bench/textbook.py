"""The textbook ways, run by ``wanotify bench throughput`` as its baselines.

* Celery, one task per message (``wanotify bench textbook-worker``): a no-op task (the
  ceiling of any one-task-per-message design), the naive send (``httpx.post``, a new client
  per call) and the good one (a module-level pooled ``httpx.Client``).
* A webhook receiver (``wanotify bench textbook-web``): FastAPI, the signature checked, and
  one ORM row and one commit per status.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime
from typing import Any

import httpx
import redis
from celery import Celery
from fastapi import FastAPI, Request, Response
from sqlalchemy import JSON, DateTime, Integer, String, create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from starlette.concurrency import run_in_threadpool

from wanotify.config import get_settings

QUEUE = "textbook"
COUNTER = "textbook:done"
TABLE = "bench_textbook_status"

settings = get_settings()

# --- Celery: one task per message ------------------------------------------------------

celery = Celery("wanotify_textbook", broker=settings.redis_url)
celery.conf.update(
    task_default_queue=QUEUE,
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)

_counter = redis.Redis.from_url(settings.redis_url)
_client = httpx.Client(timeout=10.0, limits=httpx.Limits(max_connections=64, max_keepalive_connections=64))


@celery.task(name="textbook.noop")
def noop() -> None:
    _counter.incr(COUNTER)


@celery.task(name="textbook.naive_send")
def naive_send(url: str, token: str, payload: dict[str, Any]) -> int:
    return httpx.post(url, json=payload, headers={"Authorization": f"Bearer {token}"}, timeout=10.0).status_code


@celery.task(name="textbook.pooled_send")
def pooled_send(url: str, token: str, payload: dict[str, Any]) -> int:
    return _client.post(url, json=payload, headers={"Authorization": f"Bearer {token}"}).status_code


# --- The webhook receiver: one ORM row, one commit per status --------------------------


class Base(DeclarativeBase):
    pass


class StatusRow(Base):
    __tablename__ = TABLE
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    wamid: Mapped[str] = mapped_column(String(128), index=True)
    status: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    raw: Mapped[dict[str, Any]] = mapped_column(JSON)


def make_web() -> FastAPI:
    engine = create_engine(settings.database_url, pool_size=20)
    Base.metadata.create_all(engine)
    secret = (settings.app_secret.get_secret_value() if settings.app_secret else "").encode()
    web = FastAPI()

    def store(data: dict[str, Any]) -> None:
        for entry in data.get("entry", []):
            for change in entry.get("changes", []):
                for st in change.get("value", {}).get("statuses", []):
                    with Session(engine) as s:
                        s.add(StatusRow(wamid=st["id"], status=st["status"],
                                        at=datetime.fromtimestamp(int(st["timestamp"]), UTC), raw=st))
                        s.commit()

    @web.post("/webhooks/whatsapp")
    async def receive(request: Request) -> Response:
        body = await request.body()
        want = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(want, request.headers.get("x-hub-signature-256", "")):
            return Response(status_code=401)
        await run_in_threadpool(store, json.loads(body))
        return Response(status_code=200)

    return web
