"""``wanotify bench throughput``: its arithmetic, and one small run end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from wanotify.devtools.bench.throughput.figures import (
    Drain,
    Enqueue,
    Ingest,
    RunFigures,
    steady_rate,
)
from wanotify.devtools.bench.throughput.ingest import status_posts
from wanotify.devtools.bench.throughput.report import summarise


def test_steady_rate_ignores_ramp_and_tail() -> None:
    # 1,000 arrivals at 100/s, plus a slow start and a straggler at the end.
    times = [0.0, 1.0, 2.0] + [3.0 + i / 100 for i in range(1000)] + [60.0]
    rate = steady_rate(times)
    assert rate is not None and 95 < rate < 105
    assert steady_rate([1.0, 2.0]) is None


def test_status_posts_are_signed_meta_bodies() -> None:
    from wanotify.inbound.parse import parse_webhook
    from wanotify.inbound.signature import verify_signature

    posts = status_posts([(f"wamid.{i}", f"9198{i:08d}") for i in range(25)], 10, "s3cret", "123", "read")
    assert len(posts) == 3
    for body, sig in posts:
        assert verify_signature("s3cret", body, sig)
        parsed = parse_webhook(body)
        assert all(st.status == "read" for st in parsed.statuses) and not parsed.problems
    assert sum(len(parse_webhook(b).statuses) for b, _ in posts) == 25


def _figs(ours: float, pooled: float, noop: float) -> RunFigures:
    f = RunFigures()
    f.drains["noop"] = Drain("noop", 1, noop, 1, 2.0)
    for task, pool in (("naive_send", "prefork"), ("pooled_send", "prefork"), ("pooled_send", "threads")):
        rate = pooled if task == "pooled_send" and pool == "prefork" else pooled / 2
        f.drains[f"{task}/{pool}/0 ms"] = Drain(task, 1, rate, 1, 3.0)
    f.drains["wanotify/0 ms"] = Drain("wanotify", 1, ours, 1, 0.5, 0.2, 180.0)
    f.enqueue = Enqueue(http_p50_ms=5.0, http_p99_ms=15.0, http_rate=2000.0, batch_rate=6000.0, bulk_rate=5500.0)
    f.ingest = {k: Ingest(k, 10, r, 1.0, 2.0) for k, r in
                (("ours", 6000.0), ("base", 600.0), ("ours1", 900.0), ("base1", 400.0))}
    return f


def test_summary_takes_medians_and_ratios_against_the_best_pooled_baseline() -> None:
    runs = [_figs(1800, 300, 550), _figs(2100, 310, 560), _figs(2000, 290, 540)]
    s = summarise(runs, (0.0,), 10)
    row = s["send"]["0 ms"]
    assert row["wanotify"]["rate"] == 2000 and row["best_pooled"]["rate"] == 300
    assert row["x_pooled"] == pytest.approx(2000 / 300)
    assert row["x_noop"] == pytest.approx(2000 / 550)
    assert row["cpu_share_of_pooled"] == pytest.approx(0.5 / 3.0)
    assert s["ingest"]["x_base"] == pytest.approx(10.0)
    assert s["enqueue"]["bulk_rate"] == 5500.0


@pytest.mark.slow
def test_bench_throughput_quick_run_end_to_end(tmp_path: Path, services: dict[str, str]) -> None:
    """The command runs every phase through real processes and writes its figures (the
    figures of a quick run are not judged here: no timed assertions)."""
    out = tmp_path / "tp.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANOTIFY_")}
    env["WANOTIFY_DATABASE_URL"] = services["database_url"]
    env["WANOTIFY_REDIS_URL"] = services["redis_url"]
    r = subprocess.run([sys.executable, "-m", "wanotify", "bench", "throughput", "--runs", "1", "--quick",
                        "--latency", "0", "--json", str(out)], env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    s = json.loads(out.read_text())
    assert s["cores"] == os.cpu_count()
    row = s["send"]["0 ms"]
    assert row["wanotify"]["rate"] > 0 and row["best_pooled"]["rate"] > 0 and s["noop"] > 0
    assert s["enqueue"]["http_rate"] > 0 and s["enqueue"]["bulk_rate"] > 0
    assert s["ingest"]["ours"]["rate"] > 0 and s["ingest"]["base"]["rate"] > 0
    assert s["rss"] and all(mb > 0 for _, mb in s["rss"])
    assert "wanotify bench throughput" in r.stdout
