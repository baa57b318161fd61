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
* **Erasure** (``erase``): everything about one number, in one transaction: jobs still
  waiting are cancelled; every row about the person is anonymised with a random marker
  (unlinkable), raw webhook bodies and rejected bodies that mention the number are deleted,
  and their opt-out keeps only the keyed hash, so it still holds. Redis state naming the
  number (lane entries, pair-limit holds, the daily tier set) is removed.

Hashes are HMAC-SHA256 with ``WANOTIFY_PII_HASH_KEY`` (a plain SHA-256 of a phone number is
reversed by trying every number). Unset, a random key generated in the database by migration
0007 is used (and a warning logged): it is stable, but lives beside the data it protects.
Never change the key once opt-outs were erased: their hashes would no longer match.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import text

log = logging.getLogger("wanotify.compliance.retention")

BATCH = 1000

RETENTION_KINDS: dict[str, str] = {
    "otp": "OTP notifications (to, parameters, payload, fallback, metadata, wamids)",
    "transactional": "transactional notifications, and finished transactional campaigns' recipients",
    "marketing": "marketing notifications, and finished marketing campaigns' recipients",
    "inbound": "inbound messages (from, text, payload)",
    "webhooks": "raw webhook bodies, and status events that never matched a job",
    "rejected": "bodies of jobs rejected at the Celery intake",
    "opt_outs": "the number beside an opt-out (the keyed hash stays: the opt-out holds)",
}
DEFAULT_RETENTION: dict[str, timedelta | None] = {
    "otp": timedelta(hours=24),
    "transactional": timedelta(days=90),
    "marketing": timedelta(days=90),
    "inbound": timedelta(days=30),
    "webhooks": timedelta(days=7),
    "rejected": timedelta(days=30),
    "opt_outs": timedelta(days=365),
}
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_ITEM = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")


def parse_retention(spec: str) -> dict[str, timedelta | None]:
    """``"otp=24h,transactional=90d"`` → a period per kind (None: ``never``); kinds not named
    keep their defaults. Raises ValueError naming the bad item."""
    out = dict(DEFAULT_RETENTION)
    seen: set[str] = set()
    for raw in spec.split(","):
        item = raw.strip()
        if not item:
            continue
        key, eq, value = item.partition("=")
        key, value = key.strip().lower(), value.strip().lower()
        if not eq or not key or not value:
            raise ValueError(f"WANOTIFY_RETENTION: {item!r} is not kind=period (e.g. otp=24h)")
        if key not in RETENTION_KINDS:
            raise ValueError(f"WANOTIFY_RETENTION: unknown kind {key!r} (known: {', '.join(RETENTION_KINDS)})")
        if key in seen:
            raise ValueError(f"WANOTIFY_RETENTION: {key!r} is given twice")
        seen.add(key)
        if value in ("never", "off", "forever"):
            out[key] = None
            continue
        m = _ITEM.match(value)
        if not m:
            raise ValueError(f"WANOTIFY_RETENTION: {key}={value!r}: expected a number and a unit"
                             " s, m, h, d or w (e.g. 24h, 90d), or 'never'")
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
        if seconds <= 0:
            raise ValueError(f"WANOTIFY_RETENTION: {key}={value!r} must be more than zero")
        out[key] = timedelta(seconds=seconds)
    return out


def retention() -> dict[str, timedelta | None]:
    from wanotify.config import get_settings

    return parse_retention(get_settings().retention)


# --- keyed hashes ------------------------------------------------------------------------


@lru_cache(maxsize=4)
def _db_key(database_url: str) -> bytes:
    from wanotify.db import session_scope

    with session_scope() as s:
        key = s.execute(text("SELECT key FROM privacy_key WHERE id = 1")).scalar_one_or_none()
    if key is None:
        raise RuntimeError("no privacy key: run `wanotify migrate`, or set WANOTIFY_PII_HASH_KEY")
    log.warning("WANOTIFY_PII_HASH_KEY is not set: personal-data hashes use the key generated in the"
                " database, which lives beside the data it protects; set it in production")
    return bytes(key)


def hash_key() -> bytes:
    from wanotify.config import get_settings

    s = get_settings()
    if s.pii_hash_key is not None and s.pii_hash_key.get_secret_value():
        return s.pii_hash_key.get_secret_value().encode()
    return _db_key(s.database_url)


def keyed(domain: str, value: str) -> str:
    return hmac.new(hash_key(), f"{domain}:{value}".encode(), hashlib.sha256).hexdigest()


def phone_hash(e164: str) -> str:
    """The opt-out key: HMAC-SHA256 of the E.164 number (hex)."""
    return keyed("phone", e164)


def pseudonym(e164: str) -> str:
    """What a number becomes past its retention (fits the 20-character columns)."""
    return "h:" + phone_hash(e164)[:18]


