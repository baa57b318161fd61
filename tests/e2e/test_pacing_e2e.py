"""Meta's throttling answers, end to end: the job keeps its place and no attempt is burned."""

from __future__ import annotations

from typing import Any

import pytest

from conftest import Stack, statuses, wait_for

pytestmark = pytest.mark.slow

ORDER = {
    "template": "order_confirmation_v2",
    "language": "en",
    "params": {"body": ["Rahul Sharma", "ZEC-2026-0042", "₹45,000"]},
}


def test_130429_and_131056_are_retried_without_burning_attempts(stack: Stack, db: Any) -> None:
    with stack.sandbox() as sb:
        rules = sb.get("/_sandbox/failures").json()
        sb.post("/_sandbox/failures", json=[
            *rules,
            {"match": "*7777", "code": 130429, "mode": "sync", "times": 1},
            {"match": "*8888", "code": 131056, "mode": "sync", "times": 1},
        ])
    try:
        with stack.api() as api:
            a = api.post("/v1/notifications", json={**ORDER, "to": "+919812347777"}).json()["id"]
            b = api.post("/v1/notifications", json={**ORDER, "to": "+919812348888"}).json()["id"]
            # 130429: the number pauses about a second; 131056: the pair waits 4^1 s.

            def both_done() -> bool:
                st = statuses(db, [a, b])
                return len(st) == 2 and all(v in ("delivered", "read") for v in st.values())

            wait_for(both_done, timeout=40, what="both delivered after throttling")
            va = api.get(f"/v1/notifications/{a}").json()
            vb = api.get(f"/v1/notifications/{b}").json()
    finally:
        with stack.sandbox() as sb:
            sb.post("/_sandbox/failures", json=rules)
    assert [x["error_code"] for x in va["attempts"]] == [130429, None]
    assert [x["error_code"] for x in vb["attempts"]] == [131056, None]
    assert va["attempts"][0]["outcome"] == "throttle" and vb["attempts"][0]["outcome"] == "throttle"
    from sqlalchemy import text

    with db() as s:
        counts = dict(s.execute(text("SELECT id::text, attempt_count FROM notifications WHERE id = ANY(CAST(:i AS uuid[]))"),
                                {"i": [a, b]}).all())
    # Throttling does not count as an attempt: each job used exactly one of its retries.
    assert counts == {a: 1, b: 1}
    # Meta recommends 4^X s after a 131056: the retry came no earlier than that.
    from datetime import datetime

    t0 = datetime.fromisoformat(vb["attempts"][0]["at"])
    t1 = datetime.fromisoformat(vb["attempts"][1]["at"])
    assert (t1 - t0).total_seconds() >= 3.9
