"""The sandbox ASGI app: a local double of Meta's WhatsApp Cloud API (and of an SMS provider).

Graph API (what client libraries and the worker call)
    ``POST /{version}/{phone_number_id}/messages``   send (or mark as read)
    ``GET  /{version}/{phone_number_id}``            the phone number object
    ``GET  /{version}/{waba_id}``                    the WhatsApp Business Account object
    ``GET  /{version}/{waba_id}/message_templates``  the approved templates (the catalogue)
    ``GET  /{version}/{waba_id}/phone_numbers``      the senders of that account
    ``GET  /{version}/debug_token?input_token=…``    token introspection

Fake Twilio-style SMS provider
    ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json``

Control and observation (tests, the demo, benchmarks)
    ``GET  /_sandbox/healthz``, ``GET /_sandbox/stats``,
    ``GET  /_sandbox/messages?after=SEQ&limit=N`` (every /messages request, in order),
    ``GET  /_sandbox/sms?after=SEQ&limit=N``,
    ``GET|POST /_sandbox/failures`` (POST replaces the rules: a JSON list),
    ``GET|POST /_sandbox/config`` (latency_ms, webhook_delay_ms, read_ratio,
    duplicate_ratio, reorder_ratio, service_window, webhook_url),
    ``POST /_sandbox/reset`` (clear logs, stats, limits, rule counters, pending webhooks),
    ``POST /_sandbox/inbound`` (``{"from": "+91…", "text": "STOP"}`` → Meta's inbound
    message webhook; it also opens the 24-hour customer service window),
    ``POST /_sandbox/flush`` (post every scheduled webhook now and wait for it),
    ``GET|POST /_sandbox/tokens`` (each sender's current token by fingerprint and expiry;
    POST ``{"sender" | "fingerprint", "expires_at" | "expires_in_s"}`` expires a token:
    Meta's 190/463 from then on).

Known senders, their tokens and limits come from ``WANOTIFY_SENDERS`` (a sender's
``access_token_file`` is re-read when it changes, so rotating it serves both sides; old
tokens stay valid until they expire, as on Meta; ``WANOTIFY_SANDBOX_TOKEN_EXPIRY`` sets
expiry times); the approved templates from ``WANOTIFY_TEMPLATES``; webhooks are signed
with ``WANOTIFY_APP_SECRET``.

Each part lives in the module named after what it doubles: :mod:`.messages` (the messages
edge), :mod:`.objects` (phone number and WABA objects), :mod:`.templates` (the template
listing and the template-send check), :mod:`.tokens` (token checks, ``debug_token``),
:mod:`.sms` (the SMS provider) and :mod:`.control` (``/_sandbox/*``), all sharing one
:class:`~.state.SandboxState`; :mod:`.graph` holds the Graph API plumbing they share (errors
as exceptions, replies, paging, unknown paths). This module only wires them together.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.routing import Route

from wanotify.config import Settings, get_settings
from wanotify.core.templates import Catalogue
from wanotify.devtools.sandbox.control import Control
from wanotify.devtools.sandbox.failures import default_rules, parse_rules
from wanotify.devtools.sandbox.graph import fallback
from wanotify.devtools.sandbox.messages import Messages, wa_id_of
from wanotify.devtools.sandbox.objects import Objects
from wanotify.devtools.sandbox.sms import Sms
from wanotify.devtools.sandbox.state import SandboxState
from wanotify.devtools.sandbox.templates import Templates
from wanotify.devtools.sandbox.tokens import TokenBook

__all__ = ["DEFAULT_WEBHOOK_URL", "Sandbox", "create_app", "wa_id_of"]

log = logging.getLogger("wanotify.devtools.sandbox")

DEFAULT_WEBHOOK_URL = "http://127.0.0.1:8000/webhooks/whatsapp"


class Sandbox:
    """One sandbox server: its state, and the parts that serve it."""

    def __init__(
        self,
        settings: Settings,
        webhook_url: str | None,
        *,
        catalogue: Catalogue | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.state = SandboxState(
            settings, webhook_url, catalogue=catalogue, clock=clock, wall=wall, rng=rng
        )
        self.tokens = TokenBook(self.state)
        self.templates = Templates(self.state.catalogue, self.state.wabas, self.tokens)
        raw_rules = settings.sandbox_failure_rules()
        self.state.failures.replace(
            default_rules() if raw_rules is None else parse_rules(raw_rules)
        )
        self.messages = Messages(self.state, self.tokens, self.templates)
        self.objects = Objects(self.state, self.tokens)
        self.sms = Sms(self.state)
        self.control = Control(self.state, self.tokens)

    def reset_state(self) -> None:
        """Clear logs, stats, limits, rule counters, service windows and pending webhooks."""
        self.state.reset()

    def routes(self) -> list[Route]:
        c = self.control
        return [
            Route("/{version}/{object_id}/messages", self.messages.post, methods=["POST"]),
            Route("/_sandbox/healthz", c.healthz, methods=["GET"]),
            Route("/_sandbox/stats", c.stats, methods=["GET"]),
            Route("/_sandbox/messages", c.message_log, methods=["GET"]),
            Route("/_sandbox/sms", c.sms_log, methods=["GET"]),
            Route("/_sandbox/failures", c.failures_get, methods=["GET"]),
            Route("/_sandbox/failures", c.failures_set, methods=["POST", "PUT"]),
            Route("/_sandbox/config", c.config_get, methods=["GET"]),
            Route("/_sandbox/config", c.config_set, methods=["POST", "PATCH"]),
            Route("/_sandbox/reset", c.reset, methods=["POST"]),
            Route("/_sandbox/inbound", c.inbound, methods=["POST"]),
            Route("/_sandbox/flush", c.flush, methods=["POST"]),
            Route("/_sandbox/tokens", c.tokens_get, methods=["GET"]),
            Route("/_sandbox/tokens", c.tokens_set, methods=["POST"]),
            Route(
                "/2010-04-01/Accounts/{account_sid}/Messages.json", self.sms.send, methods=["POST"]
            ),
            Route("/{version}/debug_token", self.tokens.debug_token, methods=["GET"]),
            Route(
                "/{version}/{object_id}/message_templates",
                self.templates.message_templates,
                methods=["GET"],
            ),
            Route(
                "/{version}/{object_id}/phone_numbers", self.objects.phone_numbers, methods=["GET"]
            ),
            Route("/{version}/{object_id}", self.objects.get_object, methods=["GET"]),
            Route("/{path:path}", fallback, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
        ]


def create_app(settings: Settings | None = None, *, webhook_url: str | None = None) -> Starlette:
    """The sandbox ASGI app.

    ``webhook_url`` is where status webhooks go; None or "" sends none (the ``wanotify
    sandbox`` command passes :data:`DEFAULT_WEBHOOK_URL` unless told otherwise). The
    :class:`Sandbox` behind the app is ``app.state.sandbox``.
    """
    settings = settings if settings is not None else get_settings()
    sandbox = Sandbox(settings, webhook_url)
    state = sandbox.state

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await state.dispatcher.start()
        log.info(
            "sandbox: %d sender(s), %d template(s), %d failure rule(s), webhooks %s",
            len(state.senders),
            len(state.catalogue),
            len(state.failures.rules),
            state.dispatcher.url or "off",
        )
        try:
            yield
        finally:
            await state.dispatcher.stop()

    app = Starlette(routes=sandbox.routes(), lifespan=lifespan)
    app.state.sandbox = sandbox
    return app
