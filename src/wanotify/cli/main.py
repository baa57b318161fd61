"""The ``wanotify`` command (typer). Every verb reads the same WANOTIFY_* settings."""

from __future__ import annotations

import json
import os
import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    name="wanotify",
    help="Outbound WhatsApp Business notifications: paced, retried, with fallback and exact statuses.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

PASSTHROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}


def _fail(message: str, code: int = 2) -> None:
    from rich.markup import escape

    err_console.print(f"[red]error:[/red] {escape(message)}", highlight=False)
    raise typer.Exit(code)


def _settings() -> Any:
    from pydantic import ValidationError

    from wanotify.config import get_settings

    try:
        s = get_settings()
        s.sender_list  # noqa: B018  (validate senders now, with a clear message)
    except (ValidationError, ValueError) as exc:
        _fail(f"invalid configuration: {exc}")
    return s


def _setup_logging() -> None:
    from wanotify.ops.logs import setup_logging

    s = _settings()
    setup_logging(s.log_level, s.log_json)


@app.command()
def migrate(
    wait: Annotated[float, typer.Option(help="Seconds to wait for Postgres to accept connections.")] = 60.0,
) -> None:
    """Create the database if needed and apply the Alembic migrations up to head.

    Waits for the server, and takes a Postgres advisory lock: safe to run from every web
    process or container at once (one migrates, the others find the schema at head)."""
    import psycopg

    from wanotify.db.migrate import current_revision, upgrade

    s = _settings()
    try:
        upgrade(s.database_url, wait_s=wait)
    except psycopg.OperationalError as exc:
        _fail(f"Postgres did not accept connections within {wait:g}s: "
              f"{str(exc).strip().splitlines()[-1] if str(exc).strip() else exc!r}", code=1)
    console.print(f"database at revision {current_revision(s.database_url)}")


@app.command()
def web(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 8000,
    workers: Annotated[int, typer.Option(help="uvicorn worker processes.")] = 1,
) -> None:
    """Serve the HTTP API, Meta's webhook, health and metrics (uvicorn)."""
    import uvicorn

    s = _settings()
    _setup_logging()
    uvicorn.run(
        "wanotify.web.main:app",
        host=host,
        port=port,
        workers=workers,
        log_config=None,
        access_log=False,
        log_level=s.log_level.lower(),
    )


@app.command()
def sandbox(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 8900,
    webhook_url: Annotated[str, typer.Option(help="Where to POST signed status webhooks ('' disables).")] = "http://127.0.0.1:8000/webhooks/whatsapp",
) -> None:
    """Serve the local Graph API double (and a Twilio-style SMS provider)."""
    from wanotify.devtools.sandbox.server import run_sandbox

    s = _settings()
    _setup_logging()
    run_sandbox(host, port, webhook_url or None, s)


@app.command(context_settings=PASSTHROUGH)
def worker(ctx: typer.Context) -> None:
    """Run a Celery worker; further options go to `celery worker` (default: every queue)."""
    args = list(ctx.args)
    _multiprocess_metrics(args)
    from wanotify.worker.app import QUEUES, celery_app

    _settings()
    if not any(a in ("-Q", "--queues") or a.startswith(("--queues=", "-Q")) for a in args):
        args += ["--queues", ",".join(QUEUES)]
    if not any(a in ("-P", "--pool") or a.startswith(("--pool=", "-P")) for a in args):
        args += ["--pool", "threads"]
    if not any(a in ("-c", "--concurrency") or a.startswith(("--concurrency=", "-c")) for a in args):
        args += ["--concurrency", "16"]
    if not any(a in ("-E", "--task-events") for a in args):
        args += ["--task-events"]
    from wanotify.worker.memory import limit_arenas

    if any(a in ("-B", "--beat") for a in args):  # an embedded beat: its schedule too
        args = _with_beat_schedule(args, _settings())
    limit_arenas(2)  # before Celery starts its threads (see wanotify.worker.memory)
    celery_app.worker_main(["worker", *args])


