"""leaner notification indexes: no full index on status; wamid and campaign partial

Every status change of a notification touched ``ix_notifications_status`` (and ruled out
heap-only updates); the open-job queries use ``ix_notifications_open``. ``wamid``,
``campaign_id`` and ``idempotency_key`` are NULL at insert for most rows, so their indexes
skip NULLs (the key's uniqueness holds through a partial unique index).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_notifications_status", table_name="notifications")
    op.drop_index("ix_notifications_wamid", table_name="notifications")
    op.drop_index("ix_notifications_campaign_id", table_name="notifications")
    op.create_index("ix_notifications_wamid", "notifications", ["wamid"],
                    postgresql_where=sa.text("wamid IS NOT NULL"))
    op.create_index("ix_notifications_campaign_id", "notifications", ["campaign_id"],
                    postgresql_where=sa.text("campaign_id IS NOT NULL"))
    op.create_index("uq_notifications_idempotency_key_set", "notifications", ["idempotency_key"],
                    unique=True, postgresql_where=sa.text("idempotency_key IS NOT NULL"))
    op.drop_constraint("uq_notifications_idempotency_key", "notifications", type_="unique")


def downgrade() -> None:
    op.create_unique_constraint("uq_notifications_idempotency_key", "notifications", ["idempotency_key"])
    op.drop_index("uq_notifications_idempotency_key_set", table_name="notifications")
    op.drop_index("ix_notifications_campaign_id", table_name="notifications")
    op.drop_index("ix_notifications_wamid", table_name="notifications")
    op.create_index("ix_notifications_campaign_id", "notifications", ["campaign_id"])
    op.create_index("ix_notifications_wamid", "notifications", ["wamid"])
    op.create_index("ix_notifications_status", "notifications", ["status"])
