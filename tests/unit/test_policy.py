"""The error-policy table, retry schedule, status order, delivery decisions, response parsing."""

from __future__ import annotations

import json
import random
import statistics
import uuid

import pytest

from wanotify.core.backoff import SCHEDULES, RetrySchedule, pair_backoff_s
from wanotify.core.status import ALL, OUTCOMES, RANK, TERMINAL, advances
from wanotify.delivery.outcomes import ClaimedJob, decide
from wanotify.providers.policy import POLICY, SERVER_ERROR, TRANSPORT, UNKNOWN, Policy, classify
from wanotify.providers.whatsapp import SendResult, parse_response

ISSUE_CODES = [
    0, 1, 2, 3, 4, 10, 33, 100, 190, 368, 80007, 130403, 130429, 130472, 130497, 131000,
    131005, 131008, 131009, 131016, 131021, 131026, 131031, 131037, 131042, 131045, 131047,
    131048, 131049, 131050, 131051, 131053, 131056, 131057, 131063, 132000, 132001, 132005,
    132007, 132012, 132015, 132016, 133004, 133010, 135000,
]


# ---- the policy table -------------------------------------------------------------------


@pytest.mark.parametrize("code", ISSUE_CODES)
def test_every_listed_code_has_a_row(code: int) -> None:
    p = POLICY[code]
    assert isinstance(p, Policy)
    assert p.action in ("retry", "throttle", "fallback", "fail")
    assert p.title.strip()
    assert classify(code) is p
    assert classify(code, 400) is p
    # Meta's code wins over the HTTP status.
    assert classify(code, 500) is p


@pytest.mark.parametrize(
    ("code", "action"),
    [
        (130429, "throttle"),
        (131056, "throttle"),
        (4, "throttle"),
        (80007, "throttle"),
        (131000, "retry"),
        (1, "retry"),
        (2, "retry"),
        (131016, "retry"),
        (133004, "retry"),
        (131026, "fallback"),
        (131047, "fallback"),
        (131049, "fallback"),
        (131050, "fallback"),
        (130472, "fallback"),
        (100, "fail"),
        (132000, "fail"),
        (132001, "fail"),
        (131008, "fail"),
        (131009, "fail"),
        (131021, "fail"),
        (132015, "fail"),
    ],
)
def test_important_actions(code: int, action: str) -> None:
    assert classify(code).action == action


@pytest.mark.parametrize("code", [190, 131042, 368, 131031, 0, 10, 131005, 133010])
def test_account_problems_pause_the_sender(code: int) -> None:
    p = classify(code)
    assert p.pause_sender is True
    assert p.action == "fail"


@pytest.mark.parametrize("code", [130429, 131056, 131000, 131026, 131047, 132000, 100, 1, 2])
def test_ordinary_errors_do_not_pause(code: int) -> None:
    assert classify(code).pause_sender is False


def test_no_throttle_or_retry_code_pauses_the_sender() -> None:
    for code, p in POLICY.items():
        if p.action in ("retry", "throttle", "fallback"):
            assert not p.pause_sender, code


def test_transport_and_http_fallbacks() -> None:
    assert classify(None, None) is TRANSPORT
    assert TRANSPORT.action == "retry"
    for status in (500, 502, 503, 504, 429):
        assert classify(None, status) is SERVER_ERROR
    assert SERVER_ERROR.action == "retry"
    assert classify(None, 400) is UNKNOWN
    assert UNKNOWN.action == "fail"
    # An unknown code: 5xx is retried, 4xx fails.
    assert classify(999999, 503).action == "retry"
    assert classify(999999, 400) is UNKNOWN
    assert classify(999999) is UNKNOWN


# ---- the retry schedule -----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["otp", "transactional", "marketing"])
def test_delay_within_full_jitter_bounds(kind: str) -> None:
    s = SCHEDULES[kind]
    rng = random.Random(1234)
    for attempt in range(1, 13):
        ceiling = min(s.cap_s, s.base_s * 2 ** (attempt - 1))
        samples = [s.delay(attempt, rng=rng) for _ in range(300)]
        assert all(0 <= d <= ceiling for d in samples), (attempt, max(samples), ceiling)
        # Jitter: the samples spread over the interval, not a fixed value.
        assert len(set(samples)) > 250
        assert max(samples) - min(samples) > 0.8 * ceiling
        assert 0.35 * ceiling < statistics.mean(samples) < 0.65 * ceiling


