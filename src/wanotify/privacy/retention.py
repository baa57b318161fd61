"""Retention and erasure (India's DPDP Act 2023, GDPR): plain functions, set-based SQL.

* **Retention** (``WANOTIFY_RETENTION``, e.g. ``otp=24h,transactional=90d``): ``purge`` replaces
  the personal fields of rows past their retention — numbers, names and codes in template
  parameters, rendered payloads, fallback SMS numbers and email addresses, metadata,
  idempotency keys, inbound texts, wamids (Meta's encode the recipient's number) — while the
  rows stay, so counts per status and kind, pricing categories and campaign counts do not
  change. Numbers become a keyed pseudonym (``h:`` + 18 hex of HMAC-SHA256), so distinct
  recipients can still be counted. Raw webhook bodies and rejected job bodies past their
  retention are deleted. Batches of ``BATCH`` rows, ``FOR UPDATE SKIP LOCKED``, idempotent.
* **OTP codes** are wiped (params, payload, text; the request fingerprint is re-keyed) as soon
  as nothing can send them any more: the job has ended (and its fallback too), or its
  ``expires_at`` has passed. The sweeper does it every few seconds; ``purge`` too.
* **Erasure** of one person is in ``compliance.erasure``; the keyed hashes in
  ``compliance.hashing``; the periods are parsed with the settings (``config``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text

from wanotify.compliance.hashing import hmac_pads, pseudo_sql, sql_hmac
from wanotify.config import RETENTION_KINDS, get_settings
from wanotify.core.kinds import KINDS
from wanotify.db import connection_scope, session_scope

log = logging.getLogger("wanotify.privacy.retention")

BATCH = 1000
__all__ = ["BATCH", "RETENTION_KINDS", "Report", "Row", "anonymise_sql", "count_otp_due", "purge",
           "retention", "scrub_sql", "wipe_otp_codes"]


def retention() -> dict[str, timedelta | None]:
    return get_settings().retention_periods


RANDOM_MARK = "'x:' || left(md5(random()::text || clock_timestamp()::text), 18)"
# Phone numbers and email addresses inside provider error texts.
_SCRUB = ("regexp_replace(regexp_replace({c}, '\\+?\\d[\\d \\-]{{6,}}\\d', '[number]', 'g'),"
          " '[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\\.[A-Za-z]{{2,}}', '[email]', 'g')")


def scrub_sql(col: str) -> str:
    return _SCRUB.format(c=col)


# --- reports -----------------------------------------------------------------------------


@dataclass
class Row:
    table: str
    what: str
    action: str
    rows: int
    cutoff: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"table": self.table, "what": self.what, "action": self.action, "rows": self.rows,
                **({"cutoff": self.cutoff} if self.cutoff else {})}


@dataclass
class Report:
    dry_run: bool
    now: str
    rows: list[Row] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def add(self, table: str, what: str, action: str, n: int, cutoff: datetime | None = None) -> None:
        self.rows.append(Row(table, what, action, int(n), cutoff.isoformat() if cutoff else None))

    def totals(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.rows:
            out[r.table] = out.get(r.table, 0) + r.rows
        return out

    def as_json(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "now": self.now, "tables": self.totals(),
                "steps": [r.as_json() for r in self.rows], **self.extra}


# --- OTP codes ---------------------------------------------------------------------------

# An OTP's content is still needed while something may send it: waiting or being sent, or a
# fallback pending or running. Past expires_at nothing sends it (the claim expires it; the
# fallback checks the expiry before each channel).
_OTP_DUE = """
kind = 'otp' AND redacted_at IS NULL AND (
  expires_at < now()
  OR NOT (status IN ('queued', 'sending')
          OR COALESCE(fallback_state = 'running', false)
          OR (fallback IS NOT NULL AND fallback_state IS NULL AND status IN ('failed', 'accepted', 'sent'))))
