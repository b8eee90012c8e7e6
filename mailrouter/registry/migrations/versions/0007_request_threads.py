"""Execution control: request threads' Message-IDs and threads claimed before delivery.

The tables are described in control/tables.py.

request_threads: one row per Message-ID, unique: the request a message of that thread
joins. thread_claims: the owner the message about to open its request planned. The first
is filled here from the messages requests already hold (a Message-ID held by two
requests, as the instance race before this revision could leave, goes to the older one).

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "request_threads",
        sa.Column("message_id", sa.Text, nullable=False),
        sa.Column("request_id", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("message_id", name="pk_request_threads"),
        sa.ForeignKeyConstraint(["request_id"], ["requests.id"], ondelete="CASCADE",
                                name="fk_request_threads_request_id_requests"),
    )
    op.create_index("ix_request_threads_request_id", "request_threads", ["request_id"])
    op.execute("INSERT INTO request_threads (message_id, request_id) "
               "SELECT message_id, min(request_id) FROM request_messages "
               "WHERE message_id IS NOT NULL GROUP BY message_id")
    op.create_table(
        "thread_claims",
        sa.Column("message_id", sa.Text, nullable=False),
        sa.Column("message_key", sa.String(64), nullable=False),
        sa.Column("sender", sa.Text, nullable=False),
        sa.Column("owner", sa.String(255)),
        sa.Column("team", sa.String(255)),
        sa.PrimaryKeyConstraint("message_id", name="pk_thread_claims"),
    )


def downgrade() -> None:
    op.drop_table("thread_claims")
    op.drop_table("request_threads")