def keyed_fingerprint(fingerprint: str) -> str:
    """A request fingerprint once its job's content is wiped (idempotency still answers)."""
    return "k:" + keyed("fp", fingerprint)[:62]


def _hmac_pads() -> dict[str, bytes]:
    """HMAC's inner and outer keys, so that SQL computes the same HMAC with sha256()."""
    key = hash_key()
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = key.ljust(64, b"\0")
    return {"ki": bytes(b ^ 0x36 for b in key), "ko": bytes(b ^ 0x5C for b in key)}


def _sql_hmac(expr: str, domain: str) -> str:
    """SQL for the hex HMAC of ``domain:expr`` (the same as ``keyed``), no extension needed."""
    return (f"encode(sha256(CAST(:ko AS bytea) || sha256(CAST(:ki AS bytea) || "
            f"convert_to('{domain}:' || COALESCE({expr}, ''), 'UTF8'))), 'hex')")


def _pseudo_sql(expr: str) -> str:
    return f"'h:' || left({_sql_hmac(expr, 'phone')}, 18)"


_RANDOM = "'x:' || left(md5(random()::text || clock_timestamp()::text), 18)"
# Phone numbers and email addresses inside provider error texts.
_SCRUB = ("regexp_replace(regexp_replace({c}, '\\+?\\d[\\d \\-]{{6,}}\\d', '[number]', 'g'),"
          " '[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\\.[A-Za-z]{{2,}}', '[email]', 'g')")


def _scrub(col: str) -> str:
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
                      ELSE 'k:' || left({_sql_hmac('request_hash', 'fp')}, 62) END,
  redacted_at = now()
WHERE id IN (SELECT id FROM notifications WHERE {_OTP_DUE} ORDER BY expires_at LIMIT :n
             FOR UPDATE SKIP LOCKED)
"""


def wipe_otp_codes(limit: int = BATCH, max_batches: int = 1000) -> int:
    """Wipe the code of every OTP nothing can send any more; the number wiped."""
    from wanotify.db import connection_scope

    total = 0
    pads = _hmac_pads()
    for _ in range(max_batches):
        with connection_scope() as conn:
            n = conn.execute(text(_OTP_WIPE), {"n": limit, **pads}).rowcount
        total += n
        if n < limit:
            break
    return total


def count_otp_due() -> int:
    from wanotify.db import session_scope

    with session_scope() as s:
        return int(s.execute(text(f"SELECT count(*) FROM notifications WHERE {_OTP_DUE}")).scalar_one())


# --- anonymising notifications ----------------------------------------------------------

def _anonymise_sql(due: str, tag: str, mark: str) -> str:
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
    error_message = {_scrub('t.error_message')},
    redacted_at = COALESCE(t.redacted_at, now()), anonymised_at = now()
  FROM due WHERE t.id = due.id RETURNING t.id
), a AS (
  UPDATE attempts SET provider_message_id = CASE WHEN channel = 'whatsapp' THEN NULL
                                                 ELSE provider_message_id END,
    error_message = {_scrub('error_message')}
  WHERE notification_id IN (SELECT id FROM n) RETURNING 1
), e AS (
  UPDATE status_events SET provider_message_id = NULL, dedupe_key = 'anon:' || id::text,
    error_title = {_scrub('error_title')}
  WHERE notification_id IN (SELECT id FROM n) RETURNING 1
), u AS (  -- statuses of these messages that never matched (the wamid was not known yet)
  DELETE FROM status_events WHERE notification_id IS NULL AND provider_message_id IN (
    SELECT wamid FROM notifications WHERE id IN (SELECT id FROM due) AND wamid IS NOT NULL)
  RETURNING 1
), d AS (
  UPDATE dead_letters SET reason = {_scrub('reason')},
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
_PURGE_NOTIFS = _anonymise_sql(
    f"SELECT id FROM notifications WHERE {_NOTIF_DUE} ORDER BY created_at LIMIT :n FOR UPDATE SKIP LOCKED",
    _pseudo_sql("t.to_number"), "retention")
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
UPDATE campaign_recipients t SET phone = {_pseudo_sql('t.phone')}, params = '[]'::jsonb, tz = NULL,
  email = NULL, locale = NULL
FROM ({_RCPT_DUE} LIMIT :n FOR UPDATE OF r SKIP LOCKED) due
WHERE t.campaign_id = due.campaign_id AND t.phone = due.phone
"""

