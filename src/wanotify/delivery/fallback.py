"""The fallback chain: WhatsApp → SMS → email, once per job.

Triggered by an undeliverable error code or exhausted retries (the dispatcher), a ``failed``
status webhook (ingest), or a missed delivery deadline (the sweeper: an OTP not delivered
within ``WANOTIFY_OTP_DELIVERY_DEADLINE_S``). One conditional UPDATE makes exactly one runner
own a job's fallback, so a fallback is never sent twice; a ``delivered`` that arrives later
is recorded as an event and changes nothing. Every channel tried is an attempt row; a job
that exhausts every channel lands in ``dead_letters`` with its history.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson

from wanotify.config import get_settings
from wanotify.core.phones import mask_email, mask_phone
from wanotify.core.templates import RenderedText
from wanotify.db import connection_scope
from wanotify.metrics import SENDS
from wanotify.providers.email import send_email
from wanotify.providers.sms import send_sms
from wanotify.providers.whatsapp import SendResult
from wanotify.templates.catalogue import get_catalogue

log = logging.getLogger("wanotify.fallback")

TAKE_SQL = """
UPDATE notifications SET fallback_state = 'running', updated_at = now()
WHERE id = %(id)s AND fallback IS NOT NULL AND fallback_state IS NULL
  AND status IN ('failed', 'accepted', 'sent')
RETURNING kind, template, language, params, text_body, fallback, expires_at, status, sender
"""

ATTEMPT_SQL = """
INSERT INTO attempts (notification_id, channel, provider_message_id, http_status, error_code,
                      error_message, outcome, duration_ms, at)
VALUES (%(id)s, %(channel)s, %(pmid)s, %(http)s, %(code)s, %(msg)s, %(outcome)s, %(dur)s, now())
"""

DONE_SQL = """
WITH u AS (
  UPDATE notifications SET status = %(status)s, channel = %(channel)s, fallback_state = 'done',
    finished_at = now(), updated_at = now()
  WHERE id = %(id)s AND fallback_state = 'running'
  RETURNING id
)
INSERT INTO status_events (notification_id, provider_message_id, dedupe_key, status, source, at, applied)
SELECT id, %(pmid)s, 'fallback:' || id::text, %(status)s, 'worker', now(), true FROM u
ON CONFLICT (dedupe_key) DO NOTHING
"""

EXHAUSTED_SQL = """
UPDATE notifications SET status = %(status)s, fallback_state = 'exhausted', finished_at = now(),
  updated_at = now()
WHERE id = %(id)s AND fallback_state = 'running'
"""


def _texts(row: Any, channel: str) -> RenderedText:
    params = row.params or {}
    if row.template:
        cat = get_catalogue()
        t = cat.lookup(row.template, row.language)
        if t is not None:
            return cat.render_text(t, "sms" if channel == "sms" else "email", params.get("body") or [])
    return RenderedText(body=row.text_body or "", subject="Notification")


def run_fallback(job_id: uuid.UUID, reason: str) -> str:
    """Try the job's fallback channels in order; returns the outcome."""
    settings = get_settings()
    with connection_scope() as conn:
        row = conn.exec_driver_sql(TAKE_SQL, {"id": job_id}).one_or_none()
    if row is None:
        return "skipped"  # delivered meanwhile, already fallen back, or no fallback
    fb: dict[str, Any] = row.fallback or {}
    chain: list[tuple[str, str]] = []
    if fb.get("sms_to") and settings.sms_url:
        chain.append(("sms", str(fb["sms_to"])))
    if fb.get("email_to") and settings.smtp_url:
        chain.append(("email", str(fb["email_to"])))
    for channel, dest in chain:
        if row.expires_at is not None and row.expires_at < datetime.now(UTC):
            with connection_scope() as conn:
                conn.exec_driver_sql(EXHAUSTED_SQL, {"id": job_id, "status": "expired"})
            return "expired"
        text = _texts(row, channel)
        res: SendResult
        if channel == "sms":
            assert settings.sms_url is not None
            res = send_sms(settings.sms_url, settings.sms_from, dest, text.body)
        else:
            assert settings.smtp_url is not None
            res = send_email(settings.smtp_url, settings.email_from, dest,
                             text.subject or "Notification", text.body)
        with connection_scope() as conn:
            conn.exec_driver_sql(ATTEMPT_SQL, {
                "id": job_id, "channel": channel, "pmid": res.wamid, "http": res.http_status,
                "code": res.error_code, "msg": res.error_message,
                "outcome": "done" if res.ok else "fail", "dur": round(res.duration_ms, 3),
            })
            if res.ok:
                conn.exec_driver_sql(DONE_SQL, {"id": job_id, "status": f"fallback_{channel}",
                                                "channel": channel, "pmid": res.wamid})
        SENDS.labels(channel, "done" if res.ok else "fail", str(res.error_code or ""), row.sender or "").inc()
        log.info("fallback %s", "sent" if res.ok else "failed", extra={
            "notification_id": str(job_id), "channel": channel, "reason": reason,
            "to": mask_phone(dest) if channel == "sms" else mask_email(dest),
            "error_code": res.error_code})
        if res.ok:
            return f"fallback_{channel}"
    dead_letter(job_id, f"every channel failed ({reason})" if chain else f"no fallback channel configured ({reason})")
    with connection_scope() as conn:
        conn.exec_driver_sql(EXHAUSTED_SQL, {"id": job_id, "status": "failed"})
    return "exhausted"


def dead_letter(job_id: uuid.UUID, reason: str) -> None:
    """Keep a job that exhausted every channel, with its attempts and events."""
    with connection_scope() as conn:
        attempts = conn.exec_driver_sql(
            "SELECT channel, provider_message_id, http_status, error_code, error_message, outcome, at"
            " FROM attempts WHERE notification_id = %(id)s ORDER BY id", {"id": job_id}).mappings().all()
        events = conn.exec_driver_sql(
            "SELECT status, at, error_code, source FROM status_events WHERE notification_id = %(id)s"
            " ORDER BY at, id", {"id": job_id}).mappings().all()
        history = {"attempts": [dict(a) for a in attempts], "events": [dict(e) for e in events]}
        conn.exec_driver_sql(
            "INSERT INTO dead_letters (notification_id, reason, history)"
            " VALUES (%(id)s, %(reason)s, CAST(%(h)s AS jsonb)) ON CONFLICT (notification_id) DO NOTHING",
            {"id": job_id, "reason": reason, "h": orjson.dumps(history, default=str).decode()})


def due_for_deadline(deadline_s: float, limit: int = 1000) -> list[uuid.UUID]:
    """OTPs accepted but not delivered within the deadline, with a fallback to try."""
    with connection_scope() as conn:
        return list(conn.exec_driver_sql(
            # fallback_due_since: accepted_at while a fallback is pending and the job is accepted
            # or sent (migration 0010)
            "SELECT id FROM notifications WHERE fallback_due_since < now() - make_interval(secs => %(d)s)"
            " AND kind = 'otp' ORDER BY fallback_due_since LIMIT %(n)s",
            {"d": deadline_s, "n": limit}).scalars())


def stale_running(lease_s: float) -> list[uuid.UUID]:
    """Fallbacks whose runner died: give them back (at-least-once across a crash)."""
    with connection_scope() as conn:
        return list(conn.exec_driver_sql(
            "UPDATE notifications SET fallback_state = NULL WHERE fallback_state = 'running'"
            " AND updated_at < now() - make_interval(secs => %(l)s) RETURNING id",
            {"l": lease_s}).scalars())
