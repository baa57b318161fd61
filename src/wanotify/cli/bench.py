"""``wanotify bench …``: benchmarks, measured through the public surface.

The benchmarks are devtools: each is imported only inside its verb."""

from __future__ import annotations

from typing import Annotated

import typer
import uvicorn

from wanotify.cli.common import fail

bench_app = typer.Typer(help="Benchmarks, measured through the public surface.", no_args_is_help=True)


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
    numbers: Annotated[str | None, typer.Option(
        help="Instead of --senders/--mps/--fast-mps: one number per limit, e.g. 80,80,20.")] = None,
    intake: Annotated[str, typer.Option(
        help="stored: the backlog is stored before the workers start; burst: it arrives while they"
             " run, as wanotify.notify tasks (and the OTPs too), validated by the workers that send.")] = "stored",
    intake_workers: Annotated[int, typer.Option(
        help="Also run this many `wanotify worker --queues notify` (at lower priority); the --workers"
             " then leave the notify queue to them.")] = 0,
    compare_intake_process: Annotated[bool, typer.Option(
        help="Instead of Celery's baseline, each run again with each worker's intake in a child"
             " process (WANOTIFY_INTAKE_PROCESS=true), alternating which goes first.")] = False,
) -> None:
    """Per-number pacing across workers vs Celery's rate_limit: violations, utilisation, OTP latency."""
    from wanotify.devtools.bench.pacing import run  # noqa: PLC0415 (devtools: this verb only)

    if runs < 1 or senders < 0 or mps < 1 or workers < 1 or (senders == 0 and fast_mps == 0 and not numbers):
        fail("runs, mps and workers must be at least 1, and some senders are needed")
    if intake_workers < 0:
        fail("--intake-workers: at least 0")
    if intake not in ("stored", "burst"):
        fail(f"--intake: {intake!r} is neither 'stored' nor 'burst'")
    mps_list: list[int] | None = None
    if numbers is not None:
        try:
            mps_list = [int(x) for x in numbers.split(",")]
        except ValueError:
            fail(f"--numbers: {numbers!r} is not a comma-separated list of whole numbers")
        if not mps_list or min(mps_list) < 1:
            fail("--numbers: every limit must be at least 1")
    run(runs=runs, slow_senders=senders, slow_mps=mps, fast_mps=0 if numbers else fast_mps,
        backlog_s=backlog_seconds, workers=workers, otp_rate=otp_rate, baseline=baseline,
        baseline_timeout=baseline_timeout, mps_list=mps_list, intake=intake, intake_workers=intake_workers,
        compare_intake_process=compare_intake_process)


@bench_app.command("hosts")
def bench_hosts(
    runs: Annotated[int, typer.Option(help="Repeat and report medians.")] = 1,
    hosts: Annotated[int, typer.Option(help="Hosts (network namespaces), each with its own workers.")] = 3,
    senders: Annotated[int, typer.Option(help="Numbers shared by every host.")] = 2,
    mps: Annotated[int, typer.Option(help="Their messages/s limit.")] = 80,
    backlog_seconds: Annotated[float, typer.Option(help="Backlog per number, in seconds of its rate.")] = 30.0,
    workers_per_host: Annotated[int, typer.Option(help="Worker processes on each host.")] = 1,
    otp_rate: Annotated[float, typer.Option(help="OTPs per second during the drain.")] = 5.0,
    cut_at: Annotated[float, typer.Option(help="Cut the busiest host's network this many seconds in.")] = 10.0,
    cut_seconds: Annotated[float, typer.Option(help="For this long (0: no cut, steady pacing only).")] = 10.0,
    json_out: Annotated[str | None, typer.Option("--json", help="Also write the figures here.")] = None,
) -> None:
    """Workers on several hosts (network namespaces; root only) share numbers; one host is cut off mid-run
    (unless --cut-seconds 0)."""
    from wanotify.devtools.bench import hosts as bench  # noqa: PLC0415 (devtools: this verb only)

    if runs < 1 or hosts < 2 or senders < 1 or mps < 1 or workers_per_host < 1 or otp_rate <= 0:
        fail("runs, senders, mps and workers-per-host must be at least 1, hosts at least 2, otp-rate above 0")
    if cut_seconds < 0 or (cut_seconds > 0 and (backlog_seconds <= cut_at + cut_seconds / 2 or cut_at < 0)):
        fail("the cut must fall inside the backlog: backlog-seconds > cut-at + cut-seconds / 2"
             " (cut-seconds 0: no cut)")
    try:
        bench.require_root()
    except (PermissionError, RuntimeError) as exc:
        fail(str(exc))
    bench.run(runs=runs, hosts=hosts, senders=senders, mps=mps, backlog_s=backlog_seconds,
              workers_per_host=workers_per_host, otp_rate=otp_rate, cut_at_s=cut_at, cut_s=cut_seconds,
              json_path=json_out)


