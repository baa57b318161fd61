"""What one sandbox server knows and records, shared by every part of it.

The senders (from ``WANOTIFY_SENDERS``), the catalogue, the runtime configuration, the
webhook dispatcher, Meta's limits, the failure rules, the request logs and statistics, the
customer service windows and the message ids it hands out.
"""

from __future__ import annotations

import base64
import os
import random
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import phonenumbers

from wanotify.config import SenderConfig, Settings
from wanotify.core.templates import Catalogue
from wanotify.devtools.sandbox.failures import FailureInjector
from wanotify.devtools.sandbox.limits import LimitRegistry
from wanotify.devtools.sandbox.webhooks import Target, WebhookDispatcher
from wanotify.providers import tokens as provider_tokens
from wanotify.templates.catalogue import load_catalogue

MAX_LOG = 1_000_000
MAX_SMS_LOG = 100_000
MAX_WINDOWS = 200_000
SERVICE_WINDOW_S = 24 * 3600.0


@dataclass(frozen=True, slots=True)
class SandboxSender:
    config: SenderConfig
    phone_number_id: str
    waba_id: str
    token: str  # the token read at start (later ones: :class:`~.tokens.TokenBook`)
    display_digits: str
    display_formatted: str


@dataclass(slots=True)
class RuntimeConfig:
    latency_ms: float
    webhook_delay_ms: float
    read_ratio: float
    duplicate_ratio: float
    reorder_ratio: float
    service_window: bool = True


def display(number: str | None, pnid: str) -> tuple[str, str]:
    """(digits as in webhook metadata, human format as in GET /{phone_number_id})."""
    if number:
        digits = "".join(c for c in number if c.isdigit())
        try:
            formatted = phonenumbers.format_number(
                phonenumbers.parse("+" + digits), phonenumbers.PhoneNumberFormat.INTERNATIONAL
            )
        except phonenumbers.NumberParseException:
            formatted = "+" + digits
        return digits, formatted
    digits = "1555" + pnid[-7:].rjust(7, "0")
    return digits, f"+1 555-{digits[4:7]}-{digits[7:]}"


