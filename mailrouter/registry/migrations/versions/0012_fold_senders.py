"""A message's senders case-folded and indexed: messages.from_fold and mail_from_fold.

`registry search --from`, `registry history ADDRESS` and the web view's search by sender
and counterparty page compared lower(from_addr) (and lower(mail_from)), which no index
serves: every search walked the messages newest first calling lower() on each (0.10 s
for one address at 200,000 messages on SQLite, growing with the registry), and the two
backends folded differently (SQLite through a Python function, PostgreSQL by its
database's LC_CTYPE: A-Z only under C). Now each message keeps both senders folded by
registry.models.fold_address (Python's casefold, the same text on either backend),
written with the message, and (fold, received_at) indexes answer the searches.

Backfill: every message, BATCH at a time in key order, in this revision's transaction.
Rows whose senders are ASCII (nearly all) are folded by the database's lower() in one
UPDATE per batch (ASCII lower() is casefold on both backends, whatever the locale); the
others are read and folded in Python. Then the indexes; the (from_addr, received_at)
index, which no query used, is dropped (each message wrote it). Measured at 200,000
messages: 1.5-3 s on SQLite, 2.6 s on PostgreSQL (bench/README.md). Each step is skipped
when already done, so a run cut short on SQLite (whose DDL is not transactional here) is
finished by the next.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from mailrouter.registry.models import fold_address

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

BATCH = 5000


def upgrade() -> None:
    # Each step only when not done yet: SQLite's DDL is not in the migration's transaction
    # (Alembic runs it as it comes), so a run cut short (the start's registry timeout, a
    # kill) left the index dropped and the columns added under revision 0011, and the
    # next start failed for good on "no such index".
    conn = op.get_bind()
    seen = sa.inspect(conn)
    columns = {c["name"] for c in seen.get_columns("messages")}
    indexes = {i["name"] for i in seen.get_indexes("messages")}
    # first: the backfill's updates need not write it too
    if "ix_messages_from_addr_received_at" in indexes:
        op.drop_index("ix_messages_from_addr_received_at", table_name="messages")
    for name in ("from_fold", "mail_from_fold"):
        if name not in columns:
            op.add_column("messages", sa.Column(name, sa.Text()))
    backfill(conn)
    for name in ("from_fold", "mail_from_fold"):
        if f"ix_messages_{name}_received_at" not in indexes:
            op.create_index(f"ix_messages_{name}_received_at", "messages", [name, "received_at"])


def backfill(conn: sa.Connection) -> None:
    """from_fold and mail_from_fold of every message."""
    msgs = sa.table("messages", sa.column("key", sa.String), sa.column("from_addr", sa.Text),
                    sa.column("mail_from", sa.Text), sa.column("from_fold", sa.Text),
                    sa.column("mail_from_fold", sa.Text))
    pg = conn.dialect.name == "postgresql"

    def plain(column: sa.ColumnElement[str]) -> sa.ColumnElement[bool]:
        """ASCII only: as many bytes as characters (SQLite's length() of a BLOB counts
        its bytes)."""
        size = sa.func.octet_length(column) if pg else sa.func.length(sa.cast(column, sa.LargeBinary))
        return size == sa.func.length(column)

    def lower(column: sa.ColumnElement[str]) -> sa.ColumnElement[str]:
        # A-Z only, as casefold does ASCII: PostgreSQL's lower() under a Turkish LC_CTYPE
        # makes I a dotless ı, unless told the C collation
        return sa.func.lower(sa.collate(column, "C") if pg else column)

    both = sa.and_(plain(msgs.c.from_addr), plain(msgs.c.mail_from))
    fix = (sa.update(msgs).where(msgs.c.key == sa.bindparam("k"))
           .values(from_fold=sa.bindparam("f"), mail_from_fold=sa.bindparam("m")))
    last = ""
    while True:
        # the batch's last key: the range (last, upto] holds BATCH messages (None: the rest)
        upto = conn.execute(sa.select(msgs.c.key).where(msgs.c.key > last).order_by(msgs.c.key)
                            .offset(BATCH - 1).limit(1)).scalar()
        span = [msgs.c.key > last] + ([msgs.c.key <= upto] if upto is not None else [])
        conn.execute(sa.update(msgs).where(*span, both).values(
            from_fold=lower(msgs.c.from_addr), mail_from_fold=lower(msgs.c.mail_from)))
        rows = conn.execute(sa.select(msgs.c.key, msgs.c.from_addr, msgs.c.mail_from)
                            .where(*span, sa.not_(both))).all()
        if rows:
            conn.execute(fix, [{"k": k, "f": fold_address(f or ""), "m": fold_address(m or "")}
                               for k, f, m in rows])
        if upto is None:
            return
        last = upto


def downgrade() -> None:
    op.create_index("ix_messages_from_addr_received_at", "messages", ["from_addr", "received_at"])
    op.drop_index("ix_messages_mail_from_fold_received_at", table_name="messages")
    op.drop_index("ix_messages_from_fold_received_at", table_name="messages")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("mail_from_fold")
        batch.drop_column("from_fold")
