"""``wanotify keys create|list|revoke``: the HTTP API's keys (see wanotify.accounts.api_keys)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated

import typer
from rich.table import Table

from wanotify.accounts.api_keys import (
    REFRESH_S,
    KeyInputError,
    Rate,
    create_key,
    list_keys,
    revoke_key,
)
from wanotify.cli.common import console, err_console, fail, settings

keys_app = typer.Typer(
    help="HTTP API keys: create (shown once), list, revoke; optionally scoped to senders and rate limited.",
    no_args_is_help=True,
)


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else "—"


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option("--name", help="A unique name for the key (e.g. the calling service).")],
    sender: Annotated[list[str] | None, typer.Option(
        "--sender", help="Scope the key to this sender (repeat for several; default: every sender). "
                         "Jobs and campaigns without a sender use the first.")] = None,
    rate: Annotated[str | None, typer.Option("--rate", help="Request rate limit, e.g. 50/s, 600/min (default: none).")] = None,
    burst: Annotated[int | None, typer.Option("--burst", help="Requests allowed at once (default: one second's worth).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (with the key).")] = False,
) -> None:
    """Create a key and print it once: only its SHA-256 is stored."""
    s = settings()
    try:
        if burst is not None and rate is None:
            raise KeyInputError("--burst", "needs --rate")
        limit = Rate.parse(rate, burst) if rate is not None else None
        made = create_key(name, sender or (), limit, s.sender_map)
    except KeyInputError as exc:
        fail(f"{exc.field}: {exc.reason}")
        return
    if as_json:
        typer.echo(json.dumps({"id": made.id, "name": made.name, "prefix": made.prefix, "key": made.key,
                               "senders": made.senders, "rate": str(made.rate) if made.rate else None,
                               "burst": made.rate.burst if made.rate else None}))
        return
    scope = ", ".join(made.senders) if made.senders else "every sender"
    limit_text = f"{made.rate} (burst {made.rate.burst})" if made.rate else "unlimited"
    err_console.print(f"created API key [bold]{made.name}[/bold] id {made.id} prefix {made.prefix}… "
                      f"senders: {scope}; rate: {limit_text}", highlight=False)
    err_console.print("store the key now: it is not shown again", style="yellow")
    typer.echo(made.key)


@keys_app.command("list")
def keys_list(
    live: Annotated[bool, typer.Option("--live", help="Only keys not revoked.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The keys (never the key itself nor its hash; ids with --json)."""
    settings()
    rows = list_keys(include_revoked=not live)
    if as_json:
        typer.echo(json.dumps(rows, default=str))
        return
    t = Table(title=f"API keys ({len(rows)})")
    for col in ("name", "prefix", "senders", "rate", "created", "last used", "revoked"):
        t.add_column(col, no_wrap=col in ("name", "prefix"))
    for r in rows:
        t.add_row(r["name"], f"{r['prefix']}…", ", ".join(r["senders"]) if r["senders"] else "all",
                  f"{r['rate']}, burst {r['burst']}" if r["rate"] else "unlimited",
                  _when(r["created_at"]), _when(r["last_used_at"]), _when(r["revoked_at"]))
    console.print(t)


@keys_app.command("revoke")
def keys_revoke(name_or_id: Annotated[str, typer.Argument(help="The key's name or id.")]) -> None:
    """Revoke a key: every web process refuses it within about a second."""
    settings()
    try:
        out = revoke_key(name_or_id)
    except KeyInputError as exc:
        fail(exc.reason)
        return
    if out["already"]:
        typer.echo(f"API key {out['name']} ({out['id']}) was already revoked at {_when(out['revoked_at'])}")
        return
    typer.echo(f"revoked API key {out['name']} ({out['id']}); web processes refuse it within {REFRESH_S:g} s")