@bench_app.command("chaos")
def bench_chaos(
    jobs: Annotated[int, typer.Option(help="Mixed jobs to send.")] = 2000,
    pg_down: Annotated[float, typer.Option(help="Seconds Postgres refuses connections.")] = 20.0,
    timeout: Annotated[float, typer.Option(help="Give up waiting for outcomes after this.")] = 300.0,
) -> None:
    """Break things while jobs flow; count what was lost or sent twice."""
    from wanotify.devtools.bench import chaos  # noqa: PLC0415 (devtools: this verb only)

    run_chaos = chaos.run

    if jobs < 1:
        fail("jobs must be at least 1")
    run_chaos(jobs=jobs, pg_down_s=pg_down, timeout=timeout)


@bench_app.command("campaign")
def bench_campaign(
    rows: Annotated[int, typer.Option(help="Audience rows to generate (1% bad, 1% opted out).")] = 100_000,
    mps: Annotated[int, typer.Option(help="The sending number's messages/s limit.")] = 1000,
    otp_rate: Annotated[float, typer.Option(help="OTPs per second during the drain.")] = 5.0,
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds.")] = 900.0,
) -> None:
    """Import, schedule and drain a large campaign while OTPs keep arriving."""
    from wanotify.devtools.bench import campaign  # noqa: PLC0415 (devtools: this verb only)

    run_campaign = campaign.run

    if rows < 100 or mps < 1 or otp_rate <= 0:
        fail("rows must be at least 100, mps at least 1, otp-rate above 0")
    run_campaign(rows=rows, mps=mps, otp_rate=otp_rate, timeout=timeout)


@bench_app.command("listing")
def bench_listing(
    rows: Annotated[int, typer.Option(help="Jobs to fill the table with (spread over 30 days).")] = 10_000_000,
    repeat: Annotated[int, typer.Option(help="How many times each query shape is asked.")] = 20,
) -> None:
    """GET /v1/notifications on millions of jobs: each filter's page time, its plan, and the
    same without the listing's indexes."""
    from wanotify.devtools.bench import listing  # noqa: PLC0415 (devtools: this verb only)

    if rows < 1000 or repeat < 1:
        fail("rows must be at least 1000, repeat at least 1")
    listing.run(rows=rows, repeat=repeat)


@bench_app.command("throughput")
def bench_throughput(
    runs: Annotated[int, typer.Option(help="Repeat and report medians.")] = 3,
    quick: Annotated[bool, typer.Option(help="Small sizes (a smoke run; figures are rough).")] = False,
    statuses_per_post: Annotated[int, typer.Option(help="Statuses per webhook POST (Meta batches).")] = 10,
    latency: Annotated[list[float] | None, typer.Option(help="Sandbox latency in ms (repeatable).")] = None,
    json_out: Annotated[str | None, typer.Option("--json", help="Also write the figures here.")] = None,
) -> None:
    """Send path, enqueue and webhook ingest against the textbook one-task-per-message baselines."""
    from wanotify.devtools.bench import throughput  # noqa: PLC0415 (devtools: this verb only)

    run_throughput = throughput.run

    lat = tuple(latency) if latency else (0.0, 50.0)
    if runs < 1 or statuses_per_post < 1 or any(x < 0 for x in lat):
        fail("runs and statuses-per-post must be at least 1, latencies at least 0")
    run_throughput(runs=runs, quick=quick, per_post=statuses_per_post, latencies=lat, json_path=json_out)


@bench_app.command("baseline-worker", hidden=True)
def bench_baseline_worker(
    name: Annotated[str, typer.Option(help="Celery node name.")] = "baseline@%h",
    concurrency: Annotated[int, typer.Option(help="Threads.")] = 8,
    queue: Annotated[str, typer.Option(help="Queue to consume at start.")] = "baseline",
) -> None:
    """The textbook baseline's worker (one task per message, Celery rate_limit)."""
    from wanotify.devtools.bench import baseline  # noqa: PLC0415 (devtools: this verb only)

    baseline_app = baseline.app

    baseline_app.worker_main(["worker", "-Q", queue, "--pool", "threads", "--concurrency",
                              str(concurrency), "-n", name if "@" in name else f"{name}@%h",
                              "--loglevel", "WARNING"])


@bench_app.command("textbook-worker", hidden=True)
def bench_textbook_worker(
    name: Annotated[str, typer.Option(help="Celery node name.")] = "textbook",
    pool: Annotated[str, typer.Option(help="Celery pool.")] = "prefork",
    concurrency: Annotated[int, typer.Option(help="Pool size.")] = 2,
) -> None:
    """The one-task-per-message baselines' worker."""
    from wanotify.devtools.bench.textbook import (  # noqa: PLC0415 (devtools: this verb only)
        QUEUE,
        celery,
    )

    celery.worker_main(["worker", "-Q", QUEUE, "--pool", pool, "--concurrency", str(concurrency),
                        "-n", name if "@" in name else f"{name}@%h", "--loglevel", "WARNING"])


@bench_app.command("textbook-web", hidden=True)
def bench_textbook_web(port: Annotated[int, typer.Option(help="Port.")] = 8800) -> None:
    """The ORM-one-row-per-commit webhook receiver baseline."""
    from wanotify.devtools.bench.textbook import make_web  # noqa: PLC0415 (devtools: this verb only)

    uvicorn.run(make_web(), host="127.0.0.1", port=port, log_level="warning", access_log=False)
