"""SMTP delivery to a downstream MTA over pooled, reused connections.

This module also holds the transaction engine that the LMTP client
(`mailrouter.delivery.lmtp`) shares: LMTP (RFC 2033) is SMTP with LHLO and one
reply per accepted recipient after DATA, so only those two points differ.

What it does
  - MAIL, every RCPT and DATA go out in one write when the server offers
    PIPELINING (RFC 2920); otherwise one command per round trip.
  - The message bytes arrive byte-for-byte: they are dot-stuffed on the wire
    (RFC 5321 4.5.2) and nothing else is touched (no line-ending rewrite, no
    re-serialisation).  The message may come in parts (our trace lines, the raw
    bytes): they are sent as if joined, stuffed and written about 1 MB at a time
    (`mailrouter.delivery.wire`), so a copy in flight holds no whole duplicate.
    SIZE= and BODY=8BITMIME are added when offered.
  - One transaction carries every recipient of a message for this downstream
    (one RCPT each); `deliver` returns one Reply per recipient.
  - At most `max_connections` connections per client are open at once, busy
    or idle: more concurrent messages wait for a free one (up to the timeout,
    then TemporaryDeliveryError "downstream busy"), so a burst cannot open
    hundreds of sessions on the mail store.  Up to `Downstream.pool_size` of
    them stay open while idle and are reused; a connection the server closed
    while idle (EOF, or a 421 as the first reply) is dropped and the message
    is sent on a fresh one.
  - Every network wait runs inside `asyncio.timeout(downstream.timeout)`.

Why not aiosmtplib: it sends one command per round trip (no PIPELINING), it
rewrites lone CR/LF into CRLF, and it has no LMTP; one small engine serves both
protocols and keeps the bytes exact.

What it refuses (answered as a Reply per recipient, nothing is sent)
  - a message containing a lone CR or LF: on the wire it could end DATA early
    on a lenient server (SMTP smuggling); intake must normalise or refuse it:
    554 5.6.0.
  - an address with control characters or angle brackets (command injection):
    501 5.1.3 (a bad sender refuses every recipient).
  - `smtputf8=True` to a server without SMTPUTF8: 550 5.6.7 for a non-ASCII
    recipient (every recipient if the sender is non-ASCII); ASCII recipients
    are sent without the SMTPUTF8 parameter (RFC 6531 3.4).

Errors: TemporaryDeliveryError when the downstream cannot be reached, times out
or breaks the connection; PartialDeliveryError (a TemporaryDeliveryError) when
an LMTP connection broke after some recipients already had their final reply.
Replies from the server, 4xx and 5xx included, are returned, never raised. A reply that
cannot answer its command (DATA not answered 354 or a refusal, a 3xx to anything else, a
code outside 2xx-5xx, a multi-line reply whose codes disagree) means the server is out of
step with us: TemporaryDeliveryError "downstream protocol error", never a delivery or a
bounce. A pooled connection holding unread bytes (a reply more than we asked for) is not
reused; an LMTP 421 among the per-recipient replies defers the recipients after it.

Known limits: no STARTTLS, no AUTH, no CHUNKING/BDAT.  A timeout or a broken
connection after the final dot leaves it unknown whether the downstream kept
the message: it is reported as temporary, so the retry may deliver twice.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass

from mailrouter.delivery import wire
from mailrouter.errors import TemporaryDeliveryError
from mailrouter.values import REPLY_REFUSED_ADDRESS as REFUSED_ADDRESS
from mailrouter.values import REPLY_REFUSED_BARE_EOL as REFUSED_BARE_EOL
from mailrouter.values import REPLY_REFUSED_UTF8 as REFUSED_UTF8
from mailrouter.values import Downstream, Reply

__all__ = ["LOCAL_REFUSALS", "Downstream", "PartialDeliveryError", "SMTPClient", "Session",
           "TransactionClient"]

log = logging.getLogger(__name__)

_ENHANCED = re.compile(r"^([245]\.\d{1,3}\.\d{1,3})(?:\s+|$)")
_BAD_ADDRESS = re.compile(r"[\x00-\x1f\x7f<>]")
# RFC 5321 4.1.2 Quoted-string: qtextSMTP and quoted-pairSMTP (and UTF-8, RFC 6531 3.3)
_QUOTED_LOCAL = re.compile(r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e\xa0-\U0010ffff]|\\[\x20-\x7e])*"\Z')
_MAX_REPLY_LINES = 200

LOCAL_REFUSALS = frozenset({REFUSED_BARE_EOL, REFUSED_ADDRESS, REFUSED_UTF8})   # ours, not sent


class PartialDeliveryError(TemporaryDeliveryError):
    """The LMTP connection broke after some recipients got their final reply.

    `replies` holds those final replies; the other recipients have none.
    """

    def __init__(self, message: str, replies: dict[str, Reply]) -> None:
        super().__init__(message)
        self.replies = replies


class _Lost(Exception):
    """Internal: the connection broke, timed out or spoke nonsense."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(reason)
        self.reason, self.detail = reason, detail


