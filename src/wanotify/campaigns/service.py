"""Campaigns: one approved template to an audience, on a schedule.

Life cycle ``draft → scheduled → running ⇄ paused → completed | cancelled``. The audience is
imported (CSV or JSON lines, streamed, every row validated, duplicates collapsed, opted-out
numbers counted apart) into ``campaign_recipients``; once running, the fan-out turns pending
recipients into ordinary jobs in chunks, only while the sender's marketing lane is short,
so a large campaign never floods Redis or delays OTPs (which have their own lane, released
first). Pause and cancel act on jobs already queued too: the claim skips a paused
campaign's jobs and cancel ends them.

A recurring campaign (``cron``) holds its audience and stays ``scheduled``; each time its
schedule comes round, beat's tick starts a *run*: a campaign of its own (``parent_id``)
with a copy of the audience, checked against the daily budget then, sent like any other.
Pausing or cancelling the recurring campaign stops future runs and acts on active ones.

This module holds creation, state changes and progress; the audience import is in
``campaigns.audience``, the fan-out and beat's tick in ``campaigns.fanout``, Meta-triggered
pauses in ``campaigns.pausing``.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text

from wanotify.campaigns.cron import CronError, parse
from wanotify.campaigns.fanout import end_fanout, kick_fanout
from wanotify.campaigns.records import CampaignError, check_budget, load_campaign, schedule_of
from wanotify.config import get_settings
from wanotify.core.ids import uuid7
from wanotify.core.phones import digits
from wanotify.core.templates import TemplateError
from wanotify.db import session_scope
from wanotify.pacing.lanes import Lanes, entry, push_entries
from wanotify.redis import get_redis
from wanotify.templates.catalogue import get_catalogue

FINAL = ("completed", "cancelled")
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "start": ("draft",),
    "pause": ("scheduled", "running"),
    "resume": ("paused",),
    "cancel": ("draft", "scheduled", "running", "paused"),
}


# --- create -----------------------------------------------------------------------------


def create(name: str, template: str, language: str = "en", sender: str | None = None,
           kind: str = "marketing", start_at: datetime | None = None, cron: str | None = None) -> dict[str, Any]:
    settings = get_settings()
    if not name.strip():
        raise CampaignError(422, "name", "must not be empty")
    if kind not in ("marketing", "transactional"):
        raise CampaignError(422, "kind", "must be marketing or transactional")
    if sender is not None and sender not in settings.sender_map:
        raise CampaignError(422, "sender", f"unknown sender {sender!r} (known: {', '.join(settings.sender_map)})")
    try:
        t = get_catalogue().get(template, language)
    except TemplateError as exc:
        raise CampaignError(422, exc.field if exc.field != "template" else "template", exc.reason) from None
    if t.header_params or (t.dynamic_buttons and not t.is_authentication):
        raise CampaignError(422, "template", "campaigns take templates whose only parameters are in the body")
    if start_at is not None and start_at.tzinfo is None:
        raise CampaignError(422, "start_at", "must include a time zone, e.g. 2026-12-01T09:30:00+05:30")
    if cron is not None:
        try:
            cron = parse(cron).expression
        except CronError as exc:
            raise CampaignError(422, "cron", str(exc)) from None
    cid = uuid7()
    with session_scope() as s:
        s.execute(text(
            "INSERT INTO campaigns (id, name, template, language, category, kind, sender, status, start_at, cron)"
            " VALUES (:id, :name, :t, :l, :cat, :kind, :sender, 'draft', :start, :cron)"),
            {"id": cid, "name": name.strip(), "t": template, "l": language, "cat": t.category, "kind": kind,
             "sender": settings.sender(sender).name, "start": start_at, "cron": cron})
    return {"id": str(cid), "status": "draft"}


# --- state changes ----------------------------------------------------------------------


def change(cid: uuid.UUID, action: str, reason: str | None = None) -> dict[str, Any]:
    """start | pause | resume | cancel; effective for jobs already queued too."""
    now = datetime.now(UTC)
    next_run: datetime | None = None
    with session_scope() as s:
        c = load_campaign(s, cid, lock=True)
        if c.status not in TRANSITIONS[action]:
            raise CampaignError(409, "status", f"cannot {action} a campaign that is {c.status}")
        if action == "start":
            pending = s.execute(text("SELECT count(*) FROM campaign_recipients WHERE campaign_id = :id"
                                     " AND state = 'pending'"), {"id": cid}).scalar_one()
            if not pending:
                raise CampaignError(409, "audience", "no recipients to send to: import an audience first")
            if c.cron:
                check_budget(s, c, pending, whole_tier=True)
                new = "scheduled"
                next_run = schedule_of(c.cron).next_after(max(now, c.start_at or now) - timedelta(seconds=1))
            else:
                check_budget(s, c, pending)
                new = "scheduled" if c.start_at is not None and c.start_at > now else "running"
        elif action == "resume" and c.cron:
            new = "scheduled"
            next_run = schedule_of(c.cron).next_after(now)
        else:
            new = {"pause": "paused", "resume": "running", "cancel": "cancelled"}[action]
        s.execute(text(
            "UPDATE campaigns SET status = CAST(:st AS varchar), status_reason = :why, updated_at = now(),"
            " next_run_at = COALESCE(:next, next_run_at),"
            " started_at = CASE WHEN CAST(:st AS varchar) = 'running' THEN COALESCE(started_at, now())"
            " ELSE started_at END,"
            " finished_at = CASE WHEN CAST(:st AS varchar) = 'cancelled' THEN now() ELSE finished_at END"
            " WHERE id = :id"),
            {"st": new, "why": reason, "id": cid, "next": next_run})
        if new == "cancelled":
            s.execute(text(
                "UPDATE notifications SET status = 'cancelled', finished_at = now(), updated_at = now(),"
                " error_message = 'campaign cancelled' WHERE campaign_id = :id AND status = 'queued'"),
                {"id": cid})
        runs: list[uuid.UUID] = []
        if c.cron and action in ("pause", "resume", "cancel"):
            runs = list(s.execute(text("SELECT id FROM campaigns WHERE parent_id = :id AND status = ANY(:st)"),
                                  {"id": cid, "st": list(TRANSITIONS[action])}).scalars())
    if new == "running":
        if action == "resume":
            _repush_queued(cid)
        end_fanout(cid)  # a chain from before the pause has stopped: start afresh
        kick_fanout(cid)
    for run in runs:  # the recurring campaign's active runs follow it
        change(run, action, reason)
    out: dict[str, Any] = {"id": str(cid), "status": new}
    if next_run is not None:
        out["next_run_at"] = next_run.isoformat()
    return out


def _repush_queued(cid: uuid.UUID) -> None:
    """A paused campaign's jobs left the lanes unsent: put back the ones no lane holds."""
    with session_scope() as s:
        rows = s.execute(text("SELECT id, sender, kind, to_number FROM notifications WHERE campaign_id = :id"
                              " AND status = 'queued'"), {"id": cid}).all()
    lanes = Lanes(get_redis())
    groups: dict[tuple[str, str], list[str]] = {}
    for sender in {r.sender for r in rows}:
        mine = [r for r in rows if r.sender == sender]
        held = lanes.contains(sender, [str(r.id) for r in mine])
        for r, there in zip(mine, held, strict=True):
            if not there:
                groups.setdefault((sender, r.kind), []).append(entry(r.kind, str(r.id), digits(r.to_number)))
    if groups:
        push_entries(groups)


