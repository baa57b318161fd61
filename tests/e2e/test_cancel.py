"""``POST /v1/notifications/{id}:cancel`` over real HTTP with real workers: a queued job is
cancelled and never sent; one the gate has claimed or a provider took is not cancellable
(409 with its status); cancels racing a drain each end one way or the other, never both."""

from __future__ import annotations

import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import redis

from conftest import Stack, wait_for
from wanotify.pacing.lanes import Lanes

ORDER = {"template": "order_confirmation_v2", "language": "en", "sender": "backup",
         "params": {"body": ["Rahul Sharma", "ZEC-2026-0042", "₹45,000"]}, "kind": "transactional"}


def _to(run: int, i: int) -> str:
    return f"+9196{run % 10000:04d}{(i % 900) + 100:03d}5"


def _job(api: httpx.Client, db: Any, job_id: str) -> dict[str, Any]:
    r = api.get(f"/v1/notifications/{job_id}")
    assert r.status_code == 200, r.text
    return dict(r.json())


def _resume(stack: Stack) -> None:
    res = subprocess.run([sys.executable, "-m", "wanotify", "senders", "resume", "backup"],
                         capture_output=True, text=True, env=stack.env, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr


def _sent_to(stack: Stack, before: int) -> set[str]:
    with stack.sandbox() as sb:
        log = sb.get("/_sandbox/messages", params={"after": before, "limit": 100000}).json()["data"]
    return {m["to"].lstrip("+") for m in log if m["code"] == 0}


def _hold_backup(stack: Stack) -> tuple[int, Lanes, int]:
    """A run number, the lanes, the sandbox's last message; the backup sender paused (its
    jobs stay queued until it is resumed)."""
    lanes = Lanes(redis.Redis.from_url(stack.env["WANOTIFY_REDIS_URL"]))
    with stack.sandbox() as sb:
        before = int(sb.get("/_sandbox/messages", params={"limit": 1}).json()["last_seq"])
    lanes.pause("backup", {"error": "held by the cancel test"})
    return uuid.uuid4().int % 10000, lanes, before


def test_a_queued_job_is_cancelled_and_never_sent(stack: Stack, db: Any) -> None:
    from wanotify.accounts.api_keys import create_key

    run, lanes, before = _hold_backup(stack)
    try:
        with stack.api() as api:
            a = api.post("/v1/notifications", json={**ORDER, "to": _to(run, 1)}).json()["id"]
            b = api.post("/v1/notifications", json={**ORDER, "to": _to(run, 2)}).json()["id"]
            other = create_key(f"cancel-{run}", senders=["main"])
            with httpx.Client(base_url=stack.web_url, timeout=15,
                              headers={"Authorization": f"Bearer {other.key}"}) as o:
                assert o.post(f"/v1/notifications/{a}:cancel").status_code == 404  # not its sender
            assert _job(api, db, a)["status"] == "queued"
            r = api.post(f"/v1/notifications/{a.upper()}:cancel")
            assert r.status_code == 200 and r.json() == {"id": a, "status": "cancelled"}
            again = api.post(f"/v1/notifications/{a}:cancel")
            assert again.status_code == 409
            err = again.json()["error"]
            assert err["code"] == "not_cancellable" and err["status"] == "cancelled" and err["fields"][0]["field"] == "id"
            view = _job(api, db, a)
            assert view["status"] == "cancelled" and view["events"][-1]["status"] == "cancelled"
            assert api.post(f"/v1/notifications/{uuid.uuid4()}:cancel").status_code == 404
            assert api.post("/v1/notifications/nope:cancel").status_code == 422
    finally:
        lanes.resume("backup")
    _resume(stack)
    with stack.api() as api:
        wait_for(lambda: _job(api, db, b)["status"] in ("delivered", "read"), timeout=60, what="b delivered")
        late = api.post(f"/v1/notifications/{b}:cancel")
        assert late.status_code == 409 and late.json()["error"]["status"] in ("delivered", "read")
        assert _job(api, db, a)["status"] == "cancelled"
    sent = _sent_to(stack, before)
    assert _to(run, 2).lstrip("+") in sent and _to(run, 1).lstrip("+") not in sent  # a never went out


def test_cancels_racing_a_drain_either_cancel_or_send_never_both(stack: Stack, db: Any) -> None:
    run, lanes, before = _hold_backup(stack)
    try:
        with stack.api() as api:
            r = api.post("/v1/notifications:batch", json=[{**ORDER, "to": _to(run, i)} for i in range(300)])
            jobs = {x["id"]: _to(run, i) for i, x in enumerate(r.json()["results"])}
    finally:
        lanes.resume("backup")

    def cancel(job_id: str) -> int:
        with stack.api() as api:
            return int(api.post(f"/v1/notifications/{job_id}:cancel").status_code)

    # The drain starts (about 4 s of sending at 80 mps); the cancels race it from the other end.
    with ThreadPoolExecutor(8) as pool:
        resumed = pool.submit(_resume, stack)
        answers = dict(zip(reversed(list(jobs)), pool.map(cancel, reversed(list(jobs))), strict=True))
        resumed.result()
    assert set(answers.values()) == {200, 409}, sorted(answers.values())  # both sides won some
    with stack.api() as api:
        wait_for(lambda: all(_job(api, db, j)["status"] in ("cancelled", "delivered", "read") for j in jobs),
                 timeout=60, what="every job cancelled or delivered")
        final = {j: _job(api, db, j)["status"] for j in jobs}
    sent = _sent_to(stack, before)
    for j, to in jobs.items():
        if answers[j] == 200:
            assert final[j] == "cancelled" and to.lstrip("+") not in sent, j
        else:
            assert final[j] in ("delivered", "read") and to.lstrip("+") in sent, j
