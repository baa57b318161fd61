"""Access tokens: sources, rotation, the sandbox's expiry, ``wanotify senders check``."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from starlette.testclient import TestClient

from wanotify.config import SenderConfig, Settings
from wanotify.delivery import token_watch
from wanotify.providers import tokens
from wanotify.providers.policy import classify, token_refused
from wanotify.providers.whatsapp import parse_response

PNID, WABA = "300000000000001", "300000000000099"
BASE = {"name": "rot", "phone_number_id": PNID, "waba_id": WABA, "display_phone_number": "+15550109999"}


def _write(path: Path, value: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(value + "\n")
    os.replace(tmp, path)  # as Docker/Kubernetes do: a new inode


# ---- configuration ---------------------------------------------------------------------------


def test_exactly_one_token_source_is_required(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="exactly one of access_token, access_token_file"):
        SenderConfig.model_validate(BASE)
    with pytest.raises(ValidationError, match=r"got access_token, access_token_file"):
        SenderConfig.model_validate({**BASE, "access_token": "a", "access_token_file": "/x"})
    f = tmp_path / "tok"
    _write(f, "EAAfile")
    s = SenderConfig.model_validate({**BASE, "access_token_file": str(f)})
    assert tokens.current(s).value == "EAAfile"
    monkeypatch.setenv("WA_TOKEN_ROT", "EAAenv")
    s = SenderConfig.model_validate({**BASE, "access_token_env": "WA_TOKEN_ROT"})
    assert tokens.current(s).value == "EAAenv"
    monkeypatch.delenv("WA_TOKEN_ROT")
    with pytest.raises(ValidationError, match="access_token_env: environment variable WA_TOKEN_ROT is not set"):
        SenderConfig.model_validate({**BASE, "access_token_env": "WA_TOKEN_ROT"})


def test_token_reprs_never_show_the_value() -> None:
    t = tokens.Token("EAAsecretvalue", tokens.fingerprint("EAAsecretvalue"))
    assert "EAAsecretvalue" not in repr(t) + str(t) + f"{t}"
    assert t.fingerprint.startswith("sha256:") and len(t.fingerprint) == 19
    s = SenderConfig.model_validate({**BASE, "access_token": "EAAsecretvalue"})
    assert "EAAsecretvalue" not in repr(s) + str(s.model_dump()) + s.model_dump_json()


def test_a_secret_file_is_re_read_when_it_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "token"
    _write(f, "EAAone")
    src = tokens.FileSource(str(f))
    assert src.get().value == "EAAone"
    _write(f, "EAAtwo")
    assert src.get().value == "EAAone"  # checked at most once a second: no stat per send
    assert src.get(force=True).value == "EAAtwo"
    monkeypatch.setattr(tokens, "CHECK_INTERVAL_S", 0.0)
    f.write_text("")  # being rewritten: keep the last good token
    assert src.get().value == "EAAtwo" and src.error == "the file is empty"
    f.unlink()
    assert src.get().value == "EAAtwo"
    _write(f, "EAAthree")
    assert src.get().value == "EAAthree" and src.error is None
    with pytest.raises(tokens.TokenUnavailable, match="No such file"):
        tokens.FileSource(str(tmp_path / "missing")).get()


def test_refused_tokens_pause_the_sender() -> None:
    assert classify(190).pause_sender and classify(102).pause_sender
    assert classify(None, 401).pause_sender  # a 401 without Meta's body
    assert classify(999999, 401).pause_sender
    body = json.dumps({"error": {"message": "Error validating access token: Session has expired on x",
                                 "type": "OAuthException", "code": 190, "error_subcode": 463,
                                 "fbtrace_id": "Abc"}}).encode()
    res = parse_response(401, body, 1.0, None)
    assert (res.error_code, res.error_subcode, res.policy.pause_sender) == (190, 463, True)
    assert token_refused(190, 401) and token_refused(None, 401)
    assert not token_refused(131042, 400)
    assert tokens.describe_error(190, 463, 401) == "access token expired (190/463)"


# ---- the sandbox -----------------------------------------------------------------------------


@pytest.fixture()
def secret(tmp_path: Path) -> Path:
    f = tmp_path / "wa_token"
    _write(f, "EAArotA")
    return f


def _settings(secret: Path, **extra: Any) -> Settings:
    senders = [{**BASE, "access_token_file": str(secret)},
               {"name": "other", "phone_number_id": "300000000000002", "waba_id": "300000000000098",
                "display_phone_number": "+15550109998", "access_token": "EAAother"}]
    return Settings(senders=json.dumps(senders), graph_api_url="http://testserver", **extra)


@pytest.fixture()
def sandbox(secret: Path) -> Iterator[TestClient]:
    from wanotify.devtools.sandbox import create_app

    with TestClient(create_app(_settings(secret), webhook_url=None)) as client:
        yield client


def _send(client: TestClient, token: str) -> Any:
    return client.post(f"/v23.0/{PNID}/messages", headers={"Authorization": f"Bearer {token}"}, json={
        "messaging_product": "whatsapp", "to": "+919811100007", "type": "template",
        "template": {"name": "otp_code", "language": {"code": "en"}, "components": [
            {"type": "body", "parameters": [{"type": "text", "text": "123456"}]},
            {"type": "button", "sub_type": "url", "index": "0",
             "parameters": [{"type": "text", "text": "123456"}]}]}})


def test_sandbox_expires_and_rotates_tokens_like_meta(sandbox: TestClient, secret: Path) -> None:
    assert _send(sandbox, "EAArotA").status_code == 200
    fp_a = tokens.fingerprint("EAArotA")
    rows = sandbox.get("/_sandbox/tokens").json()["data"]
    assert rows[0] == {"sender": "rot", "phone_number_id": PNID, "fingerprint": fp_a, "expires_at": 0,
                       "expired": False}
    assert "EAArotA" not in json.dumps(rows)
    r = sandbox.post("/_sandbox/tokens", json={"sender": "rot", "expires_at": "2026-01-01T00:00:00Z"})
    assert r.status_code == 200 and r.json()["data"][0]["expired"] is True
    r = _send(sandbox, "EAArotA")
    err = r.json()["error"]
    assert r.status_code == 401
    assert set(err) == {"message", "type", "code", "error_subcode", "fbtrace_id"}
    assert (err["type"], err["code"], err["error_subcode"]) == ("OAuthException", 190, 463)
    assert err["message"].startswith("Error validating access token: Session has expired on Wednesday, 31-Dec-25")
    # the expired token cannot debug itself either
    r = sandbox.get("/v23.0/debug_token", params={"input_token": "EAArotA"},
                    headers={"Authorization": "Bearer EAArotA"})
    assert r.status_code == 401 and r.json()["error"]["error_subcode"] == 463
    # another valid token can: is_valid false, Meta's error, the expiry
    r = sandbox.get("/v23.0/debug_token", params={"input_token": "EAArotA"},
                    headers={"Authorization": "Bearer EAAother"}).json()["data"]
    assert r["is_valid"] is False and r["error"]["code"] == 190 and r["error"]["subcode"] == 463
    assert r["expires_at"] == 1767225600
    # a new token in the secret file is accepted at once; the old one stays expired
    _write(secret, "EAArotB")
    assert _send(sandbox, "EAArotB").status_code == 200
    assert _send(sandbox, "EAArotA").status_code == 401
    rows = sandbox.get("/_sandbox/tokens").json()["data"]
    assert rows[0]["fingerprint"] == tokens.fingerprint("EAArotB") and rows[0]["expired"] is False
    # unknown token, unknown object
    r = _send(sandbox, "EAAnever")
    assert r.status_code == 401 and r.json()["error"]["code"] == 190
    r = sandbox.get("/v23.0/399999999999999", headers={"Authorization": "Bearer EAArotB"})
    assert r.status_code == 400 and (r.json()["error"]["code"], r.json()["error"]["error_subcode"]) == (100, 33)
    # extend by fingerprint, then never
    sandbox.post("/_sandbox/tokens", json={"fingerprint": fp_a, "expires_in_s": 3600})
    assert _send(sandbox, "EAArotA").status_code == 200
    assert sandbox.post("/_sandbox/tokens", json={"sender": "nope"}).status_code == 400


def test_sandbox_token_expiry_setting(secret: Path) -> None:
    from wanotify.devtools.sandbox import create_app

    fp_other = tokens.fingerprint("EAAother")
    st = _settings(secret, sandbox_token_expiry=json.dumps({"rot": 1, fp_other: "2999-01-01T00:00:00"}))
    with TestClient(create_app(st, webhook_url=None)) as c:
        assert _send(c, "EAArotA").json()["error"]["error_subcode"] == 463
        rows = {r["sender"]: r for r in c.get("/_sandbox/tokens").json()["data"]}
        assert rows["other"]["expires_at"] == 32472144000 and not rows["other"]["expired"]


# ---- wanotify senders check ------------------------------------------------------------------


def test_senders_check(sandbox: TestClient, secret: Path) -> None:
    from wanotify.ops.senders_check import check_all

    st = _settings(secret)
    now = time.time()
    checks = check_all(st, client=sandbox)
    assert [c.ok for c in checks] == [True, True] and not checks[0].warnings
    c = checks[0]
    assert (c.token_valid, c.expires_at, c.messaging_scope, c.number_matches) == (True, None, True, True)
    assert (c.verified_name, c.quality_rating, c.platform_type) == ("rot", "GREEN", "CLOUD_API")
    assert c.token_fingerprint == tokens.fingerprint("EAArotA") and c.token_source == f"file {secret}"

    sandbox.post("/_sandbox/tokens", json={"sender": "rot", "expires_at": now + 3 * 86400})
    c = check_all(st, ["rot"], warn_days=7, client=sandbox)[0]
    assert c.ok and c.warnings == [f"token expires in 3.0 days ({c.expires_at})"]
    assert check_all(st, ["rot"], warn_days=2, client=sandbox)[0].warnings == []

    sandbox.post("/_sandbox/tokens", json={"sender": "rot", "expires_at": now - 60})
    c = check_all(st, ["rot"], client=sandbox)[0]
    assert not c.ok and c.token_valid is False
    assert c.problems[0].startswith("token refused: access token expired (190/463): Error validating")

    unknown = Settings(senders=json.dumps([{**BASE, "access_token": "EAAunknown"}]), graph_api_url="http://testserver")
    c = check_all(unknown, client=sandbox)[0]
    assert c.token_valid is False and "Invalid OAuth access token" in c.problems[0]

    wrong = Settings(senders=json.dumps([{**BASE, "access_token": "EAAother",
                                          "phone_number_id": "300000000000002", "waba_id": "300000000000098"}]),
                     graph_api_url="http://testserver")
    c = check_all(wrong, client=sandbox)[0]
    assert c.number_matches is False and c.problems == [
        "phone number id 300000000000002 is +1 555-010-9998, not the configured +15550109999"]
    assert all("EAA" not in json.dumps(x.as_dict()) for x in checks)


def test_senders_check_usage_errors_exit_2() -> None:
    from typer.testing import CliRunner

    from wanotify.cli.main import app

    r = CliRunner().invoke(app, ["senders", "check", "--sender", "nope"])
    assert r.exit_code == 2 and "unknown sender" in r.output


# ---- automatic resume ------------------------------------------------------------------------


def test_a_new_token_resumes_a_sender_paused_for_its_token(secret: Path, redis_client: Any) -> None:
    from wanotify.pacing.lanes import Lanes, paused_key

    st = _settings(secret)
    rot = st.sender_map["rot"]
    lanes = Lanes(redis_client)
    old = tokens.current(rot, force=True).fingerprint
    lanes.pause("rot", {"kind": "token", "error_code": 190, "token_fingerprint": old})
    lanes.pause("other", {"error_code": 131042, "error": "payment"})
    try:
        assert token_watch.resume_rotated(st, lanes) == []  # same token: stays paused
        assert "resumes when a new token appears" in token_watch.pause_text(lanes.paused("rot"))
        _write(secret, "EAArotB")
        tokens.current(rot, force=True)
        assert token_watch.resume_rotated(st, lanes) == ["rot"]
        assert lanes.paused("rot") is None
        assert lanes.paused("other") is not None  # not a token pause: an operator resumes it
    finally:
        redis_client.delete(paused_key("rot"), paused_key("other"))


def test_senders_check_missing_scope_and_unreachable_api() -> None:
    import httpx

    from wanotify.ops.senders_check import check_all

    def graph(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/debug_token"):
            return httpx.Response(200, json={"data": {"app_id": "1", "type": "SYSTEM_USER", "is_valid": True,
                                                      "expires_at": 0, "scopes": ["whatsapp_business_management"]}})
        return httpx.Response(200, json={"id": PNID, "display_phone_number": "+1 555-010-9999",
                                         "verified_name": "rot", "quality_rating": "RED",
                                         "code_verification_status": "VERIFIED", "platform_type": "CLOUD_API",
                                         "throughput": {"level": "STANDARD"}})

    st = Settings(senders=json.dumps([{**BASE, "access_token": "EAAscope"}]), graph_api_url="http://graph")
    with httpx.Client(transport=httpx.MockTransport(graph)) as client:
        (c,) = check_all(st, client=client)
    assert c.problems == ["token lacks the whatsapp_business_messaging permission"]
    assert c.warnings == ["quality rating RED: Meta may lower this number's limits"]

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"cannot reach {request.url}")

    with httpx.Client(transport=httpx.MockTransport(down)) as client:
        (c,) = check_all(st, client=client)
    assert c.problems[0].startswith("Graph API unreachable: ConnectError") and "EAAscope" not in c.problems[0]


def test_a_refused_token_that_was_already_replaced_does_not_pause(
    secret: Path, redis_client: Any, services: Any
) -> None:
    """A call made with the old token, answered after the file changed: hold the job, keep sending."""
    import asyncio
    import uuid

    import redis.asyncio as aredis

    from wanotify.delivery.dispatch import Dispatcher
    from wanotify.delivery.outcomes import ClaimedJob, Decision, Outcome
    from wanotify.pacing.lanes import paused_key
    from wanotify.providers.whatsapp import SendResult

    st = _settings(secret)
    rot = st.sender_map["rot"]
    old = tokens.current(rot, force=True).fingerprint
    job = ClaimedJob(uuid.uuid4(), "transactional", "rot", "+919811100007", {}, 1)

    def refused(fp: str) -> Outcome:
        res = SendResult(False, None, 401, 190, "Session has expired", "x", 1.0, error_subcode=463, token_fp=fp)
        return Outcome(job, res, Decision("pause", 5.0, status="queued"))

    async def feedback(o: Outcome) -> None:
        r = aredis.Redis.from_url(services["redis_url"])
        try:
            await Dispatcher(st, None, r)._feedback(rot, [o])  # type: ignore[arg-type]
        finally:
            await r.aclose()

    try:
        _write(secret, "EAArotB")
        tokens.current(rot, force=True)
        asyncio.run(feedback(refused(old)))
        assert redis_client.get(paused_key("rot")) is None
        asyncio.run(feedback(refused(tokens.fingerprint("EAArotB"))))
        reason = json.loads(redis_client.get(paused_key("rot")))
        assert (reason["kind"], reason["error_subcode"], reason["token_fingerprint"]) == (
            "token", 463, tokens.fingerprint("EAArotB"))
        assert "EAArotB" not in json.dumps(reason)
    finally:
        redis_client.delete(paused_key("rot"))
