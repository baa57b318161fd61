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
"""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import text

from wanotify.core.ids import uuid7
from wanotify.db import session_scope

FINAL = ("completed", "cancelled")
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "start": ("draft",),
    "pause": ("scheduled", "running"),
    "resume": ("paused",),
    "cancel": ("draft", "scheduled", "running", "paused"),
}
IMPORT_BATCH = 2000
FANOUT_CHUNK = 1000


class CampaignError(Exception):
    def __init__(self, status: int, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.status, self.field, self.reason = status, field, reason


# --- create -----------------------------------------------------------------------------


def create(name: str, template: str, language: str = "en", sender: str | None = None,
           kind: str = "marketing", start_at: datetime | None = None, cron: str | None = None) -> dict[str, Any]:
    from wanotify.config import get_settings
    from wanotify.core.templates import TemplateError, get_catalogue

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
        from wanotify.campaigns.cron import CronError, parse

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


def _load(s: Any, cid: uuid.UUID, lock: bool = False) -> Any:
    row = s.execute(text("SELECT * FROM campaigns WHERE id = :id" + (" FOR UPDATE" if lock else "")),
                    {"id": cid}).one_or_none()
    if row is None:
        raise CampaignError(404, "id", "no such campaign")
    return row


# --- audience ---------------------------------------------------------------------------


@dataclass
class ImportReport:
    accepted: int = 0
    duplicates: int = 0
    opted_out: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "duplicates": self.duplicates, "opted_out": self.opted_out,
                "rejected": self.rejected}


def _csv_rows(lines: Iterable[str]) -> Iterator[tuple[int, dict[str, str] | str]]:
    """(line, row) for each record; the header is line 1, a record starts where it starts."""
    reader = csv.reader(lines)
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        return
    except csv.Error as exc:
        yield 1, f"unreadable header: {exc}"
        return
    if "to" not in header:
        yield 1, "the header has no 'to' column"
        return
    last = reader.line_num
    while True:
        start = last + 1
        try:
            rec = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield start, f"unreadable CSV: {exc}"
            last = reader.line_num
            continue
        last = reader.line_num
        if not any(c.strip() for c in rec):
            continue  # blank line
        if len(rec) != len(header):
            yield start, f"{len(rec)} cells; the header has {len(header)}"
            continue
        yield start, dict(zip(header, rec, strict=True))


def _jsonl_rows(lines: Iterable[str]) -> Iterator[tuple[int, dict[str, str] | str]]:
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            yield n, f"malformed JSON: {exc}"
            continue
        if not isinstance(obj, dict):
            yield n, "each line must be a JSON object"
            continue
        flat: dict[str, str] = {}
        body = obj.get("params", obj.get("body"))
        if isinstance(body, list):
            for i, v in enumerate(body, start=1):
                flat[f"body_{i}"] = v if isinstance(v, str) else orjson.dumps(v).decode()
        for k, v in obj.items():
            if k not in ("params", "body"):
                flat[k.lower()] = v if isinstance(v, str) else ("" if v is None else str(v))
        yield n, flat


def _check_row(row: dict[str, str], n_params: int) -> tuple[dict[str, Any] | None, str | None]:
    from wanotify.compliance.consent import valid_zone
    from wanotify.core.phones import normalize_e164
    from wanotify.core.templates import MAX_PARAM_CHARS

    try:
        phone = normalize_e164(row.get("to", "").strip())
    except ValueError as exc:
        return None, f"to: {exc}"
    params: list[str] = []
    for i in range(1, n_params + 1):
        v = row.get(f"body_{i}", "")
        if not v.strip():
            return None, f"body_{i}: missing parameter (the template takes {n_params})"
        if len(v) > MAX_PARAM_CHARS:
            return None, f"body_{i}: {len(v)} characters; the limit is {MAX_PARAM_CHARS}"
        params.append(v)
    extra = [k for k in row if k.startswith("body_") and k[5:].isdigit() and int(k[5:]) > n_params and row[k].strip()]
    if extra:
        return None, f"{extra[0]}: the template takes {n_params} parameter(s)"
    tz = (row.get("tz") or "").strip() or None
    if tz is not None and not valid_zone(tz):
        return None, f"tz: unknown time zone {tz!r}"
    email = (row.get("email") or "").strip() or None
    if email is not None and ("@" not in email or len(email) > 320):
        return None, "email: not an email address"
    locale = (row.get("locale") or "").strip() or None
    return {"phone": phone, "params": params, "tz": tz, "email": email, "locale": locale}, None


def import_audience(cid: uuid.UUID, lines: Iterable[str], fmt: str = "csv",
                    progress: Callable[[int], None] | None = None) -> ImportReport:
    """Stream an audience in (any number of calls before the campaign starts)."""
    from wanotify.compliance.consent import opted_out
    from wanotify.core.templates import get_catalogue

    with session_scope() as s:
        c = _load(s, cid)
    if c.status not in ("draft", "scheduled"):
        raise CampaignError(409, "status", f"the campaign is {c.status}; audiences are imported before it starts")
    n_params = len(get_catalogue().get(c.template, c.language).body_params)
    rows = _jsonl_rows(lines) if fmt == "jsonl" else _csv_rows(lines)
    report = ImportReport()
    batch: list[dict[str, Any]] = []
    seen_lines = 0

    def flush() -> None:
        if not batch:
            return
        with session_scope() as s:
            out = opted_out(s, [r["phone"] for r in batch]) if c.kind == "marketing" else set()
            for r in batch:
                r["state"] = "opted_out" if r["phone"] in out else "pending"
            got = s.execute(text(
                "INSERT INTO campaign_recipients (campaign_id, phone, line, params, tz, email, locale, state)"
                " SELECT :cid, r.phone, r.line, r.params, r.tz, r.email, r.locale, r.state"
                " FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(phone text, line int, params jsonb,"
                " tz text, email text, locale text, state text)"
                " ON CONFLICT (campaign_id, phone) DO NOTHING RETURNING state"),
                {"cid": cid, "rows": orjson.dumps(batch).decode()}).scalars().all()
        report.duplicates += len(batch) - len(got)
        report.opted_out += sum(1 for st in got if st == "opted_out")
        report.accepted += sum(1 for st in got if st == "pending")
        batch.clear()

    def reject(line: int, reason: str) -> None:
        report.rejected.append({"line": line, "reason": reason})

    for line, row in rows:
        seen_lines = line
        if isinstance(row, str):
            reject(line, row)
            continue
        ok, why = _check_row(row, n_params)
        if ok is None:
            reject(line, why or "invalid")
            continue
        ok["line"] = line
        batch.append(ok)
        if len(batch) >= IMPORT_BATCH:
            # One statement dedupes within the batch against earlier ones: keep the first.
            flush()
            if progress:
                progress(seen_lines)
    flush()
    if progress:
        progress(seen_lines)
    if report.rejected:
        with session_scope() as s:
            for k in range(0, len(report.rejected), 5000):
                s.execute(text(
                    "INSERT INTO campaign_rejects (campaign_id, line, reason)"
                    " SELECT :cid, r.line, r.reason FROM jsonb_to_recordset(CAST(:rows AS jsonb))"
                    " AS r(line int, reason text)"),
                    {"cid": cid, "rows": orjson.dumps(report.rejected[k:k + 5000]).decode()})
    return report


def import_file(cid: uuid.UUID, path: str, progress: Callable[[int], None] | None = None) -> ImportReport:
    fmt = "jsonl" if path.endswith((".jsonl", ".ndjson", ".json")) else "csv"
    with open(path, encoding="utf-8-sig", newline="") as f:
        return import_audience(cid, f, fmt, progress)


def import_bytes(cid: uuid.UUID, body: bytes, content_type: str) -> ImportReport:
    fmt = "jsonl" if "json" in content_type else "csv"
    try:
        stream = io.StringIO(body.decode("utf-8-sig"), newline="")
    except UnicodeDecodeError as exc:
        raise CampaignError(422, "body", f"not UTF-8: {exc}") from None
    return import_audience(cid, stream, fmt)


# --- state changes ----------------------------------------------------------------------


def change(cid: uuid.UUID, action: str, reason: str | None = None) -> dict[str, Any]:
    """start | pause | resume | cancel; effective for jobs already queued too."""
    now = datetime.now(UTC)
    next_run: datetime | None = None
    with session_scope() as s:
        c = _load(s, cid, lock=True)
        if c.status not in TRANSITIONS[action]:
            raise CampaignError(409, "status", f"cannot {action} a campaign that is {c.status}")
        if action == "start":
            pending = s.execute(text("SELECT count(*) FROM campaign_recipients WHERE campaign_id = :id"
                                     " AND state = 'pending'"), {"id": cid}).scalar_one()
            if not pending:
                raise CampaignError(409, "audience", "no recipients to send to: import an audience first")
            if c.cron:
                _check_budget(s, c, pending, whole_tier=True)
                new = "scheduled"
                next_run = _schedule(c.cron).next_after(max(now, c.start_at or now) - timedelta(seconds=1))
            else:
                _check_budget(s, c, pending)
                new = "scheduled" if c.start_at is not None and c.start_at > now else "running"
        elif action == "resume" and c.cron:
            new = "scheduled"
            next_run = _schedule(c.cron).next_after(now)
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


def _schedule(cron: str) -> Any:
    from wanotify.campaigns.cron import parse

    return parse(cron)


def _check_budget(s: Any, c: Any, pending: int, whole_tier: bool = False) -> None:
    """Marketing beyond the portfolio's remaining daily unique-recipient budget is refused
    (``whole_tier``: beyond a whole day's budget, for a recurring campaign's audience)."""
    if c.kind != "marketing":
        return
    from wanotify.config import get_settings
    from wanotify.delivery.lanes import Tier
    from wanotify.intake.service import get_redis

    sender = get_settings().sender(c.sender)
    tier = Tier.for_sender(sender)
    if tier is None:
        return
    limit = int(tier.limit * tier.marketing_share)  # marketing's share of the tier
    if whole_tier:
        if pending > limit:
            raise CampaignError(
                409, "audience",
                f"{pending} recipients, but the portfolio's daily budget lets marketing reach {limit} unique"
                f" recipients a day ({tier.limit} in all): split the audience")
        return
    used = tier.used(get_redis())
    left = max(0, limit - used)
    if pending > left:
        raise CampaignError(
            409, "audience",
            f"{pending} recipients, but the portfolio's daily budget has {left} unique recipients left"
            f" (marketing may use {limit} of {tier.limit}; {used} used today): split the audience or"
            " start it tomorrow")


def _repush_queued(cid: uuid.UUID) -> None:
    """A paused campaign's jobs left the lanes unsent: put back the ones no lane holds."""
    from wanotify.core.phones import digits
    from wanotify.delivery.lanes import Lanes, entry
    from wanotify.intake.service import get_redis, push_entries

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


