"""Inbound webhooks: keep the raw body first, then turn it into rows.

``store_webhook`` runs in the HTTP handler (one INSERT, then 200). The ingest task calls
``ingest_inbox``: parse, write deduplicated status events, move each job's status forward
only, keep inbound messages and template events, and mark the body processed. A status
for a wamid we do not know yet is kept (unapplied) and applied as soon as the wamid is
recorded, or by the sweeper.
"""

from __future__ import annotations

import logging
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.orm import Session

from wanotify.campaigns.pausing import auto_pause
from wanotify.compliance.consent import (
    Preference,
    keyword_action,
    keyword_sets,
    record_preferences,
)
from wanotify.config import get_settings
from wanotify.db import session_scope
from wanotify.inbound.apply import APPLY_RETURNING, APPLY_SET, apply_rows, observe
from wanotify.inbound.parse import (
    ParsedWebhook,
    StatusUpdate,
    WebhookError,
    parse_webhook,
)
from wanotify.metrics import WEBHOOK_LAG
from wanotify.queues import enqueue
from wanotify.redis import get_redis

log = logging.getLogger("wanotify.ingest")

SPOOL_KEY = "wn:webhook:spool"

# Meta's objects kept as received (pricing, conversation, raw messages) may nest deeper than
# orjson writes (255 levels; it reads 1,024): such a part is cut at this depth and marked,
# rather than failing the whole batch on every retry.
_MAX_KEPT_DEPTH = 64


def _dumps(value: Any) -> str:
    """JSON text for a jsonb parameter."""
    try:
        return orjson.dumps(value, default=str).decode()
    except TypeError:  # orjson.JSONEncodeError: "Recursion limit reached"
        return orjson.dumps(_cut(value, _MAX_KEPT_DEPTH), default=str).decode()


