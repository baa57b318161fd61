"""indexes for listing jobs (GET /v1/notifications)

Pages are keyed on the id, newest first. A filter on the recipient, a sender or a kind
walks its own index in id order instead of the whole primary key: one recipient's jobs are
a handful among millions, and a rarely used sender's or kind's a small share. None of these
columns changes after a job is stored (the recipient only when the retention purge
anonymises it), so status reports still update rows in place (migration 0010); ``status``
itself stays unindexed for that reason.

Each index is built with the table's writes waiting (``wanotify bench listing`` prints how
long each takes on its table).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-08
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

INDEXES = {
    "ix_notifications_list_to": ["to_number", "id"],
    "ix_notifications_list_sender": ["sender", "id"],
    "ix_notifications_list_kind": ["kind", "id"],
}


def upgrade() -> None:
    for name, cols in INDEXES.items():
        op.create_index(name, "notifications", cols)


def downgrade() -> None:
    for name in INDEXES:
        op.drop_index(name, table_name="notifications")
