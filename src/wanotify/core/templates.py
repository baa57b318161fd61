"""The catalogue of approved templates: validation, and rendering to Graph API payloads and text.

A catalogue file (YAML or JSON) lists templates as Meta knows them — name, language,
category, components (header, body, footer, buttons) with positional ``{{1}}`` or named
``{{customer_name}}`` placeholders — plus plain-text ``fallback`` variants for SMS and email.
Jobs are validated against it when they are enqueued, so an unsendable job is refused at the
door with the failing field named, instead of failing at Meta later.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

Category = Literal["utility", "authentication", "marketing"]
ParamValues = list[str] | dict[str, str]

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}")

# Meta's limits (template components and parameters).
MAX_BODY_CHARS = 1024
MAX_HEADER_CHARS = 60
MAX_PARAM_CHARS = 1024
MAX_BUTTON_PARAM_CHARS = 2000
MAX_OTP_CHARS = 15
MAX_TEXT_CHARS = 4096
MEDIA_FORMATS = ("image", "video", "document")


class TemplateError(ValueError):
    """A job does not fit the catalogue. ``field`` is the dotted path of the failing field."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class Button:
    type: str  # quick_reply | url | phone_number | otp | copy_code
    text: str
    url: str | None = None
    otp_type: str | None = None

    @property
    def dynamic(self) -> bool:
        """Whether a send must supply one parameter for this button."""
        if self.type == "otp":
            return self.otp_type in ("copy_code", "one_tap", "zero_tap")
        if self.type == "copy_code":
            return True
        return self.type == "url" and bool(self.url and PLACEHOLDER.search(self.url))


@dataclass(frozen=True)
class Template:
    name: str
    language: str
    category: Category
    named: bool
    body: str
    header_format: str | None = None  # text | image | video | document | location
    header_text: str | None = None
    footer: str | None = None
    buttons: tuple[Button, ...] = ()
    fallback_sms: str | None = None
    fallback_email_subject: str | None = None
    fallback_email_body: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @cached_property
    def body_params(self) -> list[str]:
        return _placeholders(self.body)

    @cached_property
    def header_params(self) -> list[str]:
        if self.header_format == "text" and self.header_text:
            return _placeholders(self.header_text)
        return []

    @property
    def dynamic_buttons(self) -> list[tuple[int, Button]]:
        return [(i, b) for i, b in enumerate(self.buttons) if b.dynamic]

    @property
    def is_authentication(self) -> bool:
        return self.category == "authentication"


def _placeholders(text: str) -> list[str]:
    seen: list[str] = []
    for m in PLACEHOLDER.finditer(text):
        if m.group(1) not in seen:
            seen.append(m.group(1))
    return seen


def _substitute(text: str, names: list[str], values: ParamValues) -> str:
    mapping = dict(values) if isinstance(values, dict) else dict(zip(names, values, strict=False))
    return PLACEHOLDER.sub(lambda m: mapping.get(m.group(1), m.group(0)), text)


@dataclass(frozen=True)
class RenderedText:
    """Plain text for a fallback channel."""

    body: str
    subject: str | None = None


