"""Failure injection: make chosen recipients fail the way Meta fails them.

A rule is a JSON object::

    {"match": "*0000",        # fnmatch glob on the E.164 recipient, "+" included
     "code": 131026,          # Meta error code (Twilio code for "channel": "sms");
                              #   omit for a latency-only rule
     "mode": "sync",          # "sync": the send is refused with Meta's error body;
                              # "webhook": the send is accepted (200, wamid) and a
                              #   `failed` status webhook with errors[] follows
     "http_status": 400,      # sync mode; default: Meta's status for the code
     "times": 2,              # only the first N matching sends per recipient fail; omit = always
     "probability": 0.5,      # chance that a matching send fails; omit = 1
     "latency_ms": 3000,      # extra delay before the answer (simulate timeouts)
     "channel": "whatsapp",   # "whatsapp" (default), "sms" or "any"
     "details": "...",        # error_data.details; default: Meta's usual text for the code
     "sent_first": true}      # webhook mode: a `sent` status precedes `failed` (default true)

Rules are tried in order; the first one that fires decides. A rule that does not fire (its
``times`` are used up, or its probability draw missed) lets the next matching rule try.

**Default rules** (used when ``WANOTIFY_SANDBOX_FAILURES`` is unset; the demo relies on them):

=========  =========  =======  ====================================================
recipient  mode       code     effect
=========  =========  =======  ====================================================
``*0000``  webhook    131026   accepted, then ``sent`` + ``failed`` (Message undeliverable)
``*0001``  sync       131000   HTTP 500 "Something went wrong" twice per recipient, then
                               the send succeeds (a transient failure)
``*0002``  webhook    131049   accepted, then ``sent`` + ``failed`` (healthy ecosystem
                               engagement: marketing limit)
=========  =========  =======  ====================================================

Set ``WANOTIFY_SANDBOX_FAILURES='[]'`` for no injected failures at all.
"""

from __future__ import annotations

import fnmatch
import random
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Mode = Literal["sync", "webhook"]
Channel = Literal["whatsapp", "sms", "any"]

DEFAULT_RULES: list[dict[str, Any]] = [
    {"match": "*0000", "code": 131026, "mode": "webhook"},
    {"match": "*0001", "code": 131000, "mode": "sync", "http_status": 500, "times": 2},
    {"match": "*0002", "code": 131049, "mode": "webhook"},
]

_KEYS = frozenset(
    {
        "match",
        "code",
        "mode",
        "http_status",
        "times",
        "probability",
        "latency_ms",
        "channel",
        "details",
        "sent_first",
    }
)


class RuleError(ValueError):
    """A failure rule that cannot be used; the message says which field and why."""


