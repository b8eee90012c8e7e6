"""Which process did each routing reload (reloads.instance).

With several workers (or instances on one PostgreSQL), each reloads on its own and writes
its own row; a failed reload in one of them was not attributable (same hash, same time).
`instance` is "HOST pid=PID" and " worker=N" under a supervisor, as the log lines name
them. Rows older than this revision have none (NULL, shown as "-").

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("reloads", sa.Column("instance", sa.Text()))


def downgrade() -> None:
    with op.batch_alter_table("reloads") as batch:
        batch.drop_column("instance")
