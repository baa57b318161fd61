"""A worker killed in the middle of a batch: every job still reaches an outcome."""

from __future__ import annotations

import signal
import time
from typing import Any

import pytest

from conftest import Stack, statuses, wait_for
from wanotify.core.status import OUTCOMES

pytestmark = pytest.mark.slow


def test_sigkill_worker_mid_batch_then_restart(stack: Stack, db: Any) -> None:
    jobs = [
        {"to": f"+9196{i:04d}{(i * 53) % 9000 + 1000:04d}", "template": "appointment_reminder",
         "params": {"body": [f"Patient {i}", "3 Dec 2026", "10:30"]}, "kind": "transactional"}
        for i in range(400)
    ]
    with stack.sandbox() as sb:
        before_seq = sb.get("/_sandbox/messages", params={"limit": 1}).json()["last_seq"]
    with stack.api() as api:
        ids: list[str] = []
        for k in range(0, len(jobs), 200):
            r = api.post("/v1/notifications:batch", json=jobs[k:k + 200])
            assert r.status_code == 202
            ids += [x["id"] for x in r.json()["results"]]
    # Let the worker get going (80 mps: the batch takes ~5 s), then kill it without warning.
    wait_for(lambda: sum(1 for s in statuses(db, ids).values() if s != "queued") >= 60, what="sending started")
    stack.procs["worker"].signal(signal.SIGKILL)
    stack.procs["worker"].popen.wait(10)
    mid = statuses(db, ids)
    open_jobs = sum(1 for s in mid.values() if s not in OUTCOMES)
    assert open_jobs > 0, "the kill came too late to test anything"
    time.sleep(1)
    stack.start_worker("worker")

    def all_done() -> bool:
        return all(s in OUTCOMES for s in statuses(db, ids).values())

    wait_for(all_done, timeout=120, interval=0.5, what="every job has an outcome after the restart")
    final = statuses(db, ids)
    assert set(final.values()) <= {"delivered", "read"}
    # Sends are at-least-once across a crash: only messages in flight at the kill may repeat.
    with stack.sandbox() as sb:
        log = sb.get("/_sandbox/messages", params={"after": before_seq, "limit": 100000}).json()["data"]
    accepted: dict[str, int] = {}
    for m in log:
        if m["code"] == 0 and m["biz_opaque_callback_data"] in final:
            accepted[m["biz_opaque_callback_data"]] = accepted.get(m["biz_opaque_callback_data"], 0) + 1
    assert set(accepted) == set(ids)
    dupes = sum(n - 1 for n in accepted.values())
    print(f"open at kill: {open_jobs}, duplicate sends: {dupes}")
    assert dupes <= 10
