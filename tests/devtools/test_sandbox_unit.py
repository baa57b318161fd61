"""Unit tests of the sandbox's pure parts: limits, failure rules, error bodies, webhook batching."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import random

import httpx
import pytest

from wanotify.devtools.sandbox import errors as E
from wanotify.devtools.sandbox.failures import (
    DEFAULT_RULES,
    FailureInjector,
    FailureRule,
    RuleError,
    default_rules,
    parse_rules,
)
from wanotify.devtools.sandbox.limits import (
    PAIR_RATE_LIMIT_HIT,
    RATE_LIMIT_HIT,
    LimitRegistry,
    PairLimiter,
    SenderLimits,
    SlidingWindowLimiter,
)
from wanotify.devtools.sandbox.webhooks import Target, WebhookDispatcher, sign, twilio_signature


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


# ---- limits ------------------------------------------------------------------------------


def test_sliding_window_counts_a_trailing_second() -> None:
    lim = SlidingWindowLimiter(3, 1.0)
    for t in (0.0, 0.1, 0.2):
        assert lim.allows(t)
        lim.record(t)
    assert not lim.allows(0.3)
    assert lim.retry_after(0.3) == pytest.approx(0.7)
    assert not lim.allows(0.999)
    # the event at 0.0 leaves the window at exactly 1.0
    assert lim.allows(1.0)
    assert lim.count(1.0) == 2


def test_sliding_window_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError):
        SlidingWindowLimiter(0)
    with pytest.raises(ValueError):
        SlidingWindowLimiter(1, 0)


def test_pair_bucket_bursts_then_refills_one_token_per_interval() -> None:
    pair = PairLimiter(capacity=2, interval_s=6.0)
    assert pair.allows("a", 0.0)
    pair.take("a", 0.0)
    pair.take("a", 0.0)
    assert not pair.allows("a", 0.0)
    assert pair.retry_after("a", 0.0) == pytest.approx(6.0)
    assert not pair.allows("a", 5.9)
    assert pair.allows("a", 6.0)
    pair.take("a", 6.0)
    assert not pair.allows("a", 6.1)
    # other recipients have their own bucket
    assert pair.allows("b", 6.1)


def test_pair_buckets_that_refilled_are_forgotten() -> None:
    pair = PairLimiter(capacity=2, interval_s=1.0)
    for i in range(100):
        pair.take(f"r{i}", 0.0)
    assert len(pair) == 100
    pair.take("late", 2.5)  # everyone else is full again by now
    assert len(pair) == 1
    assert pair.tokens("r1", 2.5) == 2.0


def test_sender_limits_throughput_first_and_rejections_consume_nothing() -> None:
    lim = SenderLimits(mps=3, pair_burst=1, pair_interval_s=6.0)
    assert lim.check("x", 0.0) is None
    lim.commit("x", 0.0)
    # the pair limit refuses a second send to x, and that refusal takes no throughput
    for _ in range(10):
        assert lim.check("x", 0.1) == PAIR_RATE_LIMIT_HIT
    assert lim.mps.count(0.1) == 1
    for r in ("y", "z"):
        assert lim.check(r, 0.2) is None
        lim.commit(r, 0.2)
    # 3 accepted in the last second: throughput is checked before the pair
    assert lim.check("w", 0.3) == RATE_LIMIT_HIT
    assert lim.check("x", 0.3) == RATE_LIMIT_HIT
    assert lim.check("w", 1.01) is None


def test_limit_registry_uses_the_injected_clock_and_resets() -> None:
    clock = FakeClock()
    reg = LimitRegistry(clock)
    reg.configure("pn1", mps=2, pair_burst=5, pair_interval_s=6.0)
    reg.commit("pn1", "a")
    reg.commit("pn1", "b")
    assert reg.check("pn1", "c") == RATE_LIMIT_HIT
    clock.advance(1.0)
    assert reg.check("pn1", "c") is None
    reg.commit("pn1", "c")
    reg.commit("pn1", "d")
    assert reg.check("pn1", "e") == RATE_LIMIT_HIT
    reg.reset()
    assert reg.check("pn1", "e") is None


# ---- failure rules -------------------------------------------------------------------


def test_default_rules_are_the_documented_ones() -> None:
    rules = default_rules()
    assert [(r.match, r.code, r.mode) for r in rules] == [
        ("*0000", 131026, "webhook"),
        ("*0001", 131000, "sync"),
        ("*0002", 131049, "webhook"),
    ]
    assert rules[1].http_status == 500 and rules[1].times == 2
    assert DEFAULT_RULES[0]["match"] == "*0000"


def test_times_limits_failures_per_recipient() -> None:
    inj = FailureInjector(default_rules(), random.Random(1))
    a, b = "+919876540001", "+14155550001"
    assert inj.decide(a).code == 131000  # type: ignore[union-attr]
    assert inj.decide(a).code == 131000  # type: ignore[union-attr]
    assert inj.decide(a) is None  # transient: the third try succeeds
    assert inj.decide(b).code == 131000  # type: ignore[union-attr]  # b counts on its own
    for _ in range(5):
        rule = inj.decide("+919876540000")
        assert rule is not None and rule.code == 131026 and rule.mode == "webhook"
    assert inj.decide("+919876543210") is None
    inj.reset_counters()
    assert inj.decide(a) is not None


def test_probability_and_rule_order() -> None:
    rules = parse_rules(
        [
            {"match": "+44*", "code": 131048, "probability": 0.3},
            {"match": "*", "code": 131000, "probability": 0.0},
            {"match": "+44*", "code": 131026, "mode": "webhook"},
        ]
    )
    inj = FailureInjector(rules, random.Random(42))
    codes = [inj.decide("+447700900123").code for _ in range(2000)]  # type: ignore[union-attr]
    share = codes.count(131048) / len(codes)
    assert 0.25 < share < 0.35
    # a rule that does not fire lets the next matching one decide; p=0 never fires
    assert set(codes) == {131048, 131026}
    assert inj.decide("+919876543210") is None


def test_channel_and_latency_only_rules() -> None:
    inj = FailureInjector(
        parse_rules(
            [
                {"match": "*99", "code": 30003, "mode": "webhook", "channel": "sms"},
                {"match": "*98", "latency_ms": 2500, "times": 1, "channel": "any"},
            ]
        )
    )
    assert inj.decide("+15550000099", "whatsapp") is None
    sms_rule = inj.decide("+15550000099", "sms")
    assert sms_rule is not None and sms_rule.code == 30003
    slow = inj.decide("+15550000098", "whatsapp")
    assert slow is not None and not slow.fails and slow.latency_ms == 2500
    assert inj.decide("+15550000098", "sms") is None  # times=1 used up


def test_replace_installs_rules_and_forgets_counts() -> None:
    inj = FailureInjector(default_rules())
    inj.decide("+10000000001")
    inj.decide("+10000000001")
    assert inj.decide("+10000000001") is None
    inj.replace(default_rules())
    assert inj.decide("+10000000001") is not None
    inj.replace([])
    assert inj.rules == () and inj.decide("+10000000000") is None


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"code": 1}, "match"),
        ({"match": "*", "code": 1, "mode": "later"}, "mode"),
        ({"match": "*", "code": 1, "probability": 1.5}, "probability"),
        ({"match": "*", "code": 1, "http_status": 200}, "http_status"),
        ({"match": "*", "code": 1, "times": -1}, "times"),
        ({"match": "*", "code": 1, "channel": "email"}, "channel"),
        ({"match": "*", "code": 1, "colour": "red"}, "colour"),
        ({"match": "*"}, "code"),
        ({"match": "*", "code": "131000"}, "code"),
    ],
)
def test_bad_rules_are_refused_with_the_field_named(raw: dict[str, object], field: str) -> None:
    with pytest.raises(RuleError, match=field):
        parse_rules([raw])


def test_rule_round_trips_through_as_dict() -> None:
    raw = {
        "match": "*7",
        "code": 131000,
        "mode": "sync",
        "http_status": 503,
        "times": 3,
        "probability": 0.5,
        "latency_ms": 10.0,
        "details": "x",
    }
    rule = FailureRule.parse(raw)
    assert FailureRule.parse(rule.as_dict()) == rule
    assert rule.as_dict() == raw


# ---- error bodies ----------------------------------------------------------------------


def test_graph_error_body_is_metas_shape() -> None:
    status, body = E.graph_error(132000, details="body: number of localizable_params (2) ...")
    err = json.loads(body)["error"]
    assert status == 400
    assert err["message"] == (
        "(#132000) Number of parameters does not match the expected number of params"
    )
    assert err["type"] == "OAuthException"
    assert err["code"] == 132000
    assert err["error_data"] == {
        "messaging_product": "whatsapp",
        "details": "body: number of localizable_params (2) ...",
    }
    assert "error_subcode" not in err
    assert len(err["fbtrace_id"]) == 23
    assert list(err) == ["message", "type", "code", "error_data", "fbtrace_id"]


def test_error_statuses_follow_metas_table() -> None:
    assert E.graph_error(130429)[0] == 400
    assert json.loads(E.graph_error(130429)[1])["error"]["message"] == "(#130429) Rate limit hit"
    assert E.graph_error(131056)[0] == 400
    assert E.graph_error(131000)[0] == 500
    assert E.graph_error(132001)[0] == 404
    assert E.graph_error(131026, http_status=503)[0] == 503
    status, body = E.invalid_token(missing=False)
    err = json.loads(body)["error"]
    assert status == 401 and err["code"] == 190 and not err["message"].startswith("(#")
    status, body = E.unsupported_request("post", "123")
    err = json.loads(body)["error"]
    assert status == 400 and err["code"] == 100 and err["error_subcode"] == 33
    assert err["type"] == "GraphMethodException"
    assert err["message"].startswith(
        "Unsupported post request. Object with ID '123' does not exist"
    )


def test_webhook_error_and_twilio_error() -> None:
    we = E.webhook_error(131049)
    assert we["code"] == 131049
    assert we["title"] == we["message"]
    assert we["href"] == E.ERROR_CODES_HREF
    assert set(we["error_data"]) == {"details"}  # type: ignore[arg-type]
    status, body = E.twilio_error(21211, to="+1")
    assert status == 400
    assert json.loads(body) == {
        "code": 21211,
        "message": "The 'To' number +1 is not a valid phone number.",
        "more_info": "https://www.twilio.com/docs/errors/21211",
        "status": 400,
    }


def test_signatures() -> None:
    body = b'{"object":"whatsapp_business_account"}'
    expected = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert sign(body, "s3cret") == "sha256=" + expected
    params = {"To": "+1555", "MessageStatus": "sent"}
    mac = hmac.new(b"tok", b"https://x/cbMessageStatussentTo+1555", hashlib.sha1).digest()
    assert twilio_signature("https://x/cb", params, "tok") == base64.b64encode(mac).decode()


# ---- webhook scheduling and batching (mock transport, no sockets) ----------------------


class Recorder:
    def __init__(self, fail_first: int = 0) -> None:
        self.bodies: list[dict[str, object]] = []
        self.raw: list[tuple[bytes, str | None]] = []
        self.fail_first = fail_first
        self.calls = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        if self.calls <= self.fail_first:
            return httpx.Response(503)
        self.raw.append((request.content, request.headers.get("x-hub-signature-256")))
        self.bodies.append(json.loads(request.content))
        return httpx.Response(200)

    def statuses(self) -> list[dict[str, object]]:
        out = []
        for b in self.bodies:
            for entry in b["entry"]:  # type: ignore[attr-defined]
                for change in entry["changes"]:
                    out.extend(change["value"].get("statuses", []))
        return out


def _dispatcher(rec: Recorder, **kw: object) -> WebhookDispatcher:
    d = WebhookDispatcher(
        "http://receiver.test/hook",
        "secret",
        transport=httpx.MockTransport(rec),
        rng=random.Random(7),
        **kw,  # type: ignore[arg-type]
    )
    d.register(Target("pn1", "waba1", "15550100001"))
    d.register(Target("pn2", "waba1", "15550100002"))
    return d


def _send(d: WebhookDispatcher, n: int, pnid: str = "pn1", **kw: object) -> None:
    for i in range(n):
        d.schedule_message(
            pnid,
            f"wamid.{pnid}.{i}",
            f"91987654{i:04d}",
            category="utility",
            billable=True,
            pricing_type="regular",
            **kw,  # type: ignore[arg-type]
        )


def test_statuses_are_batched_signed_and_ordered() -> None:
    rec = Recorder()

    async def scenario() -> None:
        d = _dispatcher(rec, delay_ms=0, read_ratio=1.0, duplicate_ratio=0, reorder_ratio=0)
        await d.start()
        _send(d, 60)
        _send(d, 5, "pn2", biz_opaque_callback_data="order-42")
        await d.flush()
        await d.stop()

    asyncio.run(scenario())
    statuses = rec.statuses()
    assert len(statuses) == 65 * 3
    for body in rec.bodies:
        n = sum(len(c["value"]["statuses"]) for e in body["entry"] for c in e["changes"])  # type: ignore[attr-defined,index]
        assert n <= 100
    assert len(rec.bodies) < 65  # batched, not one POST per status
    for raw, signature in rec.raw:
        assert signature == sign(raw, "secret")
    by_id: dict[str, list[str]] = {}
    for st in statuses:
        by_id.setdefault(st["id"], []).append(st["status"])  # type: ignore[arg-type]
    assert all(v == ["sent", "delivered", "read"] for v in by_id.values())
    first = statuses[0]
    assert first["pricing"] == {
        "billable": True,
        "pricing_model": "PMP",
        "category": "utility",
        "type": "regular",
    }
    assert set(first["conversation"]) == {"id", "expiration_timestamp", "origin"}  # type: ignore[arg-type]
    biz = [s for s in statuses if str(s["id"]).startswith("wamid.pn2")]
    assert all(s["biz_opaque_callback_data"] == "order-42" for s in biz)
    assert all("biz_opaque_callback_data" not in s for s in statuses if s not in biz)
    reads = [s for s in statuses if s["status"] == "read"]
    assert all("pricing" not in s and "conversation" not in s for s in reads)
    body = rec.bodies[0]
    assert body["object"] == "whatsapp_business_account"
    value = body["entry"][0]["changes"][0]["value"]  # type: ignore[index]
    assert value["metadata"]["display_phone_number"] in ("15550100001", "15550100002")


def test_duplicates_arrive_in_a_later_post_and_reorder_swaps_sent_and_delivered() -> None:
    rec = Recorder()

    async def scenario() -> None:
        d = _dispatcher(rec, delay_ms=0, read_ratio=0.0, duplicate_ratio=1.0, reorder_ratio=1.0)
        await d.start()
        _send(d, 10)
        await d.flush()
        await d.stop()

    asyncio.run(scenario())
    order: dict[str, list[str]] = {}
    where: dict[tuple[str, str], list[int]] = {}
    for post, body in enumerate(rec.bodies):
        for entry in body["entry"]:  # type: ignore[attr-defined]
            for change in entry["changes"]:
                for st in change["value"]["statuses"]:
                    order.setdefault(st["id"], []).append(st["status"])
                    where.setdefault((st["id"], st["status"]), []).append(post)
    assert len(order) == 10
    for statuses in order.values():
        assert statuses.count("sent") == 2 and statuses.count("delivered") == 2
        assert statuses.index("delivered") < statuses.index("sent")
    for posts in where.values():
        assert len(posts) == 2 and posts[0] != posts[1]


def test_failed_status_carries_errors_and_no_pricing() -> None:
    rec = Recorder()

    async def scenario() -> None:
        d = _dispatcher(rec, delay_ms=0, read_ratio=1.0, duplicate_ratio=0, reorder_ratio=0)
        await d.start()
        _send(d, 1, failure=(131026, None))
        _send(d, 1, "pn2", failure=(131047, None), sent_first=False)
        await d.flush()
        await d.stop()

    asyncio.run(scenario())
    pn1 = [s for s in rec.statuses() if str(s["id"]).startswith("wamid.pn1")]
    pn2 = [s for s in rec.statuses() if str(s["id"]).startswith("wamid.pn2")]
    assert [s["status"] for s in pn1] == ["sent", "failed"]
    assert [s["status"] for s in pn2] == ["failed"]
    failed = pn1[1]
    assert "pricing" not in failed and "conversation" not in failed
    assert failed["errors"] == [E.webhook_error(131026)]


def test_failed_posts_are_retried_then_dropped() -> None:
    rec = Recorder(fail_first=2)

    async def scenario() -> WebhookDispatcher:
        d = _dispatcher(rec, delay_ms=0, read_ratio=0.0, duplicate_ratio=0, reorder_ratio=0)
        await d.start()
        _send(d, 1)
        for _ in range(3):
            await d.flush(timeout_s=2)
        await d.stop()
        return d

    d = asyncio.run(scenario())
    assert {s["status"] for s in rec.statuses()} == {"sent", "delivered"}
    assert d.stats.posts_failed >= 2

    never = Recorder(fail_first=10**6)

    async def dropping() -> WebhookDispatcher:
        d = _dispatcher(never, delay_ms=0, read_ratio=0.0, duplicate_ratio=0, reorder_ratio=0)
        d.retry_for_s = 0.3
        await d.start()
        _send(d, 1)
        await asyncio.sleep(1.5)
        await d.stop()
        return d

    d = asyncio.run(dropping())
    assert never.calls >= 2
    assert d.stats.posts_dropped >= 1
    assert d.pending == 0


def test_no_url_means_no_webhooks() -> None:
    d = WebhookDispatcher(None, "secret")
    _send(d, 3)
    assert d.pending == 0 and not d.enabled


def test_realtime_scheduling_is_asked_for_the_calling_thread_only() -> None:
    """``wanotify sandbox --realtime``: the event loop's thread is scheduled first (SCHED_FIFO)
    where that is allowed (root here), so its arrival times are not those of a starved
    process; elsewhere it says so and serves at normal priority."""
    import os
    import threading

    from wanotify.devtools.sandbox.server import REALTIME_PRIORITY, ask_realtime

    seen: dict[str, object] = {}

    def probe() -> None:
        seen["granted"] = ask_realtime()
        seen["policy"] = os.sched_getscheduler(0)
        seen["priority"] = os.sched_getparam(0).sched_priority

    t = threading.Thread(target=probe)
    t.start()
    t.join()
    if os.geteuid() == 0:
        assert seen == {"granted": True, "policy": os.SCHED_FIFO, "priority": REALTIME_PRIORITY}
    else:
        assert seen["granted"] is False and seen["policy"] == os.SCHED_OTHER
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # not the rest of the process
