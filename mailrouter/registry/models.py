"""Registry records (the values callers hand in) and the tables they land in.

Records are frozen dataclasses; the rest of mailrouter never sees a row or a
session. Tables are SQLAlchemy Core tables on one ``metadata`` that Alembic
revisions mirror by hand (``migrations/versions``): change both together.

The upsert builders (one statement per dialect, built once) carry the retry
rules: a message row keeps its first received_at and counts attempts; a
decision is replaced per (message, rcpt); a delivery per (message, target)
unless it is already 'delivered', which never goes back.

Tables here: messages (0001; the senders case-folded, from_fold and mail_from_fold: 0012),
decisions, deliveries, loops, reloads (0001; which process: 0011), outbox and
autoreply_log (0003: outgoing mail claimed with FOR UPDATE SKIP LOCKED, and the
cluster-wide per-sender autoreply limit as a unique key). The request tables of
execution control (0004) are defined in `control/`.

A message's From and envelope sender are kept twice: as they came (shown) and folded
(`fold_address`, searched: `registry search --from`, `history`, the web view's search and
counterparty pages, through the (fold, received_at) indexes). The folding is Python's,
at write time, so SQLite and PostgreSQL (whatever its LC_CTYPE) hold and compare the same
text; a Core insert that leaves the folded columns out gets them from their defaults.

Known limits: timestamps are stored as UTC; SQLite keeps them naive and
``UTCDateTime`` puts the zone back on read. JSON columns hold tuples as lists.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from functools import cache
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON, Boolean, Column, DateTime, Dialect, ForeignKey, Index, Insert, Integer, LargeBinary,
    MetaData,
    String, Table, Text, UniqueConstraint, and_, case, exists, func, literal_column,
    not_, or_, select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.types import TypeDecorator

__all__ = [
    "MessageRecord", "DecisionRecord", "DeliveryRecord", "UTCDateTime", "metadata",
    "messages", "decisions", "deliveries", "loops", "reloads",
    "MESSAGE_STATUSES", "DELIVERY_STATES", "message_upsert", "decision_upsert",
    "delivery_upsert", "OutboxRecord", "OUTBOX_STATES", "outbox", "autoreply_log",
    "outbox_insert", "autoreply_log_insert", "fold_address",
]

MESSAGE_STATUSES = frozenset({"delivered", "partial", "deferred", "rejected",
                              "unanswered"})   # intents.py: stored, the sender got no answer
DELIVERY_STATES = frozenset({"delivered", "deferred", "failed"})


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """One message as received; ``key`` is sha256 hex over (mail_from, raw bytes)."""

    key: str
    received_at: datetime
    protocol: str
    peer: str
    mail_from: str
    rcpts: tuple[str, ...]
    message_id: str | None
    from_name: str
    from_addr: str
    subject: str
    size: int
    content_hash: str
    defects: tuple[str, ...]
    ruleset_hash: str
    status: str


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    """The routing decision for one envelope recipient, with its explanation."""

    rcpt: str
    action: str
    reply: str
    mailbox: str | None
    folder: str | None
    owner: str | None
    tags: tuple[str, ...]
    priority: str | None
    sla: str | None
    path: tuple[str, ...]
    reasons: tuple[str, ...]
    rules: tuple[dict[str, Any], ...]


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """What happened at one final target; ``target`` is a stable key for dedupe."""

    target: str
    state: str
    detail: str


class UTCDateTime(TypeDecorator[datetime]):
    """A tz-aware UTC datetime on every backend; naive values are refused."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: registry timestamps must be tz-aware")
        return value.astimezone(timezone.utc)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


def fold_address(value: str) -> str:
    """An address as searches compare it: Unicode case folding (Python's casefold, so
    Иван = иван, Ž = ž, ß = ss) of the canonically decomposed text, composed again (a
    decomposed й or ř equals the composed one). ASCII, nearly every address: lower()."""
    if value.isascii():
        return value.lower()
    return unicodedata.normalize("NFC", unicodedata.normalize("NFD", value).casefold())


def _folded(column: str) -> Any:
    """A column default: `column` of the row being inserted, folded."""
    def default(context: Any) -> str:
        return fold_address(context.get_current_parameters()[column] or "")
    return default


# Stable constraint names, so later revisions (and SQLite batch mode) can name them.
metadata = MetaData(naming_convention={
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
})

