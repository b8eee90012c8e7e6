"""Execution control: the answer a request waits for now, not only the first one.

A customer's mail on an answered, waiting or closed request reopened it, but the SLA
scan looked only at the first response: a reopened request was never reminded or
escalated again and the board showed it as fine while the customer waited.

- `requests.response_due`: when the answer owed now is due (NULL: none owed, or no SLA);
  `response_round`: which answer (1 the first; each reopen adds one); `sla_term`: the
  rule's first_response as written ("4h"), counted again from each reopen.
- `request_alerts.round`: a reminder and an escalation per answer owed; the unique key
  becomes (request, round, stage).
- the board's index reads `response_due` (it read first_response_at/_due).

Backfill: an open request without a first response owes it (`response_due` =
first_response_due); `sla_term` is read from the opening message's decision. A request
its customer reopened before this revision has no `response_due` (its calendar is in the
routing files, not here): its next reopen gives it one, and the board counts it as
awaiting an answer meanwhile.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

UTC = sa.DateTime(timezone=True)
OLD_BOARD = ["status", "mailbox", "owner", "first_response_at", "first_response_due"]
BOARD = ["status", "mailbox", "owner", "response_due"]
BATCH = 5000


def upgrade() -> None:
    with op.batch_alter_table("requests") as batch:
        batch.add_column(sa.Column("response_due", UTC))
        batch.add_column(sa.Column("response_round", sa.Integer, nullable=False,
                                   server_default="1"))
        batch.add_column(sa.Column("sla_term", sa.String(32)))
    op.drop_index("ix_requests_board", "requests")
    op.create_index("ix_requests_board", "requests", BOARD)
    op.create_index("ix_requests_status_response_due", "requests", ["status", "response_due"])
    with op.batch_alter_table("request_alerts") as batch:
        batch.add_column(sa.Column("round", sa.Integer, nullable=False, server_default="1"))
        batch.drop_constraint("uq_request_alerts_request_id_stage", type_="unique")
        batch.create_unique_constraint("uq_request_alerts_request_id_round_stage",
                                       ["request_id", "round", "stage"])
    backfill(op.get_bind())


def backfill(conn: sa.Connection) -> None:
    reqs = sa.table("requests", sa.column("id", sa.Integer), sa.column("status", sa.String),
                    sa.column("message_key", sa.String), sa.column("first_response_at", UTC),
                    sa.column("first_response_due", UTC), sa.column("response_due", UTC),
                    sa.column("sla_term", sa.String))
    decisions = sa.table("decisions", sa.column("message_key", sa.String),
                         sa.column("sla", sa.Text))
    conn.execute(reqs.update().where(reqs.c.status == "open", reqs.c.first_response_at.is_(None))
                 .values(response_due=reqs.c.first_response_due))
    last = 0
    while True:
        chunk = conn.execute(
            sa.select(reqs.c.id, sa.func.max(decisions.c.sla))
            .join(decisions, decisions.c.message_key == reqs.c.message_key)
            .where(reqs.c.id > last, decisions.c.sla.is_not(None))
            .group_by(reqs.c.id).order_by(reqs.c.id).limit(BATCH)).all()
        terms = [{"rid": rid, "term": _term(sla)} for rid, sla in chunk]
        terms = [t for t in terms if t["term"]]
        if terms:
            conn.execute(reqs.update().where(reqs.c.id == sa.bindparam("rid"))
                         .values(sla_term=sa.bindparam("term")), terms)
        if len(chunk) < BATCH:
            return
        last = chunk[-1][0]


def _term(sla: str | None) -> str | None:
    """'first_response=4h calendar=msk ...' -> '4h' (as control/threads.sla_terms reads it)."""
    for part in (sla or "").split():
        key, _, value = part.partition("=")
        if key == "first_response" and value and len(value) <= 32:
            return value
    return None


def downgrade() -> None:
    op.execute("DELETE FROM request_alerts WHERE round > 1")    # the old key holds one per stage
    with op.batch_alter_table("request_alerts") as batch:
        batch.drop_constraint("uq_request_alerts_request_id_round_stage", type_="unique")
        batch.drop_column("round")
        batch.create_unique_constraint("uq_request_alerts_request_id_stage",
                                       ["request_id", "stage"])
    op.drop_index("ix_requests_status_response_due", "requests")
    op.drop_index("ix_requests_board", "requests")
    op.create_index("ix_requests_board", "requests", OLD_BOARD)
    with op.batch_alter_table("requests") as batch:
        for col in ("sla_term", "response_round", "response_due"):
            batch.drop_column(col)
