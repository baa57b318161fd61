"""The fan-out: a running campaign's pending recipients become ordinary jobs, in chunks, only
while the sender's lanes are short (a large campaign never floods Redis or delays OTPs);
beat's tick starts due campaigns, keeps running ones fed, completes finished ones, and
starts the runs of recurring campaigns."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import text

from wanotify.campaigns.records import CampaignError, check_budget, load_campaign, schedule_of
from wanotify.config import get_settings
from wanotify.core.ids import uuid7
from wanotify.db import session_scope
from wanotify.intake.service import notify_many
from wanotify.pacing.lanes import Lanes
from wanotify.queues import enqueue
from wanotify.redis import get_redis

log = logging.getLogger("wanotify.campaigns")

FANOUT_CHUNK = 1000


def lane_room(sender: str) -> int:
    """How many more campaign jobs the sender's lanes should take now (about ten seconds'
    worth at the number's rate, at least 2,000): the fan-out keeps pace with the drain
    instead of racing it for the CPU."""
    s = get_settings().sender(sender)
    d = Lanes(get_redis()).depths(sender)
    return max(0, max(2000, s.mps * 10) - d["marketing"] - d["transactional"])


def fan_out(cid: uuid.UUID, limit: int = FANOUT_CHUNK) -> int:
    """Turn up to ``limit`` pending recipients into jobs (idempotent per recipient)."""
    with session_scope() as s:
        c = load_campaign(s, cid)
    if c.status != "running":
        return 0
    room = min(limit, lane_room(c.sender))
    if room <= 0:
        return 0
    with session_scope() as s:
        rows = s.execute(text(
            "SELECT phone, params, tz FROM campaign_recipients WHERE campaign_id = :id AND state = 'pending'"
            " ORDER BY line LIMIT :n FOR UPDATE SKIP LOCKED"), {"id": cid, "n": room}).all()
        if not rows:
            return 0
        bodies = [{"to": r.phone, "template": c.template, "language": c.language, "kind": c.kind,
                   "sender": c.sender, "params": {"body": list(r.params)}, "timezone": r.tz,
                   "idempotency_key": f"campaign:{cid}:{r.phone}"} for r in rows]
        results = notify_many(bodies, campaign_id=cid)
        done: list[dict[str, Any]] = []
        refused: list[dict[str, Any]] = []
        for r, res in zip(rows, results, strict=True):
            nid = getattr(res, "id", None)
            (done if nid else refused).append({"phone": r.phone, "nid": nid})
        s.execute(text(
            "UPDATE campaign_recipients cr SET state = CASE WHEN r.nid IS NULL THEN 'opted_out' ELSE 'enqueued' END,"
            " notification_id = r.nid FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(phone text, nid uuid)"
            " WHERE cr.campaign_id = :id AND cr.phone = r.phone"),
            {"id": cid, "rows": orjson.dumps(done + refused).decode()})
    return len(done)


def fanout_rate(cid: uuid.UUID) -> float:
    """The campaign sender's messages/s limit."""
    with session_scope() as s:
        sender = s.execute(text("SELECT sender FROM campaigns WHERE id = :id"), {"id": cid}).scalar_one()
    return float(get_settings().sender(sender).mps)


def has_pending(cid: uuid.UUID) -> bool:
    """A running campaign with recipients not yet enqueued."""
    with session_scope() as s:
        return bool(s.execute(text(
            "SELECT EXISTS (SELECT 1 FROM campaigns c JOIN campaign_recipients r ON r.campaign_id = c.id"
            " WHERE c.id = :id AND c.status = 'running' AND r.state = 'pending')"), {"id": cid}).scalar_one())


FANOUT_LEASE_MS = 30_000


def _fanout_key(cid: uuid.UUID) -> str:
    return f"wn:campaign:{cid}:fanout"


def kick_fanout(cid: uuid.UUID, countdown: float | None = None, chain: bool = False) -> bool:
    """Start the campaign's fan-out chain, unless one is alive (one chain per campaign: its
    task re-kicks itself with ``chain=True``; a chain that died is restarted by the tick
    once its lease lapses)."""
    r = get_redis()
    key = _fanout_key(cid)
    if chain:
        r.set(key, "1", px=FANOUT_LEASE_MS)
    elif not r.set(key, "1", nx=True, px=FANOUT_LEASE_MS):
        return False
    enqueue.campaign_fanout(cid, countdown)
    return True