"""
_OTP_WIPE = f"""
UPDATE notifications SET params = NULL, text_body = NULL,
  payload = '{{"redacted": "otp_code"}}'::jsonb,
  request_hash = CASE WHEN request_hash IS NULL OR request_hash LIKE 'k:%' THEN request_hash
                      ELSE 'k:' || left({sql_hmac('request_hash', 'fp')}, 62) END,
  redacted_at = now()
WHERE id IN (SELECT id FROM notifications WHERE {_OTP_DUE} ORDER BY expires_at LIMIT :n
             FOR UPDATE SKIP LOCKED)
"""


def wipe_otp_codes(limit: int = BATCH, max_batches: int = 1000) -> int:
    """Wipe the code of every OTP nothing can send any more; the number wiped."""
    total = 0
    pads = hmac_pads()
    for _ in range(max_batches):
        with connection_scope() as conn:
            n = conn.execute(text(_OTP_WIPE), {"n": limit, **pads}).rowcount
        total += n
        if n < limit:
            break
    return total


def count_otp_due() -> int:
    with session_scope() as s:
        return int(s.execute(text(f"SELECT count(*) FROM notifications WHERE {_OTP_DUE}")).scalar_one())


# --- anonymising notifications ----------------------------------------------------------

def anonymise_sql(due: str, tag: str, mark: str) -> str:
    """One statement: anonymise the jobs ``due`` selects, their attempts, events and dead
    letters; returns the four counts."""
    return f"""
WITH due AS ({due}),
n AS (
  UPDATE notifications t SET to_number = {tag}, to_hash = NULL, params = NULL, text_body = NULL,
    payload = '{{"redacted": "{mark}"}}'::jsonb,
    fallback = CASE WHEN t.fallback IS NULL THEN NULL ELSE '{{"redacted": true}}'::jsonb END,
    fallback_state = CASE WHEN t.fallback IS NOT NULL AND t.fallback_state IS NULL THEN 'redacted'
                          ELSE t.fallback_state END,
    metadata = NULL, idempotency_key = NULL, request_hash = NULL, wamid = NULL,
    error_message = {scrub_sql('t.error_message')},
    redacted_at = COALESCE(t.redacted_at, now()), anonymised_at = now()
  FROM due WHERE t.id = due.id RETURNING t.id
), a AS (
  UPDATE attempts SET provider_message_id = CASE WHEN channel = 'whatsapp' THEN NULL
                                                 ELSE provider_message_id END,
    error_message = {scrub_sql('error_message')}
  WHERE notification_id IN (SELECT id FROM n) RETURNING 1
), e AS (
  UPDATE status_events SET provider_message_id = NULL, dedupe_key = 'anon:' || id::text,
    error_title = {scrub_sql('error_title')}
  WHERE notification_id IN (SELECT id FROM n) RETURNING 1
), u AS (  -- statuses of these messages that never matched (the wamid was not known yet)
  DELETE FROM status_events WHERE notification_id IS NULL AND provider_message_id IN (
    SELECT wamid FROM notifications WHERE id IN (SELECT id FROM due) AND wamid IS NOT NULL)
  RETURNING 1
), d AS (
  UPDATE dead_letters SET reason = {scrub_sql('reason')},
    history = jsonb_build_object(
      'attempts', COALESCE((SELECT jsonb_agg(x - 'provider_message_id' - 'error_message')
                            FROM jsonb_array_elements(history->'attempts') x), '[]'::jsonb),
      'events', COALESCE(history->'events', '[]'::jsonb))
  WHERE notification_id IN (SELECT id FROM n) RETURNING 1
)
SELECT (SELECT count(*) FROM n), (SELECT count(*) FROM a),
       (SELECT count(*) FROM e) + (SELECT count(*) FROM u), (SELECT count(*) FROM d)
