"""The aiosmtpd handler: read the envelope, ask the snapshot, answer.

RCPT is checked against the address book at once, so an unknown address is
refused with 550 5.1.1 before DATA (never an open relay, no backscatter), and
the 101st recipient gets 452 4.5.3 (RFC 5321 4.5.3.1.8: the client sends the
rest in another transaction). A non-ASCII sender or recipient in a transaction
whose MAIL did not carry SMTPUTF8 gets 553 5.6.7 (RFC 6531 3.5; Postfix's text):
we could not deliver it downstream without the extension anyway. After DATA the pipeline returns one Reply per
recipient: LMTP sends them all, in RCPT order; SMTP folds them into one reply:
250 if every recipient is done, otherwise the first temporary failure (the
MTA retries and the registry keeps a retry from delivering twice), otherwise,
when nothing was delivered, the first refusal.

The handler knows the daemon only through `Host` (below): what it reads of the
running App, nothing more, so the intake never imports `daemon`.

The EHLO/HELO name goes into our Received: line (`received_helo`) in ASCII: a non-ASCII
name was copied there raw, an 8-bit header in a message that may not be SMTPUTF8 (RFC 6532
allows one only then), which a downstream may refuse or mangle. Like Postfix, the name is
taken whatever it is (a HELO name is no proof of anything) and the Received line made safe:
an internationalised domain name as its A-label (xn--...), any other non-ASCII character as
'?', and the characters that would change the line's syntax (space, <>()\";@: Postfix's
NEUTER_CHARACTERS) as '?' too.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any
from typing import Protocol as Interface

from aiosmtpd.smtp import SMTP, Envelope, Session

from .. import metrics
from ..addressbook.canon import a_label, domain_problem
from ..values import (
    REPLY_INTERNAL_ERROR,
    REPLY_NEED_SMTPUTF8,
    REPLY_OK,
    REPLY_PROCESS_TIMEOUT,
    REPLY_REFUSED_ADDRESS,
    REPLY_SENDER_OK,
    REPLY_TOO_MANY_RCPTS,
    Reply,
    Transaction,
)
from .protocol import (INTERNAL_ERROR, REPLY_MALFORMED_PATH, REPLY_RCPT_SYNTAX, Protocol,
                       read_path)
from .protocol import Envelope as RoutedEnvelope

__all__ = ["Handler", "Host", "IntakeLimits", "RcptCheck", "RcptChecker", "rcpt_path",
           "received_helo"]

log = logging.getLogger(__name__)
TOO_MANY = str(REPLY_TOO_MANY_RCPTS)
NEED_SMTPUTF8 = str(REPLY_NEED_SMTPUTF8)


class IntakeLimits(Interface):
    """The limits the handler enforces (config.Limits has them)."""

    @property
    def max_connections(self) -> int: ...
    @property
    def max_recipients(self) -> int: ...
    @property
    def process_timeout(self) -> float: ...


class RcptCheck(Interface):
    """The answer to one RCPT (addressbook.Resolution): a reply when it is refused."""

    @property
    def reply(self) -> Reply | None: ...


class RcptChecker(Interface):
    """What the handler asks of the current routing snapshot."""

    def check_rcpt(self, address: str) -> RcptCheck: ...


class Host(Interface):
    """What the handler uses of the running daemon (`daemon.App` satisfies it)."""

    @property
    def draining(self) -> bool: ...
    @property
    def sessions(self) -> set[Protocol]: ...
    @property
    def limits(self) -> IntakeLimits: ...
    def snapshot(self) -> RcptChecker: ...
    async def process(self, txn: Transaction, routing: RcptChecker | None = None
                      ) -> list[Reply]: ...


class Handler:
    def __init__(self, app: Host, protocol: str) -> None:
        self.app, self.protocol = app, protocol
        self._from: dict[str, int] = {}     # open sessions per client address

    def sessions_from(self, host: str) -> int:
        """Open sessions of this worker from `host`, this one included."""
        return self._from.get(host, 0)

    @property
    def draining(self) -> bool:
        return self.app.draining

    def overloaded(self) -> bool:
        """More open sessions than limits.max_connections (this one included)."""
        return len(self.app.sessions) > self.app.limits.max_connections

    def register(self, proto: Protocol) -> None:
        self.app.sessions.add(proto)
        metrics.SESSIONS.inc()
        host = proto.peer_host()
        self._from[host] = self._from.get(host, 0) + 1

    def unregister(self, proto: Protocol) -> None:
        if proto in self.app.sessions:
            self.app.sessions.discard(proto)
            metrics.SESSIONS.dec()
            host = proto.peer_host()
            left = self._from.get(host, 0) - 1
            if left > 0:
                self._from[host] = left
            else:
                self._from.pop(host, None)

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope,
                          hostname: str, responses: list[str]) -> list[str]:
        session.host_name = hostname
        return responses[:-1] + ["250-PIPELINING", "250-ENHANCEDSTATUSCODES", "250 HELP"]

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, options: list[str]) -> str:
        if not envelope.smtp_utf8 and not address.isascii():
            return _need_smtputf8(session, "sender", address)
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return str(REPLY_SENDER_OK)

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, options: list[str]) -> str:
        if not envelope.smtp_utf8 and not address.isascii():
            metrics.child(metrics.RCPT_REFUSED, "smtputf8").inc()   # was counted nowhere
            return _need_smtputf8(session, "rcpt", address)
        if _names_no_mailbox(address):
            metrics.RCPT_REFUSED.labels("syntax").inc()
            return str(REPLY_REFUSED_ADDRESS)
        if len(envelope.rcpt_tos) >= self.app.limits.max_recipients:
            metrics.RCPT_REFUSED.labels("too_many").inc()
            return TOO_MANY
        routing = getattr(envelope, "routing", None)
        if routing is None:       # the transaction's first RCPT: its rules for the rest
            routing = self.app.snapshot()
            if isinstance(envelope, RoutedEnvelope):
                envelope.routing = routing
        res = routing.check_rcpt(address)
        if res.reply is not None:
            # a moved address that takes no more mail (551) is no unknown one: "unknown" hid it
            metrics.RCPT_REFUSED.labels(_REFUSED_REASON.get(res.reply.code, "unknown")).inc()
            log.info("event=rcpt_refused peer=%s sender=%s rcpt=%s reply=%r",
                     session.peer, envelope.mail_from, address, str(res.reply))
            return str(res.reply)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return str(REPLY_OK)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        n, started = len(envelope.rcpt_tos), time.perf_counter()
        try:
            txn = Transaction(
                protocol=self.protocol, peer=_peer(session.peer),
                helo=received_helo(session.host_name or "unknown"),
                mail_from=envelope.mail_from or "", rcpts=tuple(envelope.rcpt_tos),
                raw=envelope.original_content or b"",
                smtputf8=bool(envelope.smtp_utf8),
                gone=server.client_gone if isinstance(server, Protocol) else None)
            async with asyncio.timeout(self.app.limits.process_timeout):
                replies = await self.app.process(txn, getattr(envelope, "routing", None))
        except TimeoutError:   # a hung disk or downstream: the MTA keeps the mail and retries
            log.error("event=process_timeout peer=%s rcpts=%d", session.peer, n)
            replies = [REPLY_PROCESS_TIMEOUT] * n
            metrics.TEMPFAILS.labels("timeout").inc(n)
        except Exception:  # never a 5xx, never the exception text: the MTA must retry
            log.exception("event=process_crashed peer=%s", session.peer)
            replies = [REPLY_INTERNAL_ERROR] * n
            metrics.TEMPFAILS.labels("internal").inc(n)
        if self.protocol == "lmtp":
            if replies:   # every answer after DATA, a timeout's and a crash's too (dashboard, alerts)
                metrics.observe_message(replies, time.perf_counter() - started)
            return "\r\n".join(str(r) for r in replies)
        if not replies:
            return INTERNAL_ERROR
        folded = fold(replies)
        # counted as answered: SMTP's one 4xx defers every recipient (the MTA retries them
        # all); counted per recipient, a message with one of ten deferred was "partial" and
        # 1/10 "tempfail", and the deferred-rate alert missed every message held in the queue
        metrics.observe_message([folded] * len(replies) if folded.temporary else replies,
                                time.perf_counter() - started)
        return str(folded)


# Postfix's NEUTER_CHARACTERS (smtpd.c) and whitespace: in a HELO name they would change the
# syntax of the Received: line it goes into ("from x (by forged) <y> (peer)")
_NEUTER = re.compile(r'[\s<>()\\";@]')
_NON_ASCII = re.compile(r"[^\x00-\x7f]")
_HOST_NAME = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*\.?")


# mailrouter_rcpt_refused_total's reason of an address the book refuses, by reply code:
# 551 moved (deliver: false), 501/553 its syntax, else (550) unknown
_REFUSED_REASON = {551: "moved", 501: "syntax", 553: "syntax"}


def received_helo(name: str) -> str:
    """The EHLO/HELO name as our Received: line shows it: ASCII (module docstring)."""
    if not name.isascii():
        name = _a_label(name) or _NON_ASCII.sub("?", name)
    return _NEUTER.sub("?", name)


def _a_label(name: str) -> str | None:
    """пример.рф -> xn--e1afmkfd.xn--p1ai; None for a name that is no domain name. Its
    A-label must be letters, digits, hyphens (and underscores, seen in HELO names) between
    dots: the IDNA codec encoded anything, `[ж]` (an address literal holding a non-ASCII
    character, RFC 5321 4.1.3 allows none) as `xn--[]-qlc`, which looked like a name."""
    if _NEUTER.search(name) or domain_problem(name) is not None:
        return None
    label = a_label(name)
    return label if label is not None and _HOST_NAME.fullmatch(label) else None


def _names_no_mailbox(address: str) -> bool:
    """RCPT TO:<> names no mailbox: a syntax error (REPLY_REFUSED_ADDRESS), as Postfix says."""
    return address == "<>"


def rcpt_path(given: str) -> tuple[str, Reply | None]:
    """(the address RCPT TO:<given> hands the address book, the reply that refuses it
    before the book is asked, or None), for `mailrouter explain`: the path read as the
    protocol reads it (`read_path`), then the checks handle_RCPT makes first. `given` is a
    bare address (sales@example.com) or a path (<sales@example.com>)."""
    address, rest = read_path(given if given.lstrip().startswith("<") else f"<{given}>")
    if address is None:
        return given, REPLY_MALFORMED_PATH
    if not address or rest:
        return given, REPLY_RCPT_SYNTAX
    if _names_no_mailbox(address):
        return address, REPLY_REFUSED_ADDRESS
    return address, None


def fold(replies: list[Reply]) -> Reply:
    """One SMTP reply for a transaction from the per-recipient replies."""
    temp = [r for r in replies if r.temporary]
    if temp:
        return temp[0]
    if any(r.ok for r in replies):
        return next(r for r in replies if r.ok)
    return replies[0]


def _need_smtputf8(session: Session, role: str, address: str) -> str:
    log.info("event=%s_refused peer=%s %s=%r reply=%r", "mail" if role == "sender" else "rcpt",
             session.peer, role, address, NEED_SMTPUTF8)
    return NEED_SMTPUTF8


def _peer(peer: Any) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)
