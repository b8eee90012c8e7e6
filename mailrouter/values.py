"""The value kernel: the plain values every stage passes around, and every reply we send.

Nothing here does I/O and nothing here imports from mailrouter: the rules engine,
the address book, delivery, the registry and the intake all import these values
from here, so none of them has to import another stage to name a reply, a target
or a decision (tests/test_imports.py holds the package to that).

The reply table below is the one place a reply of ours is written: each reply
mailrouter sends to a client (or records for a delivery) is a named constant, and
code refers to it by name. A reply whose text carries a detail (the new address of
a moved recipient, which downstream is missing) starts from its table entry with
`Reply.with_text`, so its code and enhanced status are still the table's.
Replies taken from a downstream server (`delivery.smtp.parse_reply`) are not ours
and are passed on as they came.

What this module refuses: nothing; it only defines values.
"""

from __future__ import annotations

import csv
import enum
import unicodedata
from dataclasses import dataclass, field, replace
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "autoreply_line", "as_stored",
    "AIOSMTPD_BOGUS_GOODBYE", "REPLIES", "REPLY_ALREADY_DELIVERED", "REPLY_AUTH_NOT_IMPLEMENTED", "REPLY_BAD_BYTES",
    "REPLY_BARE_LINE_END", "REPLY_BDAT_NOT_OFFERED",
    "REPLY_CONTROL_CHAR", "REPLY_COPY_DELIVERED", "REPLY_DATA_SYNTAX", "REPLY_DATA_TOO_SLOW",
    "REPLY_DELIVERED", "REPLY_DELIVERED_TO", "REPLY_DELIVERY_TEMPFAIL", "REPLY_HELP", "REPLY_HELP_UNKNOWN",
    "REPLY_DOWNSTREAM_REFUSED", "REPLY_INTENT_FAILED", "REPLY_INTENTS_FULL", "REPLY_INTERNAL_ERROR",
    "REPLY_LHLO_SYNTAX", "REPLY_LMTP_NO_EHLO",
    "REPLY_LMTP_NO_HELO", "REPLY_LOOP", "REPLY_MAILBOX_HELD", "REPLY_MOVED", "REPLY_NEED_RCPT",
    "REPLY_NEED_SMTPUTF8", "REPLY_NO_DOWNSTREAM", "REPLY_NO_VALID_RCPTS", "REPLY_OK", "REPLY_PARAM_TWICE",
    "REPLY_BODY_UNSUPPORTED",
    "REPLY_PROCESS_TIMEOUT",
    "REPLY_REFUSED_ADDRESS", "REPLY_REFUSED_BARE_EOL", "REPLY_REFUSED_UTF8",
    "REPLY_REGISTRY_UNAVAILABLE", "REPLY_RULE_DEFER", "REPLY_RULE_REJECT", "REPLY_SENDER_OK",
    "REPLY_SHUTTING_DOWN", "REPLY_STARTTLS_NOT_IMPLEMENTED", "REPLY_START_DATA", "REPLY_STORAGE_FULL",
    "REPLY_SYNC_ERROR",
    "REPLY_TEMPFAIL", "REPLY_TOO_BIG", "REPLY_TOO_MANY_ERRORS",
    "REPLY_TOO_MANY_RESETS", "REPLY_MALFORMED_PATH", "REPLY_RCPT_SYNTAX", "REPLY_TOO_MANY_RCPTS",
    "REPLY_TOO_MANY_SESSIONS", "REPLY_TOO_MANY_FROM_CLIENT", "REPLY_UNKNOWN", "Action", "Decision", "Downstream",
    "LoopEvidence", "LoopKind", "Reply", "RuleMatch", "Target", "Transaction", "folder_problem",
    "written_folder_problem", "maildir_problem", "REQUEST_STATUSES", "OPEN_REQUEST_STATUSES", "spreadsheet_cell",
]

# A request's statuses (execution control): here, not beside the table that stores them, so
# the command line names them in its --help without importing SQLAlchemy.
REQUEST_STATUSES = ("open", "answered", "waiting", "closed")
OPEN_REQUEST_STATUSES = ("open", "answered", "waiting")      # not closed: counts for fewest-open


