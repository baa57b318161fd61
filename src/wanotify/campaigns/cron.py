"""Recurring campaign schedules: five-field cron expressions, read by Celery's own parser.

``30 9 * * 1-5`` (09:30 on weekdays, UTC), an optional ``CRON_TZ=Asia/Kolkata`` prefix for
another zone (as cronie has it), and the usual aliases (``@hourly``, ``@daily``, ``@weekly``,
``@monthly``). Celery beat's ``campaigns_tick`` starts a run of the campaign at each time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from celery.schedules import crontab

ALIASES = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
MAX_LEN = 120


class CronError(ValueError):
    pass


@dataclass(frozen=True)
class Schedule:
    expression: str  # as given (normalised spaces)
    fields: str  # the five fields
    zone: tzinfo

    def next_after(self, t: datetime) -> datetime:
        """The first time strictly after ``t`` (aware) at which the schedule fires, in UTC."""
        if t.tzinfo is None:
            raise ValueError("t must be timezone-aware")
        c = crontab.from_string(self.fields)
        local = t.astimezone(self.zone).replace(microsecond=0)
        last, delta, _ = c.remaining_delta(local, tz=self.zone)
        nxt = (last + delta).astimezone(UTC)
        if nxt <= t:  # remaining_delta can answer t itself when t is on the minute boundary
            last, delta, _ = c.remaining_delta(local.replace(second=0) + timedelta(minutes=1), tz=self.zone)
            nxt = (last + delta).astimezone(UTC)
        return nxt


def parse(expression: str) -> Schedule:
    """A schedule, or :class:`CronError` saying what is wrong with the expression."""
    text = " ".join(expression.split())
    if not text:
        raise CronError("empty: give five fields, e.g. '30 9 * * 1-5'")
    if len(text) > MAX_LEN:
        raise CronError(f"longer than {MAX_LEN} characters")
    zone: tzinfo = UTC
    body = text
    if body.upper().startswith("CRON_TZ="):
        name, _, body = body[len("CRON_TZ="):].partition(" ")
        try:
            zone = ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise CronError(f"unknown time zone {name!r} in CRON_TZ (an IANA name, e.g. Asia/Kolkata)") from None
    fields = ALIASES.get(body.lower(), body)
    if len(fields.split()) != 5:
        raise CronError(f"{len(fields.split())} fields; a schedule has five: minute hour day-of-month month"
                        " day-of-week (e.g. '30 9 * * 1-5'), or @hourly/@daily/@weekly/@monthly")
    try:
        c = crontab.from_string(fields)
        c.remaining_delta(datetime(2026, 1, 1, tzinfo=zone), tz=zone)  # impossible dates fail here
    except (ValueError, KeyError, IndexError) as exc:
        raise CronError(str(exc) or "not a cron expression") from None
    return Schedule(text, fields, zone)
