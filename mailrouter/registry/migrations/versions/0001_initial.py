"""Initial registry: messages, decisions, deliveries, loops, reloads.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

UTC = sa.DateTime(timezone=True)


def upgrade() -> None:
    _messages()
    _decisions()
    _deliveries()
    op.create_table(
        "loops",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("detected_at", UTC, nullable=False),
        sa.Column("message_key", sa.String(64), nullable=False),
        sa.Column("rcpt", sa.Text(), nullable=False),
        sa.Column("evidence", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_loops"),
    )
    op.create_index("ix_loops_message_key", "loops", ["message_key"])
    op.create_index("ix_loops_detected_at", "loops", ["detected_at"])
    op.create_table(
        "reloads",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", UTC, nullable=False),
        sa.Column("ruleset_hash", sa.String(64), nullable=False),
        sa.Column("ok", sa.Boolean, nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_reloads"),
    )
    op.create_index("ix_reloads_at", "reloads", ["at"])


def _messages() -> None:
    op.create_table(
        "messages",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("received_at", UTC, nullable=False),
        sa.Column("updated_at", UTC, nullable=False),
        sa.Column("protocol", sa.String(8), nullable=False),
        sa.Column("peer", sa.String(255), nullable=False),
        sa.Column("mail_from", sa.Text, nullable=False),
        sa.Column("rcpts", sa.JSON, nullable=False),
        sa.Column("message_id", sa.Text),
        sa.Column("from_name", sa.Text, nullable=False),
        sa.Column("from_addr", sa.Text(), nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("defects", sa.JSON, nullable=False),
        sa.Column("ruleset_hash", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="1"),
        sa.PrimaryKeyConstraint("key", name="pk_messages"),
    )
    op.create_index("ix_messages_received_at", "messages", ["received_at"])
    op.create_index("ix_messages_from_addr_received_at", "messages", ["from_addr", "received_at"])
    op.create_index("ix_messages_message_id", "messages", ["message_id"])


def _decisions() -> None:
    op.create_table(
        "decisions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("message_key", sa.String(64), nullable=False),
        sa.Column("rcpt", sa.Text(), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("reply", sa.Text, nullable=False),
        sa.Column("mailbox", sa.String(255)),
        sa.Column("folder", sa.String(255)),
        sa.Column("owner", sa.String(255)),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column("priority", sa.Text()),
        sa.Column("sla", sa.Text()),
        sa.Column("path", sa.JSON, nullable=False),
        sa.Column("reasons", sa.JSON, nullable=False),
        sa.Column("rules", sa.JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_decisions"),
        sa.ForeignKeyConstraint(["message_key"], ["messages.key"], ondelete="CASCADE",
                                name="fk_decisions_message_key_messages"),
        sa.UniqueConstraint("message_key", "rcpt", name="uq_decisions_message_key_rcpt"),
    )
    op.create_index("ix_decisions_mailbox", "decisions", ["mailbox"])
    op.create_index("ix_decisions_owner", "decisions", ["owner"])


def _deliveries() -> None:
    op.create_table(
        "deliveries",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("message_key", sa.String(64), nullable=False),
        sa.Column("target", sa.String(512), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("updated_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_deliveries"),
        sa.ForeignKeyConstraint(["message_key"], ["messages.key"], ondelete="CASCADE",
                                name="fk_deliveries_message_key_messages"),
        sa.UniqueConstraint("message_key", "target", name="uq_deliveries_message_key_target"),
    )


def downgrade() -> None:
    for table in ("reloads", "loops", "deliveries", "decisions", "messages"):
        op.drop_table(table)
