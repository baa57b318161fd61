"""Meta's JSON values, checked by hand (the hot path: every status of every webhook): strings,
ids, unix timestamps; a malformed one raises :class:`Bad` with where it is."""

from __future__ import annotations

from datetime import UTC, datetime

MAX_UNIX = 253_402_300_799  # 9999-12-31T23:59:59Z, the last second datetime can hold


class Bad(Exception):
    """An item inside a valid body is malformed; ``sub`` extends the item's path."""

    def __init__(self, reason: str, sub: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.sub = sub


def as_str(value: object) -> str | None:
    """A string field: strings only."""
    return value if type(value) is str else None


def as_id(value: object) -> str | None:
    """An id field: strings, or integers (Meta sends template ids as numbers)."""
    if type(value) is str:
        return value
    if type(value) is int:
        return str(value)
    return None


def unix(value: object, name: str) -> datetime:
    """Unix seconds (digit string or integer) to an aware UTC datetime."""
    if type(value) is str:
        if not (0 < len(value) <= 12 and value.isascii() and value.isdigit()):
            raise Bad(f"{name} is not unix seconds: {value[:40]!r}", f".{name}")
        seconds = int(value)
    elif type(value) is int:
        seconds = value
    elif value is None:
        raise Bad(f"missing {name}", f".{name}")
    else:
        raise Bad(f"{name} is not unix seconds ({type(value).__name__})", f".{name}")
    if not 0 <= seconds <= MAX_UNIX:
        raise Bad(f"{name} out of range: {seconds}", f".{name}")
    return datetime.fromtimestamp(seconds, UTC)


def unix_or_none(value: object) -> datetime | None:
    try:
        return unix(value, "timestamp")
    except Bad:
        return None
