"""Erasure (India's DPDP Act 2023, GDPR): everything about one number, in one transaction.

Jobs still waiting are cancelled; every row about the person is anonymised with a random
marker (unlinkable), raw webhook bodies and rejected bodies that mention the number are
deleted, and their opt-out keeps only the keyed hash, so it still holds. Redis state naming
the number (lane entries, pair-limit holds, the daily tier set) is removed.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import phonenumbers
from sqlalchemy import text

from wanotify.compliance.hashing import hmac_pads, phone_hash, pseudonym
from wanotify.config import get_settings
from wanotify.core.kinds import LANE_FOR_KIND
from wanotify.core.phones import digits, mask_phone, normalize_e164
from wanotify.db import get_engine, session_scope
from wanotify.inbound.ingest import ingest_inbox
from wanotify.pacing.lanes import Tier, entry, prefix
from wanotify.privacy.retention import RANDOM_MARK, anonymise_sql
from wanotify.redis import get_redis

log = logging.getLogger("wanotify.privacy.erasure")


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
_ERASE_NOTIFS = anonymise_sql(
    "SELECT id FROM notifications WHERE to_number IN (:p, :ps) FOR UPDATE", RANDOM_MARK, "erasure")
_ERASE_FALLBACK_ONLY = """
UPDATE notifications SET fallback = fallback - 'sms_to',
  fallback_state = CASE WHEN fallback_state IS NULL AND NOT (fallback - 'sms_to') ? 'email_to'
                        THEN 'redacted' ELSE fallback_state END
WHERE fallback->>'sms_to' = :p
"""
_ERASE_RCPTS = f"""
UPDATE campaign_recipients SET phone = {RANDOM_MARK}, params = '[]'::jsonb, tz = NULL, email = NULL,
  locale = NULL, state = CASE WHEN state = 'pending' THEN 'erased' ELSE state END
WHERE phone IN (:p, :ps)
"""
_ERASE_INBOUND = f"""
UPDATE inbound_messages SET from_number = {RANDOM_MARK}, text = NULL, payload = jsonb_build_object('type', type),
  wamid = {RANDOM_MARK} || ':' || id::text
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
    try:
        return str(phonenumbers.parse(e164).national_number)
    except phonenumbers.NumberParseException:
        return e164.lstrip("+")


def erase(phone: str, dry_run: bool = False) -> Erasure:
    """Remove or anonymise everything about one number; raises ValueError for a bad number."""
    e164 = normalize_e164(phone)
    d = digits(e164)
    params = {"p": e164, "ps": pseudonym(e164), "d": d, "h": phone_hash(e164), "db": d.encode(),
              "nat": _national(e164), **hmac_pads()}
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
    with session_scope() as s:
        ids = s.execute(text("SELECT id FROM webhook_inbox WHERE processed_at IS NULL"
                             " AND position(CAST(:db AS bytea) IN body) > 0"), {"db": d.encode()}).scalars().all()
    if ids:
        ingest_inbox(list(ids), limit=len(ids))


def _erase_redis(e164: str, cancelled: list[tuple[str, str, str]]) -> dict[str, int]:
    """Redis state that names the number: lane entries of the cancelled jobs, pair-limit
    holds, and the portfolio's daily unique-recipient sets (a random member takes its place,
    so today's count stays right)."""
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