"""


_NOTIF_DUE = ("anonymised_at IS NULL AND kind = :kind AND created_at < :cut"
              " AND status NOT IN ('queued', 'sending') AND fallback_state IS DISTINCT FROM 'running'")
_PURGE_NOTIFS = anonymise_sql(
    f"SELECT id FROM notifications WHERE {_NOTIF_DUE} ORDER BY created_at LIMIT :n FOR UPDATE SKIP LOCKED",
    pseudo_sql("t.to_number"), "retention")
_COUNT_NOTIFS = f"""
WITH due AS (SELECT id FROM notifications WHERE {_NOTIF_DUE})
SELECT (SELECT count(*) FROM due),
       (SELECT count(*) FROM attempts WHERE notification_id IN (SELECT id FROM due)),
       (SELECT count(*) FROM status_events WHERE notification_id IN (SELECT id FROM due)),
       (SELECT count(*) FROM dead_letters WHERE notification_id IN (SELECT id FROM due))
"""

_RCPT_DUE = """
SELECT r.campaign_id, r.phone FROM campaign_recipients r JOIN campaigns c ON c.id = r.campaign_id
WHERE c.kind = :kind AND c.status IN ('completed', 'cancelled') AND c.finished_at < :cut
  AND r.phone NOT LIKE '_:%'
"""
_PURGE_RCPTS = f"""
UPDATE campaign_recipients t SET phone = {pseudo_sql('t.phone')}, params = '[]'::jsonb, tz = NULL,
  email = NULL, locale = NULL
