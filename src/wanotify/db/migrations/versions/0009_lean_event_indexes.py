"""leaner indexes on the two tables written for every message

Status events are looked up by wamid only while unapplied (their job not yet known), and
attempts never by wamid: a partial index and one index fewer save an index write per
status event and per send.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_status_events_unapplied", "status_events", ["provider_message_id"],
                    postgresql_where=sa.text("applied = false"))
    op.drop_index("ix_status_events_provider_message_id", table_name="status_events")
    op.drop_index("ix_attempts_provider_message_id", table_name="attempts")


def downgrade() -> None:
    op.create_index("ix_attempts_provider_message_id", "attempts", ["provider_message_id"])
    op.create_index("ix_status_events_provider_message_id", "status_events", ["provider_message_id"])
    op.drop_index("ix_status_events_unapplied", table_name="status_events")
