"""``wanotify purge`` and ``wanotify erase`` (registered by cli.main)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated

import typer
from rich.table import Table

from wanotify.cli.common import console, fail, settings
from wanotify.core.phones import normalize_e164
from wanotify.privacy.erasure import erase as run_erasure
from wanotify.privacy.retention import purge as run_purge


def purge(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would go; change nothing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    now: Annotated[str | None, typer.Option(help="Pretend it is this ISO time (what will go by then).")] = None,
) -> None:
    """Retention: anonymise or delete personal data past WANOTIFY_RETENTION (beat runs it hourly)."""
    settings()
    at = None
    if now is not None:
        try:
            at = datetime.fromisoformat(now.replace("Z", "+00:00"))
        except ValueError:
            fail(f"--now {now!r} is not an ISO 8601 time")
        if at is not None and at.tzinfo is None:
            fail("--now must include a time zone, e.g. 2027-01-01T00:00:00Z")
    report = run_purge(now=at, dry_run=dry_run)
    if as_json:
        console.print_json(json.dumps(report.as_json()))
        return
    t = Table(title="retention purge" + (" (dry run: nothing changed)" if dry_run else ""))
    for col in ("table", "what", "action", "past", "rows"):
        t.add_column(col, justify="right" if col == "rows" else "left")
    for r in report.rows:
        t.add_row(r.table, r.what, ("would be " if dry_run else "") + r.action, r.cutoff or "", str(r.rows))
    console.print(t)


def erase(
    phone: Annotated[str, typer.Option(help="The person's number in E.164, e.g. +919876543210.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be touched; change nothing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Erasure: remove or anonymise everything about one number (its opt-out stays, as a hash)."""
    settings()
    try:
        normalize_e164(phone)
    except ValueError as exc:
        fail(f"--phone: {exc}")
    report = run_erasure(phone, dry_run=dry_run)
    if as_json:
        console.print_json(json.dumps(report.as_json()))
        return
    t = Table(title=f"erasure of {report.phone}" + (" (dry run: nothing changed)" if dry_run else ""))
    t.add_column("table")
    t.add_column("rows", justify="right")
    for table, n in report.touched.items():
        t.add_row(table, str(n))
    for key, n in report.redis.items():
        t.add_row(f"redis {key}", str(n))
    console.print(t)