@dataclass(frozen=True, slots=True)
class Reply:
    """One SMTP reply: basic code, enhanced code (RFC 3463; "" for 354) and text."""

    code: int
    status: str
    text: str

    def __str__(self) -> str:
        if not self.status:
            return f"{self.code} {self.text}"
        return f"{self.code} {self.status} {self.text}"

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 300

    @property
    def temporary(self) -> bool:
        return 400 <= self.code < 500

    def with_text(self, text: str) -> Reply:
        """The same code and enhanced status with another text (a detail for this case)."""
        return replace(self, text=text)


# -- The reply table ---------------------------------------------------------------------
# Session and command replies (intake/protocol.py, intake/handler.py).
REPLY_SHUTTING_DOWN = Reply(421, "4.3.2", "Service shutting down, try again later")
REPLY_TOO_MANY_SESSIONS = Reply(421, "4.7.0", "Too many connections, try again later")
REPLY_TOO_MANY_FROM_CLIENT = Reply(421, "4.7.0", "Too many connections from your address, try again later")
REPLY_DATA_TOO_SLOW = Reply(421, "4.4.2", "DATA took too long, closing connection")
REPLY_CONTROL_CHAR = Reply(501, "5.5.2", "Syntax error: control character in command")
REPLY_NOT_UTF8 = Reply(501, "5.5.2", "Syntax error: invalid UTF-8 in command")
REPLY_AUTH_NOT_IMPLEMENTED = Reply(502, "5.5.1", 'Error: command "AUTH" not implemented')
REPLY_STARTTLS_NOT_IMPLEMENTED = Reply(502, "5.5.1", 'Error: command "STARTTLS" not implemented')
# BDAT without CHUNKING (RFC 3030): the chunk that follows is not commands; said, then hang up
# (Postfix's code: 521, the connection is closed)
REPLY_BDAT_NOT_OFFERED = Reply(521, "5.5.1", 'Error: command "BDAT" not implemented '
                                             "(CHUNKING is not offered), closing connection")
# A command line not ended by a single CRLF (RFC 5321 2.3.8, 4.1.1): it is not run
REPLY_BARE_LINE_END = Reply(500, "5.5.2", "Error: bare <CR> or <LF> received; "
                                          "end command lines with <CR><LF>")
REPLY_HELP = Reply(214, "2.0.0", "Supported commands")      # RFC 5321 4.2.1: 214 is help
REPLY_HELP_UNKNOWN = Reply(504, "5.5.4", "No help for that topic; HELP alone lists the commands")
REPLY_NEED_RCPT = Reply(503, "5.5.1", "Error: need RCPT command")
# DATA after MAIL whose every RCPT was refused (RFC 5321 3.3 allows 554; Postfix's text)
REPLY_NO_VALID_RCPTS = Reply(554, "5.5.1", "Error: no valid recipients")
REPLY_DATA_SYNTAX = Reply(501, "5.5.4", "Syntax: DATA")
REPLY_START_DATA = Reply(354, "", "End data with <CR><LF>.<CR><LF>")
REPLY_LHLO_SYNTAX = Reply(501, "5.5.4", "Syntax: LHLO hostname")
REPLY_LMTP_NO_EHLO = Reply(500, "5.5.1", 'Error: command "EHLO" not recognized, use LHLO')
REPLY_LMTP_NO_HELO = Reply(500, "5.5.1", 'Error: command "HELO" not recognized, use LHLO')
REPLY_SENDER_OK = Reply(250, "2.1.0", "Ok")
# RFC 6531 3.5, Postfix's text: a non-ASCII address in a transaction without SMTPUTF8
REPLY_NEED_SMTPUTF8 = Reply(553, "5.6.7", "Must declare SMTPUTF8 to send unicode address")
REPLY_TOO_MANY_RCPTS = Reply(452, "4.5.3", "Too many recipients")      # RFC 5321 4.5.3.1.8
REPLY_BAD_BYTES = Reply(550, "5.6.0", "Message refused: bare LF, bare CR or NUL in content; "
                                      "send CRLF line endings (RFC 5321 2.3.8)")
