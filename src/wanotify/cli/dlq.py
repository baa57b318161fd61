"""``wanotify dlq list|show|replay``: dead letters, jobs that exhausted every channel."""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any

import typer
from rich.table import Table

from wanotify.cli.common import console, fail, settings
from wanotify.ops.dlq import ReplayRefused, list_dead, replay, show

dlq_app = typer.Typer(help="Dead letters: jobs that exhausted every channel.", no_args_is_help=True)


def _job_id(value: str) -> Any:
    try:
        return uuid.UUID(value)
    except ValueError:
        fail(f"{value!r} is not a notification id")


@dlq_app.command("list")
def dlq_list(
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 50,
    all_: Annotated[bool, typer.Option("--all", help="Include replayed ones.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List dead letters."""
    settings()
    rows = list_dead(limit, all_)
    if as_json:
        console.print_json(json.dumps(rows))
        return
    t = Table(title=f"dead letters ({len(rows)})")
    for col in ("id", "kind", "template", "to", "status", "reason", "created", "replayed"):
        t.add_column(col)
    for r in rows:
        t.add_row(r["id"], r["kind"], r["template"] or "", r["to"], r["status"], r["reason"],
                  r["created_at"][:19], (r["replayed_at"] or "")[:19])
    console.print(t)


@dlq_app.command("show")
def dlq_show(notification_id: Annotated[str, typer.Argument(help="The job's id.")]) -> None:
    """A dead letter with its full history."""
    settings()
    got = show(_job_id(notification_id))
    if got is None:
        fail(f"no dead letter {notification_id}", 1)
    console.print_json(json.dumps(got, default=str))


@dlq_app.command("replay")
def dlq_replay(notification_id: Annotated[str, typer.Argument(help="The job's id.")]) -> None:
    """Put a dead-lettered job back in its queue (once)."""
    settings()
    try:
        out = replay(_job_id(notification_id))
    except ReplayRefused as exc:
        fail(str(exc), 1)
    console.print(f"{out['id']} {out['status']}")
