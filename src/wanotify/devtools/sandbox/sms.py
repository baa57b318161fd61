"""The fake Twilio-style SMS provider: ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json``.

Basic auth and form fields are checked as Twilio checks them (its error codes), failure
rules for the ``sms`` channel apply, and ``StatusCallback`` gets signed ``sent`` and
``delivered`` (or ``undelivered``) callbacks.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
import re
import time
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response

from wanotify.devtools.sandbox import errors as E
from wanotify.devtools.sandbox.graph import json_response, ok
from wanotify.devtools.sandbox.state import SandboxState
from wanotify.devtools.sandbox.webhooks import twilio_signature

MAX_BODY = 1600
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_ALNUM_SENDER = re.compile(r"^[A-Za-z0-9 ]{1,11}$")


def _basic_auth(header: str | None) -> tuple[str, str] | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (ValueError, binascii.Error):
        return None
    user, sep, password = decoded.partition(":")
    if not sep or not user or not password:
        return None
    return user, password


def _form_error(form: dict[str, str], to: str, from_: str, text: str) -> int:
    """Twilio's error code for an unsendable form, or 0."""
    if not to:
        return 21604
    if not _E164.match(to):
        return 21211
    if not from_ and not form.get("MessagingServiceSid"):
        return 21603
    if from_ and not (_E164.match(from_) or _ALNUM_SENDER.match(from_)):
        return 21212
    if not text and not form.get("MediaUrl"):
        return 21602
    if len(text) > MAX_BODY:
        return 21617
    return 0


class Sms:
    """The SMS provider's Messages resource."""

    def __init__(self, state: SandboxState) -> None:
        self.state = state

    async def send(self, request: Request) -> Response:
        state = self.state
        t = state.wall()
        account_sid: str = request.path_params["account_sid"]
        auth = _basic_auth(request.headers.get("authorization"))
        if auth is None:
            status, body = E.twilio_error(20003)
            return json_response(status, body, {"WWW-Authenticate": 'Basic realm="Twilio API"'})
        _user, password = auth
        raw = (await request.body()).decode("utf-8", "replace")
        form = dict(parse_qsl(raw, keep_blank_values=True))
        to = form.get("To", "").strip()
        from_ = form.get("From", "").strip()
        text = form.get("Body", "")
        entry: dict[str, Any] = {
            "t": t,
            "account_sid": account_sid,
            "to": to,
            "from": from_,
            "body": text,
        }
        code = _form_error(form, to, from_, text)
        if code:
            status, body = E.twilio_error(code, to=to, from_=from_)
            state.record_sms(entry, None, "rejected", code, status)
            return json_response(status, body)
        rule = state.failures.decide(to, "sms") if state.failures.rules else None
        delay = rule.latency_ms / 1000.0 if rule is not None else 0.0
        if delay:
            await asyncio.sleep(delay)
        if rule is not None and rule.fails and rule.mode == "sync":
            assert rule.code is not None
            status, body = E.twilio_error(
                rule.code, to=to, from_=from_, http_status=rule.http_status
            )
            state.record_sms(entry, None, "rejected", rule.code, status)
            return json_response(status, body)
        sid = "SM" + os.urandom(16).hex()
        failed_code = rule.code if rule is not None and rule.fails else None
        final = "undelivered" if failed_code is not None else "delivered"
        state.record_sms(entry, sid, final, failed_code or 0, 201)
        created = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(t))
        callback = form.get("StatusCallback")
        if callback:
            self._callbacks(callback, password, account_sid, sid, to, from_, failed_code)
        return ok(
            {
                "account_sid": account_sid,
                "api_version": "2010-04-01",
                "body": text,
                "date_created": created,
                "date_sent": None,
                "date_updated": created,
                "direction": "outbound-api",
                "error_code": None,
                "error_message": None,
                "from": from_ or None,
                "messaging_service_sid": form.get("MessagingServiceSid"),
                "num_media": "0",
                "num_segments": str(max(1, (len(text) + 152) // 153)),
                "price": None,
                "price_unit": "USD",
                "sid": sid,
                "status": "queued",
                "subresource_uris": {
                    "media": f"/2010-04-01/Accounts/{account_sid}/Messages/{sid}/Media.json"
                },
                "to": to,
                "uri": f"/2010-04-01/Accounts/{account_sid}/Messages/{sid}.json",
            },
            201,
        )

    def _callbacks(
        self,
        url: str,
        auth_token: str,
        account_sid: str,
        sid: str,
        to: str,
        from_: str,
        failed_code: int | None,
    ) -> None:
        """Schedule the signed status callbacks: sent, then delivered or undelivered."""
        delay = self.state.config.webhook_delay_ms / 1000.0
        steps: list[tuple[str, int | None]] = [("sent", None)]
        steps.append(
            ("undelivered", failed_code) if failed_code is not None else ("delivered", None)
        )
        for i, (status, err) in enumerate(steps, start=1):
            params = {
                "AccountSid": account_sid,
                "ApiVersion": "2010-04-01",
                "From": from_,
                "MessageSid": sid,
                "MessageStatus": status,
                "SmsSid": sid,
                "SmsStatus": status,
                "To": to,
            }
            if err is not None:
                params["ErrorCode"] = str(err)
            headers = {"X-Twilio-Signature": twilio_signature(url, params, auth_token)}
            self.state.dispatcher.schedule_form(url, params, headers, delay * i)