REPLY_TOO_BIG = Reply(552, "5.3.4", "Message size exceeds fixed maximum message size")
REPLY_SYNC_ERROR = Reply(554, "5.5.0", "Error: SMTP protocol synchronization")   # Postfix's text
# Postfix's text; "{}" is our hostname, filled in by the intake (str.format)
REPLY_TOO_MANY_ERRORS = Reply(421, "4.7.0", "{} Error: too many errors")
# RSETs since the last message taken past intake's limit: aiosmtpd's words for its own
# per-command limits, so the intake hangs up on it as on theirs
REPLY_TOO_MANY_RESETS = Reply(421, "4.7.0", "RSET sent too many times")
# aiosmtpd's own replies to a path intake's `read_path` refuses, and to RCPT with text after
# the path that is no parameter (`RCPT TO:<a@b>>`), as its smtp_RCPT sends them (with ESMTP):
# `explain` gives them too
REPLY_MALFORMED_PATH = Reply(553, "5.1.3", "Error: malformed address")
REPLY_RCPT_SYNTAX = Reply(501, "5.5.4", "Syntax: RCPT TO: <address> [SP <mail-parameters>]")
# MAIL/RCPT naming one parameter twice (SIZE=1 SIZE=2): which counts is anyone's guess; RFC
# 5321 4.2.3's "syntax error in parameters". "{}" is the parameter, filled in by the intake
REPLY_PARAM_TWICE = Reply(501, "5.5.4", "Syntax error in parameters: {} given twice")
# MAIL's BODY= other than 7BIT and 8BITMIME (BINARYMIME needs CHUNKING, RFC 3030 3, which is
# not offered): a parameter not implemented, RFC 5321 4.1.1.11, as Postfix says it. "{}" is
# the value given. aiosmtpd said "501 Error: BODY can only be one of 7BIT, 8BITMIME".
REPLY_BODY_UNSUPPORTED = Reply(555, "5.5.4", "Unsupported option: BODY={}; 7BIT or 8BITMIME")
REPLY_TIMEOUT = Reply(421, "4.4.2", "{} Error: timeout exceeded")    # Postfix's text, "{}" as above
# Not ours: aiosmtpd's answer to the fifth unknown command before it closes, which the intake
# recognises and replaces with REPLY_TOO_MANY_ERRORS (tests/test_aiosmtpd_contract.py pins it)
AIOSMTPD_BOGUS_GOODBYE = "502 5.5.1 Too many unrecognized commands"

# Recipient replies: the address book, the rules, the loop defence.
REPLY_OK = Reply(250, "2.1.5", "Ok")
REPLY_UNKNOWN = Reply(550, "5.1.1", "Recipient address rejected: no such address here")
# RFC 5321 section 3.4 (551 "user not local; please try <forward-path>"), RFC 3463 5.1.6
# "destination mailbox has moved": a moved address that no longer delivers.
REPLY_MOVED = Reply(551, "5.1.6", "Recipient has moved")
REPLY_RULE_REJECT = Reply(550, "5.7.1", "Message refused by routing rules")
REPLY_RULE_DEFER = Reply(451, "4.7.1", "Deferred by routing rules, try again later")
REPLY_LOOP = Reply(554, "5.4.6", "Mail loop detected")
# Postfix local(8): mail that already carries this recipient's Delivered-To
REPLY_DELIVERED_TO = REPLY_LOOP.with_text("Mail forwarding loop: Delivered-To already names "
                                          "this recipient")

