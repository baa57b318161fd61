"""One run of every phase of ``wanotify bench throughput``, and the command itself."""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

import orjson
import redis as redis_lib
from rich.console import Console
from sqlalchemy import text

from wanotify.db import session_scope
from wanotify.devtools.bench.common import BenchEnv, bench_env, start_sandbox
from wanotify.devtools.bench.throughput.enqueue import (
    _api_headers,
    run_batch_enqueue,
    run_bulk_enqueue,
    run_http_enqueue,
)
from wanotify.devtools.bench.throughput.figures import (
    BASELINES,
    Drain,
    Enqueue,
    RunFigures,
    Sizes,
    job_bodies,
    make_senders,
)
from wanotify.devtools.bench.throughput.ingest import run_ingest_pair, sent_targets, status_posts
from wanotify.devtools.bench.throughput.load import paced
from wanotify.devtools.bench.throughput.memory import run_rss
from wanotify.devtools.bench.throughput.report import print_report, summarise
from wanotify.devtools.bench.throughput.send import run_celery_baseline, run_wanotify_send
from wanotify.devtools.procs import free_port, wait_http, wait_worker


def _scale(n: int, sizes: Sizes) -> int:
    return max(200, int(n * sizes.window_s / 6.0))


def one_run(i: int, sizes: Sizes, per_post: int, latencies: tuple[float, ...],
            log: Any) -> RunFigures:
    figs = RunFigures()
    senders = make_senders()
    with bench_env("throughput", senders=senders) as env:
        for lat in latencies:
            sb, sb_url = start_sandbox(env, latency_ms=lat)
            tag = f"{lat:g} ms"
            if lat == latencies[0]:
                figs.drains["noop"] = run_celery_baseline(
                    env, sb_url, senders, "noop", "prefork", 2, sizes.noop_prefill, sizes.window_s)
                log(f"run {i}: celery no-op {figs.drains['noop'].rate or 0:.0f}/s")
            for task, pool, conc, prefill in BASELINES:
                key = f"{task}/{pool}/{tag}"
                figs.drains[key] = run_celery_baseline(
                    env, sb_url, senders, task, pool, conc, _scale(prefill.get(lat, 1000), sizes),
                    sizes.window_s)
                log(f"run {i}: {key} {figs.drains[key].rate or 0:.0f}/s")
            figs.drains[f"wanotify/{tag}"] = run_wanotify_send(env, sb_url, senders, sizes.send_jobs)
            log(f"run {i}: wanotify {tag} {figs.drains[f'wanotify/{tag}'].rate or 0:.0f}/s")
            if lat != latencies[-1]:
                env.stop([sb])
        # Enqueue: the web app alone (its jobs are set aside afterwards).
        port = free_port()
        web = env.start("web", ["web", "--port", str(port)])
        web_url = f"http://127.0.0.1:{port}"
        wait_http(f"{web_url}/healthz", web)
        base = 10_000_000 * (i + 1)
        run_http_enqueue(env, web_url, senders, min(1000, sizes.http_jobs), offset=base + 9_000_000)
        p50, p99, rate = run_http_enqueue(env, web_url, senders, sizes.http_jobs, offset=base)
        figs.enqueue = Enqueue(p50, p99, rate)
        # Latency at half the measured capacity, open loop (requests arrive on a clock).
        probe_rate = rate / 2
        probe = [(orjson.dumps(b), _api_headers(env)) for b in
                 job_bodies(int(probe_rate * sizes.window_s * 0.7), senders, offset=base + 3_000_000)]
        figs.enqueue.paced_rate = probe_rate
        figs.enqueue.paced_p50_ms, figs.enqueue.paced_p99_ms = paced(f"{web_url}/v1/notifications", probe,
                                                                     probe_rate)
        figs.enqueue.batch_rate = run_batch_enqueue(env, web_url, senders, sizes.batch_jobs,
                                                    offset=base + 1_000_000)
        figs.enqueue.bulk_rate = run_bulk_enqueue(senders, sizes.bulk_jobs, offset=base + 2_000_000)
        log(f"run {i}: enqueue http {rate:.0f}/s p99 {p99 or 0:.1f} ms, batch "
            f"{figs.enqueue.batch_rate:.0f}/s, bulk {figs.enqueue.bulk_rate:.0f}/s")
        _set_aside_queued(env)
        # Webhook ingest: the same signed bodies to wanotify (web + worker) and the baseline.
        bport = free_port()
        tb = env.start("textbook-web", ["bench", "textbook-web", "--port", str(bport)])
        node = f"ingest-{uuid.uuid4().hex[:4]}"
        worker = env.start("worker-ingest", ["worker", "-n", f"{node}@%h"],
                           {"WANOTIFY_WORKER_METRICS_PORT": "0"})
        wait_http(f"http://127.0.0.1:{bport}/docs", tb)
        wait_worker(env.redis_url, worker, timeout=60, node=node)
        targets = sent_targets(sizes.ingest_messages + sizes.ingest_single_messages + 300)
        pnid = senders[0]["phone_number_id"]
        # Warm both receivers (connections, caches, the worker's threads) on other messages.
        warm, targets = targets[-300:], targets[:-300]
        run_ingest_pair(env, web_url, f"http://127.0.0.1:{bport}", warm, per_post, pnid)
        ours, base_i = run_ingest_pair(env, web_url, f"http://127.0.0.1:{bport}",
                                       targets[: sizes.ingest_messages], per_post, pnid)
        figs.ingest["ours"], figs.ingest["base"] = ours, base_i
        ours1, base1 = run_ingest_pair(env, web_url, f"http://127.0.0.1:{bport}",
                                       targets[sizes.ingest_messages :], 1, pnid)
        figs.ingest["ours1"], figs.ingest["base1"] = ours1, base1
        # Webhook answer latency at half the measured capacity, open loop, while ingesting.
        if ours.rate:
            probe_rate = ours.rate / per_post / 2
            n_posts = int(probe_rate * sizes.window_s * 0.7)
            later = targets[: n_posts * per_post]
            bodies = status_posts(later, per_post, env.env["WANOTIFY_APP_SECRET"], pnid, "read",
                                  ts_offset=60)
            ours.paced_rate = probe_rate
            ours.paced_p50_ms, ours.paced_p99_ms = paced(
                f"{web_url}/webhooks/whatsapp",
                [(b, {"Content-Type": "application/json", "X-Hub-Signature-256": sig}) for b, sig in bodies],
                probe_rate, ok=(200,))
        log(f"run {i}: ingest {ours.rate or 0:.0f} vs {base_i.rate or 0:.0f} events/s"
            f" ({per_post}/POST); {ours1.rate or 0:.0f} vs {base1.rate or 0:.0f} (1/POST)")
        env.stop([web, tb, worker])
        if i == 1 and sizes.rss_sends:
            figs.drains["rss"] = Drain("rss", sizes.rss_sends)
            samples = run_rss(env, sb_url, senders, sizes.rss_sends, every=max(1000, sizes.rss_sends // 10))
            figs.drains["rss"].notes = [f"{n}:{mb:.1f}" for n, mb in samples]
            log("rss: " + ", ".join(f"{n:,} sends {mb:.0f} MB" for n, mb in samples))
    return figs


def _set_aside_queued(env: BenchEnv) -> None:
    """The enqueue phase's jobs are not to be sent: expire them and empty Redis."""
    with session_scope() as s:
        s.execute(text("UPDATE notifications SET status = 'expired', finished_at = now()"
                       " WHERE status IN ('queued', 'sending')"))
    redis_lib.Redis.from_url(env.redis_url).flushdb()


def run(runs: int = 3, quick: bool = False, per_post: int = 10,
        latencies: tuple[float, ...] = (0.0, 50.0), json_path: str | None = None) -> dict[str, Any]:
    console = Console(width=max(140, Console().width))
    sizes = Sizes.quick() if quick else Sizes()
    console.print(f"[bold]bench throughput[/bold]: {runs} run(s), {os.cpu_count()} cores, sandbox latency "
                  f"{', '.join(f'{x:g} ms' for x in latencies)}, {per_post} statuses per webhook POST")
    all_runs = [one_run(i + 1, sizes, per_post, latencies, console.print) for i in range(runs)]
    summary = summarise(all_runs, latencies, per_post)
    summary["cores"] = os.cpu_count()
    summary["runs"] = runs
    print_report(summary, console)
    if json_path:
        with open(json_path, "w") as f:
            json.dump(summary, f, indent=2)
    return summary
