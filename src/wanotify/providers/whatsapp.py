"""WhatsApp Cloud API client: one pooled async httpx client per worker process."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from wanotify.config import SenderConfig, Settings
from wanotify.providers.policy import Policy, classify


@dataclass
class SendResult:
    """The outcome of one provider call (one attempt row)."""

    ok: bool
    wamid: str | None
    http_status: int | None
    error_code: int | None
    error_message: str | None
    request_id: str | None  # fbtrace_id
    duration_ms: float
    retry_after: float | None = None

    @property
    def policy(self) -> Policy:
        return classify(self.error_code, self.http_status)


def new_client(settings: Settings) -> httpx.AsyncClient:
    limits = httpx.Limits(
        max_connections=settings.send_concurrency,
        max_keepalive_connections=settings.send_concurrency,
        keepalive_expiry=30.0,
    )
    return httpx.AsyncClient(
        timeout=httpx.Timeout(settings.http_timeout_s, connect=5.0),
        limits=limits,
        headers={"Content-Type": "application/json", "User-Agent": "wanotify/0.1"},
    )


def _retry_after(resp: httpx.Response) -> float | None:
    value = resp.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def parse_response(
    status: int, body: bytes, duration_ms: float, retry_after: float | None
) -> SendResult:
    try:
        data: Any = orjson.loads(body) if body else {}
    except orjson.JSONDecodeError:
        data = {}
    if 200 <= status < 300 and isinstance(data, dict):
        msgs = data.get("messages")
        if isinstance(msgs, list) and msgs and isinstance(msgs[0], dict) and msgs[0].get("id"):
            return SendResult(True, str(msgs[0]["id"]), status, None, None, None, duration_ms)
        return SendResult(
            False, None, status, None, "response without messages[0].id", None, duration_ms
        )
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict):
        code = err.get("code")
        details = (
            (err.get("error_data") or {}).get("details")
            if isinstance(err.get("error_data"), dict)
            else None
        )
        message = str(err.get("message") or "")
        if details:
            message = f"{message} ({details})"
        return SendResult(
            False,
            None,
            status,
            int(code)
            if isinstance(code, int) or (isinstance(code, str) and code.isdigit())
            else None,
            message[:2000],
            str(err.get("fbtrace_id")) if err.get("fbtrace_id") else None,
            duration_ms,
            retry_after,
        )
    return SendResult(False, None, status, None, f"HTTP {status}", None, duration_ms, retry_after)


async def send_message(
    client: httpx.AsyncClient, settings: Settings, sender: SenderConfig, payload: dict[str, Any]
) -> SendResult:
    """POST {graph}/{version}/{phone_number_id}/messages; never raises for provider errors."""
    url = f"{settings.graph_base}/{sender.phone_number_id}/messages"
    headers = {"Authorization": f"Bearer {sender.access_token.get_secret_value()}"}
    started = time.perf_counter()
    try:
        resp = await client.post(url, content=orjson.dumps(payload), headers=headers)
    except httpx.TimeoutException as exc:
        return SendResult(
            False,
            None,
            None,
            None,
            f"timeout: {type(exc).__name__}",
            None,
            (time.perf_counter() - started) * 1000,
        )
    except httpx.HTTPError as exc:
        return SendResult(
            False,
            None,
            None,
            None,
            f"network error: {type(exc).__name__}",
            None,
            (time.perf_counter() - started) * 1000,
        )
    duration = (time.perf_counter() - started) * 1000
    return parse_response(resp.status_code, resp.content, duration, _retry_after(resp))
