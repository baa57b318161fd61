"""status reports update jobs in place (HOT)

A delivered or read report changes a job's ``status`` and ``updated_at``. Two partial
indexes named those columns (the open jobs the sweeper re-pushes; the jobs whose fallback
may come due), so every such update wrote a new entry into every index of the table.
Those indexes now stand on two generated columns that hold a value only while the job is
open or its fallback may come due: a report on any other job leaves every indexed value
as it was, and Postgres updates the row in place (a heap-only tuple). Rows are packed 90%
full so the new version fits on its page.

Adding the columns rewrites the table once (an exclusive lock for the length of a copy).

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

OPEN_SINCE = "CASE WHEN status IN ('queued', 'sending') THEN updated_at END"
FALLBACK_DUE_SINCE = (
    "CASE WHEN fallback IS NOT NULL AND fallback_state IS NULL AND status IN ('accepted', 'sent')"
    " THEN accepted_at END"
)


def upgrade() -> None:
    op.execute(
        "ALTER TABLE notifications"
        f" ADD COLUMN open_since timestamptz GENERATED ALWAYS AS ({OPEN_SINCE}) STORED,"
        f" ADD COLUMN fallback_due_since timestamptz GENERATED ALWAYS AS ({FALLBACK_DUE_SINCE}) STORED,"
        " SET (fillfactor = 90)"
    )
    op.create_index("ix_notifications_open_since", "notifications", ["open_since"],
                    postgresql_where=sa.text("open_since IS NOT NULL"))
    op.create_index("ix_notifications_fallback_due_since", "notifications", ["fallback_due_since"],
                    postgresql_where=sa.text("fallback_due_since IS NOT NULL"))
    op.drop_index("ix_notifications_open", table_name="notifications")
    op.drop_index("ix_notifications_fallback_due", table_name="notifications")


def downgrade() -> None:
    op.create_index("ix_notifications_fallback_due", "notifications", ["accepted_at"],
                    postgresql_where=sa.text(
                        "fallback IS NOT NULL AND fallback_state IS NULL AND status IN ('accepted', 'sent')"))
    op.create_index("ix_notifications_open", "notifications", ["status", "updated_at"],
                    postgresql_where=sa.text("status IN ('queued', 'sending')"))
    op.drop_index("ix_notifications_fallback_due_since", table_name="notifications")
    op.drop_index("ix_notifications_open_since", table_name="notifications")
    op.execute("ALTER TABLE notifications DROP COLUMN fallback_due_since, DROP COLUMN open_since,"
               " RESET (fillfactor)")