def _multiprocess_metrics(args: list[str]) -> None:
    """Under a process pool each child counts its own sends: share them through
    prometheus_client's multiprocess directory so the worker's metrics port shows them all.
    Must run before prometheus_client is imported."""
    import tempfile

    pool = "threads"
    for i, a in enumerate(args):
        if a in ("-P", "--pool") and i + 1 < len(args):
            pool = args[i + 1]
        elif a.startswith("--pool="):
            pool = a.split("=", 1)[1]
        elif a.startswith("-P") and len(a) > 2:
            pool = a[2:]
    if pool in ("prefork", "processes") and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="wanotify-metrics-")


@app.command(context_settings=PASSTHROUGH)
def beat(ctx: typer.Context) -> None:
    """Run Celery beat (scheduled campaigns, periodic sweeps); options go to `celery beat`."""
    from wanotify.worker.app import celery_app

    args = _with_beat_schedule(list(ctx.args), _settings())
    celery_app.start(["beat", *args])


def _with_beat_schedule(args: list[str], s: Any) -> list[str]:
    """Beat's schedule file in the state folder unless ``-s/--schedule`` is given (Celery's
    default, ``celerybeat-schedule`` in the current folder, litters a checkout and fails in
    a read-only ``/app``)."""
    if any(a in ("-s", "--schedule") or a.startswith(("--schedule=", "-s")) for a in args):
        return args
    return [*args, f"--schedule={s.ensure_state_path() / 'celerybeat-schedule'}"]


@app.command(context_settings=PASSTHROUGH)
def flower(
    ctx: typer.Context,
    port: Annotated[int, typer.Option(help="Port for Flower.")] = 5555,
    address: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    no_auth: Annotated[bool, typer.Option("--no-auth", help="No authentication (loopback addresses only).")] = False,
) -> None:
    """Run Flower against wanotify's Celery app; options go to `celery flower`.

    Always behind basic auth: WANOTIFY_FLOWER_BASIC_AUTH ("user:password"), else a generated
    password kept in a 0600 file under the user's state dir (its path is printed). --no-auth
    only on loopback. Its state persists in WANOTIFY_FLOWER_DB.
    """
    from wanotify.ops.flower_auth import FlowerAuthError, resolve
    from wanotify.worker.app import celery_app

    s = _settings()
    configured = s.flower_basic_auth.get_secret_value() if s.flower_basic_auth is not None else None
    try:
        auth = resolve(configured, address, no_auth)
    except FlowerAuthError as exc:
        _fail(str(exc))
    err_console.print(auth.notice, markup=False, soft_wrap=True)
    os.environ.pop("FLOWER_BASIC_AUTH", None)
    if auth.basic_auth is not None:
        os.environ["FLOWER_BASIC_AUTH"] = auth.basic_auth  # not in argv: the process list shows argv
    args = [f"--port={port}", f"--address={address}", "--persistent=True",
            f"--db={s.flower_db or s.ensure_state_path() / 'flower.db'}",
            "--purge_offline_workers=3600"]
    celery_app.start(["flower", *args, *ctx.args])


@app.command()
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
    from wanotify.core.errors import IdempotencyConflict, InvalidJob
    from wanotify.intake.service import notify

    _settings()
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
        _fail(str(exc))
    console.print(acc.id)


