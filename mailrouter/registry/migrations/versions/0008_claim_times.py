"""Execution control: when each thread claim was made (thread_claims.claimed_at).

The SLA scan deletes the claims of messages never recorded a week after they were made;
it counted that week in its own memory, from the first scan that saw the claim, so a
restart started it again (a daemon restarted weekly never deleted one). A team picking
by `least-open` counts the claims of messages not recorded yet (in delivery at another
instance) made in the last minutes. Claims older than this revision get its time.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("thread_claims", sa.Column("claimed_at", sa.DateTime(timezone=True)))
    op.execute(sa.text("UPDATE thread_claims SET claimed_at = :now").bindparams(
        sa.bindparam("now", datetime.now(timezone.utc), type_=sa.DateTime(timezone=True))))
    op.create_index("ix_thread_claims_claimed_at", "thread_claims", ["claimed_at"])


def downgrade() -> None:
    op.drop_index("ix_thread_claims_claimed_at", "thread_claims")
    with op.batch_alter_table("thread_claims") as batch:
        batch.drop_column("claimed_at")