def end_fanout(cid: uuid.UUID) -> None:
    get_redis().delete(_fanout_key(cid))


def tick() -> dict[str, int]:
    """Beat's periodic step: start due campaigns, keep running ones fed, complete finished ones."""
    out = {"started": 0, "kicked": 0, "completed": 0, "runs": 0}
    with session_scope() as s:
        due = s.execute(text("UPDATE campaigns SET status = 'running', started_at = now(), updated_at = now()"
                             " WHERE status = 'scheduled' AND cron IS NULL AND start_at <= now()"
                             " RETURNING id")).scalars().all()
        out["started"] = len(due)
        running = s.execute(text("SELECT id FROM campaigns WHERE status = 'running'")).scalars().all()
        finished = s.execute(text(
            "UPDATE campaigns c SET status = 'completed', finished_at = now(), updated_at = now()"
            " WHERE c.status = 'running'"
            " AND NOT EXISTS (SELECT 1 FROM campaign_recipients r WHERE r.campaign_id = c.id AND r.state = 'pending')"
            " AND NOT EXISTS (SELECT 1 FROM notifications n WHERE n.campaign_id = c.id"
            "                 AND n.status IN ('queued', 'sending'))"
            " RETURNING id")).scalars().all()
        out["completed"] = len(finished)
    for cid in set(running) - set(finished):
        if kick_fanout(cid):
            out["kicked"] += 1
    for run in start_due_runs():
        out["runs"] += 1
        kick_fanout(run)
    return out


def start_due_runs(now: datetime | None = None) -> list[uuid.UUID]:
    """Start a run of every recurring campaign whose time has come (one run per campaign,
    however many times were missed while beat was down); the next time is set from now."""
    now = now or datetime.now(UTC)
    started: list[uuid.UUID] = []
    with session_scope() as s:
        parents = s.execute(text(
            "SELECT * FROM campaigns WHERE cron IS NOT NULL AND status = 'scheduled' AND next_run_at <= :now"
            " ORDER BY next_run_at FOR UPDATE SKIP LOCKED"), {"now": now}).all()
        for c in parents:
            nxt = schedule_of(c.cron).next_after(now)
            pending = s.execute(text("SELECT count(*) FROM campaign_recipients WHERE campaign_id = :id"
                                     " AND state = 'pending'"), {"id": c.id}).scalar_one()
            try:
                check_budget(s, c, pending)
            except CampaignError as exc:
                s.execute(text("UPDATE campaigns SET next_run_at = :next, updated_at = now(), status_reason = :why"
                               " WHERE id = :id"),
                          {"next": nxt, "id": c.id, "why": f"run of {c.next_run_at.isoformat()} skipped: {exc.reason}"})
                log.error(
                    "recurring campaign run skipped: %s", exc.reason, extra={"campaign": str(c.id), "alert": True})
                continue
            run = uuid7()
            s.execute(text(
                "INSERT INTO campaigns (id, name, template, language, category, kind, sender, status, start_at,"
                " started_at, parent_id)"
                " VALUES (:id, :name, :t, :l, :cat, :kind, :sender, 'running', :at, now(), :parent)"),
                {"id": run, "name": f"{c.name} #{c.runs + 1}"[:200], "t": c.template, "l": c.language,
                 "cat": c.category, "kind": c.kind, "sender": c.sender, "at": c.next_run_at, "parent": c.id})
            s.execute(text(
                "INSERT INTO campaign_recipients (campaign_id, phone, line, params, tz, email, locale, state)"
                " SELECT :run, phone, line, params, tz, email, locale, 'pending' FROM campaign_recipients"
                " WHERE campaign_id = :id AND state = 'pending'"), {"run": run, "id": c.id})
            s.execute(text("INSERT INTO campaign_rejects (campaign_id, line, reason)"
                           " SELECT :run, line, reason FROM campaign_rejects WHERE campaign_id = :id"),
                      {"run": run, "id": c.id})
            s.execute(text("UPDATE campaigns SET next_run_at = :next, runs = runs + 1, status_reason = NULL,"
                           " updated_at = now() WHERE id = :id"), {"next": nxt, "id": c.id})
            started.append(run)
    return started