@app.command()
def status(
    notification_id: Annotated[str | None, typer.Argument(help="Show one notification.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Queue depths per sender, counts per status; or one notification's timeline."""
    import uuid

    _settings()
    if notification_id:
        from wanotify.ops.views import notification_view

        try:
            jid = uuid.UUID(notification_id)
        except ValueError:
            _fail(f"{notification_id!r} is not a notification id")
        view = notification_view(jid)
        if view is None:
            _fail(f"no notification {notification_id}", 1)
        console.print_json(json.dumps(view))
        return
    from wanotify.ops.status_view import overview
    from wanotify.providers.tokens import pause_text

    data = overview()
    if as_json:
        console.print_json(json.dumps(data, default=str))
        return
    t = Table(title="senders")
    for col in ("sender", "otp", "transactional", "marketing", "held", "inflight", "oldest wait",
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


@app.command()
def demo(
    otp: Annotated[int, typer.Option(help="OTP jobs.")] = 200,
    orders: Annotated[int, typer.Option(help="Order confirmations.")] = 500,
    reminders: Annotated[int, typer.Option(help="Appointment reminders.")] = 300,
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds.")] = 150.0,
) -> None:
    """Run the whole pipeline locally against the sandbox and print what happened."""
    from wanotify.devtools.demo import run_demo

    code = run_demo(otp=otp, orders=orders, reminders=reminders, timeout=timeout)
    raise typer.Exit(code)


from wanotify.cli.privacy import register as _register_privacy  # noqa: E402

_register_privacy(app)  # wanotify purge, wanotify erase

dlq_app = typer.Typer(help="Dead letters: jobs that exhausted every channel.", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")


def _job_id(value: str) -> Any:
    import uuid

    try:
        return uuid.UUID(value)
    except ValueError:
        _fail(f"{value!r} is not a notification id")


@dlq_app.command("list")
def dlq_list(
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 50,
    all_: Annotated[bool, typer.Option("--all", help="Include replayed ones.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List dead letters."""
    from wanotify.ops.dlq import list_dead

    _settings()
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
    from wanotify.ops.dlq import show

    _settings()
    got = show(_job_id(notification_id))
    if got is None:
        _fail(f"no dead letter {notification_id}", 1)
    console.print_json(json.dumps(got, default=str))


@dlq_app.command("replay")
def dlq_replay(notification_id: Annotated[str, typer.Argument(help="The job's id.")]) -> None:
    """Put a dead-lettered job back in its queue (once)."""
    from wanotify.ops.dlq import ReplayRefused, replay

    _settings()
    try:
        out = replay(_job_id(notification_id))
    except ReplayRefused as exc:
        _fail(str(exc), 1)
    console.print(f"{out['id']} {out['status']}")


senders_app = typer.Typer(help="Sender phone numbers: paused state.", no_args_is_help=True)
app.add_typer(senders_app, name="senders")

from wanotify.cli.keys import keys_app  # noqa: E402

app.add_typer(keys_app, name="keys")


@senders_app.command("list")
def senders_list() -> None:
    """Configured senders, their limits and whether they are paused."""
    from wanotify.delivery.lanes import Lanes
    from wanotify.intake.service import get_redis
    from wanotify.providers.tokens import TokenUnavailable, current, pause_text, source

    s = _settings()
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
    from wanotify.ops.senders_check import check_all

    s = _settings()
    unknown = [n for n in sender or [] if n not in s.sender_map]
    if unknown:
        _fail(f"unknown sender(s) {', '.join(unknown)} (known: {', '.join(s.sender_map)})")
    if warn_days < 0:
        _fail("--warn-days must be at least 0")
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
    from wanotify.delivery.lanes import Lanes
    from wanotify.intake.service import get_redis, kick

    s = _settings()
    if name not in s.sender_map:
        _fail(f"unknown sender {name!r} (known: {', '.join(s.sender_map)})")
    lanes = Lanes(get_redis())
    was = lanes.resume(name)
    kick(name, "otp")
    console.print(f"{name} resumed" if was else f"{name} was not paused")


campaign_app = typer.Typer(help="Scheduled campaigns: create, import an audience, start, pause, resume, cancel.",
                           no_args_is_help=True)
app.add_typer(campaign_app, name="campaign")


def _campaign_id(value: str) -> Any:
    import uuid

    try:
        return uuid.UUID(value)
    except ValueError:
        _fail(f"campaign id: {value!r} is not a campaign id")


def _import_with_progress(cid: Any, path: str) -> Any:
    import os as _os

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from wanotify.campaigns.service import import_file

    if not _os.path.isfile(path):
        _fail(f"--audience: no such file {path!r}")
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
    from datetime import datetime

    from wanotify.campaigns.service import CampaignError, create

    _settings()
    when = None
    if start_at is not None:
        try:
            when = datetime.fromisoformat(start_at.replace("Z", "+00:00"))
        except ValueError:
            _fail(f"--start-at: {start_at!r} is not an ISO 8601 time")
    try:
        out = create(name, template, language, sender, kind, when, cron)
        console.print(out["id"])
        if audience:
            _print_report(_import_with_progress(_campaign_id(out["id"]), audience))
    except CampaignError as exc:
        _fail(f"--{exc.field.replace('_', '-')}: {exc.reason}" if exc.status == 422 else str(exc))


@campaign_app.command("import")
def campaign_import(campaign_id: str, audience: str) -> None:
    """Add an audience file to a campaign that has not started."""
    from wanotify.campaigns.service import CampaignError

    _settings()
    try:
        _print_report(_import_with_progress(_campaign_id(campaign_id), audience))
    except CampaignError as exc:
        _fail(str(exc))


def _campaign_change(campaign_id: str, action: str) -> None:
    from wanotify.campaigns.service import CampaignError, change

    _settings()
    try:
        out = change(_campaign_id(campaign_id), action)
    except CampaignError as exc:
        _fail(str(exc))
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
    import time as _time

    from rich.live import Live
    from rich.table import Table

    from wanotify.campaigns.service import CampaignError, status

    _settings()
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
        _fail(str(exc))


bench_app = typer.Typer(help="Benchmarks, measured through the public surface.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


@bench_app.command("pacing")
def bench_pacing(
    runs: Annotated[int, typer.Option(help="Repeat and report medians.")] = 1,
    senders: Annotated[int, typer.Option(help="Senders at --mps.")] = 10,
    mps: Annotated[int, typer.Option(help="Their messages/s limit.")] = 80,
    fast_mps: Annotated[int, typer.Option(help="One more sender at this limit (0: none).")] = 1000,
    backlog_seconds: Annotated[float, typer.Option(help="Backlog per sender, in seconds of its rate.")] = 8.0,
    workers: Annotated[int, typer.Option(help="Worker processes (as separate hosts).")] = 4,
    otp_rate: Annotated[float, typer.Option(help="OTPs per second during the drain.")] = 5.0,
    baseline: Annotated[bool, typer.Option(help="Also run Celery's rate_limit baseline.")] = True,
    baseline_timeout: Annotated[float, typer.Option(help="Stop the baseline after this many seconds.")] = 45.0,
) -> None:
    """Per-number pacing across workers vs Celery's rate_limit: violations, utilisation, OTP latency."""
    from wanotify.devtools.bench.pacing import run

    if runs < 1 or senders < 0 or mps < 1 or workers < 1 or (senders == 0 and fast_mps == 0):
        _fail("runs, mps and workers must be at least 1, and some senders are needed")
    run(runs=runs, slow_senders=senders, slow_mps=mps, fast_mps=fast_mps, backlog_s=backlog_seconds,
        workers=workers, otp_rate=otp_rate, baseline=baseline, baseline_timeout=baseline_timeout)


@bench_app.command("chaos")
def bench_chaos(
    jobs: Annotated[int, typer.Option(help="Mixed jobs to send.")] = 2000,
    pg_down: Annotated[float, typer.Option(help="Seconds Postgres refuses connections.")] = 20.0,
    timeout: Annotated[float, typer.Option(help="Give up waiting for outcomes after this.")] = 300.0,
) -> None:
    """Break things while jobs flow; count what was lost or sent twice."""
    from wanotify.devtools.bench.chaos import run as run_chaos

    if jobs < 1:
        _fail("jobs must be at least 1")
    run_chaos(jobs=jobs, pg_down_s=pg_down, timeout=timeout)


@bench_app.command("campaign")
def bench_campaign(
    rows: Annotated[int, typer.Option(help="Audience rows to generate (1% bad, 1% opted out).")] = 100_000,
    mps: Annotated[int, typer.Option(help="The sending number's messages/s limit.")] = 1000,
    otp_rate: Annotated[float, typer.Option(help="OTPs per second during the drain.")] = 5.0,
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds.")] = 900.0,
) -> None:
    """Import, schedule and drain a large campaign while OTPs keep arriving."""
    from wanotify.devtools.bench.campaign import run as run_campaign

    if rows < 100 or mps < 1 or otp_rate <= 0:
        _fail("rows must be at least 100, mps at least 1, otp-rate above 0")
    run_campaign(rows=rows, mps=mps, otp_rate=otp_rate, timeout=timeout)


@bench_app.command("throughput")
def bench_throughput(
    runs: Annotated[int, typer.Option(help="Repeat and report medians.")] = 3,
    quick: Annotated[bool, typer.Option(help="Small sizes (a smoke run; figures are rough).")] = False,
    statuses_per_post: Annotated[int, typer.Option(help="Statuses per webhook POST (Meta batches).")] = 10,
    latency: Annotated[list[float] | None, typer.Option(help="Sandbox latency in ms (repeatable).")] = None,
    json_out: Annotated[str | None, typer.Option("--json", help="Also write the figures here.")] = None,
) -> None:
    """Send path, enqueue and webhook ingest against the textbook one-task-per-message baselines."""
    from wanotify.devtools.bench.throughput import run as run_throughput

    lat = tuple(latency) if latency else (0.0, 50.0)
    if runs < 1 or statuses_per_post < 1 or any(x < 0 for x in lat):
        _fail("runs and statuses-per-post must be at least 1, latencies at least 0")
    run_throughput(runs=runs, quick=quick, per_post=statuses_per_post, latencies=lat, json_path=json_out)


@bench_app.command("baseline-worker", hidden=True)
def bench_baseline_worker(
    name: Annotated[str, typer.Option(help="Celery node name.")] = "baseline@%h",
    concurrency: Annotated[int, typer.Option(help="Threads.")] = 8,
    queue: Annotated[str, typer.Option(help="Queue to consume at start.")] = "baseline",
) -> None:
    """The textbook baseline's worker (one task per message, Celery rate_limit)."""
    from wanotify.devtools.bench.baseline import app as baseline_app

    baseline_app.worker_main(["worker", "-Q", queue, "--pool", "threads", "--concurrency",
                              str(concurrency), "-n", name if "@" in name else f"{name}@%h",
                              "--loglevel", "WARNING"])


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()


@bench_app.command("textbook-worker", hidden=True)
def bench_textbook_worker(
    name: Annotated[str, typer.Option(help="Celery node name.")] = "textbook",
    pool: Annotated[str, typer.Option(help="Celery pool.")] = "prefork",
    concurrency: Annotated[int, typer.Option(help="Pool size.")] = 2,
) -> None:
    """The one-task-per-message baselines' worker."""
    from wanotify.devtools.bench.textbook import QUEUE, celery

    celery.worker_main(["worker", "-Q", QUEUE, "--pool", pool, "--concurrency", str(concurrency),
                        "-n", name if "@" in name else f"{name}@%h", "--loglevel", "WARNING"])


@bench_app.command("textbook-web", hidden=True)
def bench_textbook_web(port: Annotated[int, typer.Option(help="Port.")] = 8800) -> None:
    """The ORM-one-row-per-commit webhook receiver baseline."""
    import uvicorn

    from wanotify.devtools.bench.textbook import make_web

    uvicorn.run(make_web(), host="127.0.0.1", port=port, log_level="warning", access_log=False)
