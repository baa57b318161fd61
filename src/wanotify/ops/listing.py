"""``GET /v1/notifications``: jobs newest first, filtered, a page at a time.

Pages are keyed on the job id (UUIDv7, time-ordered): the next page starts below the last
id of this one, so a page costs the same however deep the paging goes, and a job stored
meanwhile never shifts one. ``created_after`` / ``created_before`` also bound the id (an
id's first 48 bits are the milliseconds it was made, a few before its ``created_at``), so
a time range walks only its own part of the primary key.

``status`` is a filter, not an index: it changes on every status report, and an index on
it would stop those updates happening in place (migration 0010).
"""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from wanotify.db import connection_scope

MAX_LIMIT = 500
DEFAULT_LIMIT = 100
# An id is made before its row's created_at is set (same process, the same request or
# batch); this much slack either side keeps every row of a time range inside the id bounds.
ID_SLACK = timedelta(minutes=5)

COLUMNS = (
    "id, status, kind, channel, sender, template, language, error_code, error_message, wamid,"
    " attempt_count, created_at, accepted_at, delivered_at, read_at, finished_at, expires_at,"
    " metadata, idempotency_key, campaign_id"
)


@dataclass(frozen=True)
class ListFilter:
    statuses: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    senders: tuple[str, ...] = ()
    to: str | None = None
    idempotency_key: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    limit: int = DEFAULT_LIMIT
    after_id: uuid.UUID | None = None  # the cursor: the last id of the previous page


def encode_cursor(job_id: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(job_id.bytes).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> uuid.UUID | None:
    """The id a cursor stands for; None if it is not one this API gave."""
    if len(cursor) != 22:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "==")
    except (binascii.Error, ValueError):
        return None
    return uuid.UUID(bytes=raw) if len(raw) == 16 and encode_cursor(uuid.UUID(bytes=raw)) == cursor else None


def id_floor(at: datetime) -> uuid.UUID:
    """The smallest UUIDv7 made at ``at`` (its millisecond, every other bit zero)."""
    ms = max(0, min(int(at.timestamp() * 1000), (1 << 48) - 1))
    return uuid.UUID(int=ms << 80)


def list_sql(f: ListFilter, allowed: tuple[str, ...] | None = None) -> tuple[str, dict[str, Any]]:
    """The page's statement and its parameters (psycopg's ``%(name)s``)."""
    where: list[str] = []
    args: dict[str, Any] = {"n": f.limit + 1}
    if f.after_id is not None:
        where.append("id < %(after)s")
        args["after"] = f.after_id
    if f.created_after is not None:
        where += ["created_at >= %(ca)s", "id >= %(ca_id)s"]
        args["ca"], args["ca_id"] = f.created_after, id_floor(f.created_after - ID_SLACK)
    if f.created_before is not None:
        where += ["created_at < %(cb)s", "id < %(cb_id)s"]
        args["cb"], args["cb_id"] = f.created_before, id_floor(f.created_before + ID_SLACK)
    for col, key, values in (("status", "st", f.statuses), ("kind", "kd", f.kinds), ("sender", "sn", f.senders)):
        if values:
            where.append(f"{col} = ANY(%({key})s)")
            args[key] = list(values)
    if allowed is not None:
        where.append("sender = ANY(%(allowed)s)")
        args["allowed"] = list(allowed)
    if f.to is not None:
        where.append("to_number = %(to)s")
        args["to"] = f.to
    if f.idempotency_key is not None:
        where.append("idempotency_key = %(key)s")
        args["key"] = f.idempotency_key
    sql = (f"SELECT {COLUMNS} FROM notifications"
           + (" WHERE " + " AND ".join(where) if where else "")
           + " ORDER BY id DESC LIMIT %(n)s")
    return sql, args


def list_notifications(f: ListFilter, allowed: tuple[str, ...] | None = None) -> dict[str, Any]:
    """A page of jobs matching ``f``, newest first, and the cursor of the next page (None on
    the last). ``allowed``: the senders a scoped key may see (None: all)."""
    sql, args = list_sql(f, allowed)
    with connection_scope() as conn:
        rows = conn.exec_driver_sql(sql, args).mappings().all()
    more = len(rows) > f.limit
    rows = rows[: f.limit]
    return {
        "items": [item(r) for r in rows],
        "next_cursor": encode_cursor(rows[-1]["id"]) if more else None,
    }


def _iso(v: datetime | None) -> str | None:
    return v.isoformat() if v is not None else None


def item(r: Any) -> dict[str, Any]:
    """One job as the list shows it: ``GET /v1/notifications/{id}`` without its attempts
    and events."""
    return {
        "id": str(r["id"]),
        "status": r["status"],
        "kind": r["kind"],
        "channel": r["channel"],
        "sender": r["sender"],
        "template": r["template"],
        "language": r["language"],
        "error_code": r["error_code"],
        "error_message": r["error_message"],
        "provider_message_id": r["wamid"],
        "idempotency_key": r["idempotency_key"],
        "metadata": r["metadata"],
        "campaign_id": str(r["campaign_id"]) if r["campaign_id"] else None,
        "attempt_count": r["attempt_count"],
        "created_at": _iso(r["created_at"]),
        "accepted_at": _iso(r["accepted_at"]),
        "delivered_at": _iso(r["delivered_at"]),
        "read_at": _iso(r["read_at"]),
        "finished_at": _iso(r["finished_at"]),
        "expires_at": _iso(r["expires_at"]),
    }
