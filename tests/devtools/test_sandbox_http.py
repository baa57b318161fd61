"""The sandbox over real HTTP: uvicorn on a loopback port, a real signed-webhook receiver."""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from wanotify.config import Settings
from wanotify.devtools.sandbox import DEFAULT_RULES, uvicorn_config

SECRET = "test-app-secret"
MAIN = {
    "name": "main",
    "phone_number_id": "106540352242922",
    "waba_id": "102290129340398",
    "display_phone_number": "+15550100001",
    "access_token": "tok-main",
    "mps": 2000,
    "pair_burst": 5,
    "pair_interval_s": 6.0,
}
LIMITED = {
    "name": "limited",
    "phone_number_id": "200000000000001",
    "waba_id": "200000000000099",
    "display_phone_number": "+15550100002",
    "access_token": "tok-limited",
    "mps": 5,
    "pair_burst": 2,
    "pair_interval_s": 60.0,
}
PNID = str(MAIN["phone_number_id"])
WABA = str(MAIN["waba_id"])
AUTH = {"Authorization": "Bearer tok-main"}
DEFAULT_CONFIG = {
    "latency_ms": 0,
    "webhook_delay_ms": 20,
    "read_ratio": 1.0,
    "duplicate_ratio": 0.0,
    "reorder_ratio": 0.0,
    "service_window": True,
}

_numbers = itertools.count(1)


def fresh() -> str:
    """A recipient no other test used (ends in 7: no default failure rule matches)."""
    return f"+9198{next(_numbers):07d}7"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerThread:
    def __init__(self, config: uvicorn.Config) -> None:
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