def auto_pause(reason: str, *, template: tuple[str, str | None] | None = None,
               sender: str | None = None) -> list[str]:
    """Pause the active campaigns using a template Meta paused or rated RED, or sending from
    a number Meta reported for spam or policy; an operator resumes them."""
    if template is None and sender is None:
        return []
    where: list[str] = []
    params: dict[str, Any] = {"why": reason}
    if template is not None:
        where.append("template = :t AND (CAST(:l AS text) IS NULL OR language = :l)")
        params.update({"t": template[0], "l": template[1]})
    if sender is not None:
        where.append("sender = :s")
        params["s"] = sender
    with session_scope() as s:
        ids = s.execute(text(
            "UPDATE campaigns SET status = 'paused', status_reason = :why, updated_at = now()"
            f" WHERE status IN ('scheduled', 'running') AND ({' OR '.join(where)}) RETURNING id"),
            params).scalars().all()
    if ids:
        import logging

        logging.getLogger("wanotify.campaigns.service").error(
            "campaigns paused: %s", reason, extra={"campaigns": [str(i) for i in ids], "alert": True})
    return [str(i) for i in ids]


# --- fan-out ----------------------------------------------------------------------------


def lane_room(sender: str) -> int:
    """How many more campaign jobs the sender's lanes should take now (about ten seconds'
    worth at the number's rate, at least 2,000): the fan-out keeps pace with the drain
    instead of racing it for the CPU."""
    from wanotify.config import get_settings
    from wanotify.delivery.lanes import Lanes
    from wanotify.intake.service import get_redis

    s = get_settings().sender(sender)
    d = Lanes(get_redis()).depths(sender)
    return max(0, max(2000, s.mps * 10) - d["marketing"] - d["transactional"])


