"""Outbox and autoreply log (issue 11): outgoing mail and the one-answer-per-period key.

Revision ID: 0003
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0004"
branch_labels = None
depends_on = None

UTC = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("dedupe", sa.String(512), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("message_key", sa.String(64), nullable=False),
        sa.Column("mail_from", sa.Text, nullable=False),
        sa.Column("rcpt", sa.Text, nullable=False),
        sa.Column("raw", sa.LargeBinary, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("next_try", UTC, nullable=False),
        sa.Column("sent_at", UTC),
        sa.Column("last_error", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_outbox"),
        sa.UniqueConstraint("dedupe", name="uq_outbox_dedupe"),
    )
    op.create_index("ix_outbox_state_next_try", "outbox", ["state", "next_try"])
    op.create_table(
        "autoreply_log",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("sender", sa.Text, nullable=False),
        sa.Column("responder", sa.String(255), nullable=False),
        sa.Column("bucket", sa.Integer, nullable=False),
        sa.Column("message_key", sa.String(64), nullable=False),
        sa.Column("sent_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_autoreply_log"),
        sa.UniqueConstraint("sender", "responder", "bucket",
                            name="uq_autoreply_log_sender_responder_bucket"),
    )
    op.create_index("ix_autoreply_log_sender_sent_at", "autoreply_log", ["sender", "sent_at"])


def downgrade() -> None:
    for table in ("autoreply_log", "outbox"):
        op.drop_table(table)