def test_delay_cap_and_growth() -> None:
    s = RetrySchedule(max_attempts=10, base_s=1.0, cap_s=8.0)
    rng = random.Random(7)
    maxima = [max(s.delay(n, rng=rng) for _ in range(500)) for n in range(1, 8)]
    # Ceilings 1, 2, 4, 8, 8, 8, 8: the observed maxima follow them.
    for observed, ceiling in zip(maxima, [1, 2, 4, 8, 8, 8, 8], strict=True):
        assert 0.9 * ceiling <= observed <= ceiling
    assert s.delay(0, rng=rng) <= 1.0  # attempt 0 treated like attempt 1


def test_retry_after_is_a_floor() -> None:
    s = RetrySchedule(max_attempts=5, base_s=1.0, cap_s=4.0)
    rng = random.Random(99)
    for attempt in range(1, 6):
        for _ in range(200):
            d = s.delay(attempt, retry_after=3.0, rng=rng)
            assert 3.0 <= d <= max(3.0, min(4.0, 2 ** (attempt - 1)))
    # A Retry-After above the ceiling is honoured exactly.
    assert s.delay(1, retry_after=30.0, rng=rng) == 30.0
    assert s.delay(1, retry_after=0.0, rng=random.Random(1)) == random.Random(1).uniform(0, 1.0)


def test_seeded_rng_is_reproducible() -> None:
    s = SCHEDULES["transactional"]
    a = [s.delay(n, rng=random.Random(42)) for n in range(1, 7)]
    b = [s.delay(n, rng=random.Random(42)) for n in range(1, 7)]
    assert a == b


def test_schedules_per_kind() -> None:
    assert SCHEDULES["otp"].max_attempts <= SCHEDULES["transactional"].max_attempts
    assert SCHEDULES["otp"].cap_s < SCHEDULES["transactional"].cap_s <= SCHEDULES["marketing"].cap_s
    assert pair_backoff_s(1) == 4.0
    assert pair_backoff_s(2) == 16.0
    assert pair_backoff_s(0) == 4.0
    assert pair_backoff_s(6) == pair_backoff_s(60) == 4.0 ** 6


# ---- status order -----------------------------------------------------------------------

ORDER = ["queued", "sending", "accepted", "sent", "delivered", "read"]


def test_status_tables() -> None:
    assert sorted(RANK, key=RANK.__getitem__) == ORDER
    assert frozenset({"failed", "expired", "fallback_sms", "fallback_email", "cancelled", "opted_out"}) == TERMINAL
    assert set(ALL) == set(ORDER) | TERMINAL
    assert {"delivered", "read"} <= OUTCOMES and TERMINAL <= OUTCOMES


@pytest.mark.parametrize("i", range(len(ORDER)))
@pytest.mark.parametrize("j", range(len(ORDER)))
def test_forward_only(i: int, j: int) -> None:
    assert advances(ORDER[i], ORDER[j]) is (j > i)


@pytest.mark.parametrize(
    ("current", "expected"),
    [("queued", True), ("sending", True), ("accepted", True), ("sent", True),
     ("delivered", False), ("read", False)],
)
def test_failed_only_before_delivered(current: str, expected: bool) -> None:
    assert advances(current, "failed") is expected


@pytest.mark.parametrize("current", sorted(TERMINAL))
@pytest.mark.parametrize("new", [*ORDER, *sorted(TERMINAL)])
def test_terminal_never_moves(current: str, new: str) -> None:
    assert advances(current, new) is False


def test_unknown_reports_do_not_move() -> None:
    assert advances("sent", "deleted") is False
    assert advances("queued", "warning") is False


# ---- decide -----------------------------------------------------------------------------


def claimed(kind: str = "transactional", attempt: int = 1) -> ClaimedJob:
    return ClaimedJob(uuid.uuid4(), kind, "main", "+919876543210", {}, attempt)


def ok_result() -> SendResult:
    return SendResult(True, "wamid.HBgM", 200, None, None, None, 12.0)


def error_result(code: int | None, http: int | None = 400, retry_after: float | None = None) -> SendResult:
    return SendResult(False, None, http, code, "boom", "trace", 5.0, retry_after)


def test_decide_success() -> None:
    d = decide(ok_result(), claimed())
    assert d.action == "done" and d.status == "accepted" and d.delay_s == 0.0


def test_decide_rate_limit_throttles_without_burning_an_attempt() -> None:
    for kind, sched in SCHEDULES.items():
        # Even on the last allowed attempt a throttle never fails the job.
        d = decide(error_result(130429), claimed(kind, sched.max_attempts))
        assert d.action == "throttle" and d.status == "queued"
        assert d.delay_s >= 1.0
    d = decide(error_result(130429, retry_after=7.5), claimed())
    assert d.action == "throttle" and d.delay_s == 7.5
    d = decide(error_result(80007), claimed())
    assert d.action == "throttle"


