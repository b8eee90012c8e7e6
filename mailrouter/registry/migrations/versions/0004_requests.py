"""Execution control: requests, their messages, events, alerts (reminders) and team picks.

Revision ID: 0004
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0001"      # set to the newest revision in main when rebasing
branch_labels = None
depends_on = None

UTC = sa.DateTime(timezone=True)


def _fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(["request_id"], ["requests.id"], ondelete="CASCADE",
                                   name=f"fk_{table}_request_id_requests")


def upgrade() -> None:
    op.create_table(
        "requests",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("opened_at", UTC, nullable=False),
        sa.Column("message_key", sa.String(64), nullable=False),
        sa.Column("counterparty", sa.Text, nullable=False),
        sa.Column("counterparty_domain", sa.Text, nullable=False),
        sa.Column("mailbox", sa.String(255)),
        sa.Column("rule", sa.String(255)),
        sa.Column("owner", sa.String(255)),
        sa.Column("team", sa.String(255)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("priority", sa.String(16)),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column("sla_calendar", sa.String(255)),
        sa.Column("first_response_due", UTC),
        sa.Column("first_response_at", UTC),
        sa.Column("last_in_at", UTC, nullable=False),
        sa.Column("last_out_at", UTC),
        sa.Column("closed_at", UTC),
        sa.PrimaryKeyConstraint("id", name="pk_requests"),
    )
    for cols in (["owner", "status"], ["status", "first_response_due"], ["counterparty"],
                 ["counterparty_domain"], ["opened_at"], ["mailbox", "opened_at"]):
        op.create_index(f"ix_requests_{'_'.join(cols)}", "requests", cols)
    op.create_table(
        "request_messages",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.Integer, nullable=False),
        sa.Column("message_key", sa.String(64), nullable=False),
        sa.Column("message_id", sa.Text),
        sa.Column("direction", sa.String(3), nullable=False),
        sa.Column("at", UTC, nullable=False),
        sa.Column("sender", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_request_messages"),
        _fk("request_messages"),
        sa.UniqueConstraint("request_id", "message_key",
                            name="uq_request_messages_request_id_message_key"),
    )
    op.create_index("ix_request_messages_message_id", "request_messages", ["message_id"])
    op.create_index("ix_request_messages_message_key", "request_messages", ["message_key"])
    op.create_table(
        "request_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.Integer, nullable=False),
        sa.Column("at", UTC, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("actor", sa.Text),
        sa.Column("detail", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_request_events"),
        _fk("request_events"),
    )
    op.create_index("ix_request_events_request_id_at", "request_events", ["request_id", "at"])
    op.create_index("ix_request_events_kind_at", "request_events", ["kind", "at"])
    op.create_table(
        "request_alerts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.Integer, nullable=False),
        sa.Column("stage", sa.String(16), nullable=False),
        sa.Column("at", UTC, nullable=False),
        sa.Column("recipient", sa.String(255)),
        sa.Column("address", sa.Text),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("sent_at", UTC),
        sa.PrimaryKeyConstraint("id", name="pk_request_alerts"),
        _fk("request_alerts"),
        sa.UniqueConstraint("request_id", "stage", name="uq_request_alerts_request_id_stage"),
    )
    op.create_index("ix_request_alerts_state_at", "request_alerts", ["state", "at"])
    op.create_table(
        "team_picks",
        sa.Column("team", sa.String(255), nullable=False),
        sa.Column("member", sa.String(255), nullable=False),
        sa.Column("at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("team", name="pk_team_picks"),
    )


def downgrade() -> None:
    for table in ("team_picks", "request_alerts", "request_events", "request_messages", "requests"):
        op.drop_table(table)
