"""Jobs from the shell: ``wanotify send`` and ``wanotify status``."""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any

import typer
from rich.table import Table

from wanotify.cli.common import console, err_console, fail, settings
from wanotify.core.errors import IdempotencyConflict, InvalidJob
from wanotify.core.kinds import KINDS
from wanotify.delivery.token_watch import pause_text
from wanotify.intake.service import notify
from wanotify.ops.status_view import overview
from wanotify.ops.views import notification_view


def send(
    to: Annotated[str, typer.Option(help="Recipient in E.164, e.g. +919876543210.")],
    template: Annotated[str | None, typer.Option(help="Approved template name.")] = None,
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="Body parameter (repeat, in order).")] = None,
    language: Annotated[str, typer.Option(help="Template language code.")] = "en",
    text: Annotated[str | None, typer.Option(help="Free-form text instead of a template.")] = None,
    kind: Annotated[str, typer.Option(help="otp, transactional or marketing.")] = "transactional",
    sender: Annotated[str | None, typer.Option(help="Sender name (default: the first).")] = None,
    idempotency_key: Annotated[str | None, typer.Option(help="Idempotency key.")] = None,
) -> None:
    """Enqueue one job and print its id."""
    settings()
    body: dict[str, Any] = {"to": to, "kind": kind}
    if template is not None:
        body.update(template=template, language=language, params={"body": list(param or [])})
    if text is not None:
        body["text"] = text
    if sender:
        body["sender"] = sender
    if idempotency_key:
        body["idempotency_key"] = idempotency_key
    try:
        acc = notify(body)
    except InvalidJob as exc:
        for e in exc.errors:
            err_console.print(f"[red]error:[/red] {e[0]}: {e[1]}")
        raise typer.Exit(2) from None
    except IdempotencyConflict as exc:
        fail(str(exc))
    console.print(acc.id)


def status(
    notification_id: Annotated[str | None, typer.Argument(help="Show one notification.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Queue depths per sender, counts per status; or one notification's timeline."""
    settings()
    if notification_id:
        try:
            jid = uuid.UUID(notification_id)
        except ValueError:
            fail(f"{notification_id!r} is not a notification id")
        view = notification_view(jid)
        if view is None:
            fail(f"no notification {notification_id}", 1)
        console.print_json(json.dumps(view))
        return

    data = overview()
    if as_json:
        console.print_json(json.dumps(data, default=str))
        return
    t = Table(title="senders")
    for col in ("sender", *KINDS, "held", "inflight", "oldest wait",
                "dispatching", "paused"):
        t.add_column(col, justify="right" if col != "sender" else "left")
    for name, d in data["senders"].items():
        oldest = max(d["wait_s"].values())
        paused = d.get("paused")
        t.add_row(name, str(d["otp"]), str(d["transactional"]), str(d["marketing"]), str(d["held"]),
                  str(d["inflight"]), f"{oldest:.1f} s", "yes" if d["owned"] else "no",
                  pause_text(paused))
    console.print(t)
    t2 = Table(title="notifications by status")
    t2.add_column("kind")
    t2.add_column("status")
    t2.add_column("count", justify="right")
    for row in data["counts"]:
        t2.add_row(row["kind"], row["status"], str(row["count"]))
    console.print(t2)
    last = data["last_webhook_at"]
    console.print(f"last webhook received: {last.isoformat() if last else 'never'}")
    console.print(f"dead letters waiting: {data['dead_letters']}")
    slow = data["slowest_stage"]
    console.print("slowest stage right now: "
                  + (f"{slow['stage']} (oldest {slow['oldest_s']:.1f} s)" if slow else "nothing waiting"))