# After DATA: the pipeline, delivery and the registry. Every fault of ours is a 451 4.3.0
# (the sending MTA retries, the mail is never bounced); the text says which fault.
REPLY_DELIVERED = Reply(250, "2.0.0", "Ok: delivered")
REPLY_ALREADY_DELIVERED = REPLY_DELIVERED.with_text("Already delivered")
REPLY_COPY_DELIVERED = REPLY_DELIVERED.with_text("Delivered")    # one target's copy stored
REPLY_TEMPFAIL = Reply(451, "4.3.0", "Temporary failure, try again later")
REPLY_INTERNAL_ERROR = REPLY_TEMPFAIL.with_text("Internal error, try again later")
REPLY_PROCESS_TIMEOUT = REPLY_TEMPFAIL.with_text("Processing took too long, try again later")
REPLY_DELIVERY_TEMPFAIL = REPLY_TEMPFAIL.with_text("Delivery temporarily failed, try again later")
# a downstream refused a mailbox our config names: held as 4xx (delivery.hold_permanent_failures)
REPLY_MAILBOX_HELD = REPLY_TEMPFAIL.with_text("Mailbox temporarily unavailable, try again later")
REPLY_REGISTRY_UNAVAILABLE = REPLY_TEMPFAIL.with_text(
    "Registry temporarily unavailable, try again later")
REPLY_STORAGE_FULL = Reply(452, "4.3.1", "Insufficient system storage, try again later")
# A Maildir copy's intent (intents.py, delivery.intents_dir) could not be written, so no copy
# was made: their own replies, so the metrics tell this disk from the Maildir's
REPLY_INTENT_FAILED = REPLY_TEMPFAIL.with_text("Delivery journal unavailable, try again later")
REPLY_INTENTS_FULL = REPLY_STORAGE_FULL.with_text(
    "Insufficient system storage for the delivery journal, try again later")
REPLY_NO_DOWNSTREAM = Reply(451, "4.3.5", "No downstream configured")
REPLY_DOWNSTREAM_REFUSED = Reply(550, "5.0.0", "Delivery refused downstream")
REPLY_REFUSED_BARE_EOL = Reply(554, "5.6.0", "Message contains a lone CR or LF; refusing to send it")
REPLY_REFUSED_ADDRESS = Reply(501, "5.1.3", "Bad address syntax")
REPLY_REFUSED_UTF8 = Reply(550, "5.6.7", "SMTPUTF8 is required, but was not offered by the downstream")

REPLIES: dict[str, Reply] = {name: value for name, value in globals().items()
                             if name.startswith("REPLY_") and isinstance(value, Reply)}
"""Every reply of the table by name (for docs, tests and `mailrouter` tooling)."""


# -- Decisions ---------------------------------------------------------------------------
class Action(enum.Enum):
    DELIVER = "deliver"
    REJECT = "reject"      # 5xx for this recipient
    DEFER = "defer"        # 4xx for this recipient


@dataclass(frozen=True, slots=True)
class Target:
    """One final place a copy goes: a mailbox, optionally a folder in it."""

    mailbox: str
    folder: str | None = None
    person: str | None = None          # the person this copy is for, if any
    path: tuple[str, ...] = ()         # the alias path walked to get here

    @property
    def key(self) -> str:
        """Stable identity for dedupe: two paths to one place are one copy."""
        return f"{self.mailbox}/{self.folder}" if self.folder else self.mailbox


def folder_problem(folder: str) -> str | None:
    """Why a folder name cannot be a Maildir++ folder ('Finance/2026' is '.Finance.2026'),
    or None when it can. Asked where the name is written (rules, aliases: an error with
    file:line) and where a copy is stored, so that a name the loader took is never one
    that every delivery then fails on."""
    levels = folder.replace(".", "/").split("/")
    if any(level == "" for level in levels):
        return ("an empty level: a '.' or '/' at an end or two in a row "
                "(levels are written 'Finance/2026' or 'Finance.2026')")
    if any(c in folder for c in "\0\r\n"):
        return "a NUL, CR or LF in it"
    return None