class Catalogue:
    """Approved templates, looked up by (name, language)."""

    def __init__(self, templates: list[Template]):
        self._by_key: dict[tuple[str, str], Template] = {}
        self._languages: dict[str, list[str]] = {}
        for t in templates:
            key = (t.name, t.language)
            if key in self._by_key:
                raise ValueError(f"template {t.name!r} ({t.language}) is defined twice")
            self._by_key[key] = t
            self._languages.setdefault(t.name, []).append(t.language)

    def __len__(self) -> int:
        return len(self._by_key)

    def __iter__(self) -> Any:
        return iter(self._by_key.values())

    def lookup(self, name: str, language: str) -> Template | None:
        return self._by_key.get((name, language))

    def get(self, name: str, language: str) -> Template:
        t = self._by_key.get((name, language))
        if t is not None:
            return t
        langs = self._languages.get(name)
        if not langs:
            raise TemplateError("template", f"unknown template {name!r}")
        raise TemplateError(
            "language",
            f"template {name!r} has no approved {language!r} translation "
            f"(available: {', '.join(sorted(langs))})",
        )

    # ---- validation -----------------------------------------------------------------

    def validate(
        self,
        name: str,
        language: str,
        *,
        body: ParamValues | None = None,
        header: ParamValues | dict[str, Any] | None = None,
        buttons: list[str] | None = None,
    ) -> Template:
        """Check a job's parameters against the approved template; raise TemplateError."""
        t = self.get(name, language)
        body_v = body if body is not None else []
        _check_values("params.body", t.body_params, body_v, t.named, MAX_PARAM_CHARS)
        rendered = _substitute(t.body, t.body_params, body_v)
        if len(rendered) > MAX_BODY_CHARS:
            raise TemplateError(
                "params.body",
                f"rendered body is {len(rendered)} characters; Meta allows {MAX_BODY_CHARS}",
            )
        if t.is_authentication and body_v:
            code = body_v[0] if isinstance(body_v, list) else next(iter(body_v.values()))
            if len(code) > MAX_OTP_CHARS:
                raise TemplateError(
                    "params.body[0]",
                    f"one-time code is {len(code)} characters; Meta allows {MAX_OTP_CHARS}",
                )
        self._validate_header(t, header)
        self._validate_buttons(t, buttons)
        return t

    def _validate_header(self, t: Template, header: Any) -> None:
        fmt = t.header_format
        if fmt in MEDIA_FORMATS:
            if not isinstance(header, dict) or not (header.get("link") or header.get("id")):
                raise TemplateError(
                    "params.header",
                    f'template {t.name!r} has a {fmt} header: give {{"link": URL}} or {{"id": media id}}',
                )
            return
        if isinstance(header, dict) and ("link" in header or "id" in header):
            raise TemplateError("params.header", f"template {t.name!r} has no media header")
        values: ParamValues = header if header is not None else []
        _check_values("params.header", t.header_params, values, t.named, MAX_HEADER_CHARS)
        if t.header_params:
            rendered = _substitute(t.header_text or "", t.header_params, values)
            if len(rendered) > MAX_HEADER_CHARS:
                raise TemplateError(
                    "params.header",
                    f"rendered header is {len(rendered)} characters; Meta allows {MAX_HEADER_CHARS}",
                )

    def _validate_buttons(self, t: Template, buttons: list[str] | None) -> None:
        dynamic = [b for _, b in t.dynamic_buttons if b.type == "url"]
        given = buttons or []
        if len(given) != len(dynamic):
            raise TemplateError(
                "params.buttons",
                f"template {t.name!r} expects {len(dynamic)} button parameter(s), got {len(given)}",
            )
        for i, v in enumerate(given):
            if not isinstance(v, str) or not v.strip():
                raise TemplateError(f"params.buttons[{i}]", "must be a non-empty string")
            if len(v) > MAX_BUTTON_PARAM_CHARS:
                raise TemplateError(
                    f"params.buttons[{i}]", f"longer than {MAX_BUTTON_PARAM_CHARS} characters"
                )

    # ---- rendering ------------------------------------------------------------------

    def render(
        self,
        t: Template,
        to: str,
        *,
        body: ParamValues | None = None,
        header: ParamValues | dict[str, Any] | None = None,
        buttons: list[str] | None = None,
        callback_data: str | None = None,
    ) -> dict[str, Any]:
        """The exact Graph API ``POST /{phone_number_id}/messages`` body for this template send."""
        components: list[dict[str, Any]] = []
        if t.header_format in MEDIA_FORMATS and isinstance(header, dict):
            media = {k: v for k, v in header.items() if k in ("link", "id", "filename")}
            components.append(
                {
                    "type": "header",
                    "parameters": [{"type": t.header_format, t.header_format: media}],
                }
            )
        elif t.header_params:
            components.append(
                {
                    "type": "header",
                    "parameters": _text_params(t.header_params, header or [], t.named),
                }
            )
        if t.body_params:
            components.append(
                {"type": "body", "parameters": _text_params(t.body_params, body or [], t.named)}
            )
        url_values = iter(buttons or [])
        code = _first_value(body) if t.is_authentication else None
        for index, b in t.dynamic_buttons:
            if b.type in ("otp", "copy_code"):
                value = code or ""
            else:
                value = next(url_values)
            components.append(
                {
                    "type": "button",
                    "sub_type": "url",
                    "index": str(index),
                    "parameters": [{"type": "text", "text": value}],
                }
            )
        template: dict[str, Any] = {"name": t.name, "language": {"code": t.language}}
        if components:
            template["components"] = components
        payload: dict[str, Any] = {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": to,
            "type": "template",
            "template": template,
        }
        if callback_data is not None:
            payload["biz_opaque_callback_data"] = callback_data
        return payload

    def render_text(
        self, t: Template, channel: Literal["sms", "email"], body: ParamValues | None = None
    ) -> RenderedText:
        """Plain text of the template for a fallback channel (its fallback variant, else the body)."""
        values = body or []
        names = t.body_params
        if channel == "sms":
            text = t.fallback_sms or _plain_body(t)
            return RenderedText(body=_substitute(text, names, values))
        subject = t.fallback_email_subject or t.header_text or t.name.replace("_", " ").capitalize()
        text = t.fallback_email_body or _plain_body(t)
        return RenderedText(
            body=_substitute(text, names, values), subject=_substitute(subject, names, values)
        )


