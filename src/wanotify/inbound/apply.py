"""Applying status reports to jobs: forward only, in provider-time order, set-based.

Used by webhook ingest (``inbound.ingest``), by the send path when a wamid becomes known
after its statuses arrived (``delivery.outcomes``), and by the sweeper.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.orm import Session

from wanotify.core.status import sql_before, sql_forward, sql_terminal
from wanotify.db import session_scope
from wanotify.metrics import ACCEPTED_TO_DELIVERED

# A failed report applies while the job is before delivered (core.status).
_FAILS = f"v.status = 'failed' AND {sql_before('n.status', 'delivered')}"

# One statement moves many jobs by one status report each: forward only; failed only
# before delivered; terminal states never move; timestamps filled once. (A job with several
# reports in one batch is moved by several statements, in provider-time order.) FROM_CLAUSE
# names the reports.
APPLY_SET = f"""
UPDATE notifications AS n SET
  status = CASE
    WHEN {sql_terminal('n.status')} THEN n.status
    WHEN {_FAILS} THEN 'failed'
    WHEN v.status <> 'failed' AND {sql_forward('n.status', 'v.status')} THEN v.status
    ELSE n.status END,
  error_code = CASE WHEN {_FAILS} THEN v.code ELSE n.error_code END,
  error_message = CASE WHEN {_FAILS} THEN v.title ELSE n.error_message END,
  finished_at = CASE WHEN {_FAILS} THEN now() ELSE n.finished_at END,
  sent_at = CASE WHEN v.status = 'sent' THEN COALESCE(n.sent_at, v.at) ELSE n.sent_at END,
  delivered_at = CASE WHEN v.status = 'delivered' THEN COALESCE(n.delivered_at, v.at) ELSE n.delivered_at END,
  read_at = CASE WHEN v.status = 'read' THEN COALESCE(n.read_at, v.at) ELSE n.read_at END,
  wamid = COALESCE(n.wamid, v.wamid),
  updated_at = now()
FROM_CLAUSE"""

# What an applied report means beyond the row: a delivery (its accepted→delivered seconds, for
# the histogram) or a failure with a fallback still to run.
APPLY_RETURNING = """n.id,
  CASE WHEN v.status = 'delivered' AND n.delivered_at IS NOT NULL AND n.accepted_at IS NOT NULL
         THEN 'delivered'
       WHEN v.status = 'failed' AND n.status = 'failed' AND n.fallback IS NOT NULL
         AND n.fallback_state IS NULL THEN 'fallback' END AS what,
  extract(epoch FROM n.delivered_at - n.accepted_at)::float8 AS secs"""

APPLY_SQL = text(
    APPLY_SET.replace(
        "FROM_CLAUSE",
        "FROM jsonb_to_recordset(CAST(:rows AS jsonb))\n"
        "  AS v(nid uuid, status text, at timestamptz, code int, title text, wamid text)\nWHERE n.id = v.nid",
    )
    + f"\nRETURNING {APPLY_RETURNING}"
)


def observe(what: str, nid: uuid.UUID, secs: float | None, fallback_ids: list[uuid.UUID]) -> None:
    if what == "delivered" and secs is not None:
        ACCEPTED_TO_DELIVERED.observe(max(0.0, float(secs)))
    elif what == "fallback":
        fallback_ids.append(nid)


def _event_params(r: Any) -> dict[str, Any]:
    """APPLY_SQL's parameters from a status_events row."""
    return {
        "nid": r.notification_id,
        "status": r.status,
        "at": r.at,
        "code": r.error_code,
        "title": r.error_title,
        "wamid": r.provider_message_id,
    }


def apply_rows(s: Session, rows: list[dict[str, Any]]) -> list[tuple[str, uuid.UUID, float | None]]:
    """Apply reports to their jobs; what the metrics and the fallback need (see WRITE_SQL)."""
    out: list[tuple[str, uuid.UUID, float | None]] = []
    if not rows:
        return out
    # Provider-time order per job (ties: the order given), so the final state is the furthest
    # one reached; round k carries each job's k-th report (usually one round: one report per
    # job per batch).
    rows.sort(key=lambda r: (str(r["nid"]), r["at"] or datetime.min.replace(tzinfo=UTC)))
    rounds: list[list[dict[str, Any]]] = []
    seen: dict[str, int] = {}
    for r in rows:
        k = seen.get(str(r["nid"]), 0)
        seen[str(r["nid"])] = k + 1
        if k == len(rounds):
            rounds.append([])
        rounds[k].append(r)
    for batch in rounds:
        for row in s.execute(APPLY_SQL, {"rows": orjson.dumps(batch, default=str).decode()}):
            if row.what is not None:
                out.append((row.what, row.id, row.secs))
    return out


def apply_pending_for_wamids(s: Session, wamids: list[str]) -> list[uuid.UUID]:
    """Apply stored, unmatched status events for wamids that just became known; the failed
    jobs whose fallback is to be started (once the caller has committed)."""
    rows = s.execute(
        text(
            "UPDATE status_events e SET notification_id = n.id, applied = true"
            " FROM notifications n WHERE e.applied = false AND e.provider_message_id = ANY(:w)"
            " AND n.wamid = e.provider_message_id"
            " RETURNING e.notification_id, e.status, e.at, e.error_code, e.error_title,"
            " e.provider_message_id"
        ),
        {"w": wamids},
    ).all()
    failed: list[uuid.UUID] = []
    for what, nid, secs in apply_rows(s, [_event_params(r) for r in rows]):
        observe(what, nid, secs, failed)
    return failed


def reconcile_unmatched(max_age_hours: int = 24) -> list[uuid.UUID]:
    """Sweeper: apply events that arrived before their wamid was recorded; the failed jobs
    whose fallback is to be started."""
    with session_scope() as s:
        wamids = s.execute(
            text(
                "SELECT DISTINCT e.provider_message_id FROM status_events e JOIN notifications n"
                " ON n.wamid = e.provider_message_id WHERE e.applied = false"
                " AND e.received_at > now() - make_interval(hours => :h) LIMIT 5000"
            ),
            {"h": max_age_hours},
        ).scalars().all()
        if not wamids:
            return []
        return apply_pending_for_wamids(s, list(wamids))