def written_folder_problem(folder: str) -> str | None:
    """`folder_problem`, and more, for a folder where it is written (a rule, an alias): a
    level with a space at either end (`folder: " Inbound"`, a no-break space pasted from a web
    page) or a character that shows as nothing (a zero-width space, a direction mark) is a
    Maildir folder of its own that a mail client shows as `Inbound`: the copies went there,
    beside the real one, and nothing told. Not asked where a copy is stored (a copy journaled
    under an older rule set is still stored)."""
    problem = folder_problem(folder)
    if problem is not None:
        return problem
    for level in folder.replace(".", "/").split("/"):
        if level != level.strip():
            return (f"a space at an end of the level {level!r} (a no-break space pasted from a "
                    "web page is one too): it would be a folder of its own, shown as "
                    f"{level.strip()!r}")
        hidden = next((c for c in level if unicodedata.category(c) in ("Cf", "Cc", "Co", "Cn")),
                      None)
        if hidden is not None:
            return (f"an invisible character U+{ord(hidden):04X} in the level {level!r}: it "
                    "would be a folder of its own that looks like another")
    return None


# What Excel and LibreOffice read as the start of a formula (a tab or CR too: some strip it)
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def autoreply_line(responder: str, not_sent: str = "") -> str:
    """The decision-reason line the registry keeps for an autoreply: `autoreply R: queued`,
    or `autoreply R: not sent: WHY` (autoreply.Verdict.describe; the registry's record
    turns the first into the second for an answer it drops, store._answered_elsewhere)."""
    return f"autoreply {responder}: not sent: {not_sent}" if not_sent else f"autoreply {responder}: queued"


def spreadsheet_cell(value: Any) -> Any:
    """A CSV cell a spreadsheet opens as the text it is: a string that starts like a formula
    (a customer's subject `=HYPERLINK(...)`, `+7 495 ...`, `@SUM(...)`, an alias
    `+cmd@example.com`) gets a leading apostrophe, which Excel and LibreOffice hide and which
    stops the formula. Numbers, None and other strings are left as they are. Here, at the
    bottom, so that every CSV export (`registry`, `report`, `address export`) can use it."""
    return "'" + value if isinstance(value, str) and value.startswith(_FORMULA) else value


def write_csv(out: Any, rows: Iterable[Mapping[str, Any]], fields: Sequence[str] | None = None,
              lineterminator: str = "\r\n") -> None:
    """`rows` as CSV on `out` (a text stream) with a header line, every cell through
    spreadsheet_cell and a list joined with "; ": the one writer of the CLI's `--csv` and
    the web view's CSV downloads (the web view's wrote a mailbox `=sales` or an owner
    `-ops` as a formula). `fields`: the columns, in order (default: every key met)."""
    rows = list(rows)
    names = list(fields) if fields is not None else list(dict.fromkeys(k for r in rows for k in r))
    w = csv.DictWriter(out, names, lineterminator=lineterminator)
    w.writeheader()
    w.writerows({k: spreadsheet_cell("; ".join(map(str, v)) if isinstance(v, list) else v)
                 for k, v in r.items()} for r in rows)


def maildir_problem(where: str) -> str | None:
    """Why `where` cannot be a Maildir under delivery.maildir_root (`{maildir: sales}` is
    MAILDIR_ROOT/sales), or None when it can. An absolute path or a '..' segment wrote mail
    outside the root (`maildir: ../x`, a person key '../../etc'), beside the registry or
    anywhere the daemon's user may write; '.' or '' made the root itself a mailbox."""
    if "\0" in where:
        return "has a NUL in it"
    if where.startswith("/"):
        return "is an absolute path; mailboxes live under delivery.maildir_root"
    parts = where.split("/")
    if ".." in parts:
        return "has a '..' segment: it would leave delivery.maildir_root"
    if all(part in ("", ".") for part in parts):
        return "names delivery.maildir_root itself"
    return None


@dataclass(frozen=True, slots=True)
class RuleMatch:
    """One rule that matched, and on what."""

    name: str
    file: str
    line: int
    matched: str = ""                  # "subject contains 'счёт' (value: 'Счёт №5')"

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "file": self.file, "line": self.line, "matched": self.matched}


class LoopKind(enum.Enum):
    TRACE = "trace"                # our own trace header for this rcpt
    HOPS = "hops"                  # more Received headers than limits.max_received
    DELIVERED_TO = "delivered_to"  # Delivered-To for this rcpt, no trace of ours