def test_decide_pair_limit_backs_off_4_to_the_x() -> None:
    for n, expected in [(1, 4.0), (2, 16.0), (3, 64.0)]:
        d = decide(error_result(131056), claimed(attempt=99), throttle_count=n)
        assert d.action == "throttle" and d.status == "queued"
        assert d.delay_s == expected


@pytest.mark.parametrize("kind", ["otp", "transactional", "marketing"])
@pytest.mark.parametrize("code", [131000, 1, 2, 131016, None])
def test_decide_retry_until_max_attempts_then_fail(kind: str, code: int | None) -> None:
    sched = SCHEDULES[kind]
    http = 503 if code is None else 500
    for attempt in range(1, sched.max_attempts):
        d = decide(error_result(code, http), claimed(kind, attempt))
        assert d.action == "retry", attempt
        assert d.status == "queued"
        assert 0 <= d.delay_s <= min(sched.cap_s, sched.base_s * 2 ** (attempt - 1))
    d = decide(error_result(code, http), claimed(kind, sched.max_attempts))
    assert d.action == "fail" and d.status == "failed"


def test_decide_transport_error_retries() -> None:
    res = SendResult(False, None, None, None, "timeout: ReadTimeout", None, 10_000.0)
    assert decide(res, claimed()).action == "retry"


def test_decide_retry_honours_retry_after() -> None:
    d = decide(error_result(131000, 500, retry_after=42.0), claimed())
    assert d.action == "retry" and d.delay_s == 42.0


@pytest.mark.parametrize("code", [100, 132000, 132001, 131009])
def test_decide_permanent_fails_at_once(code: int) -> None:
    d = decide(error_result(code), claimed(attempt=1))
    assert d.action == "fail" and d.status == "failed"


@pytest.mark.parametrize("code", [0, 10, 190, 368, 131031, 131042, 131057, 133010])
def test_decide_account_level_pauses_and_keeps_the_job(code: int) -> None:
    d = decide(error_result(code), claimed(attempt=1))
    assert d.action == "pause" and d.status == "queued"


@pytest.mark.parametrize("code", [131026, 131047, 131049, 131050, 130472])
def test_decide_undeliverable_is_never_retried(code: int) -> None:
    d = decide(error_result(code), claimed(attempt=1))
    assert d.action in ("fallback", "fail")
    assert d.status != "queued"


# ---- parse_response ---------------------------------------------------------------------


def test_parse_meta_success_body() -> None:
    body = {
        "messaging_product": "whatsapp",
        "contacts": [{"input": "+919876543210", "wa_id": "919876543210"}],
        "messages": [{"id": "wamid.HBgMOTE5ODc2NTQzMjEwFQIAERgSQzVGNjM5QjRFRDM0RjU1NzI4AA==",
                      "message_status": "accepted"}],
    }
    r = parse_response(200, json.dumps(body).encode(), 123.4, None)
    assert r.ok is True
    assert r.wamid == "wamid.HBgMOTE5ODc2NTQzMjEwFQIAERgSQzVGNjM5QjRFRDM0RjU1NzI4AA=="
    assert (r.http_status, r.error_code, r.error_message, r.request_id) == (200, None, None, None)
    assert r.duration_ms == 123.4


def test_parse_success_without_id_is_not_ok() -> None:
    r = parse_response(200, b'{"messaging_product": "whatsapp", "messages": []}', 1.0, None)
    assert r.ok is False and r.wamid is None
    assert r.error_message == "response without messages[0].id"
    assert r.policy is UNKNOWN


def test_parse_meta_error_with_details() -> None:
    body = {
        "error": {
            "message": "(#132000) Number of parameters does not match the expected number of params",
            "type": "OAuthException",
            "code": 132000,
            "error_data": {
                "messaging_product": "whatsapp",
                "details": "body: number of localizable_params (2) does not match the expected number of params (3)",
            },
            "fbtrace_id": "AbCdEfGhIjKlMnOp",
        }
    }
    r = parse_response(400, json.dumps(body).encode(), 50.0, None)
    assert r.ok is False and r.wamid is None
    assert r.http_status == 400 and r.error_code == 132000
    assert r.request_id == "AbCdEfGhIjKlMnOp"
    assert r.error_message == (
        "(#132000) Number of parameters does not match the expected number of params "
        "(body: number of localizable_params (2) does not match the expected number of params (3))"
    )
    assert r.policy.action == "fail"