# --- progress and outcome ---------------------------------------------------------------


def status(cid: uuid.UUID) -> dict[str, Any]:
    with session_scope() as s:
        c = load_campaign(s, cid)
        rec: dict[str, int] = dict(s.execute(text("SELECT state, count(*) FROM campaign_recipients WHERE campaign_id = :id"
                                  " GROUP BY state"), {"id": cid}).all())
        by_status: dict[str, int] = dict(s.execute(text("SELECT status, count(*) FROM notifications WHERE campaign_id = :id"
                                        " GROUP BY status"), {"id": cid}).all())
        rejected = s.execute(text("SELECT count(*) FROM campaign_rejects WHERE campaign_id = :id"),
                             {"id": cid}).scalar_one()
        held = s.execute(text(
            "SELECT count(*) FROM notifications WHERE campaign_id = :id AND status = 'queued'"
            " AND attempt_count = 0 AND updated_at > created_at"), {"id": cid}).scalar_one()
        cost: dict[str, int] = dict(s.execute(text(
            "SELECT e.pricing->>'category', count(DISTINCT e.notification_id) FROM status_events e"
            " JOIN notifications n ON n.id = e.notification_id WHERE n.campaign_id = :id"
            " AND e.pricing IS NOT NULL AND COALESCE((e.pricing->>'billable')::boolean, true)"
            " GROUP BY 1"), {"id": cid}).all())
        runs = [{"id": str(r.id), "status": r.status, "started_at": r.started_at.isoformat() if r.started_at else None}
                for r in s.execute(text("SELECT id, status, started_at FROM campaigns WHERE parent_id = :id"
                                        " ORDER BY started_at DESC NULLS LAST LIMIT 20"), {"id": cid})]
    g = by_status.get
    counts = {
        "total": sum(rec.values()),
        "pending": rec.get("pending", 0),
        "queued": g("queued", 0) + g("sending", 0),
        "held": held,
        "accepted": g("accepted", 0),
        "sent": g("sent", 0),
        "delivered": g("delivered", 0),
        "read": g("read", 0),
        "failed": g("failed", 0) + g("expired", 0),
        "fallback": g("fallback_sms", 0) + g("fallback_email", 0),
        "opted_out": rec.get("opted_out", 0) + g("opted_out", 0),
        "cancelled": g("cancelled", 0),
        "rejected": int(rejected),
    }
    reached = counts["delivered"] + counts["read"]
    return {
        "id": str(c.id), "name": c.name, "status": c.status, "status_reason": c.status_reason,
        "template": c.template, "language": c.language, "kind": c.kind, "sender": c.sender,
        "start_at": c.start_at.isoformat() if c.start_at else None,
        "cron": c.cron, "next_run_at": c.next_run_at.isoformat() if c.next_run_at else None,
        "parent_id": str(c.parent_id) if c.parent_id else None, "run_count": c.runs, "recent_runs": runs,
        "started_at": c.started_at.isoformat() if c.started_at else None,
        "finished_at": c.finished_at.isoformat() if c.finished_at else None,
        "counts": counts,
        "read_rate": (counts["read"] / reached) if reached else None,
        "cost": {"billable_by_category": cost, "billable": sum(cost.values())},
    }
