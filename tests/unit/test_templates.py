"""The template catalogue: loading, validation against Meta's rules, and exact Graph payloads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from wanotify.config import DEFAULT_TEMPLATES
from wanotify.core.templates import (
    MAX_BODY_CHARS,
    MAX_PARAM_CHARS,
    Catalogue,
    RenderedText,
    TemplateError,
    parse_catalogue,
)
from wanotify.devtools.sandbox.templates import check_send, graph_templates
from wanotify.templates.catalogue import load_catalogue

TO = "+919876543210"


@pytest.fixture(scope="module")
def cat() -> Catalogue:
    return load_catalogue(DEFAULT_TEMPLATES)


def err(exc: pytest.ExceptionInfo[TemplateError]) -> tuple[str, str]:
    return exc.value.field, exc.value.reason


# A catalogue with the shapes the shipped one lacks: media header, header params, named
# templates without a header, several dynamic URL buttons.
EXTRA: dict[str, Any] = {
    "templates": [
        {
            "name": "invoice_ready",
            "language": "en_US",
            "category": "utility",
            "components": [
                {"type": "header", "format": "document"},
                {"type": "body", "text": "Hi {{1}}, your invoice {{2}} is attached."},
                {
                    "type": "buttons",
                    "buttons": [
                        {"type": "url", "text": "Pay", "url": "https://pay.example.com/{{1}}"},
                        {"type": "phone_number", "text": "Call", "phone_number": "+15550100001"},
                        {"type": "url", "text": "Help", "url": "https://help.example.com/{{1}}"},
                    ],
                },
            ],
        },
        {
            "name": "ticket_update",
            "language": "en",
            "category": "utility",
            "components": [
                {"type": "header", "format": "text", "text": "Ticket {{1}}"},
                {"type": "body", "text": "Your ticket is now {{1}}."},
            ],
        },
        {
            "name": "welcome_named",
            "language": "en",
            "category": "marketing",
            "parameter_format": "named",
            "components": [{"type": "body", "text": "Welcome {{first_name}} to {{shop}}!"}],
        },
        {
            "name": "static_notice",
            "language": "en",
            "category": "utility",
            "components": [{"type": "body", "text": "Our office is closed today."}],
        },
    ]
}


@pytest.fixture(scope="module")
def extra() -> Catalogue:
    return parse_catalogue(EXTRA, "extra.yaml")


# ---- loading ----------------------------------------------------------------------------


def test_shipped_catalogue_has_the_documented_templates(cat: Catalogue) -> None:
    keys = {(t.name, t.language) for t in cat}
    assert {
        ("order_confirmation_v2", "en"),
        ("order_confirmation_v2", "hi"),
        ("appointment_reminder", "en"),
        ("otp_code", "en"),
        ("delivery_update", "en"),
        ("seasonal_sale", "en"),
    } <= keys
    assert len(cat) == len(keys)
    assert cat.get("order_confirmation_v2", "en").body_params == ["1", "2", "3"]
    assert cat.get("appointment_reminder", "en").category == "utility"
    otp = cat.get("otp_code", "en")
    assert otp.category == "authentication" and otp.body_params == ["1"]
    assert [b.type for _, b in otp.dynamic_buttons] == ["otp"]
    du = cat.get("delivery_update", "en")
    assert du.named and du.body_params == ["customer_name", "tracking_id", "eta"]
    assert du.header_params == ["tracking_id"]
    assert cat.lookup("nope", "en") is None


def test_load_catalogue_is_cached_by_path_and_mtime(tmp_path: Path) -> None:
    f = tmp_path / "t.yaml"
    f.write_text(
        "templates:\n  - {name: a, language: en, category: utility,"
        " components: [{type: body, text: 'hi {{1}}'}]}\n",
        encoding="utf-8",
    )
    first = load_catalogue(f)
    assert load_catalogue(f) is first
    assert first.get("a", "en").body_params == ["1"]


def test_json_catalogue_loads(tmp_path: Path) -> None:
    f = tmp_path / "t.json"
    f.write_text(
        '{"templates": [{"name": "j", "language": "en", "category": "marketing",'
        ' "components": [{"type": "BODY", "text": "x {{1}}"}]}]}',
        encoding="utf-8",
    )
    assert load_catalogue(f).get("j", "en").category == "marketing"


BAD_CATALOGUES: list[tuple[Any, str]] = [
    ({"templates": "nope"}, "expected a list of templates"),
    ({"nothing": []}, "expected a list of templates"),
    ([{"language": "en", "category": "utility", "components": []}], "templates[0]: missing 'name'"),
    ([{"name": "a", "category": "utility"}], "templates[0]: missing 'language'"),
    ([{"name": "a", "language": "en"}], "templates[0]: missing 'category'"),
    (
        [{"name": "a", "language": "en", "category": "promo", "components": []}],
        "templates[0]: category must be",
    ),
    (
        [{"name": "a", "language": "en", "category": "utility", "components": [{"type": "carousel"}]}],
        "templates[0]: unknown component type 'carousel'",
    ),
    (
        [{"name": "a", "language": "en", "category": "utility",
          "components": [{"type": "footer", "text": "f"}]}],
        "templates[0]: a template needs a body component",
    ),
    (
        [{"name": "a", "language": "en", "category": "utility", "components": [{"type": "body"}]}],
        "templates[0]: the body component needs 'text'",
    ),
    (["just a string"], "templates[0]: expected a mapping"),
    (
        [{"name": "a", "language": "en", "category": "utility",
          "components": [{"type": "body", "text": "x"}, {"type": "buttons", "buttons": [{"text": "b"}]}]}],
        "templates[0]: every button needs a 'type'",
    ),
    (
        [
            {"name": "ok", "language": "en", "category": "utility",
             "components": [{"type": "body", "text": "x"}]},
            {"name": "bad", "language": "en", "category": "utility", "components": []},
        ],
        "templates[1]: a template needs a body component",
    ),
    (
        [{"name": "d", "language": "en", "category": "utility",
          "components": [{"type": "body", "text": "x"}]}] * 2,
        "'d' (en) is defined twice",
    ),
]


@pytest.mark.parametrize(("data", "where"), BAD_CATALOGUES)
def test_bad_catalogue_raises_value_error_naming_the_place(data: Any, where: str) -> None:
    with pytest.raises(ValueError) as exc:
        parse_catalogue(data, "cat.yaml")
    assert not isinstance(exc.value, TemplateError)
    msg = str(exc.value)
    assert msg.startswith("cat.yaml: "), msg
    assert where in msg


def test_bad_catalogue_file_names_the_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("templates: [ {name: a\n", encoding="utf-8")
    with pytest.raises(ValueError) as exc:
        load_catalogue(broken)
    assert str(broken) in str(exc.value)

    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(
        "templates:\n  - {name: a, language: en, category: utility, components: []}\n",
        encoding="utf-8",
    )
    with pytest.raises(ValueError) as exc2:
        load_catalogue(wrong)
    assert str(exc2.value).startswith(f"{wrong}: templates[0]: ")


# ---- validation -------------------------------------------------------------------------

ORDER = ["Rahul Sharma", "ZEC-2026-0042", "₹45,000"]
DELIVERY = {"customer_name": "Rahul", "tracking_id": "AWB123456", "eta": "6 pm"}


def test_validate_returns_the_template(cat: Catalogue) -> None:
    t = cat.validate("order_confirmation_v2", "en", body=ORDER)
    assert t.name == "order_confirmation_v2" and t.language == "en"
    assert cat.validate("order_confirmation_v2", "hi", body=ORDER).language == "hi"
    assert cat.validate("otp_code", "en", body=["483920"]).is_authentication


def test_unknown_template(cat: Catalogue) -> None:
    with pytest.raises(TemplateError) as exc:
        cat.validate("order_confirmation_v9", "en", body=ORDER)
    field, reason = err(exc)
    assert field == "template"
    assert "order_confirmation_v9" in reason


def test_unknown_language_lists_available(cat: Catalogue) -> None:
    with pytest.raises(TemplateError) as exc:
        cat.validate("order_confirmation_v2", "fr", body=ORDER)
    field, reason = err(exc)
    assert field == "language"
    assert "'fr'" in reason
    assert "available: en, hi" in reason
    assert isinstance(exc.value, ValueError)
    assert str(exc.value) == f"language: {reason}"


@pytest.mark.parametrize("body", [[], ORDER[:2], [*ORDER, "extra"]])
def test_wrong_body_parameter_count(cat: Catalogue, body: list[str]) -> None:
    with pytest.raises(TemplateError) as exc:
        cat.validate("order_confirmation_v2", "en", body=body)
    field, reason = err(exc)
    assert field == "params.body"
    assert "expected 3 parameter(s)" in reason and f"got {len(body)}" in reason


def test_missing_body_counts_as_zero(cat: Catalogue) -> None:
    with pytest.raises(TemplateError) as exc:
        cat.validate("appointment_reminder", "en")
    assert err(exc)[0] == "params.body"
    assert "got 0" in exc.value.reason


def test_positional_template_refuses_an_object(cat: Catalogue) -> None:
    with pytest.raises(TemplateError) as exc:
        cat.validate("order_confirmation_v2", "en", body={"1": "a", "2": "b", "3": "c"})
    assert err(exc)[0] == "params.body"
    assert "positional" in exc.value.reason


@pytest.mark.parametrize(
    ("index", "value", "reason"),
    [
        (0, "", "must not be empty"),
        (1, "   ", "must not be empty"),
        (2, 45000, "must be a string"),
        (1, None, "must be a string"),
        (0, "x" * (MAX_PARAM_CHARS + 1), f"is {MAX_PARAM_CHARS + 1} characters"),
    ],
)
def test_bad_body_parameter_names_its_index(cat: Catalogue, index: int, value: Any, reason: str) -> None:
    body: list[Any] = list(ORDER)
    body[index] = value
    with pytest.raises(TemplateError) as exc:
        cat.validate("order_confirmation_v2", "en", body=body)
    field, got = err(exc)
    assert field == f"params.body[{index}]"
    assert reason in got


def test_rendered_body_over_1024(cat: Catalogue) -> None:
    # Each parameter is within the per-parameter limit; the rendered body is not.
    body = ["a" * 500, "b" * 500, "c"]
    with pytest.raises(TemplateError) as exc:
        cat.validate("order_confirmation_v2", "en", body=body)
    field, reason = err(exc)
    assert field == "params.body"
    assert f"Meta allows {MAX_BODY_CHARS}" in reason
    # Exactly at the limit is fine.
    t = cat.get("order_confirmation_v2", "en")
    fixed = len(t.body) - len("{{1}}{{2}}{{3}}")
    ok = ["a" * (MAX_BODY_CHARS - fixed - 2), "b", "c"]
    assert cat.validate("order_confirmation_v2", "en", body=ok) is t


def test_otp_code_over_15_chars(cat: Catalogue) -> None:
    assert cat.validate("otp_code", "en", body=["1" * 15]).name == "otp_code"
    with pytest.raises(TemplateError) as exc:
        cat.validate("otp_code", "en", body=["1" * 16])
    field, reason = err(exc)
    assert field == "params.body[0]"
    assert "16 characters" in reason and "15" in reason
    with pytest.raises(TemplateError) as exc2:
        cat.validate("otp_code", "en", body=[])
    assert err(exc2)[0] == "params.body"


def test_named_template_parameters(cat: Catalogue) -> None:
    header = {"tracking_id": "AWB123456"}
    t = cat.validate("delivery_update", "en", body=DELIVERY, header=header, buttons=["AWB123456"])
    assert t.named

    with pytest.raises(TemplateError) as exc:
        cat.validate("delivery_update", "en", body={"customer_name": "R", "eta": "6"},
                     header=header, buttons=["x"])
    assert err(exc) == ("params.body", "missing parameter(s): tracking_id")

    with pytest.raises(TemplateError) as exc:
        cat.validate("delivery_update", "en", body={**DELIVERY, "coupon": "X"},
                     header=header, buttons=["x"])
    assert err(exc) == ("params.body", "unknown parameter(s): coupon")

    with pytest.raises(TemplateError) as exc:
        cat.validate("delivery_update", "en", body=list(DELIVERY.values()),
                     header=header, buttons=["x"])
    field, reason = err(exc)
    assert field == "params.body"
    assert "named parameters" in reason and "customer_name, tracking_id, eta" in reason

    with pytest.raises(TemplateError) as exc:
        cat.validate("delivery_update", "en", body={**DELIVERY, "eta": " "},
                     header=header, buttons=["x"])
    assert err(exc) == ("params.body.eta", "must not be empty")


def test_header_parameters(cat: Catalogue, extra: Catalogue) -> None:
    # delivery_update's header has {{tracking_id}}: it must be given, by name.
    with pytest.raises(TemplateError) as exc:
        cat.validate("delivery_update", "en", body=DELIVERY, buttons=["x"])
    assert err(exc)[0] == "params.header"
    with pytest.raises(TemplateError) as exc:
        cat.validate("delivery_update", "en", body=DELIVERY, header={"tracking": "x"},
                     buttons=["x"])
    assert err(exc)[0] == "params.header"
    with pytest.raises(TemplateError) as exc:
        cat.validate("delivery_update", "en", body=DELIVERY, header={"tracking_id": "x" * 61},
                     buttons=["x"])
    assert err(exc)[0] == "params.header.tracking_id"
    # Positional header parameters.
    assert extra.validate("ticket_update", "en", body=["closed"], header=["T-1"]).name
    with pytest.raises(TemplateError) as exc:
        extra.validate("ticket_update", "en", body=["closed"])
    assert err(exc)[0] == "params.header"
    assert "expected 1 parameter(s)" in exc.value.reason
    with pytest.raises(TemplateError) as exc:
        extra.validate("ticket_update", "en", body=["closed"], header=[""])
    assert err(exc) == ("params.header[0]", "must not be empty")
    with pytest.raises(TemplateError) as exc:
        extra.validate("ticket_update", "en", body=["closed"], header=["T" * 60])
    field, reason = err(exc)
    assert field in ("params.header", "params.header[0]") and "60" in reason
    # A text header without placeholders takes no parameters.
    with pytest.raises(TemplateError) as exc:
        cat.validate("seasonal_sale", "en", body=["Rahul", "30%"], header=["x"])
    assert err(exc)[0] == "params.header"


def test_dynamic_url_button_parameter_count(cat: Catalogue, extra: Catalogue) -> None:
    header = {"tracking_id": "AWB123456"}
    with pytest.raises(TemplateError) as exc:
        cat.validate("delivery_update", "en", body=DELIVERY, header=header)
    field, reason = err(exc)
    assert field == "params.buttons"
    assert "expects 1 button parameter(s), got 0" in reason
    with pytest.raises(TemplateError) as exc:
        cat.validate("delivery_update", "en", body=DELIVERY, header=header, buttons=["a", "b"])
    assert err(exc)[0] == "params.buttons"
    with pytest.raises(TemplateError) as exc:
        cat.validate("delivery_update", "en", body=DELIVERY, header=header, buttons=[" "])
    assert err(exc) == ("params.buttons[0]", "must be a non-empty string")
    with pytest.raises(TemplateError) as exc:
        cat.validate("delivery_update", "en", body=DELIVERY, header=header, buttons=["x" * 2001])
    assert err(exc)[0] == "params.buttons[0]"
    # A static URL button (order_confirmation_v2) and the OTP copy-code button take none.
    with pytest.raises(TemplateError) as exc:
        cat.validate("order_confirmation_v2", "en", body=ORDER, buttons=["x"])
    assert err(exc)[0] == "params.buttons"
    with pytest.raises(TemplateError) as exc:
        cat.validate("otp_code", "en", body=["483920"], buttons=["483920"])
    assert err(exc)[0] == "params.buttons"
    # Two dynamic URL buttons (index 0 and 2) need two values.
    media = {"link": "https://files.example.com/inv.pdf"}
    with pytest.raises(TemplateError) as exc:
        extra.validate("invoice_ready", "en_US", body=["A", "B"], header=media, buttons=["p"])
    assert "expects 2 button parameter(s), got 1" in exc.value.reason


def test_media_header_requirements(extra: Catalogue, cat: Catalogue) -> None:
    ok = extra.validate("invoice_ready", "en_US", body=["A", "INV-1"],
                        header={"link": "https://files.example.com/inv.pdf"}, buttons=["p", "h"])
    assert ok.header_format == "document"
    assert extra.validate("invoice_ready", "en_US", body=["A", "INV-1"],
                          header={"id": "1234567890"}, buttons=["p", "h"])
    for bad in (None, [], ["https://x"], {}, {"link": ""}, {"filename": "a.pdf"}):
        with pytest.raises(TemplateError) as exc:
            extra.validate("invoice_ready", "en_US", body=["A", "INV-1"], header=bad,
                           buttons=["p", "h"])
        field, reason = err(exc)
        assert field == "params.header"
        assert "document header" in reason
    # A media object for a template without a media header.
    with pytest.raises(TemplateError) as exc:
        cat.validate("order_confirmation_v2", "en", body=ORDER, header={"link": "https://x/y.png"})
    assert err(exc) == ("params.header", "template 'order_confirmation_v2' has no media header")


def test_templates_without_parameters(extra: Catalogue) -> None:
    t = extra.validate("static_notice", "en")
    assert extra.validate("static_notice", "en", body=[]) is t
    with pytest.raises(TemplateError) as exc:
        extra.validate("static_notice", "en", body=["x"])
    assert err(exc)[0] == "params.body"
    assert "none" in exc.value.reason
    payload = extra.render(t, TO)
    assert payload["template"] == {"name": "static_notice", "language": {"code": "en"}}
    assert check_send(extra, "static_notice", "en", None) is None


def test_named_template_without_header(extra: Catalogue) -> None:
    body = {"first_name": "Asha", "shop": "Zecommerce"}
    t = extra.validate("welcome_named", "en", body=body)
    assert extra.render(t, TO, body=body)["template"]["components"] == [
        {
            "type": "body",
            "parameters": [
                {"type": "text", "parameter_name": "first_name", "text": "Asha"},
                {"type": "text", "parameter_name": "shop", "text": "Zecommerce"},
            ],
        }
    ]


# ---- rendering --------------------------------------------------------------------------


def _payload(template: dict[str, Any], **extra_fields: Any) -> dict[str, Any]:
    return {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": TO,
        "type": "template",
        "template": template,
        **extra_fields,
    }


def _text(*values: str) -> list[dict[str, str]]:
    return [{"type": "text", "text": v} for v in values]


def test_render_order_confirmation(cat: Catalogue) -> None:
    t = cat.validate("order_confirmation_v2", "en", body=ORDER)
    assert cat.render(t, TO, body=ORDER) == _payload(
        {
            "name": "order_confirmation_v2",
            "language": {"code": "en"},
            "components": [{"type": "body", "parameters": _text(*ORDER)}],
        }
    )


def test_render_appointment_reminder(cat: Catalogue) -> None:
    body = ["Anita Rao", "28 Nov 2026", "10:30"]
    t = cat.validate("appointment_reminder", "en", body=body)
    assert cat.render(t, TO, body=body) == _payload(
        {
            "name": "appointment_reminder",
            "language": {"code": "en"},
            "components": [{"type": "body", "parameters": _text(*body)}],
        }
    )


def test_render_otp_code_fills_the_copy_code_button(cat: Catalogue) -> None:
    t = cat.validate("otp_code", "en", body=["483920"])
    assert cat.render(t, TO, body=["483920"]) == _payload(
        {
            "name": "otp_code",
            "language": {"code": "en"},
            "components": [
                {"type": "body", "parameters": _text("483920")},
                {
                    "type": "button",
                    "sub_type": "url",
                    "index": "0",
                    "parameters": [{"type": "text", "text": "483920"}],
                },
            ],
        }
    )


def test_render_delivery_update_named(cat: Catalogue) -> None:
    header = {"tracking_id": "AWB123456"}
    t = cat.validate("delivery_update", "en", body=DELIVERY, header=header, buttons=["AWB123456"])
    payload = cat.render(t, TO, body=DELIVERY, header=header, buttons=["AWB123456"],
                         callback_data="job-1")
    assert payload == _payload(
        {
            "name": "delivery_update",
            "language": {"code": "en"},
            "components": [
                {
                    "type": "header",
                    "parameters": [
                        {"type": "text", "parameter_name": "tracking_id", "text": "AWB123456"}
                    ],
                },
                {
                    "type": "body",
                    "parameters": [
                        {"type": "text", "parameter_name": "customer_name", "text": "Rahul"},
                        {"type": "text", "parameter_name": "tracking_id", "text": "AWB123456"},
                        {"type": "text", "parameter_name": "eta", "text": "6 pm"},
                    ],
                },
                {
                    "type": "button",
                    "sub_type": "url",
                    "index": "0",
                    "parameters": [{"type": "text", "text": "AWB123456"}],
                },
            ],
        },
        biz_opaque_callback_data="job-1",
    )


def test_render_seasonal_sale(cat: Catalogue) -> None:
    body = ["Rahul", "30%"]
    t = cat.validate("seasonal_sale", "en", body=body)
    assert cat.render(t, TO, body=body) == _payload(
        {
            "name": "seasonal_sale",
            "language": {"code": "en"},
            "components": [{"type": "body", "parameters": _text(*body)}],
        }
    )


def test_render_callback_data(cat: Catalogue) -> None:
    t = cat.get("order_confirmation_v2", "en")
    without = cat.render(t, TO, body=ORDER)
    assert "biz_opaque_callback_data" not in without
    with_cb = cat.render(t, TO, body=ORDER, callback_data="0190f0e6-aaaa-7bbb-8ccc-123456789abc")
    assert with_cb == {**without, "biz_opaque_callback_data": "0190f0e6-aaaa-7bbb-8ccc-123456789abc"}


def test_render_media_header_and_button_indexes(extra: Catalogue) -> None:
    media = {"link": "https://files.example.com/inv.pdf", "filename": "inv.pdf", "junk": "x"}
    t = extra.validate("invoice_ready", "en_US", body=["A", "INV-1"], header=media,
                       buttons=["pay-1", "help-1"])
    payload = extra.render(t, TO, body=["A", "INV-1"], header=media, buttons=["pay-1", "help-1"])
    assert payload["template"] == {
        "name": "invoice_ready",
        "language": {"code": "en_US"},
        "components": [
            {
                "type": "header",
                "parameters": [
                    {
                        "type": "document",
                        "document": {"link": "https://files.example.com/inv.pdf",
                                     "filename": "inv.pdf"},
                    }
                ],
            },
            {"type": "body", "parameters": _text("A", "INV-1")},
            {"type": "button", "sub_type": "url", "index": "0",
             "parameters": [{"type": "text", "text": "pay-1"}]},
            {"type": "button", "sub_type": "url", "index": "2",
             "parameters": [{"type": "text", "text": "help-1"}]},
        ],
    }
    assert check_send(extra, "invoice_ready", "en_US", payload["template"]["components"]) is None


# ---- plain text for fallback channels ---------------------------------------------------


def test_render_text_uses_fallback_variants(cat: Catalogue) -> None:
    t = cat.get("order_confirmation_v2", "en")
    assert cat.render_text(t, "sms", ORDER) == RenderedText(
        body="Hi Rahul Sharma, order ZEC-2026-0042 for ₹45,000 is confirmed. We'll text you when it ships."
    )
    email = cat.render_text(t, "email", ORDER)
    assert email.subject == "Order ZEC-2026-0042 confirmed"
    assert email.body == (
        "Hi Rahul Sharma,\n\nThank you for your order! Order ZEC-2026-0042 for ₹45,000 is confirmed.\n"
        "We'll write again when it ships.\n"
    )
    otp = cat.get("otp_code", "en")
    assert cat.render_text(otp, "sms", ["483920"]).body.startswith("483920 is your verification code.")
    assert cat.render_text(otp, "email", ["483920"]).subject == "Your verification code"


def test_render_text_defaults_from_the_body(cat: Catalogue) -> None:
    sale = cat.get("seasonal_sale", "en")  # no sms variant: header + body + footer
    assert cat.render_text(sale, "sms", ["Rahul", "30%"]) == RenderedText(
        body="Winter sale\nHi Rahul, our winter sale is on: 30% off everything until Sunday.\n"
        "Not interested? Tap Stop promotions"
    )
    hi = cat.get("order_confirmation_v2", "hi")  # no email variant: body; subject from the name
    email = cat.render_text(hi, "email", ORDER)
    assert email.body == "नमस्ते Rahul Sharma, आपका ऑर्डर ZEC-2026-0042 (₹45,000) कन्फ़र्म हो गया है।"
    assert email.subject == "Order confirmation v2"
    du = cat.get("delivery_update", "en")  # named; subject from the header text
    email = cat.render_text(du, "email", DELIVERY)
    assert email.subject == "Package AWB123456"
    assert "Hi Rahul, your package AWB123456 is out for delivery and should arrive by 6 pm." in email.body
    assert "{{" not in email.body
    assert cat.render_text(du, "sms", DELIVERY).body == "Hi Rahul, package AWB123456 arrives by 6 pm."


# ---- the Graph API's view (sandbox) -----------------------------------------------------

RENDERED_CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("order_confirmation_v2", "en", {"body": ORDER}),
    ("order_confirmation_v2", "hi", {"body": ORDER}),
    ("appointment_reminder", "en", {"body": ["Anita", "28 Nov", "10:30"]}),
    ("otp_code", "en", {"body": ["483920"]}),
    ("delivery_update", "en", {"body": DELIVERY, "header": {"tracking_id": "A1"}, "buttons": ["A1"]}),
    ("seasonal_sale", "en", {"body": ["Rahul", "30%"]}),
]


@pytest.mark.parametrize(("name", "lang", "params"), RENDERED_CASES)
def test_check_send_accepts_every_rendered_payload(cat: Catalogue, name: str, lang: str,
                                                   params: dict[str, Any]) -> None:
    t = cat.validate(name, lang, **params)
    payload = cat.render(t, TO, **params, callback_data="cb")
    tmpl = payload["template"]
    assert check_send(cat, tmpl["name"], tmpl["language"]["code"], tmpl.get("components")) is None


def test_check_send_errors(cat: Catalogue) -> None:
    code, details, http = check_send(cat, "nope", "en", [])  # type: ignore[misc]
    assert (code, http) == (132001, 404)
    assert "nope" in details
    assert check_send(cat, "order_confirmation_v2", "de", [])[0] == 132001  # type: ignore[index]

    two = [{"type": "body", "parameters": _text("a", "b")}]
    code, details, http = check_send(cat, "order_confirmation_v2", "en", two)  # type: ignore[misc]
    assert (code, http) == (132000, 400)
    assert "(2)" in details and "(3)" in details
    assert check_send(cat, "order_confirmation_v2", "en", None) == (
        132000,
        "body: number of localizable_params (0) does not match the expected number of params (3)",
        400,
    )
    # OTP without its copy-code button parameter.
    body_only = [{"type": "body", "parameters": _text("483920")}]
    res = check_send(cat, "otp_code", "en", body_only)
    assert res is not None and res[0] == 132000 and res[2] == 400
    # A button parameter on a button that takes none.
    extra_btn = [
        {"type": "body", "parameters": _text(*ORDER)},
        {"type": "button", "sub_type": "url", "index": "0", "parameters": _text("x")},
    ]
    res = check_send(cat, "order_confirmation_v2", "en", extra_btn)
    assert res is not None and res[0] == 132000
    # A header parameter for a template without header parameters.
    with_header = [
        {"type": "header", "parameters": _text("x")},
        {"type": "body", "parameters": _text("Rahul", "30%")},
    ]
    res = check_send(cat, "seasonal_sale", "en", with_header)
    assert res is not None and res[0] == 132000 and "header" in res[1]
    # Empty text parameter.
    empty = [{"type": "body", "parameters": _text("Rahul", "")}]
    res = check_send(cat, "seasonal_sale", "en", empty)
    assert res is not None and res[0] == 131008 and res[2] == 400
    # Malformed components.
    res = check_send(cat, "seasonal_sale", "en", ["body"])  # type: ignore[list-item]
    assert res is not None and (res[0], res[2]) == (100, 400)
    bad_index = [
        {"type": "body", "parameters": _text("483920")},
        {"type": "button", "sub_type": "url", "index": "first", "parameters": _text("483920")},
    ]
    res = check_send(cat, "otp_code", "en", bad_index)
    assert res is not None and res[0] == 100


def test_graph_templates_shape(cat: Catalogue) -> None:
    listing = graph_templates(cat, "102290129340398")
    assert len(listing) == len(cat)
    keys = [(x["name"], x["language"]) for x in listing]
    assert keys == sorted(keys)
    assert len({x["id"] for x in listing}) == len(listing)
    for item in listing:
        assert set(item) >= {"name", "language", "status", "category", "parameter_format",
                             "components", "id"}
        assert item["status"] == "APPROVED"
        assert item["category"] in ("UTILITY", "AUTHENTICATION", "MARKETING")
        assert item["id"].isdigit()
        assert all(c["type"] == c["type"].upper() for c in item["components"])
        assert any(c["type"] == "BODY" for c in item["components"])
    by_key = {(x["name"], x["language"]): x for x in listing}
    otp = by_key[("otp_code", "en")]
    assert otp["category"] == "AUTHENTICATION" and otp["parameter_format"] == "POSITIONAL"
    assert [c["type"] for c in otp["components"]] == ["BODY", "FOOTER", "BUTTONS"]
    body = next(c for c in otp["components"] if c["type"] == "BODY")
    assert body["text"].startswith("{{1}} is your verification code")
    assert by_key[("delivery_update", "en")]["parameter_format"] == "NAMED"
    assert by_key[("seasonal_sale", "en")]["category"] == "MARKETING"
    # The catalogue's own data is not mutated by the listing.
    assert cat.get("otp_code", "en").raw["components"][0]["type"] == "body"
    assert [x["id"] for x in graph_templates(cat, "waba")] == [str(i) for i in range(len(cat))]
