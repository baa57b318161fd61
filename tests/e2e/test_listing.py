"""``GET /v1/notifications`` over real HTTP (uvicorn, Postgres): newest first, cursor paging
that never repeats or skips a job, every filter of DESIGN.md, scoped keys seeing only their
senders; and hostile query strings against the in-process app (never a 5xx, always the
JSON error body naming the parameter)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from conftest import API_KEY, FUZZ_COUNTS, Stack, wait_for
from wanotify.core.ids import uuid7
from wanotify.ops.listing import decode_cursor, encode_cursor, id_floor

ORDER = {"template": "order_confirmation_v2", "language": "en",
         "params": {"body": ["Rahul Sharma", "ZEC-2026-0042", "₹45,000"]}, "kind": "transactional"}
OTP = {"template": "otp_code", "kind": "otp", "params": {"body": ["483920"]}}


def _to(run: int, i: int) -> str:
    return f"+9197{run % 10000:04d}{i % 10:01d}{(i * 37) % 900 + 100:03d}"


def _pages(api: httpx.Client, query: str, limit: int) -> list[list[dict[str, Any]]]:
    pages: list[list[dict[str, Any]]] = []
    cursor: str | None = None
    while True:
        url = f"/v1/notifications?{query}&limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        r = api.get(url)
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) == {"items", "next_cursor"}
        pages.append(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 100, "paging never ended"


def test_listing_pages_filters_and_scopes(stack: Stack, db: Any) -> None:
    from wanotify.accounts.api_keys import create_key

    run = uuid.uuid4().int % 10000
    since = quote((datetime.now(UTC) - timedelta(seconds=1)).isoformat())
    made: list[dict[str, str]] = []
    with stack.api() as api:
        for i in range(23):
            kind_body = OTP if i % 5 == 0 else ORDER
            sender = "backup" if i % 4 == 0 else "main"
            key = f"list-{run}-{i}"
            r = api.post("/v1/notifications", json={**kind_body, "to": _to(run, i), "sender": sender,
                                                    "idempotency_key": key, "metadata": {"i": i}})
            assert r.status_code == 202, r.text
            made.append({"id": r.json()["id"], "sender": sender, "kind": kind_body["kind"], "key": key,
                         "to": _to(run, i)})
        until = quote((datetime.now(UTC) + timedelta(seconds=1)).isoformat())
        window = f"created_after={since}&created_before={until}"

        # Every job exactly once over pages of 5, newest first (ids are time-ordered).
        pages = _pages(api, window, 5)
        got = [j["id"] for p in pages for j in p]
        assert sorted(got) == sorted(m["id"] for m in made) and len(got) == len(set(got))
        assert got == sorted(got, reverse=True) and [len(p) for p in pages] == [5, 5, 5, 5, 3]
        one = pages[0][0]
        assert one["metadata"] == {"i": 22} and one["idempotency_key"] == f"list-{run}-22"
        assert "to" not in one and "attempts" not in one  # the list is a summary, never the number

        def ids(query: str) -> list[str]:
            return sorted(j["id"] for p in _pages(api, f"{window}&{query}", 500) for j in p)

        assert ids("kind=otp") == sorted(m["id"] for m in made if m["kind"] == "otp")
        assert ids("sender=backup&kind=transactional") == sorted(
            m["id"] for m in made if m["sender"] == "backup" and m["kind"] == "transactional")
        assert ids("sender=main,backup") == ids("sender=main&sender=backup") == sorted(m["id"] for m in made)
        assert ids(f"idempotency_key=list-{run}-7") == [made[7]["id"]]
        assert ids(f"to={quote(made[9]['to'])}") == [made[9]["id"]]
        assert ids(f"to={quote(made[9]['to'])}&sender=backup") == []  # job 9 went from main
        # Statuses move as the stack sends: once all are delivered, the status filter says so.
        wait_for(lambda: ids("status=delivered,read") == sorted(m["id"] for m in made), timeout=60,
                 what="every job delivered")
        assert ids("status=queued,failed") == []
        # Before the window: nothing of these.
        early = quote((datetime.now(UTC) - timedelta(days=1)).isoformat())
        older = api.get(f"/v1/notifications?created_before={early}&limit=500").json()["items"]
        assert not {j["id"] for j in older} & set(got)

        # A cursor is tied to the order, not to a snapshot: jobs stored meanwhile never shift it.
        first = api.get(f"/v1/notifications?{window}&limit=10").json()
        api.post("/v1/notifications", json={**ORDER, "to": _to(run, 99), "idempotency_key": f"list-{run}-late"})
        rest = api.get(f"/v1/notifications?{window}&limit=10&cursor={first['next_cursor']}").json()
        assert rest["items"][0]["id"] == got[10]

        for bad, field in (("stauts=queued", "stauts"), ("status=sideways", "status"), ("kind=sms", "kind"),
                           ("sender=nobody", "sender"), ("to=12345", "to"), ("limit=0", "limit"),
                           ("limit=501", "limit"), ("limit=ten", "limit"), ("cursor=abc", "cursor"),
                           ("created_after=yesterday", "created_after"),
                           ("created_before=2026-12-08T10:00:00", "created_before"),  # no zone
                           ("limit=5&limit=6", "limit")):
            r = api.get(f"/v1/notifications?{bad}")
            assert r.status_code == 422, (bad, r.text)
            assert [f["field"] for f in r.json()["error"]["fields"]] == [field], (bad, r.text)
        # An offset's "+" sent unencoded arrives as a space, and is understood.
        plain = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S+00:00")
        assert api.get(f"/v1/notifications?created_after={plain}&limit=1").status_code == 200

    scoped = create_key(f"list-{run}", senders=["backup"])
    with httpx.Client(base_url=stack.web_url, headers={"Authorization": f"Bearer {scoped.key}"}, timeout=15) as b:
        mine = sorted(j["id"] for p in _pages(b, window, 7) for j in p)
        assert mine == sorted(m["id"] for m in made if m["sender"] == "backup")
        r = b.get("/v1/notifications?sender=main")
        assert r.status_code == 403 and r.json()["error"]["fields"][0]["field"] == "sender"
    assert httpx.get(f"{stack.web_url}/v1/notifications").status_code == 401


def test_cursors_are_the_ids_they_stand_for_and_nothing_else() -> None:
    for _ in range(100):
        i = uuid7()
        assert decode_cursor(encode_cursor(i)) == i and len(encode_cursor(i)) == 22
    for junk in ("", "abc", "=" * 22, "a" * 21 + "!", "AAAAAAAAAAAAAAAAAAAAAB", "A" * 23):
        assert decode_cursor(junk) is None, junk
    now = datetime.now(UTC)
    assert id_floor(now) <= uuid7() and id_floor(now + timedelta(seconds=1)) > uuid7()


# ---- hostile query strings against the in-process app ------------------------------------

@pytest.fixture(scope="module")
def client(services: dict[str, str]) -> Iterator[TestClient]:
    from wanotify.web.app import create_app

    with TestClient(create_app(), raise_server_exceptions=False) as c:
        yield c


NAMES = ["status", "kind", "sender", "to", "idempotency_key", "created_after", "created_before", "limit",
         "cursor", "stauts", "", "limit[]", "to\x00"]


@st.composite
def queries(draw: Any) -> list[tuple[str, str]]:
    pairs = []
    for _ in range(draw(st.integers(0, 5))):
        name = draw(st.sampled_from(NAMES) | st.text(max_size=12))
        value = draw(st.sampled_from(["queued", "otp", "main", "+919812345678", "2026-12-08T00:00:00Z", "500",
                                      "-1", "1e3", "AAAAAAAAAAAAAAAAAAAAAA", ",,,", "main,backup", "9" * 400])
                     | st.text(max_size=60))
        pairs.append((name, value))
    return pairs


@given(q=queries())
@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
def test_listing_under_hostile_query_strings(client: TestClient, q: list[tuple[str, str]]) -> None:
    FUZZ_COUNTS["listing queries"] = FUZZ_COUNTS.get("listing queries", 0) + 1
    r = client.get("/v1/notifications", params=q, headers={"Authorization": f"Bearer {API_KEY}"})
    assert r.status_code in (200, 403, 422), (q, r.status_code, r.text[:300])
    body = r.json()
    if r.status_code == 200:
        assert set(body) == {"items", "next_cursor"} and len(body["items"]) <= 500
    else:
        err = body["error"]
        assert err["code"] and err["message"] and err["fields"][0]["field"] is not None
        assert err["fields"][0]["reason"]
