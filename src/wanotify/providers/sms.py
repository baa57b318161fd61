"""SMS through a Twilio-style HTTP API (the sandbox serves one).

``WANOTIFY_SMS_URL`` is the provider's base URL with the account credentials:
``https://ACCOUNT_SID:AUTH_TOKEN@api.twilio.com`` (or ``http://AC…:token@127.0.0.1:8900`` for
the sandbox). Sends ``POST /2010-04-01/Accounts/{sid}/Messages.json`` (To, From, Body).
"""

from __future__ import annotations

import time
from urllib.parse import urlsplit, urlunsplit

import httpx

from wanotify.providers.whatsapp import SendResult

_client: httpx.Client | None = None


def _http() -> httpx.Client:
    global _client
    if _client is None:
        _client = httpx.Client(timeout=httpx.Timeout(10.0, connect=5.0))
    return _client


def send_sms(sms_url: str, sender_id: str, to: str, body: str) -> SendResult:
    parts = urlsplit(sms_url)
    sid, token = parts.username or "", parts.password or ""
    host = parts.hostname or ""
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    base = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
    url = f"{base}/2010-04-01/Accounts/{sid}/Messages.json"
    started = time.perf_counter()
    try:
        resp = _http().post(url, data={"To": to, "From": sender_id, "Body": body}, auth=(sid, token))
    except httpx.HTTPError as exc:
        return SendResult(False, None, None, None, f"network error: {type(exc).__name__}", None,
                          (time.perf_counter() - started) * 1000)
    ms = (time.perf_counter() - started) * 1000
    try:
        data = resp.json()
    except ValueError:
        data = {}
    if resp.status_code in (200, 201) and isinstance(data, dict) and data.get("sid"):
        return SendResult(True, str(data["sid"]), resp.status_code, None, None, None, ms)
    code = data.get("code") if isinstance(data, dict) else None
    msg = data.get("message") if isinstance(data, dict) else None
    return SendResult(False, None, resp.status_code, int(code) if isinstance(code, int) else None,
                      str(msg or f"HTTP {resp.status_code}")[:2000], None, ms)