def _cut(value: Any, depth: int) -> Any:
    if isinstance(value, dict | list) and depth <= 0:
        return "[nested too deep: not kept]"
    if isinstance(value, dict):
        return {k: _cut(v, depth - 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_cut(v, depth - 1) for v in value]
    return value


def spool_webhook(body: bytes) -> None:
    """Postgres is away: keep the verified raw body in Redis until the sweeper moves it."""
    get_redis().rpush(SPOOL_KEY, body)


def drain_spool(batch: int = 500) -> list[int]:
    """Move spooled bodies into the inbox (oldest first); returns the new inbox ids.

    The bodies leave Redis only after the inbox rows are committed; a crash in between
    stores a body twice, which ingest's deduplication absorbs.
    """
    r = get_redis()
    ids: list[int] = []
    while True:
        bodies = r.lrange(SPOOL_KEY, 0, batch - 1)
        if not bodies:
            return ids
        with session_scope() as s:
            got = s.execute(
                text("INSERT INTO webhook_inbox (body) SELECT unnest(CAST(:b AS bytea[])) RETURNING id"),
                {"b": list(bodies)},
            ).scalars().all()
        r.ltrim(SPOOL_KEY, len(bodies), -1)
        ids.extend(got)


def store_webhook(body: bytes) -> int:
    return store_webhooks([body])[0]


def store_webhooks(bodies: list[bytes]) -> list[int]:
    """Keep raw verified bodies in the inbox, in one transaction; their ids, in order."""
    with session_scope() as s:
        rows = s.execute(
            text(
                "INSERT INTO webhook_inbox (body)"
                " SELECT b FROM unnest(CAST(:bodies AS bytea[])) WITH ORDINALITY AS t(b, n)"
                " ORDER BY n RETURNING id"
            ),
            {"bodies": bodies},
        ).scalars().all()
    return sorted(int(r) for r in rows)


# Kicks are debounced: an ingest task that is queued and not yet started will ingest every
# body stored before it starts (it tops its batch up with the oldest pending ones), so a new
# kick is sent only while fewer than KICK_SLOTS tasks are waiting to start. A task frees its
# slot as it starts; a slot whose task was lost frees itself after KICK_SLOT_MS.
KICK_SLOT_KEY = "wn:ingest:kick:{}"
KICK_SLOTS = 2
KICK_SLOT_MS = 1000


# A task frees its slot only if the slot is still its own (a task that starts after its slot
# expired must not free a newer kick's).
_FREE_SLOT_LUA = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


def kick_ingest(ids: list[int]) -> bool:
    """Ask for an ingest of these stored bodies unless a waiting task will take them anyway;
    whether a task was queued."""
    slot: str | None = None
    token = secrets.token_hex(8)
    try:
        r = get_redis()
        slot = next((KICK_SLOT_KEY.format(k) for k in range(KICK_SLOTS)
                     if r.set(KICK_SLOT_KEY.format(k), token, nx=True, px=KICK_SLOT_MS)), None)
        if slot is None:
            return False
    except Exception:  # Redis unsure: kick anyway (a task too many costs one query)
        log.debug("kick slots unavailable", exc_info=True)
    enqueue.ingest(ids, slot=[slot, token] if slot else None)
    return True


def free_kick_slot(slot: list[str] | None) -> None:
    if not slot:
        return

    try:
        get_redis().eval(_FREE_SLOT_LUA, 1, slot[0], slot[1])
    except Exception:  # the slot frees itself after KICK_SLOT_MS
        log.debug("could not free kick slot %s", slot[0], exc_info=True)


def store_webhooks_and_kick(bodies: list[bytes]) -> list[int]:
    """Store bodies, then make sure an ingest task will take them. Once stored they are
    safe: if the kick cannot be sent, the sweeper ingests them."""
    ids = store_webhooks(bodies)
    try:
        kick_ingest(ids)
    except Exception:
        log.warning("could not queue the ingest of %d webhook bodies; the sweeper will", len(ids),
                    exc_info=True)
    return ids


@dataclass
class IngestReport:
    bodies: int = 0
    statuses: int = 0
    new_events: int = 0
    applied: int = 0
    unmatched: int = 0
    messages: int = 0
    template_events: int = 0
    preferences: int = 0
    problems: list[str] = field(default_factory=list)
    fallback_ids: list[uuid.UUID] = field(default_factory=list)  # failed jobs with a fallback


def _as_uuid(value: str | None) -> uuid.UUID | None:
    if not value:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def ingest_inbox(ids: list[int] | None = None, limit: int = 200, top_up: bool = False) -> IngestReport:
    """Process stored webhook bodies: the given ones, or the oldest pending; with ``top_up``,
    the given ones and, up to ``limit``, other pending ones (under load the bodies of many
    kicks are written by one transaction; the tasks of those kicks then find theirs done)."""
    report = IngestReport()
    with session_scope() as s:
        rows: list[Any] = []
        if ids:  # (bodies another transaction holds are being ingested by it: skipped)
            rows = list(s.execute(
                text(
                    "SELECT id, body, received_at FROM webhook_inbox WHERE id = ANY(:ids) AND processed_at IS NULL"
                    " ORDER BY id FOR UPDATE SKIP LOCKED"
                ),
                {"ids": ids},
            ).all())
        if (ids is None or top_up) and len(rows) < limit:
            rows += s.execute(
                text(
                    "SELECT id, body, received_at FROM webhook_inbox WHERE processed_at IS NULL"
                    " AND id <> ALL(:got) ORDER BY id LIMIT :n FOR UPDATE SKIP LOCKED"
                ),
                {"n": limit - len(rows), "got": [r.id for r in rows]},
            ).all()
            rows.sort(key=lambda r: r.id)
        done: list[dict[str, Any]] = []
        parsed: list[ParsedWebhook] = []
        now = datetime.now(UTC)
        for row in rows:
            WEBHOOK_LAG.observe(max(0.0, (now - row.received_at).total_seconds()))
            try:
                parsed.append(parse_webhook(bytes(row.body)))
                done.append({"id": row.id, "err": None})
            except WebhookError as exc:
                done.append({"id": row.id, "err": str(exc)[:2000]})
                report.problems.append(f"inbox {row.id}: {exc}")
        # Every status of the batch in one pass (a few statements, whatever the batch size).
        statuses = [st for p in parsed for st in p.statuses]
        if statuses:
            _write_statuses(s, statuses, report)
        for p in parsed:
            _write(s, p, report)
        _record_preferences(s, parsed, report)
        ok = [d["id"] for d in done if d["err"] is None]
        if ok:
            s.execute(
                text("UPDATE webhook_inbox SET processed_at = now(), tries = tries + 1 WHERE id = ANY(:ids)"),
                {"ids": ok},
            )
        bad = [d for d in done if d["err"] is not None]
        if bad:
            s.execute(
                text(
                    "UPDATE webhook_inbox SET processed_at = now(), tries = tries + 1, error = :err"
                    " WHERE id = :id"
                ),
                bad,
            )
        report.bodies = len(rows)
    return report


def _record_preferences(s: Session, parsed: list[ParsedWebhook], report: IngestReport) -> None:
    """Opt-out and opt-in keywords in inbound messages; Meta's marketing preference events."""
    if not any(p.messages or p.preferences for p in parsed):  # the usual batch: statuses only
        return

    settings = get_settings()
    stop, start = keyword_sets(settings.opt_out_keywords, settings.opt_in_keywords)
    prefs: list[Preference] = []
    for p in parsed:
        for m in p.messages:
            action = keyword_action(m.text, stop, start) if m.type in ("text", "button") else None
            if action is not None and m.from_number:
                prefs.append(Preference(m.from_number, action, m.timestamp, "keyword", (m.text or "")[:64]))
        for e in p.preferences:
            if e.phone_number and e.value in ("stop", "resume") and (
                    e.category in (None, "marketing_messages")):
                prefs.append(Preference(e.phone_number, e.value == "stop", e.timestamp, "meta_preference",
                                        e.detail))
    if prefs:
        report.preferences += record_preferences(s, prefs)
        log.info("marketing preferences recorded", extra={"changes": len(prefs)})


def _write(s: Session, p: ParsedWebhook, report: IngestReport) -> None:
    """An inbound body's messages and template events (its statuses are written per batch)."""
    report.problems.extend(p.problems)
    if p.messages:
        s.execute(
            text(
                "INSERT INTO inbound_messages (wamid, from_number, phone_number_id, type, text, payload, at)"
                " VALUES (:wamid, :frm, :pnid, :type, :text, CAST(:payload AS jsonb), :at)"
                " ON CONFLICT (wamid) DO NOTHING"
            ),
            [
                {
                    "wamid": m.wamid,
                    "frm": m.from_number or m.from_user_id or "",
                    "pnid": m.phone_number_id,
                    "type": m.type,
                    "text": m.text,
                    "payload": _dumps(m.raw),
                    "at": m.timestamp,
                }
                for m in p.messages
            ],
        )
        report.messages += len(p.messages)
    if p.templates:
        s.execute(
            text(
                "INSERT INTO template_events (kind, name, language, value, previous, reason, raw)"
                " VALUES (:kind, :name, :lang, :value, :prev, :reason, CAST(:raw AS jsonb))"
            ),
            [
                {
                    "kind": t.kind,
                    "name": t.name,
                    "lang": t.language,
                    "value": t.event,
                    "prev": t.previous,
                    "reason": t.reason,
                    "raw": _dumps(t.raw),
                }
                for t in p.templates
            ],
        )
        report.template_events += len(p.templates)

        for t in p.templates:
            bad = (t.kind == "status" and t.event.upper() in ("PAUSED", "DISABLED", "REJECTED")) or (
                t.kind == "quality" and t.event.upper() == "RED")
            if bad and t.name:
                # Meta writes languages as en-US, the catalogue as en_US: every language of the name.
                auto_pause(f"Meta: template {t.name} {t.kind} {t.event}", template=(t.name, None))


# One statement stores a batch's status reports and applies them: the job is named by our
# callback data or found by wamid, duplicates are dropped by their dedupe key, and each job
# is moved by its first new report in provider-time order. A job's later reports of the same
# batch come back (``later``) to be applied in rounds; so do what the metrics and the
# fallback need (``delivered`` with its accepted→delivered seconds, ``fallback``), and the
# counts (``new`` events, of which ``unmatched``: no job known yet).
WRITE_SQL = text(
    f"""
WITH v AS (
  SELECT r.*, COALESCE(r.nid, n.id) AS job
  FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(nid uuid, wamid text, key text, status text,
       at timestamptz, code int, title text, pricing jsonb, conv jsonb, ord int)
  LEFT JOIN LATERAL (SELECT id FROM notifications WHERE wamid = r.wamid AND r.nid IS NULL LIMIT 1) n
    ON true
), ins AS (
  INSERT INTO status_events (notification_id, provider_message_id, dedupe_key, status, source, at,
                             error_code, error_title, pricing, conversation, applied)
  SELECT job, wamid, key, status, 'webhook', at, code, title, pricing, conv, job IS NOT NULL
  FROM v ORDER BY ord
  ON CONFLICT (dedupe_key) DO NOTHING
  RETURNING id AS eid, notification_id AS nid, provider_message_id AS wamid, status, at,
            error_code AS code, error_title AS title
), k AS (
  SELECT ins.*, row_number() OVER (PARTITION BY nid ORDER BY at, eid) AS k
  FROM ins WHERE nid IS NOT NULL
), upd AS (
  {APPLY_SET.replace("FROM_CLAUSE", "FROM k AS v WHERE n.id = v.nid AND v.k = 1")}
  RETURNING {APPLY_RETURNING}
)
SELECT 'later' AS what, nid, wamid, status, at, code, title, NULL::float8 AS secs, eid AS n
FROM k WHERE k > 1
UNION ALL
SELECT what, id, NULL, NULL, NULL, NULL, NULL, secs, NULL FROM upd WHERE what IS NOT NULL
UNION ALL
SELECT 'new', NULL, NULL, NULL, NULL, NULL, NULL, NULL, count(*) FROM ins
UNION ALL
SELECT 'unmatched', NULL, NULL, NULL, NULL, NULL, NULL, NULL, count(*) FROM ins WHERE nid IS NULL
"""
)


def _write_statuses(s: Session, statuses: list[StatusUpdate], report: IngestReport) -> None:
    report.statuses += len(statuses)
    rows = []
    for i, st in enumerate(statuses):
        err = st.errors[0] if st.errors else None
        rows.append(
            {
                "nid": _as_uuid(st.biz_opaque_callback_data),
                "wamid": st.wamid,
                "key": f"{st.wamid}|{st.status}|{int(st.timestamp.timestamp())}|{err.code if err else ''}",
                "status": st.status,
                "at": st.timestamp,
                "code": err.code if err else None,
                "title": (err.title or err.message) if err else None,
                "pricing": st.pricing or None,
                "conv": st.conversation or None,
                "ord": i,
            }
        )
    later: list[dict[str, Any]] = []
    counts = {"new": 0, "unmatched": 0}
    for r in s.execute(WRITE_SQL, {"rows": _dumps(rows)}).all():
        if r.what == "later":  # (n: the event's id, its arrival order)
            later.append({"nid": r.nid, "status": r.status, "at": r.at, "code": r.code, "title": r.title,
                          "wamid": r.wamid, "eid": r.n})
        elif r.what in counts:
            counts[r.what] = r.n
        else:
            observe(r.what, r.nid, r.secs, report.fallback_ids)
    later.sort(key=lambda r: r["eid"])
    for what, nid, secs in apply_rows(s, later):
        observe(what, nid, secs, report.fallback_ids)
    report.new_events += counts["new"]
    report.unmatched += counts["unmatched"]
    report.applied += counts["new"] - counts["unmatched"]


def pending_inbox_ids(older_than_s: float = 30.0, limit: int = 1000) -> list[int]:
    with session_scope() as s:
        return list(
            s.execute(
                text(
                    "SELECT id FROM webhook_inbox WHERE processed_at IS NULL"
                    " AND received_at < now() - make_interval(secs => :s) ORDER BY id LIMIT :n"
                ),
                {"s": older_than_s, "n": limit},
            ).scalars()
        )
