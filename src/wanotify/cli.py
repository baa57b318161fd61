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
    err_console.print(f"[red]error:[/red] {message}")
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
    from wanotify.logs import setup_logging

    s = _settings()
    setup_logging(s.log_level, s.log_json)


@app.command()
def migrate() -> None:
    """Create the database if needed and apply the Alembic migrations up to head."""
    from wanotify.db.migrate import current_revision, upgrade

    s = _settings()
    upgrade(s.database_url)
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
    from wanotify.sandbox.server import run_sandbox

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
    from wanotify.memory import limit_arenas

    limit_arenas(2)  # before Celery starts its threads (see wanotify.memory)
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

    _settings()
    celery_app.start(["beat", *ctx.args])


@app.command(context_settings=PASSTHROUGH)
def flower(
    ctx: typer.Context,
    port: Annotated[int, typer.Option(help="Port for Flower.")] = 5555,
    address: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
) -> None:
    """Run Flower against wanotify's Celery app; options go to `celery flower`.

    Basic auth comes from WANOTIFY_FLOWER_BASIC_AUTH ("user:password"); Flower refuses to
    listen beyond loopback without it. Its state persists in WANOTIFY_FLOWER_DB.
    """
    import ipaddress
    import tempfile

    from wanotify.worker.app import celery_app

    s = _settings()
    args = [f"--port={port}", f"--address={address}", "--persistent=True",
            f"--db={s.flower_db or tempfile.gettempdir() + '/wanotify-flower.db'}",
            "--purge_offline_workers=3600"]
    if s.flower_basic_auth is not None:
        args.append(f"--basic-auth={s.flower_basic_auth.get_secret_value()}")
    else:
        try:
            loopback = address == "localhost" or ipaddress.ip_address(address).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            _fail(f"refusing to serve Flower on {address} without authentication: "
                  "set WANOTIFY_FLOWER_BASIC_AUTH=user:password")
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
    from wanotify.errors import IdempotencyConflict, InvalidJob
    from wanotify.intake import notify

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
        from wanotify.views import notification_view

        try:
            jid = uuid.UUID(notification_id)
        except ValueError:
            _fail(f"{notification_id!r} is not a notification id")
        view = notification_view(jid)
        if view is None:
            _fail(f"no notification {notification_id}", 1)
        console.print_json(json.dumps(view))
        return
    from wanotify.status_view import overview

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
                  f"{paused.get('error_code')} {paused.get('error')}" if paused else "no")
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
    from wanotify.demo import run_demo

    code = run_demo(otp=otp, orders=orders, reminders=reminders, timeout=timeout)
    raise typer.Exit(code)


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
    from wanotify.dlq import list_dead

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
    from wanotify.dlq import show

    _settings()
    got = show(_job_id(notification_id))
    if got is None:
        _fail(f"no dead letter {notification_id}", 1)
    console.print_json(json.dumps(got, default=str))


@dlq_app.command("replay")
def dlq_replay(notification_id: Annotated[str, typer.Argument(help="The job's id.")]) -> None:
    """Put a dead-lettered job back in its queue (once)."""
    from wanotify.dlq import ReplayRefused, replay

    _settings()
    try:
        out = replay(_job_id(notification_id))
    except ReplayRefused as exc:
        _fail(str(exc), 1)
    console.print(f"{out['id']} {out['status']}")


senders_app = typer.Typer(help="Sender phone numbers: paused state.", no_args_is_help=True)
app.add_typer(senders_app, name="senders")


@senders_app.command("list")
def senders_list() -> None:
    """Configured senders, their limits and whether they are paused."""
    from wanotify.intake import get_redis
    from wanotify.throttle import Lanes

    s = _settings()
    lanes = Lanes(get_redis())
    t = Table(title="senders")
    for col in ("name", "phone_number_id", "mps", "pair", "daily tier", "paused"):
        t.add_column(col)
    for snd in s.sender_list:
        p = lanes.paused(snd.name)
        t.add_row(snd.name, snd.phone_number_id, str(snd.mps), f"{snd.pair_burst}/{snd.pair_interval_s:g}s",
                  str(snd.daily_unique_limit or "unlimited"),
                  f"yes: {p.get('error_code')} {p.get('error')}" if p else "no")
    console.print(t)


@senders_app.command("resume")
def senders_resume(name: Annotated[str, typer.Argument(help="Sender name.")]) -> None:
    """Resume a sender paused by an account-level error; its waiting jobs go out again."""
    from wanotify.intake import get_redis, kick
    from wanotify.throttle import Lanes

    s = _settings()
    if name not in s.sender_map:
        _fail(f"unknown sender {name!r} (known: {', '.join(s.sender_map)})")
    lanes = Lanes(get_redis())
    was = lanes.resume(name)
    kick(name, "otp")
    console.print(f"{name} resumed" if was else f"{name} was not paused")


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
    from wanotify.bench.pacing import run

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
    from wanotify.bench.chaos import run as run_chaos

    if jobs < 1:
        _fail("jobs must be at least 1")
    run_chaos(jobs=jobs, pg_down_s=pg_down, timeout=timeout)


@bench_app.command("throughput")
def bench_throughput(
    runs: Annotated[int, typer.Option(help="Repeat and report medians.")] = 3,
    quick: Annotated[bool, typer.Option(help="Small sizes (a smoke run; figures are rough).")] = False,
    statuses_per_post: Annotated[int, typer.Option(help="Statuses per webhook POST (Meta batches).")] = 10,
    latency: Annotated[list[float] | None, typer.Option(help="Sandbox latency in ms (repeatable).")] = None,
    json_out: Annotated[str | None, typer.Option("--json", help="Also write the figures here.")] = None,
) -> None:
    """Send path, enqueue and webhook ingest against the textbook one-task-per-message baselines."""
    from wanotify.bench.throughput import run as run_throughput

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
    from wanotify.bench.baseline import app as baseline_app

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
    from wanotify.bench.textbook import QUEUE, celery

    celery.worker_main(["worker", "-Q", QUEUE, "--pool", pool, "--concurrency", str(concurrency),
                        "-n", name if "@" in name else f"{name}@%h", "--loglevel", "WARNING"])


@bench_app.command("textbook-web", hidden=True)
def bench_textbook_web(port: Annotated[int, typer.Option(help="Port.")] = 8800) -> None:
    """The ORM-one-row-per-commit webhook receiver baseline."""
    import uvicorn

    from wanotify.bench.textbook import make_web

    uvicorn.run(make_web(), host="127.0.0.1", port=port, log_level="warning", access_log=False)
