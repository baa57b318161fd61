"""privacy: opt-outs keyed by a keyed hash, redaction markers, the retention indexes

* ``opt_outs.phone_hash`` (HMAC-SHA256 of the E.164 number) becomes the key: an erased
  person's opt-out keeps only the hash and still holds. ``phone`` stays, nullable.
* ``notifications.to_hash``: the same hash of the recipient, for marketing jobs (the claim's
  opt-out check joins on it).
* ``notifications.redacted_at`` (an OTP's content wiped) and ``anonymised_at`` (personal
  fields replaced, by retention or erasure), with partial indexes so the purge finds what is
  due without scanning history.
* ``privacy_key``: a random hashing key generated here, used when
  ``WANOTIFY_PII_HASH_KEY`` is not set.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25
"""

from __future__ import annotations

import hashlib
import hmac
import os

import sqlalchemy as sa
from alembic import op

from wanotify.config import get_settings

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def _key(conn: sa.Connection) -> bytes:
    """The key compliance.hashing.hash_key() will use: the setting, else the one generated above."""
    s = get_settings().pii_hash_key
    if s is not None and s.get_secret_value():
        return s.get_secret_value().encode()
    return bytes(conn.execute(sa.text("SELECT key FROM privacy_key WHERE id = 1")).scalar_one())


def _h(key: bytes, phone: str) -> str:
    return hmac.new(key, b"phone:" + phone.encode(), hashlib.sha256).hexdigest()


def upgrade() -> None:
    op.create_table(
        "privacy_key",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("key", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
    )
    conn = op.get_bind()
    conn.execute(sa.text("INSERT INTO privacy_key (id, key) VALUES (1, :k)"), {"k": os.urandom(32)})
    key = _key(conn)

    op.add_column("opt_outs", sa.Column("phone_hash", sa.String(length=64), nullable=True))
    rows = conn.execute(sa.text("SELECT phone FROM opt_outs")).scalars().all()
    if rows:
        conn.execute(sa.text("UPDATE opt_outs SET phone_hash = :h WHERE phone = :p"),
                     [{"h": _h(key, p), "p": p} for p in rows])
    op.drop_constraint("pk_opt_outs", "opt_outs", type_="primary")
    op.alter_column("opt_outs", "phone_hash", nullable=False)
    op.alter_column("opt_outs", "phone", nullable=True)
    op.create_primary_key("pk_opt_outs", "opt_outs", ["phone_hash"])

    op.add_column("notifications", sa.Column("to_hash", sa.String(length=64), nullable=True))
    op.add_column("notifications", sa.Column("redacted_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("notifications", sa.Column("anonymised_at", sa.DateTime(timezone=True), nullable=True))
    # Marketing jobs still waiting need the hash for the claim's opt-out check.
    waiting = conn.execute(sa.text(
        "SELECT id, to_number FROM notifications WHERE kind = 'marketing' AND status IN ('queued', 'sending')")).all()
    if waiting:
        conn.execute(sa.text("UPDATE notifications SET to_hash = :h WHERE id = :id"),
                     [{"h": _h(key, r.to_number), "id": r.id} for r in waiting])
    op.create_index("ix_notifications_retention", "notifications", ["kind", "created_at"],
                    postgresql_where=sa.text("anonymised_at IS NULL"))
    op.create_index("ix_notifications_otp_unredacted", "notifications", ["expires_at"],
                    postgresql_where=sa.text("kind = 'otp' AND redacted_at IS NULL"))
    op.create_index("ix_inbound_messages_raw", "inbound_messages", ["at"],
                    postgresql_where=sa.text("from_number NOT LIKE '_:%'"))


def downgrade() -> None:
    op.drop_index("ix_inbound_messages_raw", table_name="inbound_messages")
    op.drop_index("ix_notifications_otp_unredacted", table_name="notifications")
    op.drop_index("ix_notifications_retention", table_name="notifications")
    op.drop_column("notifications", "anonymised_at")
    op.drop_column("notifications", "redacted_at")
    op.drop_column("notifications", "to_hash")
    op.execute("DELETE FROM opt_outs WHERE phone IS NULL")  # erased: only the hash was left
    op.drop_constraint("pk_opt_outs", "opt_outs", type_="primary")
    op.alter_column("opt_outs", "phone", nullable=False)
    op.create_primary_key("pk_opt_outs", "opt_outs", ["phone"])
    op.drop_column("opt_outs", "phone_hash")
    op.drop_table("privacy_key")
