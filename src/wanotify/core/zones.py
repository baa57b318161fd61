"""Time zones: IANA names, and the zones of a phone number's region (``phonenumbers``)."""

from __future__ import annotations

from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers import timezone as pn_tz


def valid_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


@lru_cache(maxsize=4096)
def zones_for(phone: str) -> tuple[str, ...]:
    """The IANA zones of a number's region (several for large countries)."""
    try:
        num = phonenumbers.parse(phone, None)
    except phonenumbers.NumberParseException:
        return ("UTC",)
    zones = tuple(z for z in pn_tz.time_zones_for_number(num) if valid_zone(z))
    return zones or ("UTC",)
