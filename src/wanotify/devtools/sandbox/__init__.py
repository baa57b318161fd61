"""A local double of Meta's WhatsApp Cloud API (and of a Twilio-style SMS provider).

``wanotify sandbox`` serves it; tests and benchmarks run the whole pipeline against it
without Meta credentials. See :mod:`wanotify.devtools.sandbox.app` for the endpoints,
:mod:`wanotify.devtools.sandbox.failures` for failure injection (and the default rules) and
:mod:`wanotify.devtools.sandbox.webhooks` for the status webhooks.
"""

from __future__ import annotations

from wanotify.devtools.sandbox.app import DEFAULT_WEBHOOK_URL, Sandbox, create_app
from wanotify.devtools.sandbox.failures import DEFAULT_RULES, FailureRule, parse_rules
from wanotify.devtools.sandbox.server import run_sandbox, uvicorn_config
from wanotify.devtools.sandbox.webhooks import sign

__all__ = [
    "DEFAULT_RULES",
    "DEFAULT_WEBHOOK_URL",
    "FailureRule",
    "Sandbox",
    "create_app",
    "parse_rules",
    "run_sandbox",
    "sign",
    "uvicorn_config",
]