_INBOUND_DUE = "from_number NOT LIKE '_:%' AND at < :cut"
_PURGE_INBOUND = f"""
UPDATE inbound_messages t SET from_number = {_pseudo_sql('t.from_number')}, text = NULL,
  payload = jsonb_build_object('type', t.type), wamid = 'h:' || left({_sql_hmac('t.wamid', 'wamid')}, 40)
WHERE id IN (SELECT id FROM inbound_messages WHERE {_INBOUND_DUE} ORDER BY at LIMIT :n FOR UPDATE SKIP LOCKED)
"""


def _loop(sql: str, params: dict[str, Any], limit: int) -> int:
    from wanotify.db import connection_scope

    total = 0
    while True:
        with connection_scope() as conn:
            n = conn.execute(text(sql), {**params, "n": limit}).rowcount
        total += n
        if n < limit:
            return total


def _count(sql: str, params: dict[str, Any]) -> Any:
    from wanotify.db import session_scope

    with session_scope() as s:
        return s.execute(text(sql), params).one()


def purge(now: datetime | None = None, dry_run: bool = False, limit: int = BATCH,
          periods: dict[str, timedelta | None] | None = None) -> Report:
    """Anonymise or delete what is past its retention (``now``: the clock, for tests);
    ``dry_run`` counts what would go and changes nothing."""
    from wanotify.db import connection_scope

    now = now or datetime.now(UTC)
    periods = periods if periods is not None else retention()
    rep = Report(dry_run, now.isoformat())
    pads = _hmac_pads()

    # OTP codes nothing can send any more (whatever the clock: this is about the jobs' state).
    rep.add("notifications", "otp codes (ended or expired)", "wiped",
            count_otp_due() if dry_run else wipe_otp_codes(limit))

    for kind in ("otp", "transactional", "marketing"):
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

    if (period := periods.get("inbound")) is not None:
        cut = now - period
        p = {"cut": cut, **pads}
        n = (_count(f"SELECT count(*) FROM inbound_messages WHERE {_INBOUND_DUE}", p)[0] if dry_run
             else _loop(_PURGE_INBOUND, p, limit))
        rep.add("inbound_messages", "from, text, payload", "anonymised", n, cut)

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


# --- erasure -----------------------------------------------------------------------------


_ERASE_CANCEL = """
WITH c AS (
  UPDATE notifications SET status = 'cancelled', finished_at = now(), updated_at = now(),
    claim_token = NULL, error_message = 'erased at the recipient''s request'
  WHERE to_number = :p AND status IN ('queued', 'sending')
  RETURNING id, sender, kind
), ev AS (
  INSERT INTO status_events (notification_id, dedupe_key, status, source, at, applied)
  SELECT id, 'erased:' || id::text, 'cancelled', 'worker', now(), true FROM c
  ON CONFLICT DO NOTHING
)
SELECT id, sender, kind FROM c
"""
_ERASE_NOTIFS = _anonymise_sql(
    "SELECT id FROM notifications WHERE to_number IN (:p, :ps) FOR UPDATE", _RANDOM, "erasure")
_ERASE_FALLBACK_ONLY = """
UPDATE notifications SET fallback = fallback - 'sms_to',
  fallback_state = CASE WHEN fallback_state IS NULL AND NOT (fallback - 'sms_to') ? 'email_to'
                        THEN 'redacted' ELSE fallback_state END
WHERE fallback->>'sms_to' = :p
"""
_ERASE_RCPTS = f"""
UPDATE campaign_recipients SET phone = {_RANDOM}, params = '[]'::jsonb, tz = NULL, email = NULL,
  locale = NULL, state = CASE WHEN state = 'pending' THEN 'erased' ELSE state END
WHERE phone IN (:p, :ps)
"""
_ERASE_INBOUND = f"""
UPDATE inbound_messages SET from_number = {_RANDOM}, text = NULL, payload = jsonb_build_object('type', type),
  wamid = {_RANDOM} || ':' || id::text
WHERE from_number IN (:p, :ps, :d)
"""
_ERASE_INBOX = "DELETE FROM webhook_inbox WHERE position(CAST(:db AS bytea) IN body) > 0"
# Any spelling of the number (spaces, dashes, national form): compare the digits only.
_ERASE_REJECTED = "DELETE FROM rejected_jobs WHERE strpos(regexp_replace(body, '\\D', '', 'g'), :nat) > 0"
_ERASE_OPT_OUTS = """
UPDATE opt_outs SET phone = NULL, detail = NULL
WHERE phone_hash = :h OR phone = :p
"""


@dataclass
class Erasure:
    phone: str  # masked
    dry_run: bool
    touched: dict[str, int]
    cancelled: list[str]
    redis: dict[str, int]

    def as_json(self) -> dict[str, Any]:
        return {"phone": self.phone, "dry_run": self.dry_run, "tables": self.touched,
                "cancelled": self.cancelled, "redis": self.redis}


