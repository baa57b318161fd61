"""Accepting jobs: validate → commit to Postgres → push the id to the sender's lane → kick.

The job row is committed before anything reaches Redis, so Redis never holds the only copy.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import text

from wanotify.compliance.consent import opted_out
from wanotify.compliance.hashing import keyed_fingerprint, phone_hash
from wanotify.config import Settings, get_settings
from wanotify.core.errors import IdempotencyConflict, InvalidJob
from wanotify.core.ids import uuid7
from wanotify.core.jobs import Accepted, JobBody, parse_job, utcnow
from wanotify.core.phones import digits
from wanotify.core.templates import Catalogue, TemplateError
from wanotify.db import autocommit_scope, session_scope
from wanotify.pacing.lanes import entry, push_entries
from wanotify.redis import REDIS_DOWN
from wanotify.templates.catalogue import get_catalogue

log = logging.getLogger("wanotify.intake")


@dataclass
class Prepared:
    """A validated job, rendered and ready to store."""

    id: uuid.UUID
    body: JobBody
    key: str | None
    sender: str
    category: str | None
    payload: dict[str, Any]
    fingerprint: str | None  # only kept when an idempotency key can bring the body back


# A job from the notify queue without an idempotency key of its own is keyed by its Celery
# task id (see with_task_key).
TASK_KEY_PREFIX = "celery-task:"
MAX_TASK_ID = 200  # longer task ids (a producer's own) get no implicit key: 255 is the limit


def with_task_key(body: Any, task_id: str) -> Any:
    """The body of a notify task message, keyed by its task id unless it has a key: the
    broker may deliver a message again (a worker stored its job and died, or Redis
    restarted, before the ack), and that delivery must find the same job, not make a second
    one and send twice. A producer that publishes the same job again as a new task still
    gets a new job, as before (its own ``idempotency_key`` is the way to say it is the same)."""
    if (isinstance(body, dict) and body.get("idempotency_key") is None
            and isinstance(task_id, str) and 0 < len(task_id) <= MAX_TASK_ID):
        return {**body, "idempotency_key": TASK_KEY_PREFIX + task_id}
    return body


def prepare(data: Any, *, idempotency_key: str | None = None, settings: Settings | None = None,
            catalogue: Catalogue | None = None) -> Prepared:
    """Validate a raw body completely (model, sender, template, parameters); raise InvalidJob."""
    settings = settings or get_settings()
    job = parse_job(data)
    key = idempotency_key or job.idempotency_key
    if idempotency_key and job.idempotency_key and idempotency_key != job.idempotency_key:
        raise InvalidJob([("idempotency_key", "differs from the Idempotency-Key header")])
    if job.sender is not None and job.sender not in settings.sender_map:
        raise InvalidJob([("sender", f"unknown sender {job.sender!r} (known: {', '.join(settings.sender_map)})")])
    sender = settings.sender(job.sender)
    job_id = uuid7()
    category: str | None = None
    if job.template is not None:
        cat = catalogue or get_catalogue()
        try:
            t = cat.validate(
                job.template,
                job.language,
                body=job.params.body,
                header=job.params.header,
                buttons=job.params.buttons,
            )
        except TemplateError as exc:
            raise InvalidJob([(exc.field, exc.reason)]) from None
        category = t.category
        payload = cat.render(
            t,
            job.to,
            body=job.params.body,
            header=job.params.header,
            buttons=job.params.buttons,
            callback_data=str(job_id),
        )
    else:
        payload = {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": job.to,
            "type": "text",
            "text": {"body": job.text, "preview_url": False},
            "biz_opaque_callback_data": str(job_id),
        }
    return Prepared(job_id, job, key, sender.name, category, payload,
                    job.fingerprint() if key is not None else None)


def _row(p: Prepared, now: datetime, campaign_id: uuid.UUID | None = None) -> dict[str, Any]:
    j = p.body
    params = j.params.model_dump(exclude_none=True)
    return {
        "id": str(p.id),
        "key": p.key,
        "hash": p.fingerprint,
        "kind": j.kind,
        "sender": p.sender,
        "to": j.to,
        "template": j.template,
        "language": j.language if j.template else None,
        "category": p.category,
        "params": params,
        "text": j.text,
        "payload": p.payload,
        "fallback": j.fallback.model_dump(mode="json") if j.fallback else None,
        "meta": j.metadata or None,
        "expires": j.effective_expiry(now),
        "campaign": str(campaign_id) if campaign_id else None,
        "tz": j.timezone,
        # Marketing only: the claim checks the opt-out list by this keyed hash.
        "to_hash": phone_hash(j.to) if j.kind == "marketing" else None,
    }


# One statement for a whole batch: the rows travel as one JSON array and Postgres unpacks
# them (a round trip per row would cost more than validating the job).
INSERT_SQL = text(
    "INSERT INTO notifications (id, idempotency_key, request_hash, kind, channel, status, sender,"
    " to_number, template, language, category, params, text_body, payload, fallback, metadata,"
    " expires_at, campaign_id, recipient_tz, to_hash, created_at, updated_at)"
    " SELECT r.id, r.key, r.hash, r.kind, 'whatsapp', 'queued', r.sender, r.to, r.template,"
    " r.language, r.category, r.params, r.text, r.payload, r.fallback, r.meta, r.expires,"
    " r.campaign, r.tz, r.to_hash, :now, :now"
    " FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(id uuid, key text, hash text, kind text,"
    " sender text, \"to\" text, template text, language text, category text, params jsonb,"
    " text text, payload jsonb, fallback jsonb, meta jsonb, expires timestamptz, campaign uuid, tz text,"
    " to_hash text)"
    " ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING RETURNING id"
)


def _existing(key: str) -> tuple[uuid.UUID, str | None, str]:
    with session_scope() as s:
        row = s.execute(
            text("SELECT id, request_hash, status FROM notifications WHERE idempotency_key = :k"),
            {"k": key},
        ).one()
    return row.id, row.request_hash, row.status


def insert_rows(rows: list[dict[str, Any]], now: datetime) -> set[uuid.UUID]:
    """Insert many notification rows in one statement (one transaction); the ids inserted."""
    # One statement is atomic by itself: no BEGIN/COMMIT round trips around it.
    with autocommit_scope() as conn:
        return set(conn.execute(INSERT_SQL, {"rows": orjson.dumps(rows, default=str).decode(), "now": now})
                   .scalars())


def refuse_opted_out(items: list[Prepared]) -> dict[int, InvalidJob]:
    """Marketing to a number that opted out is refused (one query for the whole batch)."""
    marketing = {p.body.to for p in items if p.body.kind == "marketing"}
    if not marketing:
        return {}
    with session_scope() as s:
        out = opted_out(s, marketing)
    return {i: InvalidJob([("to", "the recipient opted out of marketing messages")])
            for i, p in enumerate(items) if p.body.kind == "marketing" and p.body.to in out}


def store(items: list[Prepared], campaign_id: uuid.UUID | None = None
          ) -> list[Accepted | IdempotencyConflict | InvalidJob]:
    """Insert jobs in one transaction; returns one result per item, in order."""
    now = utcnow()
    results: list[Accepted | IdempotencyConflict | InvalidJob | None] = [None] * len(items)
    refused = refuse_opted_out(items)
    for i, exc in refused.items():
        results[i] = exc
    todo = [p for i, p in enumerate(items) if i not in refused]
    inserted = insert_rows([_row(p, now, campaign_id) for p in todo], now) if todo else set()
    for i, p in enumerate(items):
        if p.id in inserted:
            results[i] = Accepted(id=str(p.id), status="queued")
    fresh = [p for p in todo if p.id in inserted]
    for i, p in enumerate(items):
        if results[i] is None:
            assert p.key is not None
            existing_id, existing_hash, status = _existing(p.key)
            if existing_hash == p.fingerprint or (  # an OTP's is re-keyed once its code is wiped
                    existing_hash and existing_hash.startswith("k:") and p.fingerprint
                    and existing_hash == keyed_fingerprint(p.fingerprint)):
                results[i] = Accepted(id=str(existing_id), status=status, duplicate=True)
            else:
                results[i] = IdempotencyConflict(p.key, str(existing_id))
    try:
        enqueue(fresh)
    except REDIS_DOWN:
        # Committed, so not lost: the sweeper pushes jobs no lane holds once Redis is back.
        log.warning("Redis unavailable: %d stored jobs wait for the sweeper to queue them", len(fresh),
                    exc_info=True)
        pushed = {str(p.id) for p in fresh}
        results = [r.model_copy(update={"pending_push": True})
                   if isinstance(r, Accepted) and r.id in pushed else r for r in results]
    return [r for r in results if r is not None]


def enqueue(items: list[Prepared]) -> None:
    """Push committed jobs to their sender lanes and kick dispatchers that are needed."""
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for p in items:
        groups[(p.sender, p.body.kind)].append(entry(p.body.kind, str(p.id), digits(p.body.to)))
    push_entries(groups)


def notify(data: Any, *, idempotency_key: str | None = None) -> Accepted:
    """Validate, store and enqueue one job. Raises InvalidJob or IdempotencyConflict."""
    p = prepare(data, idempotency_key=idempotency_key)
    (result,) = store([p])
    if isinstance(result, (IdempotencyConflict, InvalidJob)):
        raise result
    return result


BULK_CHUNK = 1000


def notify_many(items: list[Any], campaign_id: uuid.UUID | None = None
                ) -> list[Accepted | InvalidJob | IdempotencyConflict]:
    """Many jobs; a bad job yields its error and never rejects the rest.

    Jobs are stored in transactions of up to 1,000 (one statement each). One result per
    item, in order.
    """
    settings = get_settings()
    catalogue = get_catalogue()
    out: list[Accepted | InvalidJob | IdempotencyConflict | None] = [None] * len(items)
    chunks = [range(k, min(k + BULK_CHUNK, len(items))) for k in range(0, len(items), BULK_CHUNK)]

    def prepare_chunk(idx: range) -> list[tuple[int, Prepared]]:
        good: list[tuple[int, Prepared]] = []
        for i in idx:
            try:
                good.append((i, prepare(items[i], settings=settings, catalogue=catalogue)))
            except InvalidJob as exc:
                out[i] = exc
        return good

    def store_chunk(good: list[tuple[int, Prepared]]) -> None:
        # The same key twice in one chunk: the later ones are stored after the first, as
        # duplicates of it (or conflicts, if their bodies differ).
        seen: set[str] = set()
        first: list[tuple[int, Prepared]] = []
        again: list[tuple[int, Prepared]] = []
        for i, p in good:
            if p.key is not None and p.key in seen:
                again.append((i, p))
            else:
                if p.key is not None:
                    seen.add(p.key)
                first.append((i, p))
        for part in (first, again):
            if part:
                for (i, _), r in zip(part, store([p for _, p in part], campaign_id), strict=True):
                    out[i] = r

    for idx in chunks:
        store_chunk(prepare_chunk(idx))
    return [r for r in out if r is not None]


def record_rejected(source: str, body: Any, errors: list[dict[str, str]]) -> None:
    raw = body if isinstance(body, str) else orjson.dumps(body, default=str).decode()
    with session_scope() as s:
        s.execute(
            text("INSERT INTO rejected_jobs (source, body, errors) VALUES (:s, :b, CAST(:e AS jsonb))"),
            {"s": source, "b": raw[:100_000], "e": orjson.dumps({"errors": errors}).decode()},
        )
