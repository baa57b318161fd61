"""Flower as ops see it: headless Chromium (Debian's chromium) on Flower behind basic auth."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from conftest import Stack, statuses, wait_for
from wanotify.devtools.procs import Proc, free_port, wait_http

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1400,1000", "--virtual-time-budget=6000"]


def _chromium(args: list[str], profile: Path) -> str:
    assert CHROMIUM is not None
    out = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                         text=True, timeout=90)
    return out.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_flower_in_a_browser_shows_the_worker_queues_and_tasks(stack: Stack, db: Any) -> None:
    with stack.api() as api:
        job = api.post("/v1/notifications", json={
            "to": "+919811187654", "template": "otp_code", "kind": "otp", "params": {"body": ["483920"]}}).json()["id"]
    wait_for(lambda: statuses(db, [job])[job] in ("delivered", "read"), what="delivered")
    port = free_port()
    env = {**stack.env, "WANOTIFY_FLOWER_BASIC_AUTH": "ops:s3cret",
           "WANOTIFY_FLOWER_DB": str(stack.logdir / f"flower-{uuid.uuid4().hex[:6]}.db")}
    flower = Proc("flower-browser", ["flower", "--port", str(port)], env, stack.logdir / "flower-browser.log")
    try:
        wait_http(f"http://127.0.0.1:{port}/healthcheck", flower, timeout=40)
        base = f"http://ops:s3cret@127.0.0.1:{port}"
        profile = stack.logdir / "chromium-profile"

        node = stack.procs["worker"].args[-1].split("@")[0]

        def page_with(path: str, needle: str) -> str | None:
            dom = _chromium(["--dump-dom", f"{base}{path}"], profile)
            return dom if needle in dom else None

        dom = wait_for(lambda: page_with("/", node), timeout=90, interval=2, what="Flower lists the worker")
        assert "Online" in dom
        broker = _chromium(["--dump-dom", f"{base}/broker"], profile)
        for q in ("notify", "otp", "transactional", "bulk", "fallback", "ingest"):
            assert f">{q}<" in broker or f"{q}</a>" in broker or q in broker, q
        # Flower learns tasks from the workers' events: send traffic now that it listens.
        with stack.api() as api:
            api.post("/v1/notifications", json={"to": "+919811187655", "template": "otp_code", "kind": "otp",
                                                 "params": {"body": ["112233"]}})
        tasks = wait_for(lambda: page_with("/tasks", "wanotify.dispatch"), timeout=90, interval=2,
                         what="wanotify tasks listed")
        assert "wanotify.ingest" in tasks or "wanotify.dispatch" in tasks
        shot = stack.logdir / "flower-workers.png"
        _chromium([f"--screenshot={shot}", f"{base}/"], profile)
        assert shot.exists() and shot.stat().st_size > 10_000
        print(f"Flower screenshot: {shot}")
    finally:
        flower.stop()