def _first_value(values: ParamValues | dict[str, Any] | None) -> str | None:
    if isinstance(values, list):
        return values[0] if values else None
    if isinstance(values, dict):
        return next(iter(values.values()), None)
    return None


def _plain_body(t: Template) -> str:
    parts = [p for p in (t.header_text, t.body, t.footer) if p]
    return "\n".join(parts)


def _text_params(names: list[str], values: Any, named: bool) -> list[dict[str, Any]]:
    if named and isinstance(values, dict):
        return [{"type": "text", "parameter_name": n, "text": values[n]} for n in names]
    return [{"type": "text", "text": v} for v in values]


def _check_values(
    field_name: str, names: list[str], values: Any, named: bool, max_chars: int
) -> None:
    if named and names:
        if not isinstance(values, dict):
            raise TemplateError(
                field_name,
                f"this template uses named parameters: give an object with {', '.join(names)}",
            )
        missing = [n for n in names if n not in values]
        extra = [k for k in values if k not in names]
        if missing:
            raise TemplateError(field_name, f"missing parameter(s): {', '.join(missing)}")
        if extra:
            raise TemplateError(field_name, f"unknown parameter(s): {', '.join(extra)}")
        items = [(f"{field_name}.{n}", values[n]) for n in names]
    else:
        if isinstance(values, dict):
            if not names and not values:
                return
            raise TemplateError(field_name, "this template uses positional parameters: give a list")
        if len(values) != len(names):
            raise TemplateError(
                field_name,
                f"expected {len(names)} parameter(s) ({', '.join('{{' + n + '}}' for n in names) or 'none'}), "
                f"got {len(values)}",
            )
        items = [(f"{field_name}[{i}]", v) for i, v in enumerate(values)]
    for path, v in items:
        if not isinstance(v, str):
            raise TemplateError(path, "must be a string")
        if not v.strip():
            raise TemplateError(path, "must not be empty")
        if len(v) > max_chars:
            raise TemplateError(path, f"is {len(v)} characters; the limit is {max_chars}")


# ---- loading --------------------------------------------------------------------------


def _parse_template(item: dict[str, Any], where: str) -> Template:
    if not isinstance(item, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(item).__name__}")
    try:
        name = str(item["name"])
        language = str(item["language"])
        category = str(item["category"]).lower()
    except KeyError as exc:
        raise ValueError(f"{where}: missing {exc.args[0]!r}") from None
    if category not in ("utility", "authentication", "marketing"):
        raise ValueError(f"{where}: category must be utility, authentication or marketing")
    named = str(item.get("parameter_format", "positional")).lower() == "named"
    body = None
    header_format = header_text = footer = None
    buttons: list[Button] = []
    for comp in item.get("components", []):
        if not isinstance(comp, dict):
            raise ValueError(f"{where}: a component must be a mapping")
        ctype = str(comp.get("type", "")).lower()
        if ctype == "body":
            if "text" not in comp:
                raise ValueError(f"{where}: the body component needs 'text'")
            body = str(comp["text"])
        elif ctype == "header":
            header_format = str(comp.get("format", "text")).lower()
            header_text = comp.get("text")
        elif ctype == "footer":
            footer = comp.get("text")
        elif ctype == "buttons":
            for b in comp.get("buttons", []):
                if not isinstance(b, dict) or "type" not in b:
                    raise ValueError(f"{where}: every button needs a 'type'")
                buttons.append(
                    Button(
                        type=str(b["type"]).lower(),
                        text=str(b.get("text", "")),
                        url=b.get("url"),
                        otp_type=(str(b["otp_type"]).lower() if b.get("otp_type") else None),
                    )
                )
        else:
            raise ValueError(f"{where}: unknown component type {ctype!r}")
    if body is None:
        raise ValueError(f"{where}: a template needs a body component")
    fb = item.get("fallback") or {}
    return Template(
        name=name,
        language=language,
        category=category,  # type: ignore[arg-type]
        named=named,
        body=body,
        header_format=header_format,
        header_text=header_text,
        footer=footer,
        buttons=tuple(buttons),
        fallback_sms=fb.get("sms"),
        fallback_email_subject=fb.get("email_subject"),
        fallback_email_body=fb.get("email_body"),
        raw=item,
    )


def parse_catalogue(data: Any, source: str = "catalogue") -> Catalogue:
    items = data.get("templates") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise ValueError(f"{source}: expected a list of templates under 'templates'")
    templates = [_parse_template(it, f"{source}: templates[{i}]") for i, it in enumerate(items)]
    try:
        return Catalogue(templates)
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from None