def _national(e164: str) -> str:
    import phonenumbers

    try:
        return str(phonenumbers.parse(e164).national_number)
    except phonenumbers.NumberParseException:
        return e164.lstrip("+")


def erase(phone: str, dry_run: bool = False) -> Erasure:
    """Remove or anonymise everything about one number; raises ValueError for a bad number."""
    from wanotify.core.phones import digits, mask_phone, normalize_e164
    from wanotify.db import get_engine

    e164 = normalize_e164(phone)
    d = digits(e164)
    params = {"p": e164, "ps": pseudonym(e164), "d": d, "h": phone_hash(e164), "db": d.encode(),
              "nat": _national(e164), **_hmac_pads()}
    if not dry_run:
        _ingest_pending_mentioning(d)  # other people's statuses in the same bodies are kept
    touched: dict[str, int] = {}
    with get_engine().connect() as conn:
        tx = conn.begin()
        try:
            cancelled = conn.execute(text(_ERASE_CANCEL), params).all()
            touched["notifications_cancelled"] = len(cancelled)
            a, b, c, dl = conn.execute(text(_ERASE_NOTIFS), params).one()
            touched["notifications"] = int(a)
            touched["attempts"] = int(b)
            touched["status_events"] = int(c)
            touched["dead_letters"] = int(dl)
            touched["notifications_fallback_sms"] = conn.execute(text(_ERASE_FALLBACK_ONLY), params).rowcount
            touched["campaign_recipients"] = conn.execute(text(_ERASE_RCPTS), params).rowcount
            touched["inbound_messages"] = conn.execute(text(_ERASE_INBOUND), params).rowcount
            touched["webhook_inbox"] = conn.execute(text(_ERASE_INBOX), params).rowcount
            touched["rejected_jobs"] = conn.execute(text(_ERASE_REJECTED), params).rowcount
            touched["opt_outs"] = conn.execute(text(_ERASE_OPT_OUTS), params).rowcount
        except BaseException:
            tx.rollback()
            raise
        if dry_run:
            tx.rollback()
        else:
            tx.commit()
    redis_out = {} if dry_run else _erase_redis(e164, [(str(r.id), r.sender, r.kind) for r in cancelled])
    out = Erasure(mask_phone(e164), dry_run, touched, [str(r.id) for r in cancelled], redis_out)
    if not dry_run:
        log.info("erasure", extra={"phone": out.phone, "tables": touched, "redis": redis_out})
    return out


def _ingest_pending_mentioning(d: str) -> None:
    """Webhook bodies not yet ingested that mention the number: ingest them first, so that
    deleting them loses nobody else's statuses."""
    from wanotify.db import session_scope
    from wanotify.inbound.ingest import ingest_inbox

    with session_scope() as s:
        ids = s.execute(text("SELECT id FROM webhook_inbox WHERE processed_at IS NULL"
                             " AND position(CAST(:db AS bytea) IN body) > 0"), {"db": d.encode()}).scalars().all()
    if ids:
        ingest_inbox(list(ids), limit=len(ids))


def _erase_redis(e164: str, cancelled: list[tuple[str, str, str]]) -> dict[str, int]:
    """Redis state that names the number: lane entries of the cancelled jobs, pair-limit
    holds, and the portfolio's daily unique-recipient sets (a random member takes its place,
    so today's count stays right)."""
    from wanotify.config import get_settings
    from wanotify.core.phones import digits
    from wanotify.delivery.lanes import LANE_FOR_KIND, Tier, entry, prefix
    from wanotify.intake.service import get_redis

    d = digits(e164)
    r = get_redis()
    out = {"lane_entries": 0, "pair_holds": 0, "tier_members": 0}
    senders = get_settings().sender_list
    for s in senders:
        out["pair_holds"] += int(r.delete(prefix(s.name) + "p:" + d))
    for job_id, sender, kind in cancelled:
        p = prefix(sender)
        e = entry(kind, job_id, d)
        pipe = r.pipeline(transaction=False)
        pipe.lrem(p + "q:" + LANE_FOR_KIND[kind], 0, e)
        pipe.zrem(p + "delay", e, "!" + e)
        pipe.zrem(p + "inflight", e, "!" + e)
        pipe.srem(p + "ids", job_id)
        res = pipe.execute()
        out["lane_entries"] += int(res[0]) + int(res[1]) + int(res[2])
    now_ms = datetime.now(UTC).timestamp() * 1000
    keys: set[str] = set()
    for s in senders:
        tier = Tier.for_sender(s)
        if tier is not None:
            for back in (0, 86_400_000):
                k = tier.key(now_ms - back)
                keys.update((k, k + ":m"))
    for k in keys:
        if r.srem(k, d):
            r.sadd(k, "erased:" + uuid.uuid4().hex)
            out["tier_members"] += 1
    return out