def fan_out(cid: uuid.UUID, limit: int = FANOUT_CHUNK) -> int:
    """Turn up to ``limit`` pending recipients into jobs (idempotent per recipient)."""
    from wanotify.intake.service import notify_many

    with session_scope() as s:
        c = _load(s, cid)
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
    from wanotify.config import get_settings

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
    from wanotify.intake.service import get_redis
    from wanotify.worker.app import celery_app

    r = get_redis()
    key = _fanout_key(cid)
    if chain:
        r.set(key, "1", px=FANOUT_LEASE_MS)
    elif not r.set(key, "1", nx=True, px=FANOUT_LEASE_MS):
        return False
    celery_app.send_task("wanotify.campaign_fanout", args=[str(cid)], queue="bulk", countdown=countdown)
    return True


def end_fanout(cid: uuid.UUID) -> None:
    from wanotify.intake.service import get_redis

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
    import logging

    now = now or datetime.now(UTC)
    started: list[uuid.UUID] = []
    with session_scope() as s:
        parents = s.execute(text(
            "SELECT * FROM campaigns WHERE cron IS NOT NULL AND status = 'scheduled' AND next_run_at <= :now"
            " ORDER BY next_run_at FOR UPDATE SKIP LOCKED"), {"now": now}).all()
        for c in parents:
            nxt = _schedule(c.cron).next_after(now)
            pending = s.execute(text("SELECT count(*) FROM campaign_recipients WHERE campaign_id = :id"
                                     " AND state = 'pending'"), {"id": c.id}).scalar_one()
            try:
                _check_budget(s, c, pending)
            except CampaignError as exc:
                s.execute(text("UPDATE campaigns SET next_run_at = :next, updated_at = now(), status_reason = :why"
                               " WHERE id = :id"),
                          {"next": nxt, "id": c.id, "why": f"run of {c.next_run_at.isoformat()} skipped: {exc.reason}"})
                logging.getLogger("wanotify.campaigns.service").error(
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


# --- progress and outcome ---------------------------------------------------------------


def status(cid: uuid.UUID) -> dict[str, Any]:
    with session_scope() as s:
        c = _load(s, cid)
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
