"""API keys: the pure parts (parsing, scopes, the cache's bounds) and the GCRA in real Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any

import pytest

from wanotify.accounts.api_keys import (
    KEY_PREFIX,
    MISS_REFRESH_S,
    RATE_SCRIPT,
    REFRESH_S,
    Authenticator,
    KeyInputError,
    KeyRecord,
    KeyRejected,
    Rate,
    digest,
    generate,
    scope_job,
    verdict,
)


def test_generated_keys_are_prefixed_random_and_hashed() -> None:
    keys = {generate() for _ in range(100)}
    assert len(keys) == 100
    k = next(iter(keys))
    assert k.startswith(KEY_PREFIX) and len(k) == len(KEY_PREFIX) + 43  # 32 bytes, base64url
    assert digest(k) == digest(k) and len(digest(k)) == 64 and k not in digest(k)


@pytest.mark.parametrize(("spec", "burst", "per_s", "want_burst", "shown"), [
    ("50/s", None, 50.0, 50, "50/s"),
    ("50", None, 50.0, 50, "50/s"),
    ("600/min", 5, 10.0, 5, "10/s"),
    ("30/m", None, 0.5, 1, "30/min"),
    ("1000/h", 3, 1000 / 3600, 3, "1000/h"),
    ("2.5/s", None, 2.5, 3, "150/min"),
])
def test_rate_parse(spec: str, burst: int | None, per_s: float, want_burst: int, shown: str) -> None:
    r = Rate.parse(spec, burst)
    assert r.per_s == pytest.approx(per_s) and r.burst == want_burst and str(r) == shown


@pytest.mark.parametrize(("spec", "burst", "field"), [
    ("fast", None, "--rate"), ("5/fortnight", None, "--rate"), ("0/s", None, "--rate"),
    ("-1/s", None, "--rate"), ("5/s", 0, "--burst"),
])
def test_rate_parse_refuses(spec: str, burst: int | None, field: str) -> None:
    with pytest.raises(KeyInputError) as exc:
        Rate.parse(spec, burst)
    assert exc.value.field == field and exc.value.reason


MAIN = KeyRecord("a", "a", digest("a"), ("main",))
BOTH = KeyRecord("b", "b", digest("b"), ("backup", "main"))
ALL = KeyRecord("env", "env", digest("c"))


def test_scope_job() -> None:
    body = {"to": "+919876543210", "text": "hi"}
    assert scope_job(ALL, body) is body  # unscoped: untouched (the configuration's first sender)
    assert scope_job(MAIN, body) == {**body, "sender": "main"}
    assert scope_job(BOTH, body)["sender"] == "backup"  # the key's first sender
    assert scope_job(BOTH, {**body, "sender": "main"})["sender"] == "main"
    for bad in ("backup", "nobody", 7):
        with pytest.raises(KeyRejected) as exc:
            scope_job(MAIN, {**body, "sender": bad})
        assert exc.value.status == 403 and exc.value.fields == [
            {"field": "sender", "reason": "outside this API key's senders"}]
    assert scope_job(MAIN, [1, 2]) == [1, 2]  # not an object: validation answers
    assert MAIN.allows("main") and not MAIN.allows("backup") and ALL.allows("anything")


def test_verdict() -> None:
    r = Rate(2.0, 4)
    ok = verdict(r, [1, 0, 3, 500_000])
    assert ok.admitted and ok.remaining == 3 and "Retry-After" not in ok.headers()
    no = verdict(r, [0, 1_200, 0, 2_000_000])
    assert not no.admitted and no.retry_after_s == 1 and no.headers()["Retry-After"] == "1"
    assert verdict(r, [0, 2_000_001, 0, 3_000_000]).retry_after_s == 3
    assert no.headers()["RateLimit-Limit"] == "4" and no.headers()["RateLimit-Reset"] == "2"


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Store:
    """A fake api_keys table for the Authenticator."""

    def __init__(self) -> None:
        self.live: dict[str, KeyRecord] = {}
        self.loads = 0
        self.touched: list[str] = []
        self.down = False

    def add(self, key: str, **kw: Any) -> KeyRecord:
        rec = KeyRecord(f"id-{key}", key, digest(key), **kw)
        self.live[key] = rec
        return rec

    def load(self, touch: Iterable[str]) -> list[KeyRecord]:
        if self.down:
            raise ConnectionError("postgres away")
        self.loads += 1
        self.touched += list(touch)
        return list(self.live.values())


def _auth(key: str | None) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"} if key else {}


def _run(auth: Authenticator, key: str | None) -> KeyRecord | int:
    try:
        return asyncio.run(auth.authenticate(_auth(key)))
    except KeyRejected as exc:
        return exc.status


def test_authenticator_caches_and_bounds_revocation() -> None:
    store, clock = Store(), Clock()
    auth = Authenticator(["env-key"], "redis://127.0.0.1:1/0", loader=store.load, clock=clock)
    assert _run(auth, None) == 401
    assert _run(auth, "env-key").id == "env"  # type: ignore[union-attr]
    assert store.loads == 0  # WANOTIFY_API_KEYS never touch Postgres
    store.add("k1", senders=("main",))
    assert _run(auth, "k1").senders == ("main",)  # type: ignore[union-attr]
    assert store.loads == 1
    for _ in range(50):  # cached: no query per request
        assert isinstance(_run(auth, "k1"), KeyRecord)
    assert store.loads == 1
    # Unknown keys: at most one reload per MISS_REFRESH_S (negative caching).
    for _ in range(20):
        assert _run(auth, "guess") == 401
    assert store.loads == 1
    clock.t += MISS_REFRESH_S + 0.01
    assert _run(auth, "guess") == 401 and store.loads == 2
    # A new key works on its first use (a miss reloads once the cache is MISS_REFRESH_S old).
    store.add("k2")
    clock.t += MISS_REFRESH_S + 0.01
    assert isinstance(_run(auth, "k2"), KeyRecord)
    # Revoked: refused once the copy is REFRESH_S old, and that is the bound.
    del store.live["k1"]
    clock.t += REFRESH_S / 2
    assert isinstance(_run(auth, "k1"), KeyRecord)
    clock.t += REFRESH_S / 2 + 0.01
    assert _run(auth, "k1") == 401
    assert "id-k1" in store.touched and "id-k2" in store.touched  # last_used_at, batched with reloads


def test_authenticator_keeps_the_last_keys_while_postgres_is_away() -> None:
    store, clock = Store(), Clock()
    auth = Authenticator([], "redis://127.0.0.1:1/0", loader=store.load, clock=clock)
    store.add("k1")
    assert isinstance(_run(auth, "k1"), KeyRecord)
    store.down = True
    clock.t += REFRESH_S + 1
    assert isinstance(_run(auth, "k1"), KeyRecord)
    assert _run(auth, "other") == 401


def test_authenticator_lets_limited_keys_through_when_redis_is_away() -> None:
    store = Store()
    auth = Authenticator([], "redis://127.0.0.1:1/0", loader=store.load)
    store.add("k1", rate=Rate(1.0, 1))
    for _ in range(3):
        assert isinstance(_run(auth, "k1"), KeyRecord)


def test_gcra_script_admits_a_burst_then_paces(redis_client: Any) -> None:
    script = redis_client.register_script(RATE_SCRIPT)
    key = f"wn:apikey:{{test-{time.time_ns()}}}:tat"
    rate = Rate(4.0, 3)  # 250 ms apart, 3 at once

    def hit() -> Any:
        return verdict(rate, script(keys=[key], args=[1e6 / rate.per_s, rate.burst]))

    got = [hit() for _ in range(3)]
    assert [v.admitted for v in got] == [True, True, True]
    assert [v.remaining for v in got] == [2, 1, 0]
    refused = hit()
    assert not refused.admitted and refused.retry_after_s == 1
    assert 0 < redis_client.pttl(key) <= 2000
    time.sleep(0.3)
    assert hit().admitted  # one interval later, one more
    assert not hit().admitted
    time.sleep(1.1)
    assert [hit().admitted for _ in range(4)] == [True, True, True, False]  # the burst came back