@dataclass(frozen=True)
class FailureRule:
    match: str
    code: int | None = None
    mode: Mode = "sync"
    http_status: int | None = None
    times: int | None = None
    probability: float = 1.0
    latency_ms: float = 0.0
    channel: Channel = "whatsapp"
    details: str | None = None
    sent_first: bool = True
    _regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_regex", re.compile(fnmatch.translate(self.match)))

    def matches(self, recipient: str, channel: str) -> bool:
        if self.channel != "any" and self.channel != channel:
            return False
        return self._regex.match(recipient) is not None

    @property
    def fails(self) -> bool:
        """Whether firing this rule fails the send (a latency-only rule does not)."""
        return self.code is not None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"match": self.match}
        if self.code is not None:
            out["code"] = self.code
            out["mode"] = self.mode
        for key in ("http_status", "times", "details"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.probability != 1.0:
            out["probability"] = self.probability
        if self.latency_ms:
            out["latency_ms"] = self.latency_ms
        if self.channel != "whatsapp":
            out["channel"] = self.channel
        if not self.sent_first:
            out["sent_first"] = False
        return out

    @classmethod
    def parse(cls, raw: Any, index: int = 0) -> FailureRule:
        where = f"rule {index}"
        if not isinstance(raw, Mapping):
            raise RuleError(f"{where}: must be an object")
        unknown = sorted(set(raw) - _KEYS)
        if unknown:
            raise RuleError(f"{where}: unknown field(s) {', '.join(unknown)}")
        match = raw.get("match")
        if not isinstance(match, str) or not match:
            raise RuleError(f"{where}.match: must be a non-empty glob such as '*0000'")
        code = raw.get("code")
        if code is not None and (isinstance(code, bool) or not isinstance(code, int) or code < 0):
            raise RuleError(f"{where}.code: must be a non-negative integer")
        mode = raw.get("mode", "sync")
        if mode not in ("sync", "webhook"):
            raise RuleError(f"{where}.mode: must be 'sync' or 'webhook'")
        http_status = raw.get("http_status")
        if http_status is not None and (
            isinstance(http_status, bool)
            or not isinstance(http_status, int)
            or not 400 <= http_status <= 599
        ):
            raise RuleError(f"{where}.http_status: must be an integer from 400 to 599")
        times = raw.get("times")
        if times is not None and (
            isinstance(times, bool) or not isinstance(times, int) or times < 0
        ):
            raise RuleError(f"{where}.times: must be a non-negative integer")
        probability = raw.get("probability", 1.0)
        if (
            isinstance(probability, bool)
            or not isinstance(probability, int | float)
            or not (0.0 <= float(probability) <= 1.0)
        ):
            raise RuleError(f"{where}.probability: must be a number from 0 to 1")
        latency_ms = raw.get("latency_ms", 0.0)
        if (
            isinstance(latency_ms, bool)
            or not isinstance(latency_ms, int | float)
            or latency_ms < 0
        ):
            raise RuleError(f"{where}.latency_ms: must be a non-negative number")
        channel = raw.get("channel", "whatsapp")
        if channel not in ("whatsapp", "sms", "any"):
            raise RuleError(f"{where}.channel: must be 'whatsapp', 'sms' or 'any'")
        details = raw.get("details")
        if details is not None and not isinstance(details, str):
            raise RuleError(f"{where}.details: must be a string")
        sent_first = raw.get("sent_first", True)
        if not isinstance(sent_first, bool):
            raise RuleError(f"{where}.sent_first: must be true or false")
        if code is None and not latency_ms:
            raise RuleError(f"{where}: give a code (to fail) or latency_ms (to delay)")
        return cls(
            match=match,
            code=code,
            mode=mode,
            http_status=http_status,
            times=times,
            probability=float(probability),
            latency_ms=float(latency_ms),
            channel=channel,
            details=details,
            sent_first=sent_first,
        )


def parse_rules(raw: Any) -> list[FailureRule]:
    """Rules from a JSON list (or one object); raises :class:`RuleError`."""
    if raw is None:
        return []
    if isinstance(raw, Mapping):
        raw = [raw]
    if not isinstance(raw, list):
        raise RuleError("failure rules must be a JSON list of rule objects")
    return [FailureRule.parse(item, i) for i, item in enumerate(raw)]


def default_rules() -> list[FailureRule]:
    return parse_rules(DEFAULT_RULES)


class FailureInjector:
    """Decides, per send, whether a rule fires. Counts ``times`` per (rule, recipient)."""

    def __init__(self, rules: Iterable[FailureRule] = (), rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()
        self._rules: tuple[FailureRule, ...] = ()
        self._fired: dict[tuple[int, str], int] = {}
        self.replace(rules)

    @property
    def rules(self) -> tuple[FailureRule, ...]:
        return self._rules

    def replace(self, rules: Iterable[FailureRule]) -> None:
        """Install new rules (and forget how often the old ones fired)."""
        self._rules = tuple(rules)
        self._fired.clear()

    def reset_counters(self) -> None:
        self._fired.clear()

    def decide(self, recipient: str, channel: str = "whatsapp") -> FailureRule | None:
        """The rule that fires for this send to ``recipient`` (E.164, with +), or None."""
        for index, rule in enumerate(self._rules):
            if not rule.matches(recipient, channel):
                continue
            key = (index, recipient)
            if rule.times is not None and self._fired.get(key, 0) >= rule.times:
                continue
            if rule.probability < 1.0 and self._rng.random() >= rule.probability:
                continue
            if rule.times is not None:
                self._fired[key] = self._fired.get(key, 0) + 1
            return rule
        return None
