"""The public job body (one pydantic model for every way of enqueueing) and results."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from wanotify.core.errors import InvalidJob
from wanotify.core.kinds import Kind
from wanotify.core.phones import normalize_e164
from wanotify.core.templates import MAX_TEXT_CHARS
from wanotify.core.zones import valid_zone

# Default time-to-live of an OTP when the job gives no expires_at.
OTP_DEFAULT_TTL = timedelta(minutes=10)


class Params(BaseModel):
    """Template parameters per component.

    ``body`` and ``header`` are lists for positional templates (``{{1}}``...) or objects for
    named ones; a media header is ``{"link": URL}`` or ``{"id": media id}``; ``buttons`` holds
    one value per dynamic URL button, in button order. The OTP copy-code button is filled
    from the code (``body[0]``) by the renderer.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    body: list[str] | dict[str, str] = Field(default_factory=list, max_length=100)
    header: list[str] | dict[str, str] | None = None
    buttons: list[str] | None = Field(default=None, max_length=10)


class Fallback(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    sms_to: str | None = None
    email_to: EmailStr | None = None

    @field_validator("sms_to")
    @classmethod
    def _sms(cls, v: str | None) -> str | None:
        return normalize_e164(v) if v is not None else None


class JobBody(BaseModel):
    """One notification job, as accepted by POST /v1/notifications, send_task and notify()."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)

    to: str
    template: str | None = Field(default=None, min_length=1, max_length=512)
    language: str = Field(
        default="en", min_length=2, max_length=15, pattern=r"^[A-Za-z]{2,3}(_[A-Za-z0-9]{2,8})?$"
    )
    params: Params = Field(default_factory=Params)
    text: str | None = Field(default=None, min_length=1)
    kind: Kind = "transactional"
    sender: str | None = Field(default=None, min_length=1, max_length=64)
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=255)
    expires_at: datetime | None = None
    fallback: Fallback | None = None
    metadata: dict[str, str | int | float | bool | None] | None = Field(default=None, max_length=50)
    #: The recipient's IANA time zone, for quiet hours (default: the number's region).
    timezone: str | None = Field(default=None, min_length=1, max_length=64)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str | None) -> str | None:
        if v is not None and not valid_zone(v):
            raise ValueError(f"unknown time zone {v!r} (an IANA name such as Asia/Kolkata)")
        return v

    @field_validator("to")
    @classmethod
    def _to(cls, v: str) -> str:
        return normalize_e164(v)

    @field_validator("text")
    @classmethod
    def _text(cls, v: str | None) -> str | None:
        if v is not None and len(v) > MAX_TEXT_CHARS:
            raise ValueError(f"is {len(v)} characters; WhatsApp allows {MAX_TEXT_CHARS}")
        return v

    @field_validator("expires_at")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            raise ValueError("must include a time zone, e.g. 2026-11-25T10:10:00Z")
        return v

    @model_validator(mode="after")
    def _one_content(self) -> JobBody:
        if (self.template is None) == (self.text is None):
            raise ValueError("give exactly one of 'template' or 'text'")
        return self

    def effective_expiry(self, now: datetime) -> datetime | None:
        if self.expires_at is not None:
            return self.expires_at
        if self.kind == "otp":
            return now + OTP_DEFAULT_TTL
        return None

    def fingerprint(self) -> str:
        """A stable hash of the body's content (without the idempotency key) for conflicts."""
        data = self.model_dump(mode="json", exclude={"idempotency_key"})
        return hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _field_path(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for p in loc:
        if isinstance(p, int):
            parts.append(f"[{p}]")
        elif parts:
            parts.append(f".{p}")
        else:
            parts.append(str(p))
    return "".join(parts) or "body"


def parse_job(data: Any) -> JobBody:
    """Validate a raw job body; raise InvalidJob naming every failing field."""
    if isinstance(data, JobBody):
        return data
    if isinstance(data, (bytes, str)):
        try:
            data = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise InvalidJob([("body", f"malformed JSON: {exc}")]) from None
    if not isinstance(data, dict):
        raise InvalidJob([("body", "must be a JSON object")])
    try:
        return JobBody.model_validate(data)
    except ValidationError as exc:
        errors = []
        for e in exc.errors():
            path = _field_path(
                tuple(x for x in e["loc"] if not (isinstance(x, str) and x.startswith("function-")))
            )
            msg = e["msg"]
            if msg.startswith("Value error, "):
                msg = msg[len("Value error, ") :]
            if e["type"] == "extra_forbidden":
                msg = "unknown field"
            errors.append((path, msg))
        raise InvalidJob(errors) from None


def utcnow() -> datetime:
    return datetime.now(UTC)


class Accepted(BaseModel):
    id: str
    status: str
    duplicate: bool = False
    # Stored in Postgres, but Redis was away when it was to be queued: it is safe (the
    # sweeper queues it once Redis answers) and the caller is told so.
    pending_push: bool = False
