"""The job body: parsing with named errors, full preparation (no DB), fingerprints, phones."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from wanotify.config import DEFAULT_TEMPLATES, Settings
from wanotify.core.errors import InvalidJob
from wanotify.core.jobs import OTP_DEFAULT_TTL, JobBody, parse_job
from wanotify.core.phones import digits, mask_email, mask_phone, normalize_e164, region_of
from wanotify.core.templates import Catalogue
from wanotify.intake.service import Prepared, prepare
from wanotify.queues.names import QUEUE_FOR_KIND
from wanotify.templates.catalogue import load_catalogue

TO = "+919876543210"
ORDER = ["Rahul Sharma", "ZEC-2026-0042", "₹45,000"]

SENDERS = [
    {"name": "main", "phone_number_id": "106540352242922", "waba_id": "102290129340398",
     "access_token": "t-main", "mps": 80},
    {"name": "promo", "phone_number_id": "106540352242923", "waba_id": "102290129340398",
     "access_token": "t-promo", "mps": 20},
]


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings(senders=json.dumps(SENDERS))


@pytest.fixture(scope="module")
def cat() -> Catalogue:
    return load_catalogue(DEFAULT_TEMPLATES)


def job(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "to": TO,
        "template": "order_confirmation_v2",
        "language": "en",
        "params": {"body": list(ORDER)},
    }
    body.update(over)
    return {k: v for k, v in body.items() if v is not None}


def errors_of(data: Any) -> list[tuple[str, str]]:
    with pytest.raises(InvalidJob) as exc:
        parse_job(data)
    assert isinstance(exc.value, ValueError)
    return exc.value.errors


def fields_of(data: Any) -> list[str]:
    return [f for f, _ in errors_of(data)]


# ---- parse_job --------------------------------------------------------------------------


def test_parse_valid_job_and_defaults() -> None:
    j = parse_job(job())
    assert isinstance(j, JobBody)
    assert j.to == TO and j.kind == "transactional" and j.language == "en"
    assert j.params.body == ORDER and j.params.header is None and j.params.buttons is None
    assert j.sender is None and j.expires_at is None and j.text is None
    assert parse_job(j) is j
    assert QUEUE_FOR_KIND[j.kind] == "transactional"
    assert QUEUE_FOR_KIND["otp"] == "otp" and QUEUE_FOR_KIND["marketing"] == "bulk"


def test_parse_full_design_example() -> None:
    body = {
        "to": "+919876543210",
        "template": "order_confirmation_v2",
        "language": "en",
        "params": {"body": ["Rahul Sharma", "ZEC-2026-0042", "₹45,000"]},
        "kind": "transactional",
        "sender": "main",
        "idempotency_key": "order-42-confirmation",
        "expires_at": "2026-11-25T10:10:00Z",
        "fallback": {"sms_to": "+91 98765 43210", "email_to": "rahul@example.com"},
        "metadata": {"order_id": "42"},
    }
    j = parse_job(json.dumps(body).encode())
    assert j.expires_at == datetime(2026, 11, 25, 10, 10, tzinfo=UTC)
    assert j.fallback is not None
    assert j.fallback.sms_to == "+919876543210" and j.fallback.email_to == "rahul@example.com"
    assert j.metadata == {"order_id": "42"}
    assert parse_job(json.dumps(body)) == j


@pytest.mark.parametrize(
    ("to", "reason"),
    [
        ("919876543210", "must start with +"),  # missing +
        ("+91987654321", "not a valid phone number"),  # too short for India
        ("+9198765432100", "not a valid phone number"),  # too long
        ("+91abcdefghij", "not a phone number"),  # letters
        ("+1555", "not a valid phone number"),
        ("", "E.164"),  # empty
        ("   ", "E.164"),
        ("+", "not a phone number"),
    ],
)
def test_invalid_phone_numbers(to: str, reason: str) -> None:
    errs = errors_of(job(to=to))
    assert len(errs) == 1
    field, got = errs[0]
    assert field == "to"
    assert reason in got
    # The full number never appears in the error (it ends up in logs and API answers).
    if len(to.strip().lstrip("+")) > 6:
        assert to not in got


def test_phone_not_a_string() -> None:
    assert fields_of(job(to=919876543210)) == ["to"]


def test_fallback_sms_and_email_are_validated() -> None:
    errs = dict(errors_of(job(fallback={"sms_to": "12345", "email_to": "nope"})))
    assert set(errs) == {"fallback.sms_to", "fallback.email_to"}
    assert "E.164" in errs["fallback.sms_to"]


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"foo": 1}, "foo"),
        ({"priority": "high"}, "priority"),
        ({"params": {"body": ORDER, "footer": ["x"]}}, "params.footer"),
        ({"fallback": {"sms_to": TO, "push_to": "x"}}, "fallback.push_to"),
    ],
)
def test_unknown_fields(extra: dict[str, Any], field: str) -> None:
    assert (field, "unknown field") in errors_of(job(**extra))


def test_template_xor_text() -> None:
    both = errors_of(job(text="hello"))
    assert both == [("body", "give exactly one of 'template' or 'text'")]
    neither = errors_of({"to": TO})
    assert neither == [("body", "give exactly one of 'template' or 'text'")]
    assert parse_job({"to": TO, "text": "hello"}).text == "hello"


def test_text_limit() -> None:
    assert parse_job({"to": TO, "text": "x" * 4096}).text == "x" * 4096
    errs = errors_of({"to": TO, "text": "x" * 4097})
    assert errs == [("text", "is 4097 characters; WhatsApp allows 4096")]
    assert fields_of({"to": TO, "text": ""}) == ["text"]


def test_bad_kind() -> None:
    errs = errors_of(job(kind="promo"))
    assert [f for f, _ in errs] == ["kind"]
    assert "otp" in errs[0][1] and "marketing" in errs[0][1]


def test_naive_expires_at() -> None:
    errs = errors_of(job(expires_at="2026-11-25T10:10:00"))
    assert errs == [("expires_at", "must include a time zone, e.g. 2026-11-25T10:10:00Z")]
    assert fields_of(job(expires_at="tomorrow")) == ["expires_at"]
    aware = parse_job(job(expires_at="2026-11-25T15:40:00+05:30"))
    assert aware.expires_at == datetime(2026, 11, 25, 10, 10, tzinfo=UTC)


@pytest.mark.parametrize("language", ["english!", "e", "en-US", "en_", "12"])
def test_bad_language_code(language: str) -> None:
    assert fields_of(job(language=language)) == ["language"]


@pytest.mark.parametrize("language", ["en", "en_US", "pt_BR", "fil", "zh_CN"])
def test_good_language_codes(language: str) -> None:
    assert parse_job(job(language=language)).language == language


def test_malformed_json_and_non_objects() -> None:
    errs = errors_of(b'{"to": "+919876543210", ')
    assert len(errs) == 1 and errs[0][0] == "body" and errs[0][1].startswith("malformed JSON")
    assert errors_of("{not json")[0][0] == "body"
    assert errors_of(b'[{"to": "+919876543210", "text": "hi"}]') == [("body", "must be a JSON object")]
    assert errors_of([]) == [("body", "must be a JSON object")]
    assert errors_of(42) == [("body", "must be a JSON object")]
    assert errors_of(None) == [("body", "must be a JSON object")]


def test_several_errors_are_all_named() -> None:
    errs = errors_of({"to": "nope", "text": "hi", "kind": "x", "extra": 1})
    fields = {f for f, _ in errs}
    assert fields == {"to", "kind", "extra"}
    exc = InvalidJob(errs)
    assert {d["field"] for d in exc.as_json()} == fields
    assert all(set(d) == {"field", "reason"} for d in exc.as_json())


def test_params_shapes() -> None:
    assert all(f.startswith("params.body") for f in fields_of(job(params={"body": "Rahul"})))
    assert fields_of(job(params={"body": ["a"] * 101}))[0].startswith("params.body")
    named = parse_job(job(template="delivery_update",
                          params={"body": {"customer_name": "R"}, "header": {"tracking_id": "A"}}))
    assert named.params.body == {"customer_name": "R"}


# ---- prepare (no DB) --------------------------------------------------------------------


def prepare_errors(data: Any, settings: Settings, cat: Catalogue) -> list[tuple[str, str]]:
    with pytest.raises(InvalidJob) as exc:
        prepare(data, settings=settings, catalogue=cat)
    return exc.value.errors


def test_prepare_renders_with_job_id(settings: Settings, cat: Catalogue) -> None:
    p = prepare(job(), settings=settings, catalogue=cat)
    assert isinstance(p, Prepared)
    assert isinstance(p.id, uuid.UUID) and p.id.version == 7
    assert p.sender == "main" and p.category == "utility" and p.key is None
    assert p.payload == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": TO,
        "type": "template",
        "template": {
            "name": "order_confirmation_v2",
            "language": {"code": "en"},
            "components": [
                {"type": "body", "parameters": [{"type": "text", "text": v} for v in ORDER]}
            ],
        },
        "biz_opaque_callback_data": str(p.id),
    }
    assert p.fingerprint is None  # no idempotency key: nothing can bring the body back
    keyed = prepare({**job(), "idempotency_key": "order-42"}, settings=settings, catalogue=cat)
    assert keyed.fingerprint == keyed.body.fingerprint()
    # Every preparation gets a fresh id.
    assert prepare(job(), settings=settings, catalogue=cat).id != p.id


def test_prepare_otp_fills_button(settings: Settings, cat: Catalogue) -> None:
    p = prepare(job(template="otp_code", kind="otp", params={"body": ["483920"]}),
                settings=settings, catalogue=cat)
    assert p.category == "authentication"
    comps = p.payload["template"]["components"]
    assert comps[-1] == {"type": "button", "sub_type": "url", "index": "0",
                         "parameters": [{"type": "text", "text": "483920"}]}
    assert p.payload["biz_opaque_callback_data"] == str(p.id)


def test_prepare_text_message(settings: Settings, cat: Catalogue) -> None:
    p = prepare({"to": "+91 98765-43210", "text": "Your parcel is here"}, settings=settings,
                catalogue=cat)
    assert p.category is None
    assert p.payload == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": TO,
        "type": "text",
        "text": {"body": "Your parcel is here", "preview_url": False},
        "biz_opaque_callback_data": str(p.id),
    }


def test_prepare_named_sender(settings: Settings, cat: Catalogue) -> None:
    assert prepare(job(sender="promo"), settings=settings, catalogue=cat).sender == "promo"


def test_prepare_unknown_sender(settings: Settings, cat: Catalogue) -> None:
    errs = prepare_errors(job(sender="ghost"), settings, cat)
    assert len(errs) == 1
    field, reason = errs[0]
    assert field == "sender"
    assert "'ghost'" in reason and "main" in reason and "promo" in reason


def test_prepare_template_errors(settings: Settings, cat: Catalogue) -> None:
    errs = prepare_errors(job(template="nope"), settings, cat)
    assert [f for f, _ in errs] == ["template"]
    errs = prepare_errors(job(language="fr"), settings, cat)
    assert errs[0][0] == "language" and "available: en, hi" in errs[0][1]
    errs = prepare_errors(job(params={"body": ORDER[:2]}), settings, cat)
    assert errs[0][0] == "params.body" and "expected 3" in errs[0][1]
    errs = prepare_errors(job(params={"body": ["Rahul", " ", "x"]}), settings, cat)
    assert errs == [("params.body[1]", "must not be empty")]
    errs = prepare_errors(job(template="otp_code", kind="otp", params={"body": ["1" * 16]}),
                          settings, cat)
    assert errs[0][0] == "params.body[0]"
    errs = prepare_errors(job(template="delivery_update",
                              params={"body": {"customer_name": "R", "tracking_id": "A", "eta": "6"},
                                      "header": {"tracking_id": "A"}}), settings, cat)
    assert errs[0][0] == "params.buttons"
    # Model errors come before catalogue errors.
    errs = prepare_errors(job(template="nope", to="123"), settings, cat)
    assert [f for f, _ in errs] == ["to"]


def test_prepare_idempotency_key(settings: Settings, cat: Catalogue) -> None:
    p = prepare(job(idempotency_key="k1"), settings=settings, catalogue=cat)
    assert p.key == "k1"
    p2 = prepare(job(), idempotency_key="hdr", settings=settings, catalogue=cat)
    assert p2.key == "hdr"
    assert prepare(job(idempotency_key="k1"), idempotency_key="k1", settings=settings,
                   catalogue=cat).key == "k1"
    errs = prepare_errors_with_header(job(idempotency_key="k1"), "k2", settings, cat)
    assert [f for f, _ in errs] == ["idempotency_key"]


def prepare_errors_with_header(data: Any, key: str, settings: Settings,
                               cat: Catalogue) -> list[tuple[str, str]]:
    with pytest.raises(InvalidJob) as exc:
        prepare(data, idempotency_key=key, settings=settings, catalogue=cat)
    return exc.value.errors


def test_prepare_uses_the_shipped_catalogue_by_default(settings: Settings) -> None:
    p = prepare(job(template="appointment_reminder", params={"body": ["A", "B", "C"]}),
                settings=settings)
    assert p.payload["template"]["name"] == "appointment_reminder"


# ---- expiry -----------------------------------------------------------------------------


def test_otp_default_expiry() -> None:
    now = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
    otp = parse_job(job(template="otp_code", kind="otp", params={"body": ["483920"]}))
    assert OTP_DEFAULT_TTL == timedelta(minutes=10)
    assert otp.effective_expiry(now) == now + timedelta(minutes=10)
    given = datetime(2026, 11, 25, 10, 2, tzinfo=UTC)
    otp2 = parse_job(job(template="otp_code", kind="otp", params={"body": ["483920"]},
                         expires_at="2026-11-25T10:02:00Z"))
    assert otp2.effective_expiry(now) == given
    assert parse_job(job()).effective_expiry(now) is None
    tx = parse_job(job(expires_at="2026-11-26T00:00:00Z"))
    assert tx.effective_expiry(now) == datetime(2026, 11, 26, tzinfo=UTC)


# ---- fingerprint ------------------------------------------------------------------------


def test_fingerprint_stable_under_key_order() -> None:
    a = {"to": TO, "template": "order_confirmation_v2", "params": {"body": ORDER},
         "metadata": {"order_id": "42", "shop": "z", "n": 1}, "fallback": {"sms_to": TO}}
    b = {"metadata": {"n": 1, "shop": "z", "order_id": "42"}, "fallback": {"sms_to": TO},
         "params": {"body": ORDER}, "template": "order_confirmation_v2", "to": TO}
    fa, fb = parse_job(a).fingerprint(), parse_job(b).fingerprint()
    assert fa == fb
    assert len(fa) == 64 and int(fa, 16) >= 0
    # Equivalent spellings normalise to the same content.
    c = {**a, "to": "+91 98765-43210", "language": "en"}
    assert parse_job(c).fingerprint() == fa


def test_fingerprint_ignores_idempotency_key_only() -> None:
    base = parse_job(job()).fingerprint()
    assert parse_job(job(idempotency_key="a")).fingerprint() == base
    assert parse_job(job(idempotency_key="b")).fingerprint() == base
    assert parse_job(job(params={"body": ["Rahul Sharma", "ZEC-2026-0043", "₹45,000"]})).fingerprint() != base
    assert parse_job(job(kind="marketing")).fingerprint() != base
    assert parse_job(job(metadata={"a": 1})).fingerprint() != base
    assert parse_job(job(to="+919876543211")).fingerprint() != base


# ---- phones -----------------------------------------------------------------------------


def test_normalize_e164() -> None:
    assert normalize_e164("+91 98765-43210") == "+919876543210"
    assert normalize_e164("  +1 (415) 555-2671 ") == "+14155552671"
    assert normalize_e164("(415) 555-2671", "US") == "+14155552671"
    assert parse_job(job(to="+91 98765-43210")).to == TO
    with pytest.raises(ValueError, match="must start with"):
        normalize_e164("9876543210")
    with pytest.raises(ValueError):
        normalize_e164(None)  # type: ignore[arg-type]


def test_mask_phone() -> None:
    assert mask_phone("+919876543210") == "+91********10"
    assert mask_phone("919876543210") == "91********10"
    assert mask_phone("+14155552671") == "+14*******71"
    assert mask_phone("+1234") == "+****"
    assert mask_phone("") == "" and mask_phone(None) == ""


def test_mask_email() -> None:
    assert mask_email("rahul@example.com") == "r***@example.com"
    assert mask_email("a@b.co") == "a***@b.co"
    assert mask_email("not-an-address") == "***"
    assert mask_email("") == "" and mask_email(None) == ""


def test_digits_and_region() -> None:
    assert digits("+919876543210") == "919876543210"
    assert region_of("+919876543210") == "IN"
    assert region_of("+14155552671") == "US"
    assert region_of("garbage") is None
