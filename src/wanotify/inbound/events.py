"""The typed events of Meta's WhatsApp Business Account webhooks (what ``parse`` returns).

Frozen pydantic models: delivery statuses, inbound messages, template, account and
preference events, and whatever else Meta sends, kept verbatim.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from wanotify.core.status import RANK
from wanotify.inbound.values import as_str, unix_or_none

WABA_OBJECT = "whatsapp_business_account"

#: The forward-only status order of a notification (``core.status``); ``failed`` is
#: deliberately absent: it is not a rung of the ladder.
STATUS_RANK: dict[str, int] = RANK

#: Status values Meta documents for ``statuses[].status``. Any other string is
#: kept as received (Meta adds values over time), never rejected.
KNOWN_STATUSES: frozenset[str] = frozenset(
    {"sent", "delivered", "read", "failed", "deleted", "warning", "played"}
)

#: ``field`` values parsed into :class:`TemplateEvent`.
TEMPLATE_FIELDS: dict[str, Literal["status", "quality", "category"]] = {
    "message_template_status_update": "status",
    "message_template_quality_update": "quality",
    "template_category_update": "category",
}

#: ``field`` values parsed into :class:`AccountEvent` (kept generic).
ACCOUNT_FIELDS: frozenset[str] = frozenset(
    {
        "account_update",
        "account_alerts",
        "account_review_update",
        "phone_number_quality_update",
        "phone_number_name_update",
        "business_capability_update",
        "security",
    }
)

# --------------------------------------------------------------------------- errors


class WebhookError(ValueError):
    """The body is not a WhatsApp Business Account webhook at all.

    ``path`` is a JSON path (``$``, ``$.object``, ``$.entry``) and ``reason``
    says what is wrong there; ``str(exc)`` is ``"<path>: <reason>"``.
    """

    def __init__(self, reason: str, path: str = "$") -> None:
        super().__init__(f"{path}: {reason}")
        self.reason = reason
        self.path = path


# --------------------------------------------------------------------------- models


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ErrorDetail(_Frozen):
    """One element of an ``errors`` array (status, message or value level)."""

    code: int
    title: str | None = None
    message: str | None = None
    details: str | None = None  # error_data.details
    href: str | None = None


class ValueLevelError(ErrorDetail):
    """An error reported at ``value.errors`` (not tied to one message), with the
    business phone number it concerns (e.g. 130429 rate limit hit)."""

    phone_number_id: str | None = None
    display_phone_number: str | None = None
    waba_id: str | None = None


class StatusUpdate(_Frozen):
    """A delivery status of a message we sent (``value.statuses[]``)."""

    wamid: str
    #: ``sent``, ``delivered``, ``read``, ``failed``, ``deleted``, ``warning``,
    #: ``played`` ... any other string Meta sends is kept as is.
    status: str
    timestamp: datetime  # UTC
    #: The user's phone number (digits, as Meta sends it). Meta omits it for
    #: some users who adopted a username; ``recipient_user_id`` is then set.
    recipient_id: str | None = None
    recipient_user_id: str | None = None  # business-scoped user id (BSUID)
    phone_number_id: str | None = None
    display_phone_number: str | None = None
    waba_id: str | None = None
    errors: list[ErrorDetail] = Field(default_factory=list)
    pricing: dict[str, Any] | None = None
    conversation: dict[str, Any] | None = None
    biz_opaque_callback_data: str | None = None
    raw: dict[str, Any] = Field(default_factory=dict)

    @property
    def rank(self) -> int | None:
        """Position in :data:`STATUS_RANK`; ``None`` for ``failed`` and others."""
        return STATUS_RANK.get(self.status)

    @property
    def error_code(self) -> int | None:
        return self.errors[0].code if self.errors else None

    @property
    def pricing_category(self) -> str | None:
        return as_str(self.pricing.get("category")) if self.pricing else None

    @property
    def pricing_model(self) -> str | None:
        return as_str(self.pricing.get("pricing_model")) if self.pricing else None

    @property
    def pricing_type(self) -> str | None:
        """``regular`` / ``free_customer_service`` / ``free_entry_point`` (PMP)."""
        return as_str(self.pricing.get("type")) if self.pricing else None

    @property
    def billable(self) -> bool | None:
        value = self.pricing.get("billable") if self.pricing else None
        return value if isinstance(value, bool) else None

    @property
    def conversation_id(self) -> str | None:
        return as_str(self.conversation.get("id")) if self.conversation else None

    @property
    def conversation_origin(self) -> str | None:
        origin = self.conversation.get("origin") if self.conversation else None
        return as_str(origin.get("type")) if isinstance(origin, dict) else None

    @property
    def conversation_expires_at(self) -> datetime | None:
        if not self.conversation:
            return None
        return unix_or_none(self.conversation.get("expiration_timestamp"))


class InboundMessage(_Frozen):
    """A message a WhatsApp user sent to us (``value.messages[]``)."""

    wamid: str
    #: Sender in E.164 with ``+``; ``None`` when Meta withholds the number
    #: (username users, ``user_changed_user_id`` system messages).
    from_number: str | None
    from_user_id: str | None = None  # business-scoped user id (BSUID)
    profile_name: str | None = None  # contacts[].profile.name of the sender
    timestamp: datetime  # UTC
    type: str
    #: text.body, button.text, interactive reply title, reaction emoji ("" or
    #: None when the user removed a reaction), media caption, system body,
    #: order text.
    text: str | None = None
    #: button.payload, interactive reply id, flow response_json.
    payload: str | None = None
    #: The wamid this message answers: context.id (reply, button click) or,
    #: for a reaction, the reacted message.
    context_wamid: str | None = None
    media_id: str | None = None
    phone_number_id: str | None = None
    display_phone_number: str | None = None
    waba_id: str | None = None
    errors: list[ErrorDetail] = Field(default_factory=list)
    raw: dict[str, Any] = Field(default_factory=dict)


class TemplateEvent(_Frozen):
    """Template lifecycle: status (APPROVED, REJECTED, PAUSED, DISABLED, ...),
    quality score (GREEN/YELLOW/RED) or category change."""

    kind: Literal["status", "quality", "category"]
    template_id: str | None = None
    name: str | None = None
    language: str | None = None
    #: status: ``event``; quality: ``new_quality_score``; category: ``new_category``.
    event: str
    #: quality: ``previous_quality_score``; category: ``previous_category``.
    previous: str | None = None
    #: status: ``reason`` (``NONE``, ``INVALID_FORMAT``, ... or None).
    reason: str | None = None
    #: status: ``message_template_category``; category: ``correct_category``.
    category: str | None = None
    #: status: ``other_info.title`` (FIRST_PAUSE, ...) or ``rejection_info.reason``.
    detail: str | None = None
    waba_id: str | None = None
    timestamp: datetime | None = None  # entry.time
    raw: dict[str, Any] = Field(default_factory=dict)


class AccountEvent(_Frozen):
    """Account / phone-number events, kept generic (``value`` is in ``raw``)."""

    field: str
    #: ``value.event`` (account_update, phone_number_quality_update),
    #: ``alert_info.alert_type`` (account_alerts), ``decision`` (review).
    event: str | None = None
    display_phone_number: str | None = None
    entity_id: str | None = None  # account_alerts
    waba_id: str | None = None
    timestamp: datetime | None = None  # entry.time
    raw: dict[str, Any] = Field(default_factory=dict)


class PreferenceEvent(_Frozen):
    """A user stopped or resumed marketing messages (``user_preferences``)."""

    wa_id: str | None = None
    phone_number: str | None = None  # wa_id in E.164 with "+"
    user_id: str | None = None  # business-scoped user id (BSUID)
    category: str | None = None  # "marketing_messages"
    value: str  # "stop" / "resume" (other strings kept)
    detail: str | None = None
    timestamp: datetime
    phone_number_id: str | None = None
    display_phone_number: str | None = None
    waba_id: str | None = None
    raw: dict[str, Any] = Field(default_factory=dict)


class OtherChange(_Frozen):
    """A change we do not model (unknown ``field`` or unmodelled content)."""

    field: str | None
    waba_id: str | None = None
    timestamp: datetime | None = None
    value: Any = None


class ParsedWebhook(_Frozen):
    statuses: list[StatusUpdate] = Field(default_factory=list)
    messages: list[InboundMessage] = Field(default_factory=list)
    templates: list[TemplateEvent] = Field(default_factory=list)
    preferences: list[PreferenceEvent] = Field(default_factory=list)
    account: list[AccountEvent] = Field(default_factory=list)
    other: list[OtherChange] = Field(default_factory=list)
    value_errors: list[ValueLevelError] = Field(default_factory=list)
    #: ``"<json path>: <reason>"`` for every item skipped (or partly dropped).
    problems: list[str] = Field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (
            self.statuses
            or self.messages
            or self.templates
            or self.preferences
            or self.account
            or self.other
            or self.value_errors
        )
