"""Tables. Postgres is the system of record; Redis only ever holds ids and pacing state."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Computed,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSONB, datetime: DateTime(timezone=True)}


TS = DateTime(timezone=True)
_sql = text  # inside InboundMessage, ``text`` is a column


class Notification(Base):
    __tablename__ = "notifications"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    channel: Mapped[str] = mapped_column(String(16), default="whatsapp")
    status: Mapped[str] = mapped_column(String(20))
    sender: Mapped[str] = mapped_column(String(64))
    to_number: Mapped[str] = mapped_column(String(20))
    template: Mapped[str | None] = mapped_column(String(512))
    language: Mapped[str | None] = mapped_column(String(15))
    category: Mapped[str | None] = mapped_column(String(20))
    params: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    text_body: Mapped[str | None] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    fallback: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    meta: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSONB)
    expires_at: Mapped[datetime | None] = mapped_column(TS)
    campaign_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    error_code: Mapped[int | None] = mapped_column(Integer)
    error_message: Mapped[str | None] = mapped_column(Text)
    wamid: Mapped[str | None] = mapped_column(String(128))
    recipient_tz: Mapped[str | None] = mapped_column(String(64))
    attempt_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    fallback_state: Mapped[str | None] = mapped_column(String(16))  # running | done | exhausted | redacted (privacy.py)
    claim_token: Mapped[str | None] = mapped_column(String(40))
    claimed_at: Mapped[datetime | None] = mapped_column(TS)
    created_at: Mapped[datetime] = mapped_column(TS, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(TS, server_default=func.now())
    accepted_at: Mapped[datetime | None] = mapped_column(TS)
    sent_at: Mapped[datetime | None] = mapped_column(TS)
    delivered_at: Mapped[datetime | None] = mapped_column(TS)
    read_at: Mapped[datetime | None] = mapped_column(TS)
    finished_at: Mapped[datetime | None] = mapped_column(TS)
    # Privacy (see privacy.py): the recipient's keyed hash (marketing: the opt-out check),
    # when an OTP's content was wiped, when the personal fields were anonymised.
    to_hash: Mapped[str | None] = mapped_column(String(64))
    redacted_at: Mapped[datetime | None] = mapped_column(TS)
    anonymised_at: Mapped[datetime | None] = mapped_column(TS)
    # Set only while the job is open / its fallback may come due (migration 0010): indexed
    # instead of status and updated_at, so a status report updates the row in place.
    open_since: Mapped[datetime | None] = mapped_column(
        TS, Computed("CASE WHEN status IN ('queued', 'sending') THEN updated_at END", persisted=True))
    fallback_due_since: Mapped[datetime | None] = mapped_column(
        TS, Computed("CASE WHEN fallback IS NOT NULL AND fallback_state IS NULL AND status IN ('accepted', 'sent')"
                     " THEN accepted_at END", persisted=True))

    __table_args__ = (
        Index("ix_notifications_retention", "kind", "created_at",
              postgresql_where=text("anonymised_at IS NULL")),
        Index("ix_notifications_otp_unredacted", "expires_at",
              postgresql_where=text("kind = 'otp' AND redacted_at IS NULL")),
        Index("ix_notifications_fallback_due_since", "fallback_due_since",
              postgresql_where=text("fallback_due_since IS NOT NULL")),
        Index("ix_notifications_wamid", "wamid", postgresql_where=text("wamid IS NOT NULL")),
        Index("uq_notifications_idempotency_key_set", "idempotency_key", unique=True,
              postgresql_where=text("idempotency_key IS NOT NULL")),
        Index("ix_notifications_campaign_id", "campaign_id", postgresql_where=text("campaign_id IS NOT NULL")),
        Index("ix_notifications_open_since", "open_since", postgresql_where=text("open_since IS NOT NULL")),
        # Listing (GET /v1/notifications, migration 0011): columns that never change once stored.
        Index("ix_notifications_list_to", "to_number", "id"),
        Index("ix_notifications_list_sender", "sender", "id"),
        Index("ix_notifications_list_kind", "kind", "id"),
        {"postgresql_with": {"fillfactor": 90}},
    )


class Attempt(Base):
    """One row per provider call."""

    __tablename__ = "attempts"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    notification_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("notifications.id", ondelete="CASCADE"), index=True
    )
    channel: Mapped[str] = mapped_column(String(16))
    provider_message_id: Mapped[str | None] = mapped_column(String(128))
    request_id: Mapped[str | None] = mapped_column(String(64))
    http_status: Mapped[int | None] = mapped_column(Integer)
    error_code: Mapped[int | None] = mapped_column(Integer)
    error_message: Mapped[str | None] = mapped_column(Text)
    outcome: Mapped[str] = mapped_column(String(16))
    duration_ms: Mapped[float | None] = mapped_column(Float)
    at: Mapped[datetime] = mapped_column(TS, server_default=func.now())


class StatusEvent(Base):
    """Append-only, deduplicated timeline of everything that happened to a message."""

    __tablename__ = "status_events"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    notification_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), index=True)
    provider_message_id: Mapped[str | None] = mapped_column(String(128))
    dedupe_key: Mapped[str] = mapped_column(String(300), unique=True)
    status: Mapped[str] = mapped_column(String(20))
    source: Mapped[str] = mapped_column(String(16))  # webhook | worker
    at: Mapped[datetime] = mapped_column(TS)
    error_code: Mapped[int | None] = mapped_column(Integer)
    error_title: Mapped[str | None] = mapped_column(Text)
    pricing: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    conversation: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    applied: Mapped[bool] = mapped_column(default=False, server_default="false")
    received_at: Mapped[datetime] = mapped_column(TS, server_default=func.now())

    __table_args__ = (
        # Looked up by wamid only while the job is unknown (the wamid not yet recorded).
        Index("ix_status_events_unapplied", "provider_message_id", postgresql_where=text("applied = false")),
    )


class WebhookInbox(Base):
    """Raw, signature-verified webhook bodies, kept until ingested."""

    __tablename__ = "webhook_inbox"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    received_at: Mapped[datetime] = mapped_column(TS, server_default=func.now())
    processed_at: Mapped[datetime | None] = mapped_column(TS)
    tries: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index("ix_webhook_inbox_pending", "id", postgresql_where=text("processed_at IS NULL")),
    )


class InboundMessage(Base):
    __tablename__ = "inbound_messages"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    wamid: Mapped[str] = mapped_column(String(128), unique=True)
    from_number: Mapped[str] = mapped_column(String(20), index=True)
    phone_number_id: Mapped[str | None] = mapped_column(String(32))
    type: Mapped[str] = mapped_column(String(32))
    text: Mapped[str | None] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    at: Mapped[datetime] = mapped_column(TS)
    received_at: Mapped[datetime] = mapped_column(TS, server_default=func.now())

    __table_args__ = (
        Index("ix_inbound_messages_raw", "at", postgresql_where=_sql("from_number NOT LIKE '_:%'")),
    )


class TemplateEvent(Base):
    __tablename__ = "template_events"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str | None] = mapped_column(String(512))
    language: Mapped[str | None] = mapped_column(String(15))
    value: Mapped[str | None] = mapped_column(String(64))
    previous: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(Text)
    raw: Mapped[dict[str, Any]] = mapped_column(JSONB)
    received_at: Mapped[datetime] = mapped_column(TS, server_default=func.now())


class RejectedJob(Base):
    """Bodies that arrived through the Celery intake queue and failed validation."""

    __tablename__ = "rejected_jobs"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(16))
    body: Mapped[str] = mapped_column(Text)
    errors: Mapped[dict[str, Any]] = mapped_column(JSONB)
    received_at: Mapped[datetime] = mapped_column(TS, server_default=func.now())


class DeadLetter(Base):
    """A job that exhausted every channel, with its full history; replayable once."""

    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    notification_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), unique=True)
    reason: Mapped[str] = mapped_column(Text)
    history: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(TS, server_default=func.now())
    replayed_at: Mapped[datetime | None] = mapped_column(TS)


class OptOut(Base):
    """A user's marketing preference (the latest change by the user's clock wins), keyed by
    the keyed hash of the number: after an erasure only the hash is left, and still holds."""

    __tablename__ = "opt_outs"

    phone_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    phone: Mapped[str | None] = mapped_column(String(20))
    opted_out: Mapped[bool] = mapped_column(Boolean)
    source: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(TS)
    updated_at: Mapped[datetime] = mapped_column(TS, server_default=func.now())


class PrivacyKey(Base):
    """The hashing key used when WANOTIFY_PII_HASH_KEY is not set (generated by 0007)."""

    __tablename__ = "privacy_key"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(TS, server_default=func.now())


class Campaign(Base):
    """One template to an audience, on a schedule (draft → scheduled → running → paused →
    completed | cancelled)."""

    __tablename__ = "campaigns"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    template: Mapped[str] = mapped_column(String(512))
    language: Mapped[str] = mapped_column(String(15))
    category: Mapped[str | None] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(16))
    sender: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    start_at: Mapped[datetime | None] = mapped_column(TS)
    cron: Mapped[str | None] = mapped_column(String(120))
    status_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(TS, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(TS, server_default=func.now())
    started_at: Mapped[datetime | None] = mapped_column(TS)
    finished_at: Mapped[datetime | None] = mapped_column(TS)
    # Recurring (cron) campaigns hold the audience; each time comes round, a run (a campaign
    # of its own, with parent_id) copies it and sends.
    parent_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("campaigns.id", ondelete="CASCADE"))
    next_run_at: Mapped[datetime | None] = mapped_column(TS)
    runs: Mapped[int] = mapped_column(Integer, server_default="0")

    __table_args__ = (
        Index("ix_campaigns_parent", "parent_id", postgresql_where=text("parent_id IS NOT NULL")),
        Index("ix_campaigns_next_run", "next_run_at",
              postgresql_where=text("cron IS NOT NULL AND status = 'scheduled'")),
        Index("ix_campaigns_active", "status", postgresql_where=text("status IN ('scheduled', 'running')")),
    )


class CampaignRecipient(Base):
    __tablename__ = "campaign_recipients"

    campaign_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True)
    phone: Mapped[str] = mapped_column(String(20), primary_key=True)
    line: Mapped[int] = mapped_column(Integer)
    params: Mapped[dict[str, Any]] = mapped_column(JSONB)
    tz: Mapped[str | None] = mapped_column(String(64))
    email: Mapped[str | None] = mapped_column(String(320))
    locale: Mapped[str | None] = mapped_column(String(15))
    state: Mapped[str] = mapped_column(String(16))
    notification_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))

    __table_args__ = (
        Index("ix_campaign_recipients_pending", "campaign_id", "line", postgresql_where=text("state = 'pending'")),
    )


class CampaignReject(Base):
    __tablename__ = "campaign_rejects"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    campaign_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("campaigns.id", ondelete="CASCADE"), index=True)
    line: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text)


class ApiKey(Base):
    """An HTTP API key: only its SHA-256 is stored; optionally scoped to senders and rate limited."""

    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16))
    hash: Mapped[str] = mapped_column(String(64))
    senders: Mapped[list[str] | None] = mapped_column(ARRAY(String(64)))  # NULL: every sender
    rate_per_s: Mapped[float | None] = mapped_column(Float)  # NULL: unlimited
    burst: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(TS, server_default=func.now())
    last_used_at: Mapped[datetime | None] = mapped_column(TS)
    revoked_at: Mapped[datetime | None] = mapped_column(TS)

    __table_args__ = (
        Index("uq_api_keys_hash", "hash", unique=True),
        Index("uq_api_keys_live_name", "name", unique=True, postgresql_where=text("revoked_at IS NULL")),
    )