class Receiver:
    """A minimal webhook receiver that checks X-Hub-Signature-256 like wanotify's web app."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.bad_signatures = 0
        self.fail_next = 0
        self.sms_callbacks: list[tuple[dict[str, str], bool]] = []
        self.sms_url = ""
        self.lock = threading.Lock()

    async def whatsapp(self, request: Request) -> Response:
        raw = await request.body()
        got = request.headers.get("x-hub-signature-256", "")
        want = "sha256=" + hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(got, want):
            self.bad_signatures += 1
            return Response(status_code=401)
        with self.lock:
            if self.fail_next > 0:
                self.fail_next -= 1
                return Response(status_code=500)
            self.posts.append(json.loads(raw))
        return Response("ok")

    async def sms_status(self, request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode()))
        data = self.sms_url + "".join(k + form[k] for k in sorted(form))
        mac = hmac.new(b"twilio-token", data.encode(), hashlib.sha1).digest()
        ok = request.headers.get("x-twilio-signature") == base64.b64encode(mac).decode()
        self.sms_callbacks.append((form, ok))
        return Response("")

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/webhooks/whatsapp", self.whatsapp, methods=["POST"]),
                Route("/sms-status", self.sms_status, methods=["POST"]),
            ]
        )

    def clear(self) -> None:
        with self.lock:
            self.posts.clear()
            self.sms_callbacks.clear()
            self.bad_signatures = 0
            self.fail_next = 0

    def statuses(self) -> list[dict[str, Any]]:
        return [
            st
            for body in list(self.posts)
            for entry in body["entry"]
            for change in entry["changes"]
            for st in change["value"].get("statuses", [])
        ]

    def statuses_of(self, wamid: str) -> list[dict[str, Any]]:
        return [s for s in self.statuses() if s["id"] == wamid]


class Env:
    def __init__(self, base: str, receiver: Receiver) -> None:
        self.base = base
        self.receiver = receiver
        self.http = httpx.Client(base_url=base, timeout=10)

    def send(
        self,
        payload: dict[str, Any],
        *,
        pnid: str = PNID,
        headers: dict[str, str] | None = None,
        version: str = "v23.0",
    ) -> httpx.Response:
        return self.http.post(
            f"/{version}/{pnid}/messages",
            json=payload,
            headers=AUTH if headers is None else headers,
        )

    def flush(self) -> dict[str, Any]:
        r = self.http.post("/_sandbox/flush")
        assert r.status_code == 200
        return dict(r.json())

    def wait(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError("condition not met in time")
            self.flush()
            time.sleep(0.02)


def text(to: str, body: str = "hello") -> dict[str, Any]:
    return {"messaging_product": "whatsapp", "to": to, "type": "text", "text": {"body": body}}


def order_confirmation(to: str, params: int = 3, **extra: Any) -> dict[str, Any]:
    values = ["Rahul Sharma", "ZEC-2026-0042", "₹45,000"][:params]
    return {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to,
        "type": "template",
        "template": {
            "name": "order_confirmation_v2",
            "language": {"code": "en"},
            "components": [
                {"type": "body", "parameters": [{"type": "text", "text": v} for v in values]}
            ],
        },
        **extra,
    }


def otp(to: str, code: str = "483920") -> dict[str, Any]:
    return {
        "messaging_product": "whatsapp",
        "to": to,
        "type": "template",
        "template": {
            "name": "otp_code",
            "language": {"code": "en"},
            "components": [
                {"type": "body", "parameters": [{"type": "text", "text": code}]},
                {
                    "type": "button",
                    "sub_type": "url",
                    "index": "0",
                    "parameters": [{"type": "text", "text": code}],
                },
            ],
        },
    }


def graph_error(r: httpx.Response) -> dict[str, Any]:
    body = r.json()
    assert set(body) == {"error"}
    err = dict(body["error"])
    assert isinstance(err["message"], str) and isinstance(err["code"], int)
    assert err["type"] in ("OAuthException", "GraphMethodException")
    assert len(err["fbtrace_id"]) == 23
    return err


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    receiver = Receiver()
    rport, sport = free_port(), free_port()
    receiver.sms_url = f"http://127.0.0.1:{rport}/sms-status"
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        senders=json.dumps([MAIN, LIMITED]),
        app_secret=SECRET,  # type: ignore[arg-type]
        sandbox_failures=None,
        sandbox_webhook_delay_ms=20,
        sandbox_read_ratio=1.0,
        sandbox_duplicate_ratio=0.0,
        sandbox_reorder_ratio=0.0,
    )
    rconfig = uvicorn.Config(receiver.app(), host="127.0.0.1", port=rport, log_level="warning")
    sconfig = uvicorn_config(
        "127.0.0.1", sport, f"http://127.0.0.1:{rport}/webhooks/whatsapp", settings
    )
    with ServerThread(rconfig), ServerThread(sconfig):
        e = Env(f"http://127.0.0.1:{sport}", receiver)
        yield e
        e.http.close()


@pytest.fixture(autouse=True)
def clean(env: Env) -> Iterator[None]:
    env.flush()
    assert env.http.post("/_sandbox/reset").status_code == 200
    assert env.http.post("/_sandbox/config", json=DEFAULT_CONFIG).status_code == 200
    assert env.http.post("/_sandbox/failures", json=DEFAULT_RULES).status_code == 200
    env.receiver.clear()
    yield
    assert env.receiver.bad_signatures == 0


# ---- sends ---------------------------------------------------------------------------------


def test_template_send_answers_like_meta(env: Env) -> None:
    to = fresh()
    r = env.send(order_confirmation(to, biz_opaque_callback_data="job-42"))
    assert r.status_code == 200, r.text
    body = r.json()
    wamid = body["messages"][0]["id"]
    assert body == {
        "messaging_product": "whatsapp",
        "contacts": [{"input": to, "wa_id": to[1:]}],
        "messages": [{"id": wamid, "message_status": "accepted"}],
    }
    assert wamid.startswith("wamid.") and len(wamid) > 40
    assert base64.b64decode(wamid[6:]).find(to[1:].encode()) > 0
    log = env.http.get("/_sandbox/messages").json()["data"]
    assert log[-1] == {
        "seq": log[-1]["seq"],
        "t": log[-1]["t"],
        "phone_number_id": PNID,
        "to": to,
        "type": "template",
        "template": "order_confirmation_v2",
        "code": 0,
        "http_status": 200,
        "wamid": wamid,
        "biz_opaque_callback_data": "job-42",
        "peer": "127.0.0.1",  # the client's address (bench hosts tells hosts apart by it)
    }
    assert abs(log[-1]["t"] - time.time()) < 5


def test_text_send_has_no_message_status_and_ids_are_unique(env: Env) -> None:
    ids = set()
    for _ in range(20):
        r = env.send(text(fresh()))
        assert r.status_code == 200
        assert set(r.json()["messages"][0]) == {"id"}
        ids.add(r.json()["messages"][0]["id"])
    assert len(ids) == 20


def test_mark_as_read(env: Env) -> None:
    body = {"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.HBgLMTIzNDU2"}
    r = env.send(body)
    assert r.status_code == 200 and r.json() == {"success": True}
    r = env.send({"messaging_product": "whatsapp", "status": "read"})
    assert r.status_code == 400
    assert graph_error(r)["message"] == "(#100) The parameter message_id is required."


def test_auth_and_unknown_ids(env: Env) -> None:
    r = env.send(text(fresh()), headers={})
    assert r.status_code == 401 and graph_error(r)["code"] == 190
    r = env.send(text(fresh()), headers={"Authorization": "Bearer nope"})
    err = graph_error(r)
    assert r.status_code == 401 and err["code"] == 190 and err["type"] == "OAuthException"
    for pnid, headers in (("999999999", AUTH), (LIMITED["phone_number_id"], AUTH)):
        r = env.send(text(fresh()), pnid=str(pnid), headers=headers)
        err = graph_error(r)
        assert r.status_code == 400
        assert (err["code"], err["error_subcode"], err["type"]) == (100, 33, "GraphMethodException")
        assert err["message"].startswith(
            f"Unsupported post request. Object with ID '{pnid}' does not exist, cannot be loaded "
            "due to missing permissions, or does not support this operation"
        )
    # the access_token query parameter works as on the Graph API
    r = env.http.post(f"/v23.0/{PNID}/messages?access_token=tok-main", json=text(fresh()))
    assert r.status_code == 200


@pytest.mark.parametrize(
    ("payload", "code", "status", "message", "details"),
    [
        (b"{not json", 100, 400, "(#100) Invalid parameter", "The request body is not valid JSON."),
        (
            {"to": "+919876543210", "type": "text", "text": {"body": "x"}},
            100,
            400,
            "(#100) The parameter messaging_product is required.",
            None,
        ),
        (
            {"messaging_product": "whatsapp", "type": "text", "text": {"body": "x"}},
            100,
            400,
            "(#100) The parameter to is required.",
            None,
        ),
        (
            {"messaging_product": "whatsapp", "to": "not-a-number", "text": {"body": "x"}},
            131009,
            400,
            "(#131009) Parameter value is not valid",
            "...",
        ),
        (
            {"messaging_product": "whatsapp", "to": "+15550100001", "text": {"body": "x"}},
            131021,
            400,
            "(#131021) Recipient cannot be sender",
            "...",
        ),
        (
            {"messaging_product": "whatsapp", "to": "+919876543210", "type": "fax", "fax": {}},
            100,
            400,
            None,
            None,
        ),
        (
            {"messaging_product": "whatsapp", "to": "+919876543210", "type": "text"},
            100,
            400,
            "(#100) The parameter text is required.",
            None,
        ),
        (
            {"messaging_product": "whatsapp", "to": "+919876543210", "text": {"body": ""}},
            100,
            400,
            "(#100) The parameter text['body'] is required.",
            None,
        ),
        (
            {"messaging_product": "whatsapp", "to": "+919876543210", "text": {"body": "x" * 4097}},
            100,
            400,
            "(#100) Invalid parameter",
            "Param text['body'] must be at most 4096 characters long.",
        ),
        (
            {"messaging_product": "whatsapp", "to": "+919876543210", "type": "image", "image": {}},
            100,
            400,
            "(#100) Invalid parameter",
            "Param image must contain either 'id' or 'link'.",
        ),
        (
            {
                "messaging_product": "whatsapp",
                "to": "+919876543210",
                "type": "template",
                "template": {"name": "x"},
            },
            100,
            400,
            "(#100) The parameter template['language'] is required.",
            None,
        ),
        (
            {
                "messaging_product": "whatsapp",
                "to": "+919876543210",
                "type": "template",
                "template": {"name": "no_such_template", "language": {"code": "en"}},
            },
            132001,
            404,
            "(#132001) Template name does not exist in the translation",
            "template name (no_such_template) does not exist in en",
        ),
        (
            order_confirmation("+919876543210", params=2),
            132000,
            400,
            "(#132000) Number of parameters does not match the expected number of params",
            "body: number of localizable_params (2) does not match the expected number of params (3)",
        ),
    ],
)
def test_validation_errors_match_meta(
    env: Env,
    payload: dict[str, Any] | bytes,
    code: int,
    status: int,
    message: str | None,
    details: str | None,
) -> None:
    if isinstance(payload, bytes):
        r = env.http.post(
            f"/v23.0/{PNID}/messages",
            content=payload,
            headers={**AUTH, "Content-Type": "application/json"},
        )
    else:
        r = env.send(payload)
    err = graph_error(r)
    assert r.status_code == status
    assert err["code"] == code
    if message is not None:
        assert err["message"] == message
    if details is None:
        assert "error_data" not in err or code != 100 or message is None or "Invalid" in message
    elif details != "...":
        assert err["error_data"] == {"messaging_product": "whatsapp", "details": details}
    else:
        assert err["error_data"]["details"]
    log = env.http.get("/_sandbox/messages").json()["data"]
    assert log[-1]["code"] == code and log[-1]["http_status"] == status and log[-1]["wamid"] is None


# ---- limits --------------------------------------------------------------------------------


def test_throughput_limit_130429_and_rejections_do_not_consume(env: Env) -> None:
    headers = {"Authorization": "Bearer tok-limited"}
    pnid = str(LIMITED["phone_number_id"])
    codes = []
    for _ in range(8):
        r = env.send(order_confirmation(fresh()), pnid=pnid, headers=headers)
        codes.append(200 if r.status_code == 200 else graph_error(r)["code"])
        if r.status_code != 200:
            assert r.status_code == 400
            assert graph_error(r)["message"] == "(#130429) Rate limit hit"
    assert codes == [200] * 5 + [130429] * 3
    time.sleep(1.05)
    r = env.send(order_confirmation(fresh()), pnid=pnid, headers=headers)
    assert r.status_code == 200
    stats = env.http.get("/_sandbox/stats").json()
    assert stats["by_phone_number_id"][pnid]["by_code"] == {"0": 6, "130429": 3}


def test_pair_limit_131056(env: Env) -> None:
    headers = {"Authorization": "Bearer tok-limited"}
    pnid = str(LIMITED["phone_number_id"])
    to = fresh()
    results = [env.send(order_confirmation(to), pnid=pnid, headers=headers) for _ in range(3)]
    assert [r.status_code for r in results] == [200, 200, 400]
    err = graph_error(results[2])
    assert err["code"] == 131056
    assert err["message"] == "(#131056) (Business Account, Consumer Account) pair rate limit hit"
    # another recipient is not limited by that pair
    assert env.send(order_confirmation(fresh()), pnid=pnid, headers=headers).status_code == 200


# ---- failure injection and webhooks --------------------------------------------------------


def test_default_rule_0001_is_transient_500(env: Env) -> None:
    to = "+919876500001"
    first, second, third = (env.send(order_confirmation(to)) for _ in range(3))
    for r in (first, second):
        assert r.status_code == 500
        err = graph_error(r)
        assert err["code"] == 131000 and err["message"] == "(#131000) Something went wrong"
    assert third.status_code == 200


@pytest.mark.parametrize(("to", "code"), [("+919876500000", 131026), ("+919876500002", 131049)])
def test_default_webhook_failures(env: Env, to: str, code: int) -> None:
    r = env.send(order_confirmation(to, biz_opaque_callback_data="cb-1"))
    assert r.status_code == 200
    wamid = r.json()["messages"][0]["id"]
    env.wait(lambda: any(s["status"] == "failed" for s in env.receiver.statuses_of(wamid)))
    statuses = env.receiver.statuses_of(wamid)
    assert [s["status"] for s in statuses] == ["sent", "failed"]
    failed = statuses[1]
    assert failed["recipient_id"] == to[1:]
    assert failed["biz_opaque_callback_data"] == "cb-1"
    assert "pricing" not in failed
    (error,) = failed["errors"]
    assert error["code"] == code
    assert error["title"] == error["message"] and error["error_data"]["details"]
    assert (
        error["href"]
        == "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/"
    )


def test_status_webhooks_shape_and_signature(env: Env) -> None:
    to = fresh()
    r = env.send(otp(to), version="v23.0")
    wamid = r.json()["messages"][0]["id"]
    env.wait(lambda: len(env.receiver.statuses_of(wamid)) >= 3)
    body = next(
        b
        for b in env.receiver.posts
        for e in b["entry"]
        for c in e["changes"]
        if any(s["id"] == wamid for s in c["value"].get("statuses", []))
    )
    assert body["object"] == "whatsapp_business_account"
    entry = next(e for e in body["entry"] if e["id"] == WABA)
    change = entry["changes"][0]
    assert change["field"] == "messages"
    assert change["value"]["messaging_product"] == "whatsapp"
    assert change["value"]["metadata"] == {
        "display_phone_number": "15550100001",
        "phone_number_id": PNID,
    }
    sent, delivered, read = env.receiver.statuses_of(wamid)
    assert [sent["status"], delivered["status"], read["status"]] == ["sent", "delivered", "read"]
    assert sent["recipient_id"] == to[1:] and sent["timestamp"].isdigit()
    assert int(sent["timestamp"]) <= int(delivered["timestamp"]) <= int(read["timestamp"])
    assert sent["pricing"] == {
        "billable": True,
        "pricing_model": "PMP",
        "category": "authentication",
        "type": "regular",
    }
    conv = sent["conversation"]
    assert len(conv["id"]) == 32 and conv["origin"] == {"type": "authentication"}
    assert int(conv["expiration_timestamp"]) > time.time()
    assert "expiration_timestamp" not in delivered["conversation"]
    assert "pricing" not in read and "biz_opaque_callback_data" not in sent
    # webhooks v24.0+: no conversation object
    r = env.send(order_confirmation(fresh()), version="v24.0")
    wamid = r.json()["messages"][0]["id"]
    env.wait(lambda: len(env.receiver.statuses_of(wamid)) >= 3)
    sent = env.receiver.statuses_of(wamid)[0]
    assert "conversation" not in sent and sent["pricing"]["category"] == "utility"


def test_batching_duplicates_and_reordering(env: Env) -> None:
    cfg = {"webhook_delay_ms": 0, "read_ratio": 0.0, "duplicate_ratio": 1.0, "reorder_ratio": 1.0}
    env.http.post("/_sandbox/config", json=cfg)
    with httpx.Client(base_url=env.base, headers=AUTH) as c:
        wamids = [
            c.post(f"/v23.0/{PNID}/messages", json=order_confirmation(fresh())).json()["messages"][
                0
            ]["id"]
            for _ in range(120)
        ]
    env.wait(lambda: len(env.receiver.statuses()) >= 120 * 4)
    statuses = env.receiver.statuses()
    assert len(statuses) == 120 * 4  # sent + delivered, each twice
    sizes = [
        sum(len(c["value"]["statuses"]) for e in b["entry"] for c in e["changes"])
        for b in env.receiver.posts
    ]
    assert max(sizes) <= 100 and len(sizes) < len(statuses)
    for wamid in wamids:
        seq = [s["status"] for s in env.receiver.statuses_of(wamid)]
        assert seq.count("sent") == 2 and seq.count("delivered") == 2
        assert seq.index("delivered") < seq.index("sent")
    stats = env.http.get("/_sandbox/stats").json()["webhooks"]
    assert stats["duplicates"] == 240 and stats["reordered"] == 120


def test_failed_webhook_posts_are_retried(env: Env) -> None:
    env.receiver.fail_next = 2
    r = env.send(order_confirmation(fresh()))
    wamid = r.json()["messages"][0]["id"]
    env.wait(lambda: len(env.receiver.statuses_of(wamid)) >= 3, timeout=10)
    assert env.http.get("/_sandbox/stats").json()["webhooks"]["posts_failed"] >= 2


def test_service_window_and_inbound_messages(env: Env) -> None:
    to = fresh()
    r = env.send(text(to))
    assert r.status_code == 200  # accepted, then fails asynchronously as on Meta
    wamid = r.json()["messages"][0]["id"]
    env.wait(lambda: len(env.receiver.statuses_of(wamid)) >= 1)
    (failed,) = env.receiver.statuses_of(wamid)
    assert failed["status"] == "failed" and failed["errors"][0]["code"] == 131047

    r = env.http.post("/_sandbox/inbound", json={"from": to, "text": "STOP", "name": "Asha"})
    assert r.status_code == 200
    inbound_id = r.json()["id"]
    env.wait(
        lambda: any(
            "messages" in c["value"]
            for b in env.receiver.posts
            for e in b["entry"]
            for c in e["changes"]
        )
    )
    value = next(
        c["value"]
        for b in env.receiver.posts
        for e in b["entry"]
        for c in e["changes"]
        if "messages" in c["value"]
    )
    assert value["contacts"] == [{"profile": {"name": "Asha"}, "wa_id": to[1:]}]
    (msg,) = value["messages"]
    assert msg["from"] == to[1:] and msg["id"] == inbound_id and msg["type"] == "text"
    assert msg["text"] == {"body": "STOP"} and msg["timestamp"].isdigit()

    # inside the customer service window: free-form text goes through, utility is free
    r = env.send(text(to))
    wamid = r.json()["messages"][0]["id"]
    r = env.send(order_confirmation(to))
    tmpl = r.json()["messages"][0]["id"]
    env.wait(
        lambda: (
            len(env.receiver.statuses_of(wamid)) >= 3 and len(env.receiver.statuses_of(tmpl)) >= 3
        )
    )
    sent = env.receiver.statuses_of(wamid)[0]
    assert sent["status"] == "sent"
    assert sent["pricing"] == {
        "billable": False,
        "pricing_model": "PMP",
        "category": "service",
        "type": "free_customer_service",
    }
    assert env.receiver.statuses_of(tmpl)[0]["pricing"]["type"] == "free_customer_service"


def test_custom_rules_latency_and_timeouts(env: Env) -> None:
    rules = [
        {"match": "*4444", "code": 131048, "mode": "sync"},
        {"match": "*5555", "latency_ms": 400, "times": 1},
    ]
    r = env.http.post("/_sandbox/failures", json=rules)
    assert r.status_code == 200 and r.json() == [
        {"match": "*4444", "code": 131048, "mode": "sync"},
        {"match": "*5555", "times": 1, "latency_ms": 400.0},
    ]
    r = env.send(order_confirmation("+919876544444"))
    assert r.status_code == 400 and graph_error(r)["code"] == 131048
    # the client gives up, but the send was accepted: the ambiguous timeout of real life
    with pytest.raises(httpx.ReadTimeout):
        env.http.post(
            f"/v23.0/{PNID}/messages",
            json=order_confirmation("+919876545555"),
            headers=AUTH,
            timeout=0.15,
        )
    time.sleep(0.4)
    log = env.http.get("/_sandbox/messages").json()["data"]
    assert log[-1]["to"] == "+919876545555" and log[-1]["code"] == 0
    started = time.monotonic()
    assert env.send(order_confirmation("+919876545555")).status_code == 200
    assert time.monotonic() - started < 0.3  # times=1: only the first was slow
    assert (
        env.http.post("/_sandbox/failures", json=[{"match": "*", "mode": "soon"}]).status_code
        == 400
    )


def test_global_latency(env: Env) -> None:
    env.http.post("/_sandbox/config", json={"latency_ms": 150})
    started = time.monotonic()
    assert env.send(order_confirmation(fresh())).status_code == 200
    assert time.monotonic() - started >= 0.15


# ---- Graph reads -------------------------------------------------------------------------


def test_phone_number_templates_and_token_endpoints(env: Env) -> None:
    r = env.http.get(f"/v23.0/{PNID}", headers=AUTH)
    assert r.status_code == 200
    assert r.json() == {
        "verified_name": "main",
        "code_verification_status": "VERIFIED",
        "display_phone_number": "+1 555-010-0001",
        "quality_rating": "GREEN",
        "platform_type": "CLOUD_API",
        "throughput": {"level": "HIGH"},
        "name_status": "APPROVED",
        "messaging_limit_tier": "TIER_UNLIMITED",
        "webhook_configuration": {"application": r.json()["webhook_configuration"]["application"]},
        "id": PNID,
    }
    r = env.http.get(f"/v23.0/{PNID}?fields=quality_rating,throughput", headers=AUTH)
    assert r.json() == {"quality_rating": "GREEN", "throughput": {"level": "HIGH"}, "id": PNID}
    r = env.http.get(f"/v23.0/{PNID}", headers={"Authorization": "Bearer tok-limited"})
    assert r.status_code == 400 and graph_error(r)["error_subcode"] == 33

    r = env.http.get(f"/v23.0/{WABA}/message_templates", headers=AUTH, params={"limit": 2})
    assert r.status_code == 200
    page = r.json()
    assert len(page["data"]) == 2 and "next" in page["paging"]
    names = {t["name"] for t in page["data"]}
    while "next" in page.get("paging", {}):
        page = env.http.get(page["paging"]["next"], headers=AUTH).json()
        names |= {t["name"] for t in page["data"]}
    assert {"order_confirmation_v2", "appointment_reminder", "otp_code"} <= names
    r = env.http.get(f"/v23.0/{WABA}/message_templates", headers=AUTH, params={"name": "otp_code"})
    (tmpl,) = r.json()["data"]
    assert tmpl["status"] == "APPROVED" and tmpl["category"] == "AUTHENTICATION"

    r = env.http.get(f"/v23.0/{WABA}/phone_numbers", headers=AUTH)
    assert [p["id"] for p in r.json()["data"]] == [PNID]
    r = env.http.get("/v23.0/debug_token", params={"input_token": "tok-main"}, headers=AUTH)
    data = r.json()["data"]
    assert data["is_valid"] is True and "whatsapp_business_messaging" in data["scopes"]
    r = env.http.get("/v23.0/debug_token", params={"input_token": "bad"}, headers=AUTH)
    assert r.json()["data"]["is_valid"] is False

    r = env.http.get(f"/v23.0/{PNID}/messages", headers=AUTH)
    assert r.status_code == 400 and graph_error(r)["code"] == 100
    r = env.http.get("/nothing-here", headers=AUTH)
    assert r.status_code == 400 and graph_error(r)["code"] == 2500


# ---- SMS -----------------------------------------------------------------------------------


def test_fake_sms_provider(env: Env) -> None:
    auth = ("AC" + "1" * 32, "twilio-token")
    url = f"/2010-04-01/Accounts/{auth[0]}/Messages.json"
    form = {"To": "+919876543210", "From": "+15005550006", "Body": "Your code is 483920"}
    r = env.http.post(url, data={**form, "StatusCallback": env.receiver.sms_url}, auth=auth)
    assert r.status_code == 201
    msg = r.json()
    assert msg["sid"].startswith("SM") and len(msg["sid"]) == 34
    assert (msg["status"], msg["to"], msg["from"], msg["body"]) == (
        "queued",
        form["To"],
        form["From"],
        form["Body"],
    )
    assert msg["account_sid"] == auth[0] and msg["date_created"].endswith("+0000")

    r = env.http.post(url, data={**form, "To": "12345"}, auth=auth)
    assert r.status_code == 400
    assert r.json() == {
        "code": 21211,
        "message": "The 'To' number 12345 is not a valid phone number.",
        "more_info": "https://www.twilio.com/docs/errors/21211",
        "status": 400,
    }
    r = env.http.post(url, data=form)
    assert r.status_code == 401 and r.json()["code"] == 20003

    env.http.post(
        "/_sandbox/failures",
        json=[{"match": "*3210", "code": 21610, "channel": "sms", "mode": "sync"}],
    )
    r = env.http.post(url, data=form, auth=auth)
    assert r.status_code == 400 and r.json()["code"] == 21610

    env.wait(lambda: len(env.receiver.sms_callbacks) >= 2)
    statuses = [f["MessageStatus"] for f, _ in env.receiver.sms_callbacks]
    assert statuses == ["sent", "delivered"]
    assert all(ok for _, ok in env.receiver.sms_callbacks)
    log = env.http.get("/_sandbox/sms").json()["data"]
    assert [e["code"] for e in log] == [0, 21211, 21610]
    assert log[0]["sid"] == msg["sid"] and log[0]["body"] == form["Body"]


# ---- control endpoints -------------------------------------------------------------------


def test_stats_log_paging_reset_and_config(env: Env) -> None:
    for _ in range(5):
        env.send(order_confirmation(fresh()))
    env.send({"messaging_product": "whatsapp"})
    stats = env.http.get("/_sandbox/stats").json()
    assert (
        stats["requests"] == 6 and stats["accepted"] == 5 and stats["by_code"] == {"0": 5, "100": 1}
    )
    log = env.http.get("/_sandbox/messages").json()
    seqs = [e["seq"] for e in log["data"]]
    assert seqs == list(range(seqs[0], seqs[0] + 6)) and log["last_seq"] == seqs[-1]
    page = env.http.get("/_sandbox/messages", params={"after": seqs[1], "limit": 2}).json()["data"]
    assert [e["seq"] for e in page] == seqs[2:4]
    assert env.http.post("/_sandbox/reset").status_code == 200
    assert env.http.get("/_sandbox/messages").json()["data"] == []
    assert env.http.get("/_sandbox/stats").json()["requests"] == 0
    env.send(order_confirmation(fresh()))
    assert env.http.get("/_sandbox/messages").json()["data"][0]["seq"] == seqs[-1] + 1

    assert env.http.post("/_sandbox/config", json={"read_ratio": 2}).status_code == 400
    assert env.http.post("/_sandbox/config", json={"bogus": 1}).status_code == 400
    cfg = env.http.post("/_sandbox/config", json={"duplicate_ratio": 0.25}).json()
    assert cfg["duplicate_ratio"] == 0.25 and cfg["signed"] is True
    assert env.http.get("/_sandbox/healthz").json()["status"] == "ok"
    assert env.http.get("/_sandbox/failures").json() == DEFAULT_RULES


# ---- a real client library -----------------------------------------------------------------


class _ToSandbox(httpx.BaseTransport):
    """Sends graph.facebook.com traffic to the sandbox (pywa hard-codes its base URL)."""

    def __init__(self, base: str) -> None:
        self.base = httpx.URL(base)
        self.inner = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.url = request.url.copy_with(
            scheme=self.base.scheme, host=self.base.host, port=self.base.port
        )
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def test_pywa_sends_a_template_and_a_text_unchanged(env: Env) -> None:
    pywa = pytest.importorskip("pywa")
    from pywa.types.templates import BodyText, TemplateLanguage

    session = httpx.Client(transport=_ToSandbox(env.base))
    wa = pywa.WhatsApp(phone_id=PNID, token="tok-main", session=session, api_version="23.0")
    to = fresh()
    sent = wa.send_template(
        to=to,
        name="order_confirmation_v2",
        language=TemplateLanguage.ENGLISH,
        params=[BodyText.params("Rahul Sharma", "ZEC-2026-0042", "₹45,000")],
        tracker="order-42",
    )
    assert sent.id.startswith("wamid.")
    env.http.post("/_sandbox/inbound", json={"from": to, "text": "hi"})
    msg = wa.send_message(to=to, text="Your order has shipped")
    assert msg.id.startswith("wamid.") and msg.id != sent.id
    log = env.http.get("/_sandbox/messages").json()["data"]
    assert [(e["type"], e["code"], e["wamid"]) for e in log[-2:]] == [
        ("template", 0, sent.id),
        ("text", 0, msg.id),
    ]
    assert log[-2]["biz_opaque_callback_data"] == "order-42"
    # Meta's error bodies become pywa's typed errors
    with pytest.raises(pywa.errors.WhatsAppError) as exc:
        wa.send_template(
            to=fresh(),
            name="order_confirmation_v2",
            language=TemplateLanguage.ENGLISH,
            params=[BodyText.params("only one")],
        )
    assert exc.value.code == 132000 and exc.value.status_code == 400
    assert type(exc.value).__name__ == "TemplateParamCountMismatch"
    assert exc.value.details == (
        "body: number of localizable_params (1) does not match the expected number of params (3)"
    )
    session.close()