messages = Table(
    "messages", metadata,
    Column("key", String(64), primary_key=True),
    Column("received_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("protocol", String(8), nullable=False),
    Column("peer", String(255), nullable=False),
    Column("mail_from", Text, nullable=False),
    Column("rcpts", JSON, nullable=False),
    Column("message_id", Text),
    Column("from_name", Text, nullable=False),
    Column("from_addr", Text, nullable=False),
    Column("subject", Text, nullable=False),
    Column("size", Integer, nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("defects", JSON, nullable=False),
    Column("ruleset_hash", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="1"),
    # fold_address of from_addr and mail_from (0012): what a search by sender compares
    Column("from_fold", Text, default=_folded("from_addr")),
    Column("mail_from_fold", Text, default=_folded("mail_from")),
    Index(None, "received_at"),
    Index(None, "from_fold", "received_at"),
    Index(None, "mail_from_fold", "received_at"),
    Index(None, "message_id"),
)

decisions = Table(
    "decisions", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("message_key", String(64), ForeignKey("messages.key", ondelete="CASCADE"),
           nullable=False),
    Column("rcpt", Text, nullable=False),
    Column("action", String(16), nullable=False),
    Column("reply", Text, nullable=False),
    Column("mailbox", String(255)),
    Column("folder", String(255)),
    Column("owner", String(255)),
    Column("tags", JSON, nullable=False),
    Column("priority", Text),
    Column("sla", Text),
    Column("path", JSON, nullable=False),
    Column("reasons", JSON, nullable=False),
    Column("rules", JSON, nullable=False),
    UniqueConstraint("message_key", "rcpt"),
    Index(None, "message_key", "mailbox", "owner"),     # the rights filter (0006)
    Index(None, "mailbox"),
    Index(None, "owner"),
)

deliveries = Table(
    "deliveries", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("message_key", String(64), ForeignKey("messages.key", ondelete="CASCADE"),
           nullable=False),
    Column("target", String(512), nullable=False),
    Column("state", String(16), nullable=False),
    Column("detail", Text, nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    UniqueConstraint("message_key", "target"),
)

# A loop may be caught before the message is recorded, so no foreign key here.
loops = Table(
    "loops", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("detected_at", UTCDateTime(), nullable=False),
    Column("message_key", String(64), nullable=False),
    Column("rcpt", Text, nullable=False),
    Column("evidence", Text, nullable=False),
    Index(None, "message_key"),
    Index(None, "detected_at"),
)

reloads = Table(
    "reloads", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", UTCDateTime(), nullable=False),
    Column("ruleset_hash", String(64), nullable=False),
    Column("ok", Boolean, nullable=False),
    Column("detail", Text, nullable=False),
    Column("instance", Text),       # "HOST pid=PID worker=N" (0011); NULL before it
    Index(None, "at"),
)


# Upserts: a retry of one message key updates rows instead of adding them.

def _insert(dialect: str, table: Any) -> Any:
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


@cache
def message_upsert(dialect: str) -> Insert:
    stmt = _insert(dialect, messages)
    keep = {"key", "received_at", "attempts"}
    # A reconcile's `unanswered` (intents.py: copies stored, the record failed) that lands
    # after the sender's retry was recorded as delivered, by another process, leaves the
    # answered record as it is: the sender got its 250.
    answered = and_(stmt.excluded.status == "unanswered",
                    or_(messages.c.status == "delivered", messages.c.status == "partial"))
    updates = {c.name: case((answered, messages.c[c.name]), else_=stmt.excluded[c.name])
               for c in messages.c if c.name not in keep}
    # A message an MTA split over transactions (its recipients in several, the same key):
    # one deferred or refused after another's copies were delivered is partly delivered.
    # It overwrote the status: `deferred` (or `rejected`) for a message whose first
    # transaction got 250 and has its copies, in searches, the web view and the backlog.
    split = and_(or_(stmt.excluded.status == "deferred", stmt.excluded.status == "rejected"),
                 or_(messages.c.status == "delivered", messages.c.status == "partial"))
    # The other order: a transaction delivered after another one's recipients were deferred
    # (or refused) said `delivered` while those were still in the MTA's queue. `partial`
    # while a recipient of the message outside this transaction has no 2xx decision (its
    # row, decisions.reply, is the last answer it got); the retry that delivers it replaces
    # that row in the same transaction and ends `delivered`. Evaluated only on a conflict
    # (a retry or a split message), never for a new key.
    elements = func.json_array_elements_text if dialect == "postgresql" else func.json_each
    # `excluded` by name: SQLAlchemy does not correlate a subquery of ON CONFLICT's SET to
    # it (it adds "FROM messages AS excluded", a cross join of the whole table)
    these = select(elements(literal_column("excluded.rcpts")).table_valued("value").c.value)
    pending = exists().where(decisions.c.message_key == literal_column('excluded."key"'),
                             not_(decisions.c.reply.like("2%")),
                             decisions.c.rcpt.not_in(these.scalar_subquery()))
    held = and_(stmt.excluded.status == "delivered", pending)
    updates["status"] = case((answered, messages.c.status), (split, "partial"), (held, "partial"),
                             else_=stmt.excluded.status)
    updates["attempts"] = case((answered, messages.c.attempts), else_=messages.c.attempts + 1)
    return stmt.on_conflict_do_update(index_elements=["key"], set_=updates)  # type: ignore[no-any-return]


@cache
def decision_upsert(dialect: str) -> Insert:
    stmt = _insert(dialect, decisions)
    keep = {"id", "message_key", "rcpt"}
    updates = {c.name: stmt.excluded[c.name] for c in decisions.c if c.name not in keep}
    return stmt.on_conflict_do_update(  # type: ignore[no-any-return]
        index_elements=["message_key", "rcpt"], set_=updates)


@cache
def delivery_upsert(dialect: str) -> Insert:
    stmt = _insert(dialect, deliveries)
    done = deliveries.c.state == "delivered"
    updates = {name: case((done, deliveries.c[name]), else_=stmt.excluded[name])
               for name in ("state", "detail", "updated_at")}
    return stmt.on_conflict_do_update(  # type: ignore[no-any-return]
        index_elements=["message_key", "target"], set_=updates)


# Outgoing mail (issue 11): autoreplies and DSNs, written in the transaction of the message
# that caused them (store.record), sent later by outbox.OutboxWorker. Revision 0003.

OUTBOX_STATES = frozenset({"queued", "sent", "failed", "suppressed"})


@dataclass(frozen=True, slots=True)
class OutboxRecord:
    """One message to send. ``dedupe`` is unique: a retry of the incoming message, or another
    instance answering the same sender in the same period, inserts nothing. For an autoreply
    (``responder`` set) the same key also goes into autoreply_log (sender, responder, bucket)."""

    dedupe: str
    kind: str                   # 'autoreply' | 'dsn'
    mail_from: str              # our envelope sender; '' is <>
    rcpt: str
    raw: bytes
    responder: str | None = None
    sender: str | None = None   # canonical (lower-case) sender, for the autoreply log
    bucket: int | None = None   # outbox.period_bucket of the answer
    period: float = 0.0         # the responder's period in seconds: the record looks for
                                # an answer within it in another bucket (store.py)
    daily_cap: int = 0          # autoreply.daily_cap: the record counts the sender's answers
                                # of the last 24 h again (store.py); 0: not counted there


outbox = Table(
    "outbox", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("dedupe", String(512), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("message_key", String(64), nullable=False),
    Column("mail_from", Text, nullable=False),
    Column("rcpt", Text, nullable=False),
    Column("raw", LargeBinary, nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("next_try", UTCDateTime(), nullable=False),
    Column("sent_at", UTCDateTime()),
    Column("last_error", Text, nullable=False),
    UniqueConstraint("dedupe"),
    Index(None, "state", "next_try"),
)

autoreply_log = Table(
    "autoreply_log", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("sender", Text, nullable=False),
    Column("responder", String(255), nullable=False),
    Column("bucket", Integer, nullable=False),
    Column("message_key", String(64), nullable=False),
    Column("sent_at", UTCDateTime(), nullable=False),
    UniqueConstraint("sender", "responder", "bucket"),
    Index(None, "sender", "sent_at"),
)


@cache
def outbox_insert(dialect: str) -> Insert:
    return _insert(dialect, outbox).on_conflict_do_nothing(  # type: ignore[no-any-return]
        index_elements=["dedupe"])


@cache
def autoreply_log_insert(dialect: str) -> Insert:
    return _insert(dialect, autoreply_log).on_conflict_do_nothing(  # type: ignore[no-any-return]
        index_elements=["sender", "responder", "bucket"])