class SandboxState:
    """State of one sandbox server.

    ``failures`` starts without rules: :class:`~.app.Sandbox` installs the configured ones
    once the tokens are loaded (configuration errors are reported in that order).
    """

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
        self.settings = settings
        self.clock = clock
        self.wall = wall
        self.rng = rng or random.Random()
        self.catalogue = (
            catalogue if catalogue is not None else load_catalogue(settings.templates_path)
        )
        self.config = RuntimeConfig(
            latency_ms=settings.sandbox_latency_ms,
            webhook_delay_ms=settings.sandbox_webhook_delay_ms,
            read_ratio=settings.sandbox_read_ratio,
            duplicate_ratio=settings.sandbox_duplicate_ratio,
            reorder_ratio=settings.sandbox_reorder_ratio,
        )
        secret = settings.app_secret.get_secret_value() if settings.app_secret else None
        self.dispatcher = WebhookDispatcher(
            webhook_url or None,
            secret,
            delay_ms=self.config.webhook_delay_ms,
            read_ratio=self.config.read_ratio,
            duplicate_ratio=self.config.duplicate_ratio,
            reorder_ratio=self.config.reorder_ratio,
            rng=self.rng,
            clock=clock,
            wall=wall,
        )
        self.limits = LimitRegistry(clock)
        self.sender_list: list[SandboxSender] = []  # as configured (ids may repeat)
        self.senders: dict[str, SandboxSender] = {}  # by phone number id
        self.wabas: dict[str, list[SandboxSender]] = {}
        for sc in settings.sender_list:
            digits, formatted = display(sc.display_phone_number, sc.phone_number_id)
            try:
                first = provider_tokens.current(sc).value
            except provider_tokens.TokenUnavailable as exc:
                raise ValueError(f"sandbox: sender {sc.name}: {exc}") from None
            s = SandboxSender(sc, sc.phone_number_id, sc.waba_id, first, digits, formatted)
            self.sender_list.append(s)
            self.senders[s.phone_number_id] = s
            self.wabas.setdefault(s.waba_id, []).append(s)
            self.limits.configure(s.phone_number_id, sc.mps, sc.pair_burst, sc.pair_interval_s)
            self.dispatcher.register(Target(s.phone_number_id, s.waba_id, digits))
        self.default_sender = next(iter(self.senders.values()))
        self.failures = FailureInjector((), self.rng)
        # every /messages request: (seq, t, pnid, to, type, template, code, http_status,
        # wamid, biz_opaque_callback_data)
        self.log: deque[tuple[Any, ...]] = deque(maxlen=MAX_LOG)
        self.seq = 0
        self.sms_log: deque[dict[str, Any]] = deque(maxlen=MAX_SMS_LOG)
        self.sms_seq = 0
        self.windows: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._boot = os.urandom(4).hex().upper()
        self._counter = 0
        self.started = wall()
        self.reset_stats()

    # ---- records and statistics -------------------------------------------------------

    def reset_stats(self) -> None:
        self.per_sender: dict[str, dict[str, Any]] = {}
        self.by_code: dict[int, int] = {}
        self.sms_by_code: dict[int, int] = {}

    def record(
        self,
        t: float,
        pnid: str,
        to: Any,
        mtype: str | None,
        template: str | None,
        code: int,
        http_status: int,
        wamid: str | None = None,
        biz: str | None = None,
        peer: str | None = None,
    ) -> None:
        """Log one /messages request (``peer``: the client's address) and count its outcome."""
        self.seq += 1
        to_s = to if isinstance(to, str) or to is None else str(to)
        self.log.append((self.seq, t, pnid, to_s, mtype, template, code, http_status, wamid, biz, peer))
        key = pnid if pnid in self.senders else "unknown"
        st = self.per_sender.get(key)
        if st is None:
            st = self.per_sender[key] = {
                "requests": 0,
                "accepted": 0,
                "rejected": 0,
                "by_code": {},
            }
        st["requests"] += 1
        if code == 0:
            st["accepted"] += 1
        else:
            st["rejected"] += 1
        by_code = st["by_code"]
        by_code[code] = by_code.get(code, 0) + 1
        self.by_code[code] = self.by_code.get(code, 0) + 1

    def record_sms(
        self, entry: dict[str, Any], sid: str | None, status: str, code: int, http_status: int
    ) -> None:
        """Log one SMS request and count its outcome."""
        self.sms_seq += 1
        entry.update(seq=self.sms_seq, sid=sid, status=status, code=code, http_status=http_status)
        self.sms_log.append(entry)
        self.sms_by_code[code] = self.sms_by_code.get(code, 0) + 1

    def reset(self) -> None:
        """Clear logs, stats, limits, rule counters, service windows and pending webhooks.

        Sequence numbers keep counting, so ``?after=`` cursors stay valid.
        """
        self.log.clear()
        self.sms_log.clear()
        self.reset_stats()
        self.limits.reset()
        self.failures.reset_counters()
        self.windows.clear()
        self.dispatcher.clear()

    # ---- message ids and service windows ---------------------------------------------

    def wamid(self, wa_id: str) -> str:
        """A unique id shaped like Meta's (base64 of a small protobuf-like blob)."""
        self._counter += 1
        tail = f"{self._boot}{self._counter:010X}".encode("ascii")
        raw = (
            b"\x1c\x18"
            + bytes((len(wa_id),))
            + wa_id.encode("ascii")
            + b"\x15\x02\x00\x11\x18\x12"
            + tail
            + b"\x00"
        )
        return "wamid." + base64.b64encode(raw).decode("ascii")

    def window_open(self, pnid: str, wa_id: str, now: float) -> bool:
        """Whether the user wrote to this sender in the last 24 hours."""
        expires = self.windows.get((pnid, wa_id))
        return expires is not None and expires > now

    def open_window(self, pnid: str, wa_id: str, now: float) -> None:
        key = (pnid, wa_id)
        self.windows[key] = now + SERVICE_WINDOW_S
        self.windows.move_to_end(key)
        while len(self.windows) > MAX_WINDOWS:
            self.windows.popitem(last=False)