class _Stale(Exception):
    """Internal: a reused connection was already closed by the server."""


def parse_reply(lines: list[bytes]) -> Reply:
    """One reply from its raw lines; the enhanced code is taken from the first line."""
    code = int(lines[0][:3])
    texts = [ln[4:].decode("utf-8", "replace").rstrip("\r\n") for ln in lines]
    status = f"{code // 100}.0.0"
    match = _ENHANCED.match(texts[0])
    if match:
        status = match.group(1)
        texts = [_ENHANCED.sub("", t, count=1) for t in texts]
    return Reply(code, status, " ".join(t for t in texts if t))


class Session:
    """One open connection after the greeting and EHLO/LHLO."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 timeout: float) -> None:
        self.reader, self.writer, self.timeout = reader, writer, timeout
        self.extensions: dict[str, str] = {}
        self.last_lines: list[str] = []
        self.reused = False      # taken from the pool, not freshly opened
        self.answered = False    # at least one reply read in this transaction
        self.dirty = False       # an aborted transaction needs RSET before reuse
        self.broken = False      # must not go back to the pool
        self.data_sent = False   # the message went out in this transaction

    async def send(self, data: bytes) -> None:
        try:
            self.writer.write(data)
            async with asyncio.timeout(self.timeout):
                await self.writer.drain()
        except TimeoutError as exc:
            raise _Lost("downstream timed out", "write") from exc
        except OSError as exc:
            raise _Lost("downstream connection lost", repr(exc)) from exc

    async def reply(self) -> Reply:
        """Read one (possibly multi-line) reply."""
        lines: list[bytes] = []
        try:
            async with asyncio.timeout(self.timeout):
                while len(lines) < _MAX_REPLY_LINES:
                    line = await self.reader.readline()
                    if not line.endswith(b"\n"):
                        raise _Lost("downstream connection lost", "EOF")
                    if len(line) < 5 or not line[:3].isdigit() or line[3:4] not in b" -\r\n":
                        raise _Lost("downstream protocol error", repr(line[:80]))
                    lines.append(line)
                    if line[3:4] != b"-":
                        break
        except TimeoutError as exc:
            raise _Lost("downstream timed out", "read") from exc
        except (OSError, ValueError) as exc:   # ValueError: line over the reader limit
            raise _Lost("downstream connection lost", repr(exc)) from exc
        if not lines or lines[-1][3:4] == b"-":
            raise _Lost("downstream protocol error", "reply too long")
        if lines[0][:1] not in b"2345" or any(ln[:3] != lines[0][:3] for ln in lines):
            # RFC 5321 4.2: a reply's code is 2xx-5xx, the same on every line of it. A
            # "250-ok" CRLF "550 no" was read as the first line's 250, and a 1xx/6xx-9xx as
            # a permanent refusal (a bounce for what is a broken or out-of-step server)
            raise _Lost("downstream protocol error", repr(lines[-1][:80]))
        reply = parse_reply(lines)
        self.last_lines = [ln[4:].decode("utf-8", "replace").strip() for ln in lines]
        self.answered = True
        if reply.code == 421:    # the server is closing this connection (RFC 5321 3.8)
            self.broken = True
        return reply

    def usable(self) -> bool:
        """Open, and nothing unread: bytes the server sent that answer no command of ours (a
        reply more than we asked for, an LMTP server's reply per recipient too many) would be
        read as the reply to the next message's MAIL, every reply one out of step."""
        return not (self.broken or self.writer.is_closing() or self.reader.at_eof()
                    or getattr(self.reader, "_buffer", None))

    def abort(self) -> None:
        self.broken = True
        self.writer.close()

    def quit(self) -> None:
        """Say goodbye without waiting for the answer: no network wait."""
        if not self.writer.is_closing():
            self.writer.write(b"QUIT\r\n")
        self.abort()


@dataclass(slots=True)
class _Envelope:
    mail_from: str
    rcpts: list[str]
    data: tuple[bytes, ...]      # the message in parts (wire.py): trace lines, raw bytes
    smtputf8: bool


class TransactionClient:
    """The engine shared by SMTPClient and LMTPClient; not used directly."""

    greeting_verb = "EHLO"

    def __init__(self, downstream: Downstream, max_connections: int = 10) -> None:
        self.downstream = downstream
        self.max_connections = max(1, max_connections)
        self._idle: list[Session] = []
        self._slots = asyncio.Semaphore(self.max_connections)   # one per open connection

    async def deliver(self, mail_from: str, rcpts: list[str], data: bytes | wire.Parts, *,
                      smtputf8: bool = False) -> dict[str, Reply]:
        """One Reply per recipient, in order; raises TemporaryDeliveryError on outages.
        `data` is the message, whole or in parts that are sent as if joined (never joined)."""
        if not rcpts:
            return {}
        if mail_from == "<>":
            # the null reverse-path (a bounce, RFC 5321 4.5.5) as the intake writes it: sent as
            # MAIL FROM:<>. Taken for an address, its brackets refused every bounce to an
            # LMTP/SMTP mailbox with 501 5.1.3 (and MAIL FROM:<<>> would be no better)
            mail_from = ""
        parts = wire.as_parts(data)
        if wire.bare_eol(parts):
            return {r: REFUSED_BARE_EOL for r in rcpts}
        if _bad_address(mail_from):
            return {r: REFUSED_ADDRESS for r in rcpts}
        env = _Envelope(mail_from, rcpts, parts, smtputf8)
        await self._slot()
        try:
            return await self._deliver(env)
        finally:
            self._slots.release()

    async def _slot(self) -> None:
        """Wait for a free connection slot (the pool's cap), at most one timeout."""
        ds = self.downstream
        try:
            async with asyncio.timeout(ds.timeout):
                await self._slots.acquire()
        except TimeoutError:
            log.warning("%s:%d: all %d connections busy for %.0fs", ds.host, ds.port,
                        self.max_connections, ds.timeout)
            raise TemporaryDeliveryError("downstream busy") from None

    async def _deliver(self, env: _Envelope) -> dict[str, Reply]:
        session = await self._acquire()
        try:
            try:
                replies = await self._transact(session, env)
            except _Stale:
                session.abort()
                log.debug("stale pooled connection to %s:%d, reconnecting",
                          self.downstream.host, self.downstream.port)
                session = await self._open()
                replies = await self._transact(session, env)
        except BaseException:
            session.abort()
            raise
        self._release(session)
        return replies

    async def close(self) -> None:
        """Close every idle connection."""
        idle, self._idle = self._idle, []
        for session in idle:
            session.quit()

    # Connections and the pool

    async def _acquire(self) -> Session:
        while self._idle:
            session = self._idle.pop()
            if session.usable():
                session.reused = True
                return session
            session.abort()
        return await self._open()

    def _release(self, session: Session) -> None:
        idle_max = min(self.downstream.pool_size, self.max_connections)
        if session.usable() and len(self._idle) < idle_max:
            self._idle.append(session)
        else:
            session.quit()

    async def _open(self) -> Session:
        ds = self.downstream
        try:
            async with asyncio.timeout(ds.timeout):
                reader, writer = await asyncio.open_connection(ds.host, ds.port)
        except (OSError, TimeoutError) as exc:
            log.warning("cannot connect to %s:%d: %r", ds.host, ds.port, exc)
            raise TemporaryDeliveryError("downstream unavailable") from exc
        session = Session(reader, writer, ds.timeout)
        try:
            await self._greet(session)
        except _Lost as exc:
            session.abort()
            log.warning("%s:%d: %s (%s)", ds.host, ds.port, exc.reason, exc.detail)
            raise TemporaryDeliveryError(exc.reason) from None
        except BaseException:
            session.abort()
            raise
        return session

    async def _greet(self, session: Session) -> None:
        greeting = await session.reply()
        if greeting.code != 220:
            raise _Lost("downstream refused the connection", str(greeting))
        await session.send(f"{self.greeting_verb} {self.downstream.helo}\r\n".encode())
        if not await self._hello(session):
            raise _Lost("downstream refused our greeting", str(session.last_lines[:1]))
        for line in session.last_lines[1:]:
            keyword, _, params = line.partition(" ")
            session.extensions[keyword.upper()] = params
        session.answered = False

    async def _hello(self, session: Session) -> bool:
        if (await session.reply()).ok:
            return True
        if self.greeting_verb != "EHLO":
            return False
        # RFC 5321 4.1.4: a server that does not know EHLO gets HELO, no extensions
        await session.send(f"HELO {self.downstream.helo}\r\n".encode())
        ok = (await session.reply()).ok
        session.last_lines = session.last_lines[:1]
        return ok

    # One transaction

    async def _transact(self, session: Session, env: _Envelope) -> dict[str, Reply]:
        session.answered = session.data_sent = False
        final: dict[str, Reply] = {}
        try:
            await self._exchange(session, env, final)
        except _Lost as exc:
            if session.reused and not session.answered:
                raise _Stale from exc
            ds = self.downstream
            log.warning("%s:%d: %s (%s)", ds.host, ds.port, exc.reason, exc.detail)
            if session.data_sent and final:
                raise PartialDeliveryError(exc.reason, dict(final)) from None
            raise TemporaryDeliveryError(exc.reason) from None
        return {r: final[r] for r in env.rcpts}

    async def _exchange(self, s: Session, env: _Envelope, final: dict[str, Reply]) -> None:
        sendable, use_utf8 = _screen(s, env, final)
        if not sendable:
            return
        commands = [_mail_command(s, env, use_utf8)]
        commands += [f"RCPT TO:<{r}>\r\n".encode() for r in sendable]
        commands.append(b"DATA\r\n")
        replies = await self._commands(s, commands)
        mail_reply, data_reply = replies[0], replies[-1]
        if not mail_reply.ok:
            final.update({r: mail_reply for r in sendable})
            s.dirty = True
            # a server that said 354 to our pipelined DATA anyway reads our next commands as
            # message text: RSET went unanswered until the timeout. Drop the connection.
            s.broken = s.broken or data_reply.code == 354
            return
        accepted = []
        for rcpt, reply in zip(sendable, replies[1:]):
            if reply.ok:
                accepted.append(rcpt)
            else:
                final[rcpt] = reply
        if not accepted or data_reply.code != 354:
            final.update({r: data_reply for r in accepted})
            s.dirty = True
            # 354 with nobody to deliver to: no clean way to end it, drop the connection
            s.broken = s.broken or data_reply.code == 354
            return
        s.data_sent = True
        for piece in wire.stuffed(env.data):      # about 1 MB at a time, never a whole copy
            await s.send(piece)
        await self._data_replies(s, accepted, final)

    async def _commands(self, s: Session, commands: list[bytes]) -> list[Reply]:
        """MAIL, RCPT..., DATA: one write when pipelining, else stop where refused.

        One reply per command comes back; a skipped command repeats the reply
        that stopped the transaction.
        """
        rset = b"RSET\r\n" if s.dirty else b""
        pipelining = "PIPELINING" in s.extensions
        if pipelining:
            await s.send(rset + b"".join(commands))
        elif rset:
            await s.send(rset)
        if rset:
            await self._rset_reply(s)
        replies: list[Reply] = []
        last = len(commands) - 1
        for i, command in enumerate(commands):
            if not pipelining:
                await s.send(command)
            replies.append(in_step(await self._next_reply(s), data=i == last))
            mail_refused = i == 0 and not replies[0].ok and not pipelining
            nobody = i == len(commands) - 2 and not any(r.ok for r in replies[1:])
            if s.broken or mail_refused or (nobody and not pipelining):
                break   # a 421 closes the connection: read no further (RFC 5321 3.8)
        return replies + [replies[-1]] * (len(commands) - len(replies))

    async def _rset_reply(self, s: Session) -> None:
        reply = await self._next_reply(s)
        if not reply.ok:
            raise _Lost("downstream protocol error", f"RSET: {reply}")
        s.dirty = False

    async def _next_reply(self, s: Session) -> Reply:
        first = not s.answered
        reply = await s.reply()
        if first and s.reused and reply.code == 421:
            raise _Stale   # the server timed the idle connection out and said so
        return reply

    async def _data_replies(self, s: Session, accepted: list[str],
                            final: dict[str, Reply]) -> None:
        """SMTP: one reply after the final dot applies to every accepted recipient."""
        reply = in_step(await s.reply())
        final.update({r: reply for r in accepted})


def in_step(reply: Reply, *, data: bool = False) -> Reply:
    """`reply` if it can answer its command: DATA 354 (or a refusal), anything else 2xx, 4xx
    or 5xx. Otherwise the server is out of step with our commands (a stray reply we read for
    the one before, a 250 to DATA, a 354 to MAIL or to the final dot): _Lost, so every
    recipient is deferred. A DATA answered with 250 used to mark its recipients delivered
    though the message was never sent, and a 354 after the dot was mapped to a bounce."""
    code = reply.code
    wrong = (reply.ok or (300 <= code < 400 and code != 354)) if data else 300 <= code < 400
    if wrong:
        raise _Lost("downstream protocol error", f"{'DATA: ' if data else ''}{reply}")
    return reply


class SMTPClient(TransactionClient):
    """SMTP (RFC 5321) client to a downstream MTA; see the module docstring."""

    greeting_verb = "EHLO"


def _screen(s: Session, env: _Envelope, final: dict[str, Reply]) -> tuple[list[str], bool]:
    """Recipients that may be sent, and whether MAIL carries SMTPUTF8 (RFC 6531 3.4)."""
    offered = "SMTPUTF8" in s.extensions
    if not offered and not env.mail_from.isascii():
        final.update({r: REFUSED_UTF8 for r in env.rcpts})
        return [], False
    sendable: list[str] = []
    for rcpt in env.rcpts:
        if not rcpt or _bad_address(rcpt):
            final[rcpt] = REFUSED_ADDRESS
        elif not offered and not rcpt.isascii():
            final[rcpt] = REFUSED_UTF8
        else:
            sendable.append(rcpt)
    non_ascii = not env.mail_from.isascii() or not all(r.isascii() for r in sendable)
    return sendable, offered and (env.smtputf8 or non_ascii)


def _bad_address(address: str) -> bool:
    """An address that would break its command line: a control character anywhere, or a < or
    > outside a quoted local part. Inside one they are text (`"a>b"@example.org`, RFC 5321
    4.1.2): the intake and Postfix take such a sender, and refusing it here answered every
    message from it with 501 5.1.3 after DATA, for a downstream that reads it as sent."""
    local, at, domain = address.rpartition("@")
    if at and _QUOTED_LOCAL.match(local):
        return _BAD_ADDRESS.search(domain) is not None
    return _BAD_ADDRESS.search(address) is not None


def _mail_command(s: Session, env: _Envelope, use_utf8: bool) -> bytes:
    params = ""
    if "SIZE" in s.extensions:
        params += f" SIZE={wire.size(env.data)}"
    if "8BITMIME" in s.extensions and not wire.is_ascii(env.data):
        params += " BODY=8BITMIME"
    if use_utf8:
        params += " SMTPUTF8"
    return f"MAIL FROM:<{env.mail_from}>{params}\r\n".encode()