def test_parse_rate_limit_error_keeps_retry_after() -> None:
    body = {
        "error": {
            "message": "(#130429) Rate limit hit",
            "type": "OAuthException",
            "code": 130429,
            "error_data": {"messaging_product": "whatsapp",
                           "details": "Cloud API message throughput has been reached."},
            "error_subcode": 2494055,
            "fbtrace_id": "A1b2C3",
        }
    }
    r = parse_response(400, json.dumps(body).encode(), 3.0, 2.5)
    assert r.error_code == 130429 and r.retry_after == 2.5
    assert r.policy.action == "throttle"
    assert "throughput" in (r.error_message or "")


def test_parse_error_without_details_or_trace() -> None:
    body = {"error": {"message": "Invalid OAuth access token.", "type": "OAuthException", "code": 190}}
    r = parse_response(401, json.dumps(body).encode(), 1.0, None)
    assert r.error_code == 190 and r.request_id is None
    assert r.error_message == "Invalid OAuth access token."
    assert r.policy.pause_sender


def test_parse_error_code_as_string() -> None:
    r = parse_response(400, b'{"error": {"message": "x", "code": "131026"}}', 1.0, None)
    assert r.error_code == 131026
    r = parse_response(400, b'{"error": {"message": "x", "code": "weird"}}', 1.0, None)
    assert r.error_code is None


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (502, b"<html><head><title>502 Bad Gateway</title></head><body>Bad Gateway</body></html>"),
        (503, b"Service Unavailable"),
        (500, b""),
        (504, b"<!DOCTYPE html><html>upstream timeout"),
    ],
)
def test_parse_non_json_server_errors_are_retried(status: int, body: bytes) -> None:
    r = parse_response(status, body, 30.0, None)
    assert r.ok is False and r.error_code is None
    assert r.error_message == f"HTTP {status}"
    assert r.policy is SERVER_ERROR
    assert decide(r, claimed()).action == "retry"


def test_parse_non_json_client_error_fails() -> None:
    r = parse_response(400, b"<html>nope</html>", 1.0, None)
    assert r.error_code is None and r.policy is UNKNOWN
    assert decide(r, claimed()).action == "fail"


def test_parse_429_without_body_is_retried_with_retry_after() -> None:
    r = parse_response(429, b"Too Many Requests", 1.0, 9.0)
    assert r.retry_after == 9.0 and r.policy.action == "retry"
    d = decide(r, claimed())
    assert d.action == "retry" and d.delay_s >= 9.0


def test_parse_json_array_body() -> None:
    r = parse_response(500, b"[1, 2]", 1.0, None)
    assert r.ok is False and r.error_code is None and r.policy is SERVER_ERROR


# ---- fallback triggers in the decision, and a provider that never answers ---------------


@pytest.mark.parametrize("kind", ["otp", "transactional", "marketing"])
def test_exhausted_retries_fall_back_when_the_job_has_a_fallback(kind: str) -> None:
    sched = SCHEDULES[kind]
    job = ClaimedJob(uuid.uuid4(), kind, "main", "+919876543210", {}, sched.max_attempts, has_fallback=True)
    d = decide(error_result(131000, 500), job)
    assert d.action == "fallback" and d.status == "failed"
    early = ClaimedJob(uuid.uuid4(), kind, "main", "+919876543210", {}, 1, has_fallback=True)
    assert decide(error_result(131000, 500), early).action == "retry"


@pytest.mark.parametrize("code", [131026, 131047, 131049, 131050, 130472, 131063, 130497])
def test_undeliverable_falls_back_at_once_when_the_job_has_a_fallback(code: int) -> None:
    job = ClaimedJob(uuid.uuid4(), "otp", "main", "+919876543210", {}, 1, has_fallback=True)
    d = decide(error_result(code), job)
    assert d.action == "fallback"


def test_a_provider_that_never_answers_times_out_and_is_retried() -> None:
    """A real TCP server that accepts and never answers: the send times out and is retried."""
    import asyncio

    from wanotify.config import SenderConfig, Settings
    from wanotify.providers.whatsapp import new_client, send_message

    async def main() -> SendResult:
        async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await asyncio.sleep(5)
            writer.close()

        server = await asyncio.start_server(hang, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        settings = Settings(graph_api_url=f"http://127.0.0.1:{port}", http_timeout_s=0.3)
        sender = SenderConfig(name="t", phone_number_id="12345", waba_id="12345", access_token="x")
        client = new_client(settings)
        try:
            return await send_message(client, settings, sender, {"messaging_product": "whatsapp"})
        finally:
            await client.close()
            server.close()

    res = asyncio.run(main())
    assert not res.ok and res.http_status is None and "timeout" in (res.error_message or "")
    assert res.policy.action == "retry"
    assert decide(res, claimed(attempt=1)).action == "retry"
