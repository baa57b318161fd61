"""recurring campaigns: runs of a cron campaign and the time of the next one

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("campaigns", sa.Column("parent_id", postgresql.UUID(as_uuid=True),
                                         sa.ForeignKey("campaigns.id", ondelete="CASCADE"), nullable=True))
    op.add_column("campaigns", sa.Column("next_run_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("campaigns", sa.Column("runs", sa.Integer(), nullable=False, server_default="0"))
    op.create_index("ix_campaigns_parent", "campaigns", ["parent_id"],
                    postgresql_where=sa.text("parent_id IS NOT NULL"))
    op.create_index("ix_campaigns_next_run", "campaigns", ["next_run_at"],
                    postgresql_where=sa.text("cron IS NOT NULL AND status = 'scheduled'"))


def downgrade() -> None:
    op.drop_index("ix_campaigns_next_run", table_name="campaigns")
    op.drop_index("ix_campaigns_parent", table_name="campaigns")
    op.drop_column("campaigns", "runs")
    op.drop_column("campaigns", "next_run_at")
    op.drop_column("campaigns", "parent_id")
