"""The registry tables of execution control (revision 0004_requests mirrors them by hand).

- `requests`: one conversation; `id` is the request number people see (`[#123]`).
  Status is open -> answered (our reply) -> closed; waiting (for the customer)
  is set by a reply carrying `control.waiting_marker` or by `mailrouter request wait`;
  a customer follow-up reopens anything but open, and so does `reopen` by hand.
  `open` always means we owe the customer an answer: `response_due` is when it is due
  (the first response's due, then, after each reopen, the reopen's time plus `sla_term`
  on the request's calendar), `response_round` which answer it is (0010).
- `request_messages`: every message of a request, in (customer) and out (our reply,
  seen through the reply-tracking copy), with its Message-ID for follow-up matching.
- `request_events`: the history: opened, joined, owner changes, replies, status
  changes, refused joins (hijack attempts), reminders and escalations.
- `request_alerts`: reminders and escalations to send, one row per (request, round,
  stage), unique: a stage happens at most once per answer owed (round, 0010) whatever
  restarts or instances do. Its mail
  goes into the outbox in the same transaction (`queued`; the outbox row, dedupe
  `sla:<request>:<stage>`, says when it was sent), or nowhere (`no_address`).
- `team_picks`: the member each team picked last (round-robin cursor).
- `request_threads` (0007): every Message-ID a request's thread is known by: its
  messages' own and those their In-Reply-To/References name. The key is unique: a
  Message-ID belongs to one request, so an original recorded after its follow-up (by
  another instance) finds the request the follow-up opened.
- `thread_claims` (0007): the same Message-IDs, claimed before delivery by a message
  about to open a request, with the owner it planned: another instance planning the
  thread at that moment takes the same owner. Apart from request_threads, so a claim
  (before delivery, no lock) and a record (under the requests lock) never wait on
  each other's rows. Claims of messages never recorded are deleted by the SLA scan
  a week after `claimed_at` (0008; control/sla.py); those of recorded messages stay.
"""

from __future__ import annotations

from sqlalchemy import JSON, Column, ForeignKey, Index, Integer, String, Table, Text, UniqueConstraint

from ..registry.models import UTCDateTime, metadata

__all__ = ["request_alerts", "request_events", "request_messages", "requests",
           "request_threads", "team_picks", "thread_claims"]

requests = Table(
    "requests", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("opened_at", UTCDateTime(), nullable=False),
    Column("message_key", String(64), nullable=False),     # the message that opened it
    Column("counterparty", Text, nullable=False),          # the customer's address, lower case
    Column("counterparty_domain", Text, nullable=False),
    Column("mailbox", String(255)),
    Column("rule", String(255)),
    Column("owner", String(255)),
    Column("team", String(255)),
    Column("status", String(16), nullable=False),
    Column("subject", Text, nullable=False),
    Column("priority", String(16)),
    Column("tags", JSON, nullable=False),
    Column("sla_calendar", String(255)),
    Column("first_response_due", UTCDateTime()),
    Column("first_response_at", UTCDateTime()),
    Column("last_in_at", UTCDateTime(), nullable=False),
    Column("last_out_at", UTCDateTime()),
    Column("closed_at", UTCDateTime()),
    # The answer the customer waits for now (0010): its due time (NULL when none is owed,
    # or without an SLA), which one it is (1: the first response; each reopen adds one),
    # and the SLA term it is counted with (the rule's first_response, as written: "4h").
    Column("response_due", UTCDateTime()),
    Column("response_round", Integer, nullable=False, server_default="1"),
    Column("sla_term", String(32)),
    Index(None, "owner", "status"),
    Index(None, "status", "first_response_due"),
    Index(None, "counterparty"),
    Index(None, "counterparty_domain"),
    Index(None, "opened_at"),
    Index(None, "mailbox", "opened_at"),
    # the board's counts from one walk of the index alone (0006; 0010: the current answer's due)
    Index("ix_requests_board", "status", "mailbox", "owner", "response_due"),
    Index(None, "status", "response_due"),
)

request_messages = Table(
    "request_messages", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("request_id", Integer, ForeignKey("requests.id", ondelete="CASCADE"), nullable=False),
    Column("message_key", String(64), nullable=False),
    Column("message_id", Text),
    Column("direction", String(3), nullable=False),       # in | out
    Column("at", UTCDateTime(), nullable=False),
    Column("sender", Text, nullable=False),
    UniqueConstraint("request_id", "message_key"),
    Index(None, "message_id"),
    Index(None, "message_key"),
)

request_events = Table(
    "request_events", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("request_id", Integer, ForeignKey("requests.id", ondelete="CASCADE"), nullable=False),
    Column("at", UTCDateTime(), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("actor", Text),
    Column("detail", Text, nullable=False),
    Index(None, "request_id", "at"),
    Index(None, "kind", "at"),
)

request_alerts = Table(
    "request_alerts", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("request_id", Integer, ForeignKey("requests.id", ondelete="CASCADE"), nullable=False),
    Column("stage", String(16), nullable=False),          # remind | escalate
    Column("round", Integer, nullable=False, server_default="1"),   # requests.response_round
    Column("at", UTCDateTime(), nullable=False),
    Column("recipient", String(255)),                     # person key
    Column("address", Text),
    Column("subject", Text, nullable=False),
    Column("body", Text, nullable=False),
    Column("state", String(16), nullable=False),          # queued | no_address
    Column("sent_at", UTCDateTime()),
    UniqueConstraint("request_id", "round", "stage"),
    Index(None, "state", "at"),
)

team_picks = Table(
    "team_picks", metadata,
    Column("team", String(255), primary_key=True),
    Column("member", String(255), nullable=False),
    Column("at", UTCDateTime(), nullable=False),
)

request_threads = Table(
    "request_threads", metadata,
    Column("message_id", Text, primary_key=True),
    Column("request_id", Integer, ForeignKey("requests.id", ondelete="CASCADE"), nullable=False),
    Index(None, "request_id"),
)

thread_claims = Table(
    "thread_claims", metadata,
    Column("message_id", Text, primary_key=True),
    Column("message_key", String(64), nullable=False),   # the message that claimed it
    Column("sender", Text, nullable=False),
    Column("owner", String(255)),                        # the owner that message planned
    Column("team", String(255)),
    Column("claimed_at", UTCDateTime()),                # when (0008); NULL never written now
    Index(None, "claimed_at"),
)
