"""``wanotify bench listing``: one small run end to end (the figures of a small table are not
judged here: no timed assertions), and its cursor-chain and plan columns filled."""

from __future__ import annotations

import os
import subprocess
import sys


def test_bench_listing_small_run_end_to_end(services: dict[str, str]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANOTIFY_")}
    env["WANOTIFY_DATABASE_URL"] = services["database_url"]
    env["WANOTIFY_REDIS_URL"] = services["redis_url"]
    env["COLUMNS"] = "200"
    r = subprocess.run([sys.executable, "-m", "wanotify", "bench", "listing", "--rows", "20000", "--repeat", "2"],
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = r.stdout
    assert "filled 20,000 jobs" in out and "intake (notify_many" in out and "index build" in out
    assert "list_to" in out  # the recipient filter walked its index
    assert "Seq Scan" in out  # and, without it, the whole table
    for shape in ("first page", "sender=rare", "to=<one recipient>", "200 pages down"):
        assert shape in out, shape
    bad = subprocess.run([sys.executable, "-m", "wanotify", "bench", "listing", "--rows", "10"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "rows must be at least 1000" in (bad.stdout + bad.stderr)
