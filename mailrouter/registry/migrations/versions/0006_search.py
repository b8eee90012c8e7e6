"""Search and board indexes: the subject-word index (backfilled), the rights filter, the board.

- `subject_words` (registry/words.py): one row per (message, word of its normalised
  subject); made here for every message already recorded, in batches of BATCH.
- `decisions (message_key, mailbox, owner)`: a scoped search asks, per message, whether
  one of its decisions is in the viewer's mailboxes or theirs; this answers from the index.
- `requests (status, mailbox, owner, first_response_at, first_response_due)`: the board's
  counts per owner and per mailbox from one walk of this index alone.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from mailrouter.registry.models import UTCDateTime
from mailrouter.registry.words import word_rows

revision = "0006"
down_revision = "0005"      # main: 0001 -> 0004 -> 0003 -> 0005 -> this
branch_labels = None
depends_on = None

BATCH = 5000
BOARD = ["status", "mailbox", "owner", "first_response_at", "first_response_due"]


def upgrade() -> None:
    op.create_table(
        "subject_words",
        sa.Column("message_key", sa.String(64), nullable=False),
        sa.Column("word", sa.Text().with_variant(sa.Text(collation="C"), "postgresql"),
                  nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("message_key", "word", name="pk_subject_words"),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_subject_words_word_received_at_message_key", "subject_words",
                    ["word", "received_at", "message_key"])
    op.create_index("ix_decisions_message_key_mailbox_owner", "decisions",
                    ["message_key", "mailbox", "owner"])
    op.create_index("ix_requests_board", "requests", BOARD)
    backfill(op.get_bind())


def backfill(conn: sa.Connection) -> None:
    """The words of every message, BATCH messages at a time in key order."""
    msgs = sa.table("messages", sa.column("key", sa.String), sa.column("received_at", UTCDateTime()),
                    sa.column("subject", sa.Text))
    words = sa.table("subject_words", sa.column("message_key", sa.String),
                     sa.column("word", sa.Text), sa.column("received_at", UTCDateTime()))
    last = ""
    while True:
        chunk = conn.execute(sa.select(msgs.c.key, msgs.c.received_at, msgs.c.subject)
                             .where(msgs.c.key > last).order_by(msgs.c.key).limit(BATCH)).all()
        rows = [w for key, at, subject in chunk for w in word_rows(key, at, subject)]
        if rows:
            conn.execute(sa.insert(words), rows)
        if len(chunk) < BATCH:
            return
        last = chunk[-1].key


def downgrade() -> None:
    op.drop_index("ix_requests_board", "requests")
    op.drop_index("ix_decisions_message_key_mailbox_owner", "decisions")
    op.drop_table("subject_words")
