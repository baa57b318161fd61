"""The long-running processes: migrate, web, worker, beat, flower, and the devtools' sandbox and demo.

Devtools (sandbox, demo) are imported only inside their verbs: they never load into a
worker or web process."""

from __future__ import annotations

import os
import shutil
from typing import Annotated, Any

import psycopg
import typer
import uvicorn
from celery.signals import worker_shutting_down

from wanotify.cli.common import console, err_console, fail, settings, setup_logging
from wanotify.db.migrate import current_revision, upgrade
from wanotify.metrics import serve_child_metrics
from wanotify.ops.flower_auth import FlowerAuthError, resolve
from wanotify.queues.names import NOTIFY, QUEUES
from wanotify.worker.intake_process import (
    INTAKE_BULK_NICE,
    INTAKE_NICE,
    IntakeProcess,
    child_command,
    child_metrics,
)
from wanotify.worker.main import celery_app
from wanotify.worker.memory import limit_arenas
from wanotify.worker.options import option_value, queues_of


def migrate(
    wait: Annotated[float, typer.Option(help="Seconds to wait for Postgres to accept connections.")] = 60.0,
) -> None:
    """Create the database if needed and apply the Alembic migrations up to head.

    Waits for the server, and takes a Postgres advisory lock: safe to run from every web
    process or container at once (one migrates, the others find the schema at head)."""
    s = settings()
    try:
        upgrade(s.database_url, wait_s=wait)
    except psycopg.OperationalError as exc:
        fail(f"Postgres did not accept connections within {wait:g}s: "
              f"{str(exc).strip().splitlines()[-1] if str(exc).strip() else exc!r}", code=1)
    console.print(f"database at revision {current_revision(s.database_url)}")


def web(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 8000,
    workers: Annotated[int, typer.Option(help="uvicorn worker processes.")] = 1,
) -> None:
    """Serve the HTTP API, Meta's webhook, health and metrics (uvicorn)."""
    s = settings()
    setup_logging()
    uvicorn.run(
        "wanotify.web.main:app",
        host=host,
        port=port,
        workers=workers,
        log_config=None,
        access_log=False,
        log_level=s.log_level.lower(),
    )


def sandbox(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 8900,
    webhook_url: Annotated[str, typer.Option(help="Where to POST signed status webhooks ('' disables).")] = "http://127.0.0.1:8000/webhooks/whatsapp",
    realtime: Annotated[bool, typer.Option(help="Ask for real-time scheduling (root or CAP_SYS_NICE), so that "
                                                "arrival times, and the 130429s they decide, are not skewed "
                                                "when the load under test saturates this machine.")] = False,
) -> None:
    """Serve the local Graph API double (and a Twilio-style SMS provider)."""
    from wanotify.devtools.sandbox import server  # noqa: PLC0415 (devtools: this verb only)

    s = settings()
    setup_logging()
    server.run_sandbox(host, port, webhook_url or None, s, realtime=realtime)


def worker(ctx: typer.Context) -> None:
    """Run a Celery worker; further options go to `celery worker` (default: every queue).

    With ``WANOTIFY_INTAKE_PROCESS=true`` (off by default) the intake queue (``notify``) is
    consumed by a child process of this worker (see ``wanotify.worker.intake_process``). A
    worker of the intake queue alone (``--queues notify``, that child's too) lowers its own
    priority (``INTAKE_NICE``), so that validating a producer's burst takes the CPU the
    send loops beside it leave.
    """
    args = list(ctx.args)

    s = settings()
    intake: IntakeProcess | None = None
    metrics_dir: str | None = None
    if queues_of(args) is None:
        if s.intake_process and not any(a in ("-D", "--detach") for a in args):
            child_env, metrics_dir = child_metrics(os.environ)
            intake = IntakeProcess(child_command(args, NOTIFY), env=child_env)
            if metrics_dir is not None:
                serve_child_metrics(metrics_dir)
            args += ["--queues", ",".join(q for q in QUEUES if q != NOTIFY)]
        else:
            args += ["--queues", ",".join(QUEUES)]
    if option_value(args, "-P", "--pool") is None:
        args += ["--pool", "threads"]
    if option_value(args, "-c", "--concurrency") is None:
        args += ["--concurrency", "16"]
    if not any(a in ("-E", "--task-events") for a in args):
        args += ["--task-events"]

    if queues_of(args) == [NOTIFY]:
        os.nice(INTAKE_NICE)
        err_console.print(f"intake-only worker: running at nice +{INTAKE_NICE}, its bulk batches at "
                          f"+{INTAKE_NICE + INTAKE_BULK_NICE} (sends on this host go first)")
    if any(a in ("-B", "--beat") for a in args):  # an embedded beat: its schedule too
        args = _with_beat_schedule(args, settings())
    limit_arenas(2)  # before Celery starts its threads (see wanotify.worker.memory)
    if intake is None:
        celery_app.worker_main(["worker", *args])
        return
    # The child starts with this worker and begins its warm shutdown with this one's.
    worker_shutting_down.connect(lambda **_: intake.terminate(), weak=False)
    intake.start()
    try:
        celery_app.worker_main(["worker", *args])
    finally:
        intake.stop()
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def beat(ctx: typer.Context) -> None:
    """Run Celery beat (scheduled campaigns, periodic sweeps); options go to `celery beat`."""
    args = _with_beat_schedule(list(ctx.args), settings())
    celery_app.start(["beat", *args])


def _with_beat_schedule(args: list[str], s: Any) -> list[str]:
    """Beat's schedule file in the state folder unless ``-s/--schedule`` is given (Celery's
    default, ``celerybeat-schedule`` in the current folder, litters a checkout and fails in
    a read-only ``/app``)."""
    if any(a in ("-s", "--schedule") or a.startswith(("--schedule=", "-s")) for a in args):
        return args
    return [*args, f"--schedule={s.ensure_state_path() / 'celerybeat-schedule'}"]


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
    s = settings()
    configured = s.flower_basic_auth.get_secret_value() if s.flower_basic_auth is not None else None
    try:
        auth = resolve(configured, address, no_auth)
    except FlowerAuthError as exc:
        fail(str(exc))
    err_console.print(auth.notice, markup=False, soft_wrap=True)
    os.environ.pop("FLOWER_BASIC_AUTH", None)
    if auth.basic_auth is not None:
        os.environ["FLOWER_BASIC_AUTH"] = auth.basic_auth  # not in argv: the process list shows argv
    args = [f"--port={port}", f"--address={address}", "--persistent=True",
            f"--db={s.flower_db or s.ensure_state_path() / 'flower.db'}",
            "--purge_offline_workers=3600"]
    celery_app.start(["flower", *args, *ctx.args])


def demo(
    otp: Annotated[int, typer.Option(help="OTP jobs.")] = 200,
    orders: Annotated[int, typer.Option(help="Order confirmations.")] = 500,
    reminders: Annotated[int, typer.Option(help="Appointment reminders.")] = 300,
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds.")] = 150.0,
) -> None:
    """Run the whole pipeline locally against the sandbox and print what happened."""
    from wanotify.devtools.demo import run_demo  # noqa: PLC0415 (devtools: this verb only)

    code = run_demo(otp=otp, orders=orders, reminders=reminders, timeout=timeout)
    raise typer.Exit(code)
