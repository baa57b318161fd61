"""Tests of wanotify.inbound.parse: Meta's webhook bodies to typed events.

Fixtures (tests/data/webhooks/*.json) are real payload shapes; their
provenance is in tests/data/webhooks/SOURCES.md.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wanotify.inbound.parse import (
    STATUS_RANK,
    AccountEvent,
    ErrorDetail,
    InboundMessage,
    OtherChange,
    ParsedWebhook,
    PreferenceEvent,
    StatusUpdate,
    TemplateEvent,
    ValueLevelError,
    WebhookError,
    parse_webhook,
)
from wanotify.inbound.signature import sign, verify_signature
from webhook_cases import DATA, FIXTURES, doc, json_values, mutated_fixtures, raw

WABA = "102290129340398"
PNID = "106540352242922"
DISP = "15550783881"
USER = "16505551234"
OUR_WAMID = "wamid.HBgLMTY1MDU1NTEyMzQVAgARGBJBMkI4QzlEMEUxRjJBM0I0QzUA"






def parse(name: str) -> ParsedWebhook:
    result = parse_webhook(raw(name))
    assert result.problems == [], result.problems
    return result


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def only(items: list[Any]) -> Any:
    assert len(items) == 1, items
    return items[0]


def counts(result: ParsedWebhook) -> tuple[int, ...]:
    return (
        len(result.statuses),
        len(result.messages),
        len(result.templates),
        len(result.preferences),
        len(result.account),
        len(result.other),
        len(result.value_errors),
    )


# --------------------------------------------------------------------------- fixtures


def test_fixture_set_is_complete_and_documented() -> None:
    assert len(FIXTURES) >= 30
    sources = (DATA / "SOURCES.md").read_text()
    for name in FIXTURES:
        assert f"`{name}`" in sources, f"{name} has no provenance in SOURCES.md"
        body = orjson.loads(raw(name))
        assert body["object"] == "whatsapp_business_account"


@pytest.mark.parametrize("name", FIXTURES)
def test_every_fixture_parses_without_problems(name: str) -> None:
    result = parse(name)
    assert not result.empty
    # Every fixture is routed somewhere specific, only the unknown field is "other".
    assert bool(result.other) == name.startswith("unknown_field")


def test_status_sent_cbp_conversation() -> None:
    s: StatusUpdate = only(parse("status_sent_cbp_conversation.json").statuses)
    assert s.wamid == "wamid.HBgLMTY1MDU1NTEyMzQVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA"
    assert s.status == "sent"
    assert s.rank == STATUS_RANK["sent"] == 3
    assert s.timestamp == utc(2025, 6, 25, 13, 16, 24)
    assert s.timestamp.tzinfo is UTC
    assert s.recipient_id == USER
    assert (s.phone_number_id, s.display_phone_number, s.waba_id) == (PNID, DISP, WABA)
    assert s.errors == [] and s.error_code is None
    assert s.conversation == {
        "id": "a75d17ad06104c51166f948319b03c6a",
        "expiration_timestamp": "1750943820",
        "origin": {"type": "utility"},
    }
    assert s.conversation_id == "a75d17ad06104c51166f948319b03c6a"
    assert s.conversation_origin == "utility"
    assert s.conversation_expires_at == utc(2025, 6, 26, 13, 17)
    assert s.pricing == {"billable": True, "pricing_model": "CBP", "category": "utility"}
    assert (s.billable, s.pricing_model, s.pricing_category, s.pricing_type) == (
        True,
        "CBP",
        "utility",
        None,
    )
    assert s.biz_opaque_callback_data is None
    value = doc("status_sent_cbp_conversation.json")["entry"][0]["changes"][0]["value"]
    assert s.raw == value["statuses"][0]


def test_status_sent_pmp_pricing_type() -> None:
    s = only(parse("status_sent_pmp_pricing_type.json").statuses)
    assert s.status == "sent"
    assert s.timestamp == utc(2025, 8, 1)
    assert s.pricing_model == "PMP"
    assert s.pricing_type == "regular"
    assert s.pricing_category == "marketing"
    assert s.billable is True
    assert s.conversation_origin == "marketing"
    assert s.conversation_expires_at == utc(2025, 8, 2)


@pytest.mark.parametrize(
    ("name", "status", "when"),
    [
        ("status_delivered.json", "delivered", utc(2025, 8, 1, 0, 0, 5)),
        ("status_read.json", "read", utc(2025, 8, 1, 0, 1)),
    ],
)
def test_status_delivered_and_read(name: str, status: str, when: datetime) -> None:
    s = only(parse(name).statuses)
    assert s.wamid == OUR_WAMID
    assert s.status == status
    assert s.rank == STATUS_RANK[status]
    assert s.timestamp == when
    assert s.recipient_id == USER
    assert s.conversation_id == "0f957b88cfb1558f6199e3c1a2b4d5e6"
    assert s.conversation_expires_at is None  # only `sent` carries the expiry
    assert s.pricing_type == "regular"


def test_status_failed_with_errors() -> None:
    s = only(parse("status_failed_errors.json").statuses)
    assert s.status == "failed"
    assert s.rank is None  # failed is not a rung of the status ladder
    assert s.timestamp == utc(2025, 8, 1, 0, 0, 2)
    assert s.pricing is None and s.conversation is None
    assert s.error_code == 131049
    err = only(s.errors)
    assert isinstance(err, ErrorDetail)
    assert err == ErrorDetail(
        code=131049,
        title="This message was not delivered to maintain healthy ecosystem engagement.",
        message="This message was not delivered to maintain healthy ecosystem engagement.",
        details="In order to maintain a healthy ecosystem engagement, the message failed to be "
        "delivered.",
        href="https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/",
    )


def test_status_biz_opaque_callback_data() -> None:
    s = only(parse("status_sent_biz_opaque_callback_data.json").statuses)
    assert s.biz_opaque_callback_data == "wanotify:job=7c1e5b2a-9a43-4d0e-8a8f-3f0a6c1d2e4b"
    assert s.status == "sent"
    assert s.timestamp == utc(2023, 10, 25, 20, 49, 5)
    assert s.pricing_category == "service"
    assert s.conversation_origin == "service"


def test_statuses_batch_multi_entry() -> None:
    result = parse("statuses_batch_multi_entry.json")
    assert counts(result) == (14, 0, 0, 0, 0, 0, 0)
    # Order is the body's order: entry by entry, change by change.
    assert [s.status for s in result.statuses] == [
        "sent", "sent", "delivered", "failed", "read",
        "sent", "sent", "read", "read",
        "sent", "sent", "delivered", "delivered", "failed",
    ]  # fmt: skip
    by_phone: dict[str | None, int] = {}
    for s in result.statuses:
        by_phone[s.phone_number_id] = by_phone.get(s.phone_number_id, 0) + 1
    assert by_phone == {PNID: 5, "106540352242923": 4, "301234567890123": 5}
    assert {s.waba_id for s in result.statuses[:9]} == {WABA}
    assert {s.waba_id for s in result.statuses[9:]} == {"209876543210987"}
    assert result.statuses[5].display_phone_number == "15550783882"
    failed = [s for s in result.statuses if s.status == "failed"]
    assert [s.error_code for s in failed] == [131026, 131047]
    assert failed[1].errors[0].details is not None
    assert failed[1].errors[0].details.startswith("Message failed to send because more than 24")
    # The same wamid appears several times (sent, delivered, read), out of order.
    wamid = "wamid.HBgLMTY1MDU1NTEyMzQVAgARGBJCQVRDSF80001A"
    first = [s for s in result.statuses if s.wamid == wamid]
    assert [s.status for s in first] == ["sent", "delivered", "read"]
    assert first[2].timestamp == utc(2025, 8, 1, 0, 1)
    assert first[2].phone_number_id == "106540352242923"


def test_message_text() -> None:
    m: InboundMessage = only(parse("message_text.json").messages)
    assert m.wamid == "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA="
    assert m.from_number == "+16505551234"
    assert m.profile_name == "Sheena Nelson"
    assert m.type == "text"
    assert m.text == "Does it come in another color?"
    assert m.payload is None and m.context_wamid is None
    assert m.timestamp == utc(2025, 6, 8, 20, 59, 43)
    assert (m.phone_number_id, m.display_phone_number, m.waba_id) == (PNID, DISP, WABA)
    assert m.errors == []
    assert m.raw["text"] == {"body": "Does it come in another color?"}


def test_message_reply_has_context_wamid() -> None:
    m = only(parse("message_text_reply_context.json").messages)
    assert m.text == "Can I change the delivery address?"
    assert m.context_wamid == OUR_WAMID
    assert m.timestamp == utc(2025, 8, 1, 0, 3, 20)


def test_message_template_quick_reply_button() -> None:
    m = only(parse("message_button_template_quick_reply.json").messages)
    assert m.type == "button"
    assert m.text == "Stop promotions"
    assert m.payload == "STOP_PROMOTIONS"
    assert m.context_wamid == OUR_WAMID
    assert m.from_number == "+16505551234"
    assert m.timestamp == utc(2025, 8, 1, 0, 5)


def test_message_interactive_button_reply() -> None:
    m = only(parse("message_interactive_button_reply.json").messages)
    assert m.type == "interactive"
    assert m.text == "Confirm"
    assert m.payload == "confirm-appt-42"
    assert m.context_wamid == "wamid.HBgLMTY1MDU1NTEyMzQVAgARGBJEOUU4RjdBNkI1QzREM0UyRjEA"
    assert m.profile_name == "Sheena Nelson"
    assert m.timestamp == utc(2023, 10, 25, 20, 45, 30)


def test_message_interactive_list_reply() -> None:
    m = only(parse("message_interactive_list_reply.json").messages)
    assert (m.type, m.text, m.payload) == ("interactive", "Tue 10:30", "slot-2026-11-25-1030")
    assert m.raw["interactive"]["list_reply"]["description"] == "25 Nov, Dr. Rao"
    assert m.timestamp == utc(2023, 10, 25, 20, 48, 25)


def test_message_reaction() -> None:
    m = only(parse("message_reaction.json").messages)
    assert m.type == "reaction"
    assert m.text == "\U0001f44d"
    assert m.context_wamid == OUR_WAMID  # the message reacted to
    assert m.payload is None


def test_message_image() -> None:
    m = only(parse("message_image.json").messages)
    assert m.type == "image"
    assert m.text == "The damaged box"
    assert m.media_id == "1003383421387256"
    assert m.raw["image"]["mime_type"] == "image/jpeg"
    assert m.timestamp == utc(2023, 10, 11, 16, 56, 19)


def test_message_location_and_contacts() -> None:
    loc = only(parse("message_location.json").messages)
    assert loc.type == "location" and loc.text is None
    assert loc.raw["location"]["latitude"] == pytest.approx(37.4611978)
    assert loc.raw["location"]["name"] == "Facebook HQ"
    card = only(parse("message_contacts.json").messages)
    assert card.type == "contacts" and card.text is None
    assert card.profile_name == "Sheena Nelson"
    assert card.raw["contacts"][0]["phones"][0]["wa_id"] == "919876543210"


def test_message_unsupported_with_errors() -> None:
    m = only(parse("message_unsupported_errors.json").messages)
    assert m.type == "unsupported"
    assert m.text is None
    assert only(m.errors) == ErrorDetail(
        code=131051,
        title="Message type unknown",
        message="Message type unknown",
        details="Message type is currently not supported.",
    )


def test_message_system_changes() -> None:
    changed = only(parse("message_system_user_changed_number.json").messages)
    assert changed.type == "system"
    assert changed.from_number == "+16505551234"
    assert changed.profile_name is None  # system messages carry no contacts
    assert changed.text == "User Sheena Nelson changed from 16505551234 to 16505559999"
    assert changed.raw["system"]["wa_id"] == "16505559999"
    user_id = only(parse("message_system_user_changed_user_id.json").messages)
    assert user_id.from_number is None  # Meta sends no `from` here
    assert user_id.raw["system"]["type"] == "user_changed_user_id"
    assert user_id.timestamp == utc(2025, 7, 30, 4, 55, 15)


def test_value_level_errors() -> None:
    result = parse("value_errors_rate_limit.json")
    assert counts(result) == (0, 0, 0, 0, 0, 0, 1)
    err = only(result.value_errors)
    assert isinstance(err, ValueLevelError) and isinstance(err, ErrorDetail)
    assert (err.code, err.title, err.message) == (130429, "Rate limit hit", "Rate limit hit")
    assert err.details is not None and err.details.startswith("Message failed to send because")
    assert err.href == "/documentation/business-messaging/whatsapp/support/error-codes"
    assert (err.phone_number_id, err.display_phone_number, err.waba_id) == (PNID, DISP, WABA)


def test_message_alongside_value_errors() -> None:
    result = parse("message_interactive_with_value_errors.json")
    m = only(result.messages)
    assert m.type == "interactive" and m.text is None and m.payload is None
    assert only(result.value_errors).code == 131000
    assert result.value_errors[0].details == "Unsupported webhook payload"


def test_template_status_events() -> None:
    approved: TemplateEvent = only(parse("template_status_approved.json").templates)
    assert approved.kind == "status"
    assert approved.event == "APPROVED"
    assert approved.template_id == "1689556908129832"  # Meta sends a number
    assert (approved.name, approved.language) == ("order_confirmation_v2", "en")
    assert (approved.reason, approved.category) == ("NONE", "UTILITY")
    assert approved.waba_id == WABA
    assert approved.timestamp == utc(2025, 2, 12, 0, 43, 44)

    rejected = only(parse("template_status_rejected.json").templates)
    assert (rejected.event, rejected.reason, rejected.category) == (
        "REJECTED",
        "INVALID_FORMAT",
        "MARKETING",
    )
    assert rejected.detail == "The template contains a variable at the start of the message body."

    paused = only(parse("template_status_paused.json").templates)
    assert (paused.event, paused.reason, paused.detail) == ("PAUSED", "NONE", "FIRST_PAUSE")
    assert paused.raw["other_info"]["description"].startswith("Your WhatsApp message template")
    assert paused.timestamp == utc(2025, 8, 30, 14, 47)

    disabled = only(parse("template_status_disabled.json").templates)
    assert (disabled.event, disabled.reason) == ("DISABLED", None)
    assert disabled.raw["disable_info"] == {"disable_date": 1751234563}


@pytest.mark.parametrize(
    ("name", "previous", "new"),
    [
        ("template_quality_update_yellow.json", "GREEN", "YELLOW"),
        ("template_quality_update_red.json", "YELLOW", "RED"),
    ],
)
def test_template_quality_update(name: str, previous: str, new: str) -> None:
    t = only(parse(name).templates)
    assert t.kind == "quality"
    assert (t.previous, t.event) == (previous, new)
    assert (t.template_id, t.name, t.language) == ("806312974732579", "welcome_template", "en-US")


def test_template_category_update() -> None:
    done = only(parse("template_category_update.json").templates)
    assert done.kind == "category"
    assert (done.previous, done.event, done.category) == ("UTILITY", "MARKETING", None)
    assert done.timestamp == utc(2025, 6, 19, 14, 54, 42)
    impending = only(parse("template_category_update_impending.json").templates)
    assert (impending.previous, impending.event, impending.category) == (
        None,
        "UTILITY",
        "MARKETING",
    )
    assert impending.raw["category_update_timestamp"] == 1750431282


def test_account_events() -> None:
    quality: AccountEvent = only(parse("phone_number_quality_update.json").account)
    assert quality.field == "phone_number_quality_update"
    assert (quality.event, quality.display_phone_number) == ("UPGRADE", DISP)
    assert quality.raw["current_limit"] == "TIER_10K"
    assert quality.timestamp == utc(2025, 2, 12, 0, 43, 44)

    restriction = only(parse("account_update_restriction.json").account)
    assert (restriction.field, restriction.event) == ("account_update", "ACCOUNT_RESTRICTION")
    assert len(restriction.raw["restriction_info"]) == 2
    assert restriction.timestamp == utc(2022, 1, 4, 21, 8, 18)

    alert = only(parse("account_alerts.json").account)
    assert alert.field == "account_alerts"
    assert alert.event == "INCREASED_CAPABILITIES_ELIGIBILITY_DEFERRED"
    assert alert.entity_id == "506914307656634"
    assert alert.raw["alert_info"]["alert_severity"] == "WARNING"


def test_user_preferences() -> None:
    stop: PreferenceEvent = only(parse("user_preferences_stop.json").preferences)
    assert (stop.wa_id, stop.phone_number, stop.value) == (USER, "+16505551234", "stop")
    assert stop.category == "marketing_messages"
    assert stop.detail == "User requested to stop marketing messages"
    assert stop.timestamp == utc(2024, 11, 15, 21, 22, 1)  # Meta sends an integer here
    assert (stop.phone_number_id, stop.waba_id) == (PNID, WABA)
    resume = only(parse("user_preferences_resume.json").preferences)
    assert (resume.value, resume.timestamp) == ("resume", utc(2024, 11, 16, 21, 22, 1))


def test_unknown_field_is_kept_as_other() -> None:
    result = parse("unknown_field_template_components_update.json")
    other: OtherChange = only(result.other)
    assert other.field == "message_template_components_update"
    assert other.waba_id == WABA
    assert other.timestamp == utc(2025, 7, 2, 19, 16, 12)
    assert other.value["message_template_element"] == "Hi {{1}}! Welcome to our service."


def test_all_input_forms_give_the_same_result() -> None:
    body = raw("statuses_batch_multi_entry.json")
    expected = parse_webhook(body)
    for form in (body.decode(), bytearray(body), memoryview(body), orjson.loads(body)):
        assert parse_webhook(form) == expected


def test_models_are_frozen() -> None:
    s = only(parse("status_read.json").statuses)
    with pytest.raises(ValueError, match="frozen"):
        s.status = "sent"  # type: ignore[misc]


def test_status_rank_is_design_order() -> None:
    order = ["queued", "sending", "accepted", "sent", "delivered", "read"]
    assert sorted(STATUS_RANK, key=STATUS_RANK.__getitem__) == order
    assert list(STATUS_RANK.values()) == list(range(6))
    assert "failed" not in STATUS_RANK


# --------------------------------------------------------------------------- tolerance


def status_body(*statuses: Any) -> dict[str, Any]:
    body = doc("status_read.json")
    body["entry"][0]["changes"][0]["value"]["statuses"] = list(statuses)
    return body


GOOD = {"id": "wamid.good", "status": "delivered", "timestamp": "1754006405", "recipient_id": USER}
SPATH = "$.entry[0].changes[0].value.statuses"


def test_unknown_keys_and_status_values_are_kept() -> None:
    extra = {
        **GOOD,
        "status": "played",
        "recipient_user_id": "US.13491208655302741918",
        "recipient_type": "individual",
        "some_future_key": {"nested": [1, 2]},
    }
    future = {**GOOD, "id": "wamid.future", "status": "some_future_status"}
    result = parse_webhook(status_body(extra, future))
    assert result.problems == []
    played, unknown = result.statuses
    assert (played.status, played.rank) == ("played", None)
    assert played.recipient_user_id == "US.13491208655302741918"
    assert played.raw["some_future_key"] == {"nested": [1, 2]}
    assert (unknown.status, unknown.rank) == ("some_future_status", None)


def test_status_without_recipient_id_is_kept() -> None:
    # Users with a username may be reported by business-scoped user id only.
    bsuid_only = {k: v for k, v in GOOD.items() if k != "recipient_id"}
    bsuid_only["recipient_user_id"] = "US.13491208655302741918"
    s = only(parse_webhook(status_body(bsuid_only)).statuses)
    assert s.recipient_id is None and s.recipient_user_id == "US.13491208655302741918"


@pytest.mark.parametrize(
    ("bad", "where", "reason"),
    [
        ({"status": "read", "timestamp": "1754006405"}, "[0].id", "missing 'id'"),
        ({**GOOD, "id": ""}, "[0].id", "not a non-empty string"),
        ({**GOOD, "id": 42}, "[0].id", "not a non-empty string"),
        ({**GOOD, "status": None}, "[0].status", "missing 'status'"),
        ({**GOOD, "timestamp": "yesterday"}, "[0].timestamp", "not unix seconds"),
        ({**GOOD, "timestamp": "1.5e9"}, "[0].timestamp", "not unix seconds"),
        ({**GOOD, "timestamp": "-1"}, "[0].timestamp", "not unix seconds"),
        ({**GOOD, "timestamp": "٣٤٥"}, "[0].timestamp", "not unix seconds"),
        ({**GOOD, "timestamp": 1754006405.5}, "[0].timestamp", "not unix seconds"),
        ({**GOOD, "timestamp": True}, "[0].timestamp", "not unix seconds"),
        ({**GOOD, "timestamp": "9" * 12}, "[0].timestamp", "out of range"),
        ({**GOOD, "timestamp": 10**30}, "[0].timestamp", "out of range"),
        ({k: v for k, v in GOOD.items() if k != "timestamp"}, "[0].timestamp", "missing"),
        ("not-an-object", "[0]", "status is not an object (str)"),
        (None, "[0]", "status is not an object (NoneType)"),
    ],
)
def test_malformed_status_is_reported_and_skipped(bad: Any, where: str, reason: str) -> None:
    result = parse_webhook(status_body(bad, GOOD))
    assert [s.wamid for s in result.statuses] == ["wamid.good"]  # the rest survives
    problem = only(result.problems)
    assert problem.startswith(f"{SPATH}{where}: "), problem
    assert reason in problem


def test_integer_timestamp_is_accepted() -> None:
    s = only(parse_webhook(status_body({**GOOD, "timestamp": 1754006405})).statuses)
    assert s.timestamp == utc(2025, 8, 1, 0, 0, 5)


def test_malformed_error_entry_keeps_the_status() -> None:
    failed = {
        **GOOD,
        "status": "failed",
        "errors": [{"title": "no code"}, "junk", {"code": "131026", "title": "Undeliverable"}],
    }
    result = parse_webhook(status_body(failed))
    s = only(result.statuses)
    assert [e.code for e in s.errors] == [131026]  # numeric strings are tolerated
    assert result.problems == [
        f"{SPATH}[0].errors[0].code: missing or not an integer",
        f"{SPATH}[0].errors[1]: error is not an object",
    ]


def test_malformed_structure_inside_a_valid_body() -> None:
    body = doc("statuses_batch_multi_entry.json")
    body["entry"].insert(0, "junk")
    body["entry"].append({"id": WABA})  # no changes
    body["entry"].append({"id": WABA, "changes": [42, {"field": "messages", "value": []}]})
    body["entry"][1]["changes"][1]["value"]["statuses"] = {"not": "a list"}
    result = parse_webhook(body)
    assert len(result.statuses) == 14 - 4  # the second change's statuses are lost
    assert result.problems == [
        "$.entry[0]: entry is not an object (str)",
        "$.entry[1].changes[1].value.statuses: not an array",
        "$.entry[3].changes: missing or not an array",
        "$.entry[4].changes[0]: change is not an object (int)",
        "$.entry[4].changes[1].value: messages value is not an object",
    ]


def test_malformed_message_and_preference() -> None:
    body = doc("message_text.json")
    value = body["entry"][0]["changes"][0]["value"]
    good = value["messages"][0]
    value["messages"] = [
        {**good, "from": "not a number"},
        {**good, "from": ["1"]},
        {**good, "type": None},
        {**good, "timestamp": "2025-06-08T20:59:43Z"},
        good,
    ]
    value["user_preferences"] = [
        {"wa_id": USER, "category": "marketing_messages", "timestamp": 1731705721},
        {"category": "marketing_messages", "value": "stop", "timestamp": 1731705721},
    ]
    result = parse_webhook(body)
    assert [m.text for m in result.messages] == ["Does it come in another color?"]
    mpath = "$.entry[0].changes[0].value.messages"
    ppath = "$.entry[0].changes[0].value.user_preferences"
    assert result.problems == [
        f"{mpath}[0].from: 'from' is not a phone number: 'not a number'",
        f"{mpath}[1].from: 'from' is not a phone number: a list",
        f"{mpath}[2].type: missing 'type'",
        f"{mpath}[3].timestamp: timestamp is not unix seconds: '2025-06-08T20:59:43Z'",
        f"{ppath}[0].value: missing 'value'",
        f"{ppath}[1].wa_id: missing 'wa_id' (and 'user_id')",
    ]


def test_malformed_template_event_is_kept_as_other() -> None:
    body = doc("template_status_approved.json")
    del body["entry"][0]["changes"][0]["value"]["event"]
    body["entry"][0]["changes"].append({"field": "account_alerts", "value": "junk"})
    body["entry"][0]["changes"].append({"value": {"x": 1}})
    result = parse_webhook(body)
    assert result.templates == [] and result.account == []
    assert [o.field for o in result.other] == [
        "message_template_status_update",
        "account_alerts",
        None,
    ]
    assert result.problems == [
        "$.entry[0].changes[0].value.event: missing 'event'; kept as other",
        "$.entry[0].changes[1].value: account_alerts value is not an object; kept as other",
        "$.entry[0].changes[2].field: missing or not a string; kept as other",
    ]


def test_messages_value_with_only_unknown_lists_is_kept() -> None:
    body = doc("value_errors_rate_limit.json")
    value = body["entry"][0]["changes"][0]["value"]
    del value["errors"]
    value["calls"] = [{"id": "wacid.x", "event": "connect"}]
    result = parse_webhook(body)
    other = only(result.other)
    assert other.field == "messages" and other.value["calls"][0]["id"] == "wacid.x"


@pytest.mark.parametrize(
    ("body", "path", "reason"),
    [
        (b"", "$", "not valid JSON"),
        (b"{", "$", "not valid JSON"),
        (b"\xff\xfe{}", "$", "not valid JSON"),
        ("\ud800", "$", "not valid JSON"),
        (b"[]", "$", "not a JSON object (list)"),
        (b'[{"object": "whatsapp_business_account", "entry": []}]', "$", "(list)"),
        (b"42", "$", "not a JSON object (int)"),
        (b"null", "$", "not a JSON object (NoneType)"),
        (b'"whatsapp_business_account"', "$", "not a JSON object (str)"),
        (b'{"object": "page", "entry": []}', "$.object", "got 'page'"),
        (b'{"object": ["whatsapp_business_account"], "entry": []}', "$.object", "got a list"),
        (b'{"entry": []}', "$.object", "got missing"),
        (b'{"object": "whatsapp_business_account"}', "$.entry", "missing"),
        (b'{"object": "whatsapp_business_account", "entry": {}}', "$.entry", "not an array"),
        (b"[" * 100_000 + b"]" * 100_000, "$", "not valid JSON"),
        (
            b'{"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": '
            b'"messages", "value": ' + b'{"a":' * 5000 + b"1" + b"}" * 5000 + b"}]}]}",
            "$",
            "not valid JSON",
        ),
    ],
)
def test_not_a_webhook_raises_webhook_error(body: bytes | str, path: str, reason: str) -> None:
    with pytest.raises(WebhookError) as info:
        parse_webhook(body)
    assert info.value.path == path
    assert reason in str(info.value)
    assert str(info.value).startswith(f"{path}: ")
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("body", [None, 42, ["whatsapp_business_account"], object()])
def test_wrong_python_type_raises_webhook_error(body: Any) -> None:
    with pytest.raises(WebhookError, match=r"must be bytes, str or dict|not a JSON object"):
        parse_webhook(body)


def test_deep_but_legal_nesting_is_parsed_and_kept() -> None:
    # orjson decodes up to 1024 levels; a dict body can be deeper still.
    envelope = (
        b'{"object": "whatsapp_business_account", "entry": [{"id": "%s", "changes": '
        b'[{"field": "brand_new_field", "value": %s}]}]}'
    )
    as_bytes = envelope % (WABA.encode(), b'{"a": [' * 500 + b"1" + b"]}" * 500)
    deep: Any = 1
    for _ in range(5000):
        deep = {"a": [deep]}
    as_dict = orjson.loads(envelope % (WABA.encode(), b"null"))
    as_dict["entry"][0]["changes"][0]["value"] = deep
    for form in (as_bytes, as_dict):
        result = parse_webhook(form)
        assert result.problems == []
        other = only(result.other)
        assert other.field == "brand_new_field" and other.value["a"][0]["a"][0]["a"]


def test_empty_entry_list_is_an_empty_result() -> None:
    result = parse_webhook(b'{"object": "whatsapp_business_account", "entry": []}')
    assert result.empty and result.problems == []


# --------------------------------------------------------------------------- signatures


SECRET = b"0123456789abcdef0123456789abcdef"


def test_sign_and_verify() -> None:
    body = raw("status_read.json")
    header = sign(SECRET, body)
    assert header.startswith("sha256=") and len(header) == 7 + 64
    assert header == sign(SECRET.decode(), body)  # str secret == its UTF-8 bytes
    assert verify_signature(SECRET, body, header)
    assert verify_signature(SECRET.decode(), body, header)
    # A known vector: HMAC-SHA256(key="key", "The quick brown fox jumps over the lazy dog").
    assert sign("key", b"The quick brown fox jumps over the lazy dog") == (
        "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
    )


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "sha256=",
        "sha1=0000000000000000000000000000000000000000",
        "SHA256=",
        "sha256=zz",
        "sha256=" + "0" * 64,
        "sha256=" + "é" * 64,
    ],
)
def test_verify_rejects_malformed_headers(header: str | None) -> None:
    body = raw("status_read.json")
    assert verify_signature(SECRET, body, header) is False


def test_verify_rejects_tampering_and_bad_inputs() -> None:
    body = raw("status_read.json")
    good = sign(SECRET, body)
    assert not verify_signature(SECRET, body + b" ", good)
    assert not verify_signature(SECRET + b"x", body, good)
    assert not verify_signature(SECRET, body, good.upper().replace("SHA256=", "sha256="))
    assert not verify_signature(SECRET, body, "sha256=" + good[7:].upper())
    assert not verify_signature(SECRET, body, good + "00")
    assert not verify_signature(SECRET, body, " " + good)
    assert not verify_signature(b"", body, sign(b"\x00", body))
    assert not verify_signature("", body, good)
    assert not verify_signature(SECRET, body.decode(), good)  # type: ignore[arg-type]
    assert not verify_signature(None, body, good)  # type: ignore[arg-type]
    assert not verify_signature(SECRET, body, 12345)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty"):
        sign(b"", body)


@settings(max_examples=300, deadline=None)
@given(
    secret=st.binary(min_size=1, max_size=64),
    body=st.binary(max_size=512),
    data=st.data(),
)
def test_signature_accepts_exactly_the_right_one(secret: bytes, body: bytes, data: Any) -> None:
    header = sign(secret, body)
    assert verify_signature(secret, body, header)
    if body:
        i = data.draw(st.integers(0, len(body) - 1), label="body byte")
        bit = data.draw(st.integers(0, 7), label="body bit")
        flipped = bytearray(body)
        flipped[i] ^= 1 << bit
        assert not verify_signature(secret, bytes(flipped), header)
    j = data.draw(st.integers(0, len(header) - 1), label="header char")
    hbit = data.draw(st.integers(0, 7), label="header bit")
    mutated = header[:j] + chr(ord(header[j]) ^ (1 << hbit)) + header[j + 1 :]
    assert not verify_signature(secret, body, mutated)
    other = data.draw(st.binary(min_size=1, max_size=64), label="other secret")
    if other != secret:
        assert not verify_signature(other, body, header)


# --------------------------------------------------------------------------- properties




def _returns_or_webhook_error(body: Any) -> None:
    try:
        result = parse_webhook(body)
    except WebhookError:
        return
    assert isinstance(result, ParsedWebhook)
    assert all(isinstance(p, str) for p in result.problems)
    # The catch-all that keeps one bad change from sinking the body must not be
    # what handles JSON input: every malformation has a precise reason.
    assert not [p for p in result.problems if ": unexpected " in p], result.problems


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=json_values)
def test_arbitrary_json_returns_or_raises_webhook_error(value: Any) -> None:
    _returns_or_webhook_error(value)
    _returns_or_webhook_error(orjson.dumps(value))
    envelope = {"object": "whatsapp_business_account", "entry": value}
    _returns_or_webhook_error(envelope)
    _returns_or_webhook_error(
        {"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": value}]}
    )
    for field in ("messages", "message_template_status_update", "user_preferences", "x"):
        _returns_or_webhook_error(
            {
                "object": "whatsapp_business_account",
                "entry": [{"id": "1", "changes": [{"field": field, "value": value}]}],
            }
        )








@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=mutated_fixtures())
def test_mutated_fixtures_return_or_raise_webhook_error(body: dict[str, Any]) -> None:
    _returns_or_webhook_error(body)
    _returns_or_webhook_error(orjson.dumps(body))


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(FIXTURES), data=st.data())
def test_byte_mutated_fixtures_return_or_raise_webhook_error(name: str, data: Any) -> None:
    body = bytearray(raw(name))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(body) - 1))
        body[i] = data.draw(st.integers(0, 255))
    _returns_or_webhook_error(bytes(body))


# --------------------------------------------------------------------------- speed


def _hundred_status_body() -> bytes:
    template = doc("statuses_batch_multi_entry.json")["entry"][0]["changes"][0]["value"]
    statuses = []
    for i in range(100):
        kind = ("sent", "delivered", "read", "failed")[i % 4]
        item: dict[str, Any] = {
            "id": f"wamid.HBgLMTY1MDU1NTEyMzQVAgARGBJ{i:08d}A",
            "status": kind,
            "timestamp": str(1754006400 + i),
            "recipient_id": f"9198765{i:05d}",
        }
        if kind == "failed":
            item["errors"] = [
                {
                    "code": 131026,
                    "title": "Message undeliverable",
                    "message": "Message undeliverable",
                    "error_data": {"details": "Message Undeliverable."},
                    "href": "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/",
                }
            ]
        else:
            item["conversation"] = {
                "id": f"c0nv{i:028d}",
                "expiration_timestamp": "1754092800",
                "origin": {"type": "utility"},
            }
            item["pricing"] = {
                "billable": True,
                "pricing_model": "PMP",
                "category": "utility",
                "type": "regular",
            }
        statuses.append(item)
    value = {
        "messaging_product": "whatsapp",
        "metadata": template["metadata"],
        "statuses": statuses,
    }
    return orjson.dumps(
        {
            "object": "whatsapp_business_account",
            "entry": [{"id": WABA, "changes": [{"field": "messages", "value": value}]}],
        }
    )


def test_parse_speed_100_status_body(capsys: pytest.CaptureFixture[str]) -> None:
    body = _hundred_status_body()
    result = parse_webhook(body)
    assert len(result.statuses) == 100 and result.problems == []
    assert sum(s.status == "failed" for s in result.statuses) == 25
    rounds = 300
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(rounds):
            parse_webhook(body)
        best = min(best, time.perf_counter() - start)
    rate = rounds * 100 / best
    with capsys.disabled():
        print(f"\nwebhook_parse: {rate:,.0f} statuses/s (100-status body, {len(body)} bytes)")
    # Ingest needs tens of thousands per second; leave ample room for slow CI.
    assert rate > 20_000
