"""Marketing compliance: the opt-out list and quiet hours.

* **Opt-outs**: a user who replies with an opt-out keyword (``STOP``, ``UNSUBSCRIBE``, …,
  configurable) or tells Meta to stop marketing messages (the ``user_preferences`` webhook)
  gets no more marketing from any of our numbers; an opt-in keyword (``START``) or Meta's
  ``resume`` lifts it. The latest change by the user's own clock wins, whatever the order in
  which webhooks arrive. OTP and transactional traffic is never affected.
* **Quiet hours** (default 21:00–09:00, ``WANOTIFY_QUIET_HOURS``) in the recipient's time zone:
  the job's ``timezone`` if given, else every zone of the number's region (the window is
  quiet if it is quiet in any of them). Marketing waits until the window opens; nothing is
  dropped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import orjson
from sqlalchemy import text
from sqlalchemy.orm import Session

from wanotify.compliance.hashing import phone_hash
from wanotify.core.zones import valid_zone, zones_for

_NOT_WORD = re.compile(r"[^\w\s]+", re.UNICODE)
_SPACES = re.compile(r"\s+")


def _norm(s: str) -> str:
    return _SPACES.sub(" ", _NOT_WORD.sub(" ", s)).strip().upper()


@lru_cache(maxsize=8)  # parsed once per configuration, not per ingest batch
def keyword_sets(opt_out: str, opt_in: str) -> tuple[frozenset[str], frozenset[str]]:
    return (frozenset(_norm(k) for k in opt_out.split(",") if k.strip()),
            frozenset(_norm(k) for k in opt_in.split(",") if k.strip()))


def keyword_action(message: str | None, opt_out: frozenset[str], opt_in: frozenset[str]) -> bool | None:
    """True (opt out), False (opt back in) or None, for a whole inbound message: "stop",
    "STOP!" and " Stop " are the keyword; "please stop the delivery" is not."""
    if not message:
        return None
    m = _norm(message)
    if m in opt_out:
        return True
    if m in opt_in:
        return False
    return None


@dataclass(frozen=True)
class Preference:
    phone: str  # E.164
    opted_out: bool
    at: datetime  # the user's action, by Meta's clock
    source: str  # keyword | meta_preference | api
    detail: str | None = None


UPSERT_SQL = text(
    "INSERT INTO opt_outs (phone_hash, phone, opted_out, source, detail, at, updated_at)"
    " SELECT r.h, r.phone, r.opted_out, r.source, r.detail, r.at, now()"
    " FROM jsonb_to_recordset(CAST(:rows AS jsonb))"
    "   AS r(h text, phone text, opted_out bool, source text, detail text, at timestamptz)"
    " ON CONFLICT (phone_hash) DO UPDATE SET phone = excluded.phone, opted_out = excluded.opted_out,"
    "   source = excluded.source, detail = excluded.detail, at = excluded.at, updated_at = now()"
    " WHERE excluded.at >= opt_outs.at"
)


def record_preferences(s: Session, prefs: Iterable[Preference]) -> int:
    """Apply opt-out/opt-in changes; a change older than the stored one is ignored."""
    latest: dict[str, Preference] = {}
    for p in prefs:  # the last word of each user within this batch
        cur = latest.get(p.phone)
        if cur is None or p.at >= cur.at:
            latest[p.phone] = p
    if not latest:
        return 0
    rows = [{"h": phone_hash(p.phone), "phone": p.phone, "opted_out": p.opted_out, "source": p.source, "detail": p.detail,
             "at": p.at.isoformat()} for p in latest.values()]
    s.execute(UPSERT_SQL, {"rows": orjson.dumps(rows).decode()})
    return len(rows)


def opted_out(s: Session, phones: Iterable[str]) -> set[str]:
    """The numbers among ``phones`` that opted out (looked up by keyed hash: an erased
    person's opt-out, which keeps only the hash, still holds)."""
    by_hash = {phone_hash(p): p for p in set(phones)}
    if not by_hash:
        return set()
    return {by_hash[h] for h in s.execute(
        text("SELECT phone_hash FROM opt_outs WHERE opted_out AND phone_hash = ANY(:h)"),
        {"h": list(by_hash)}).scalars()}


# --- quiet hours ------------------------------------------------------------------------


def parse_window(spec: str) -> tuple[time, time] | None:
    """``"21:00-09:00"`` → (21:00, 09:00); ``""`` or ``"off"`` → None (no quiet hours)."""
    spec = spec.strip()
    if not spec or spec.lower() in ("off", "none"):
        return None
    m = re.fullmatch(r"(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})", spec)
    if not m:
        raise ValueError(f"quiet hours {spec!r}: expected HH:MM-HH:MM, e.g. 21:00-09:00")
    h1, m1, h2, m2 = (int(x) for x in m.groups())
    if h1 > 23 or h2 > 23 or m1 > 59 or m2 > 59:
        raise ValueError(f"quiet hours {spec!r}: not a time of day")
    return time(h1, m1), time(h2, m2)


def _wait_in_zone(now: datetime, zone: str, start: time, end: time) -> float:
    local = now.astimezone(ZoneInfo(zone))
    t = local.time()
    if start == end:
        return 0.0
    quiet = (start <= t or t < end) if start > end else (start <= t < end)
    if not quiet:
        return 0.0
    opens = local.replace(hour=end.hour, minute=end.minute, second=0, microsecond=0)
    if opens <= local:
        opens += timedelta(days=1)
    return (opens - local).total_seconds()


def quiet_wait_s(phone: str, now: datetime, window: tuple[time, time] | None,
                 tz: str | None = None) -> float:
    """Seconds until a marketing message to ``phone`` may go (0 outside quiet hours)."""
    if window is None:
        return 0.0
    zones = (tz,) if tz and valid_zone(tz) else zones_for(phone)
    return max(_wait_in_zone(now, z, *window) for z in zones)
