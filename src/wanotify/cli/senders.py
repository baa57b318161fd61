"""``wanotify senders list|check|resume``: the sending phone numbers."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from wanotify.cli.common import console, fail, settings
from wanotify.delivery.token_watch import pause_text
from wanotify.ops.senders_check import check_all
from wanotify.pacing.lanes import Lanes
from wanotify.providers.tokens import TokenUnavailable, current, source
from wanotify.queues import enqueue
from wanotify.redis import get_redis

senders_app = typer.Typer(help="Sender phone numbers: paused state.", no_args_is_help=True)


@senders_app.command("list")
def senders_list() -> None:
    """Configured senders, their limits and whether they are paused."""
    s = settings()
    lanes = Lanes(get_redis())
    t = Table(title="senders")
    for col in ("name", "phone_number_id", "mps", "pair", "daily tier", "token", "paused"):
        t.add_column(col)
    for snd in s.sender_list:
        p = lanes.paused(snd.name)
        try:
            tok = f"{current(snd).fingerprint} ({source(snd).describe})"
        except TokenUnavailable as exc:
            tok = f"[red]unavailable[/red]: {exc}"
        t.add_row(snd.name, snd.phone_number_id, str(snd.mps), f"{snd.pair_burst}/{snd.pair_interval_s:g}s",
                  str(snd.daily_unique_limit or "unlimited"), tok, pause_text(p))
    console.print(t)


@senders_app.command("check")
def senders_check(
    sender: Annotated[list[str] | None, typer.Option("--sender", help="Only this sender (repeatable).")] = None,
    warn_days: Annotated[float, typer.Option(help="Warn when a token expires within this many days.")] = 7.0,
    fail_on_warning: Annotated[bool, typer.Option(help="Exit 1 on warnings too.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Ask the Graph API about each sender's token and phone number (exit 1 on any problem)."""
    s = settings()
    unknown = [n for n in sender or [] if n not in s.sender_map]
    if unknown:
        fail(f"unknown sender(s) {', '.join(unknown)} (known: {', '.join(s.sender_map)})")
    if warn_days < 0:
        fail("--warn-days must be at least 0")
    checks = check_all(s, sender or None, warn_days)
    if as_json:
        console.print_json(json.dumps([c.as_dict() for c in checks]))
    else:
        t = Table(title="senders check")
        for col in ("sender", "number", "verified name", "quality", "token", "expires", "messaging scope", "result"):
            t.add_column(col)
        for c in checks:
            number = c.display_phone_number or "?"
            if c.number_matches is False:
                number = f"[red]{number} ≠ {c.configured_display_phone_number}[/red]"
            token = {True: "[green]valid[/green]", False: "[red]INVALID[/red]", None: "?"}[c.token_valid]
            expires = ("never" if c.token_valid and c.expires_at is None
                       else f"{c.expires_at[:16]} ({c.expires_in_days:.1f} d)" if c.expires_at and c.expires_in_days
                       is not None else "?")
            scope = {True: "yes", False: "[red]no[/red]", None: "?"}[c.messaging_scope]
            result = ("[green]OK[/green]" if c.ok and not c.warnings else
                      "[yellow]warning[/yellow]" if c.ok else "[red]PROBLEM[/red]")
            t.add_row(c.sender, number, c.verified_name or "?", c.quality_rating or "?",
                      f"{token} {c.token_fingerprint or ''}", expires, scope, result)
        console.print(t)
        for c in checks:
            for msg in c.problems:
                console.print(f"[red]✗[/red] {c.sender}: {msg}", markup=True, highlight=False)
            for msg in c.warnings:
                console.print(f"[yellow]![/yellow] {c.sender}: {msg}", markup=True, highlight=False)
    bad = any(not c.ok for c in checks) or (fail_on_warning and any(c.warnings for c in checks))
    raise typer.Exit(1 if bad else 0)


@senders_app.command("resume")
def senders_resume(name: Annotated[str, typer.Argument(help="Sender name.")]) -> None:
    """Resume a sender paused by an account-level error; its waiting jobs go out again."""
    s = settings()
    if name not in s.sender_map:
        fail(f"unknown sender {name!r} (known: {', '.join(s.sender_map)})")
    lanes = Lanes(get_redis())
    was = lanes.resume(name)
    enqueue.dispatch(name, "otp")
    console.print(f"{name} resumed" if was else f"{name} was not paused")
