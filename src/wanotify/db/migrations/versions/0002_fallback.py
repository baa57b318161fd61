"""fallback state on notifications; dead letters

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("notifications", sa.Column("fallback_state", sa.String(length=16), nullable=True))
    op.create_index(
        "ix_notifications_fallback_due",
        "notifications",
        ["accepted_at"],
        postgresql_where=sa.text(
            "fallback IS NOT NULL AND fallback_state IS NULL AND status IN ('accepted', 'sent')"
        ),
    )
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("notification_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("history", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("replayed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dead_letters")),
        sa.UniqueConstraint("notification_id", name=op.f("uq_dead_letters_notification_id")),
    )


def downgrade() -> None:
    op.drop_table("dead_letters")
    op.drop_index("ix_notifications_fallback_due", table_name="notifications")
    op.drop_column("notifications", "fallback_state")