@dataclass(frozen=True, slots=True)
class LoopEvidence:
    """Why a message, for one recipient, looks like it has been here before (loops.py)."""

    kind: LoopKind
    evidence: str      # for the log, the registry and explain: which header said so

    @property
    def reply(self) -> Reply:
        """554 5.4.6; for a Delivered-To alone with Postfix local(8)'s "forwarding loop" text."""
        return REPLY_DELIVERED_TO if self.kind is LoopKind.DELIVERED_TO else REPLY_LOOP

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "evidence": self.evidence}


@dataclass(frozen=True, slots=True)
class Decision:
    """What mailrouter does with one message for one envelope recipient.

    Built by pure code (address book + rules) from the message view, the envelope,
    the configuration snapshot and the clock. The intake answers from it, delivery
    follows its targets, the registry stores it, and `mailrouter explain` prints it.
    Later stages add fields with defaults; nothing is renamed.
    """

    rcpt: str
    action: Action
    reply: Reply
    targets: tuple[Target, ...] = ()
    mailbox: str | None = None
    folder: str | None = None
    owner: str | None = None           # a person key, or a team key to pick from later
    tags: tuple[str, ...] = ()
    priority: str | None = None
    sla: str | None = None             # e.g. "first_response=4h calendar=msk"
    autoreply: str | None = None       # name of the autoreply to send (moved addresses)
    copy_to_owner: bool = False        # also deliver to the request owner's own address
    path: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    rules: tuple[RuleMatch, ...] = field(default=())
    loop: LoopEvidence | None = None   # set when the run-time loop defence refused it

    @property
    def explained(self) -> tuple[str, ...]:
        """The reasons as people read them (explain, the registry): the loop first."""
        if self.loop is None:
            return self.reasons
        return (f"loop: {self.loop.evidence}",) + self.reasons

    def as_dict(self) -> dict[str, Any]:
        """The `recipients[]` object of `mailrouter explain --json`."""
        return {
            "rcpt": self.rcpt, "action": self.action.value, "reply": str(self.reply),
            "mailbox": self.mailbox, "folder": self.folder, "owner": self.owner,
            "tags": list(self.tags), "priority": self.priority, "sla": self.sla,
            "autoreply": self.autoreply, "copy_to_owner": self.copy_to_owner,
            "path": list(self.path), "reasons": list(self.explained),
            "rules": [r.as_dict() for r in self.rules],
            "targets": [{"mailbox": t.mailbox, "folder": t.folder, "person": t.person,
                         "path": list(t.path)} for t in self.targets],
            "loop": None if self.loop is None else self.loop.as_dict(),
        }


# -- The envelope and the downstream spec -------------------------------------------------
@dataclass(frozen=True, slots=True)
class Transaction:
    """One SMTP/LMTP transaction as the intake hands it to the pipeline after DATA."""

    protocol: str          # 'smtp' | 'lmtp'
    peer: str
    helo: str
    mail_from: str
    rcpts: tuple[str, ...]
    raw: bytes
    smtputf8: bool = False
    # True once the client has gone without its answer (a reset after the final dot): the
    # message is still processed to its record, as `unanswered`, not `delivered` (no 250)
    gone: Callable[[], bool] | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Downstream:
    """Where to deliver: host, port, per-wait timeout, idle pool size, our HELO name."""

    host: str
    port: int
    timeout: float = 30.0
    pool_size: int = 4
    helo: str = "mailrouter.localhost"


def as_stored(message: bytes) -> bytes:
    """A message's text as the daemon stores it (intake.protocol), `explain` and `test` read
    it: one whose first line starts with white space gets an empty line before it, as
    Postfix's smtpd does. That line would continue the header field before it, and every
    copy starts with our trace headers: ' , ceo@example.com' was stored as part of our
    'Delivered-To: sales@example.com'. All of it is body then. One copy of the message,
    for this rare one only."""
    return b"\r\n" + message if message[:1] in (b" ", b"\t") else message
