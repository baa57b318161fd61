"""``wanotify campaign create|import|start|pause|resume|cancel|status``."""

from __future__ import annotations

import os as _os
import time as _time
import uuid
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from wanotify.campaigns.audience import import_file
from wanotify.campaigns.records import CampaignError
from wanotify.campaigns.service import change, create, status
from wanotify.cli.common import console, err_console, fail, settings

campaign_app = typer.Typer(help="Scheduled campaigns: create, import an audience, start, pause, resume, cancel.",
                           no_args_is_help=True)


def _campaign_id(value: str) -> Any:
    try:
        return uuid.UUID(value)
    except ValueError:
        fail(f"campaign id: {value!r} is not a campaign id")


def _import_with_progress(cid: Any, path: str) -> Any:
    if not _os.path.isfile(path):
        fail(f"--audience: no such file {path!r}")
    size_lines = sum(1 for _ in open(path, "rb"))
    with Progress(TextColumn("importing"), BarColumn(), TextColumn("{task.completed:,}/{task.total:,} lines"),
                  TimeElapsedColumn(), console=err_console, transient=True) as bar:
        task = bar.add_task("import", total=size_lines)
        return import_file(cid, path, lambda line: bar.update(task, completed=line))


def _print_report(report: Any) -> None:
    r = report.as_json()
    console.print(f"accepted {r['accepted']:,}, duplicates {r['duplicates']:,}, opted out {r['opted_out']:,},"
                  f" rejected {len(r['rejected']):,}")
    for x in r["rejected"][:20]:
        console.print(f"  line {x['line']}: {x['reason']}")
    if len(r["rejected"]) > 20:
        console.print(f"  … {len(r['rejected']) - 20} more (GET /v1/campaigns/ID shows the count)")


@campaign_app.command("create")
def campaign_create(
    name: Annotated[str, typer.Option(help="Campaign name.")],
    template: Annotated[str, typer.Option(help="Approved template.")],
    language: Annotated[str, typer.Option(help="Template language.")] = "en",
    sender: Annotated[str | None, typer.Option(help="Sender name (default: the first).")] = None,
    kind: Annotated[str, typer.Option(help="marketing or transactional.")] = "marketing",
    audience: Annotated[str | None, typer.Option(help="CSV (to, body_1…, tz, email, locale) or JSON lines.")] = None,
    start_at: Annotated[str | None, typer.Option(help="ISO time with zone (default: when started).")] = None,
    cron: Annotated[str | None, typer.Option(help="Recurring schedule: five cron fields (UTC, or a CRON_TZ=Zone prefix), e.g. '30 9 * * 1-5'.")] = None,
) -> None:
    """Create a campaign (a draft), optionally importing its audience; prints the id and the report."""
    settings()
    when = None
    if start_at is not None:
        try:
            when = datetime.fromisoformat(start_at.replace("Z", "+00:00"))
        except ValueError:
            fail(f"--start-at: {start_at!r} is not an ISO 8601 time")
    try:
        out = create(name, template, language, sender, kind, when, cron)
        console.print(out["id"])
        if audience:
            _print_report(_import_with_progress(_campaign_id(out["id"]), audience))
    except CampaignError as exc:
        fail(f"--{exc.field.replace('_', '-')}: {exc.reason}" if exc.status == 422 else str(exc))


@campaign_app.command("import")
def campaign_import(campaign_id: str, audience: str) -> None:
    """Add an audience file to a campaign that has not started."""
    settings()
    try:
        _print_report(_import_with_progress(_campaign_id(campaign_id), audience))
    except CampaignError as exc:
        fail(str(exc))


def _campaign_change(campaign_id: str, action: str) -> None:
    settings()
    try:
        out = change(_campaign_id(campaign_id), action)
    except CampaignError as exc:
        fail(str(exc))
    console.print(f"{out['id']} {out['status']}")


@campaign_app.command("start")
def campaign_start(campaign_id: str) -> None:
    """Start now, or at the campaign's start time."""
    _campaign_change(campaign_id, "start")


@campaign_app.command("pause")
def campaign_pause(campaign_id: str) -> None:
    """Stop sending (queued jobs wait too)."""
    _campaign_change(campaign_id, "pause")


@campaign_app.command("resume")
def campaign_resume(campaign_id: str) -> None:
    _campaign_change(campaign_id, "resume")


@campaign_app.command("cancel")
def campaign_cancel(campaign_id: str) -> None:
    """Stop for good; queued jobs are cancelled."""
    _campaign_change(campaign_id, "cancel")


@campaign_app.command("status")
def campaign_status(
    campaign_id: str,
    watch: Annotated[bool, typer.Option(help="Refresh every second until it finishes.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Counts by status, read rate and billable messages by category."""
    settings()
    cid = _campaign_id(campaign_id)

    def view() -> Any:
        st = status(cid)
        t = Table(title=f"{st['name']} — {st['status']}" + (f" ({st['status_reason']})" if st["status_reason"] else ""))
        t.add_column("count")
        t.add_column("", justify="right")
        for k, v in st["counts"].items():
            t.add_row(k.replace("_", " "), f"{v:,}")
        t.add_row("read rate", "—" if st["read_rate"] is None else f"{st['read_rate']:.1%}")
        for cat, n in st["cost"]["billable_by_category"].items():
            t.add_row(f"billable: {cat}", f"{n:,}")
        if st["cron"]:
            t.add_row("schedule", st["cron"])
            t.add_row("next run", st["next_run_at"] or "—")
            t.add_row("runs", f"{st['run_count']:,}")
            for r in st["recent_runs"][:5]:
                t.add_row(f"run {r['id']}", f"{r['status']} {r['started_at'] or ''}")
        return st, t

    try:
        st, t = view()
        if as_json:
            console.print_json(data=st)
            return
        if not watch:
            console.print(t)
            return
        with Live(t, console=console, refresh_per_second=2) as live:
            while st["status"] not in ("completed", "cancelled"):
                _time.sleep(1.0)
                st, t = view()
                live.update(t)
    except CampaignError as exc:
        fail(str(exc))
