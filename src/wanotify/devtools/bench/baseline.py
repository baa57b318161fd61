"""The textbook baseline: one Celery task per message, Celery's own ``rate_limit`` per sender,
a module-level pooled ``httpx.Client``. Run by ``wanotify bench`` as separate worker processes:
``celery -A wanotify.devtools.bench.baseline:app worker -Q baseline``.
"""

from __future__ import annotations

from typing import Any

import httpx
from celery import Celery

from wanotify.config import SenderConfig, get_settings
from wanotify.providers.tokens import current as current_token

settings = get_settings()
app = Celery("wanotify_baseline", broker=settings.redis_url)
app.conf.update(
    task_default_queue="baseline",
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    worker_prefetch_multiplier=4,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)

_client = httpx.Client(timeout=10.0, limits=httpx.Limits(max_connections=64, max_keepalive_connections=64))


def _register(sender: SenderConfig) -> None:
    url = f"{settings.graph_base}/{sender.phone_number_id}/messages"
    headers = {"Authorization": f"Bearer {current_token(sender).value}"}

    def send(payload: dict[str, Any]) -> int:
        return _client.post(url, json=payload, headers=headers).status_code

    app.task(name=f"baseline.send.{sender.name}", rate_limit=f"{sender.mps}/s")(send)


for _s in settings.sender_list:
    _register(_s)