FROM ({_RCPT_DUE} LIMIT :n FOR UPDATE OF r SKIP LOCKED) due
WHERE t.campaign_id = due.campaign_id AND t.phone = due.phone
"""

_INBOUND_DUE = "from_number NOT LIKE '_:%' AND at < :cut"
# A webhook Meta redelivers after its message was anonymised arrives as a new raw row with the
# same wamid: its anonymised twin already holds the hashed wamid, so the copy is deleted.
_INBOUND_HASH = f"'h:' || left({sql_hmac('wamid', 'wamid')}, 40)"
_PURGE_INBOUND = f"""
WITH due AS (
  SELECT id, {_INBOUND_HASH} AS hw FROM inbound_messages WHERE {_INBOUND_DUE}
  ORDER BY at LIMIT :n FOR UPDATE SKIP LOCKED
), twin AS (
  SELECT due.id FROM due WHERE EXISTS (SELECT 1 FROM inbound_messages o WHERE o.wamid = due.hw)
), dropped AS (
  DELETE FROM inbound_messages t USING twin WHERE t.id = twin.id RETURNING t.id
), changed AS (
  UPDATE inbound_messages t SET from_number = {pseudo_sql('t.from_number')}, text = NULL,
    payload = jsonb_build_object('type', t.type), wamid = due.hw
  FROM due WHERE t.id = due.id AND due.id NOT IN (SELECT id FROM twin) RETURNING t.id
)
SELECT (SELECT count(*) FROM changed), (SELECT count(*) FROM dropped)
"""


def _loop(sql: str, params: dict[str, Any], limit: int) -> int:
    total = 0
    while True:
        with connection_scope() as conn:
            n = conn.execute(text(sql), {**params, "n": limit}).rowcount
        total += n
        if n < limit:
            return total


def _count(sql: str, params: dict[str, Any]) -> Any:
    with session_scope() as s:
        return s.execute(text(sql), params).one()


def _purge_inbound(rep: Report, period: timedelta | None, now: datetime, pads: dict[str, bytes],
                   dry_run: bool, limit: int) -> None:
    if period is None:
        return
    cut = now - period
    p = {"cut": cut, **pads}
    if dry_run:
        n, twins = _count(f"SELECT count(*) FROM inbound_messages WHERE {_INBOUND_DUE}", p)[0], 0
    else:
        n = twins = 0
        while True:
            with connection_scope() as conn:
                a, b = conn.execute(text(_PURGE_INBOUND), {**p, "n": limit}).one()
            n, twins = n + a, twins + b
            if a + b < limit:
                break
    rep.add("inbound_messages", "from, text, payload", "anonymised", n, cut)
    if twins:
        rep.add("inbound_messages", "redelivered copies of anonymised messages", "deleted", twins, cut)


def purge(now: datetime | None = None, dry_run: bool = False, limit: int = BATCH,
          periods: dict[str, timedelta | None] | None = None) -> Report:
    """Anonymise or delete what is past its retention (``now``: the clock, for tests);
    ``dry_run`` counts what would go and changes nothing."""
    now = now or datetime.now(UTC)
    periods = periods if periods is not None else retention()
    rep = Report(dry_run, now.isoformat())
    pads = hmac_pads()

    # OTP codes nothing can send any more (whatever the clock: this is about the jobs' state).
    rep.add("notifications", "otp codes (ended or expired)", "wiped",
            count_otp_due() if dry_run else wipe_otp_codes(limit))

    for kind in KINDS:
        period = periods.get(kind)
        if period is None:
            continue
        cut = now - period
        p = {"kind": kind, "cut": cut, **pads}
        if dry_run:
            jobs, att, ev, dl = _count(_COUNT_NOTIFS, p)
        else:
            jobs = att = ev = dl = 0
            while True:
                with connection_scope() as conn:
                    a, b, c, d = conn.execute(text(_PURGE_NOTIFS), {**p, "n": limit}).one()
                jobs, att, ev, dl = jobs + a, att + b, ev + c, dl + d
                if a < limit:
                    break
        rep.add("notifications", f"{kind} jobs", "anonymised", jobs, cut)
        rep.add("attempts", f"of {kind} jobs", "anonymised", att, cut)
        rep.add("status_events", f"of {kind} jobs", "anonymised", ev, cut)
        rep.add("dead_letters", f"of {kind} jobs", "anonymised", dl, cut)
        if kind != "otp":
            n = (_count(f"SELECT count(*) FROM ({_RCPT_DUE}) x", p)[0] if dry_run
                 else _loop(_PURGE_RCPTS, p, limit))
            rep.add("campaign_recipients", f"of finished {kind} campaigns", "anonymised", n, cut)

    _purge_inbound(rep, periods.get("inbound"), now, pads, dry_run, limit)

    # The oldest first by id where ids follow arrival (the primary key stops the scan early);
    # unmatched events through the notification_id index.
    deletes: list[tuple[str, str, str, str, str]] = [
        ("webhooks", "webhook_inbox", "raw bodies", "received_at < :cut", " ORDER BY id"),
        ("webhooks", "status_events", "never matched a job", "notification_id IS NULL AND received_at < :cut", ""),
        ("rejected", "rejected_jobs", "rejected bodies", "received_at < :cut", " ORDER BY id"),
    ]
    for key, table, what, where, order in deletes:
        if (period := periods.get(key)) is None:
            continue
        cut = now - period
        if dry_run:
            n = _count(f"SELECT count(*) FROM {table} WHERE {where}", {"cut": cut})[0]
        else:
            n = _loop(f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE {where}{order}"
                      " LIMIT :n FOR UPDATE SKIP LOCKED)", {"cut": cut}, limit)
        rep.add(table, what, "deleted", n, cut)

    if (period := periods.get("opt_outs")) is not None:
        cut = now - period
        where = "phone IS NOT NULL AND updated_at < :cut"
        if dry_run:
            n = _count(f"SELECT count(*) FROM opt_outs WHERE {where}", {"cut": cut})[0]
        else:
            n = _loop("UPDATE opt_outs SET phone = NULL, detail = NULL WHERE phone_hash IN (SELECT phone_hash"
                      f" FROM opt_outs WHERE {where} LIMIT :n FOR UPDATE SKIP LOCKED)", {"cut": cut}, limit)
        rep.add("opt_outs", "numbers beside opt-outs (the hash stays)", "anonymised", n, cut)

    totals = rep.totals()
    if not dry_run and any(totals.values()):
        log.info("retention purge", extra={"tables": totals})
    return rep


