"""Subject words again, in the rules' new normal form: Latin accents folded, № a sign,
an ideograph a word.

The rules' normalising (routing/normalize.py) now folds Latin letters to their base letters
("příloha" is "priloha"), reads № and ™ as signs ("№5" is the word "5", no longer "no5") and
each Chinese or Japanese ideograph as a word ("发票" is 发, 票: it was part of one word
with every ideograph around it).
The index held the old words, which a query, normalised the new way, no longer names: the
words of every message whose subject is not ASCII (the only subjects whose words changed)
are made again here, BATCH messages at a time in key order.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from mailrouter.registry.models import UTCDateTime
from mailrouter.registry.words import word_rows

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

BATCH = 5000


def upgrade() -> None:
    reindex(op.get_bind())


def reindex(conn: sa.Connection) -> None:
    """The words of every message with a non-ASCII subject, made again."""
    msgs = sa.table("messages", sa.column("key", sa.String), sa.column("received_at", UTCDateTime()),
                    sa.column("subject", sa.Text))
    words = sa.table("subject_words", sa.column("message_key", sa.String),
                     sa.column("word", sa.Text), sa.column("received_at", UTCDateTime()))
    last = ""
    while True:
        chunk = conn.execute(sa.select(msgs.c.key, msgs.c.received_at, msgs.c.subject)
                             .where(msgs.c.key > last).order_by(msgs.c.key).limit(BATCH)).all()
        redo = [(key, at, subject) for key, at, subject in chunk
                if subject and not subject.isascii()]
        if redo:
            conn.execute(sa.delete(words).where(words.c.message_key.in_([k for k, _, _ in redo])))
            rows = [w for key, at, subject in redo for w in word_rows(key, at, subject)]
            if rows:
                conn.execute(sa.insert(words), rows)
        if len(chunk) < BATCH:
            return
        last = chunk[-1].key


def downgrade() -> None:
    """The new words stay: the old code finds the ASCII ones, as it wrote them."""
