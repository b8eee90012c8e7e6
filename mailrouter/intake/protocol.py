"""aiosmtpd SMTP and LMTP protocols, hardened for a server in front of real mail.

What this adds to aiosmtpd's SMTP class:
- every 2xx/4xx/5xx reply carries an RFC 3463 enhanced status code, because we
  advertise ENHANCEDSTATUSCODES (RFC 2034); PIPELINING is advertised and works
  (aiosmtpd reads commands from a stream, so pipelined commands queue up);
- our own DATA reader: only CRLF.CRLF ends DATA (no SMTP smuggling: `\\n.\\n`,
  `\\r.\\r` and `\\n.\\r\\n` are content); a message holding a bare LF, a bare CR
  or a NUL byte is refused with 550 5.6.0 after the final dot (RFC 5321 2.3.8
  and 4.1.1.4: lines end in CRLF, and no client may send those; we refuse rather
  than repair because a repaired message is not what the sender signed, and a
  downstream might read the bare line ending differently); lines longer than 998
  octets are accepted as they are (as Postfix does); a message whose first line starts
  with white space gets an empty line before it (as Postfix's smtpd), or it would continue
  the last of our trace headers in every copy; oversize mail is read to the
  end and refused with 552 5.3.4; the idle timer restarts as data arrives, and
  the whole DATA phase has a deadline (421 4.4.2);
- a session silent past command_timeout (data_timeout inside DATA) is told 421 4.4.2
  before it is closed, as Postfix does; one that does not read our replies is cut (RST)
  then, since a close would wait for them forever; nothing sent after QUIT is run;
- DATA after MAIL whose every RCPT was refused: 554 5.5.1 (Postfix; LMTP: 503, RFC 2033);
  a path the address parser reads only by repairing it (`<a b@x>`, no `>`): 553 5.1.3;
- a command line not ended by a single CRLF (bare LF, CR CR LF): 500 5.5.2, not run;
- MAIL/RCPT naming one parameter twice (`SIZE=1 SIZE=2`): 501 5.5.4 naming it (aiosmtpd
  kept the last one);
- control characters (C0, DEL, C1, U+2028/9) or bytes that are not UTF-8 in a command
  argument: 501 5.5.2; junk commands (NOOP, VRFY, HELP, EHLO...) at most 100 per session,
  RSET 100 since the last message taken; the memory DATA holds in all sessions
  (MEMORY_PER_BYTE per byte) is bounded (452 4.3.1 past it; 552 5.3.4 for a message it could
  never hold);
- protocol synchronization, as Postfix 3.9's smtpd_forbid_unauth_pipelining: a
  client that talks before the 220 greeting (which waits `limits.greet_delay`, or
  `greet_delay_loopback` for a loopback peer; what it sent is looked for in the socket
  too, so bytes there before the 220 is written are always caught), pipelines before EHLO/LHLO or after
  HELO, or sends anything behind a command that must end a pipelined group (RFC
  2920 3.1: EHLO, HELO, LHLO, DATA, NOOP, VRFY, EXPN), message text before our 354
  included (text that came while the 354 waited in the tarpit too), gets 554 5.5.0 and is
  disconnected; what it sent is never read;
- errors (Postfix's smtpd_soft/hard_error_limit): every 4xx/5xx reply counts one,
  except 421, the recipient-limit 452 4.5.3 (up to RCPT_OVERSHOOT since the last message
  taken, as Postfix's smtpd_recipient_overshoot_limit), and a 4xx after DATA other than a
  policy one (X.7.X): that is our outage or a downstream's (disk full, registry
  down), not the client's error; past `limits.soft_errors` each reply waits
  `limits.error_delay` (asyncio.sleep: that session only); the reply that reaches
  `limits.max_errors` is followed by 421 4.7.0 and a hang-up (recipient
  harvesting); a message taken after DATA resets the count;
- BDAT (CHUNKING is not offered, RFC 3030): 521 5.5.1 and a hang-up, as Postfix; its chunk
  is never read as commands;
- LMTP (RFC 2033 4.2): after DATA one reply per accepted recipient, in RCPT
  order, on every path, errors included;
- no exception text ever reaches a client: any internal error is 451 4.3.0; a reply line
  quoting the client is cut to RFC 5321's 512 octets;
- graceful shutdown: while draining, new connections and idle sessions get
  421 4.3.2, a transaction in progress is allowed to finish; one still open when
  shutdown_grace is over (mid-DATA, or its message still processed) gets 421 4.3.2 before
  the close (`shut_down`), and nothing of it is taken;
- a DATA phase we end with 421 (data_deadline, data_timeout, shutdown) or 452 (DATA memory
  full) is counted as an answer after DATA, with its cause in mailrouter_tempfails_total.
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
import socket
from email._header_value_parser import get_addr_spec, get_angle_addr
from email.errors import HeaderParseError
from typing import Any, Awaitable, Coroutine, Sequence, cast

import aiosmtpd.smtp as _aiosmtpd_smtp
from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, syntax

from .. import metrics
from ..config import Limits, is_loopback
from . import speedups  # noqa: F401  (aiosmtpd's per-connection lookups, once per class)
from .data import MEMORY_PER_BYTE, DataBudget, content
from ..values import (
    AIOSMTPD_BOGUS_GOODBYE,
    as_stored,
    REPLY_AUTH_NOT_IMPLEMENTED,
    REPLY_BAD_BYTES,
    REPLY_BARE_LINE_END,
    REPLY_BDAT_NOT_OFFERED,
    REPLY_STARTTLS_NOT_IMPLEMENTED,
    REPLY_CONTROL_CHAR,
    REPLY_DATA_SYNTAX,
    REPLY_DATA_TOO_SLOW,
    Reply,
    REPLY_HELP,
    REPLY_HELP_UNKNOWN,
    REPLY_INTERNAL_ERROR,
    REPLY_LHLO_SYNTAX,
    REPLY_LMTP_NO_EHLO,
    REPLY_LMTP_NO_HELO,
    REPLY_NEED_RCPT,
    REPLY_NO_VALID_RCPTS,
    REPLY_NOT_UTF8,
    REPLY_PARAM_TWICE,
    REPLY_BODY_UNSUPPORTED,
    REPLY_SHUTTING_DOWN,
    REPLY_START_DATA,
    REPLY_STORAGE_FULL,
    REPLY_SYNC_ERROR,
    REPLY_TIMEOUT,
    REPLY_TOO_BIG,
    REPLY_TOO_MANY_ERRORS,
    REPLY_TOO_MANY_RESETS,
    REPLY_MALFORMED_PATH,
    REPLY_RCPT_SYNTAX,
    REPLY_TOO_MANY_FROM_CLIENT,
    REPLY_TOO_MANY_SESSIONS,
)

__all__ = ["Protocol", "LMTPProtocol", "INTERNAL_ERROR", "SHUTTING_DOWN", "REPLY_MALFORMED_PATH",
           "REPLY_RCPT_SYNTAX", "read_path"]

log = logging.getLogger(__name__)

# aiosmtpd sends strings: the reply table's constants (values.py), as text
INTERNAL_ERROR = str(REPLY_INTERNAL_ERROR)
SHUTTING_DOWN = str(REPLY_SHUTTING_DOWN)
TOO_MANY_SESSIONS = str(REPLY_TOO_MANY_SESSIONS)
TOO_MANY_FROM_CLIENT = str(REPLY_TOO_MANY_FROM_CLIENT)
TOO_BIG = str(REPLY_TOO_BIG)
DATA_TOO_SLOW = str(REPLY_DATA_TOO_SLOW)
NO_ROOM = str(REPLY_STORAGE_FULL)
# the answers after DATA given here, not by the handler, as the metrics count them
_REFUSED = {str(r): r for r in (REPLY_TOO_BIG, REPLY_STORAGE_FULL, REPLY_BAD_BYTES)}
CONTROL_CHAR = str(REPLY_CONTROL_CHAR)
NOT_UTF8 = str(REPLY_NOT_UTF8)
BARE_LINE_END = str(REPLY_BARE_LINE_END)
SYNC_ERROR = str(REPLY_SYNC_ERROR)
LHLO_SYNTAX = str(REPLY_LHLO_SYNTAX)
PARAM_TWICE = str(REPLY_PARAM_TWICE)                    # {} = the parameter
BODY_UNSUPPORTED = str(REPLY_BODY_UNSUPPORTED)          # {} = BODY='s value
# aiosmtpd's reply to MAIL's BODY= other than 7BIT and 8BITMIME
_AIOSMTPD_BAD_BODY = "501 Error: BODY can only be one of 7BIT, 8BITMIME"
TOO_MANY_ERRORS = str(REPLY_TOO_MANY_ERRORS)            # {} = our name
TIMEOUT = str(REPLY_TIMEOUT)                            # {} = our name
BOGUS_GOODBYE = AIOSMTPD_BOGUS_GOODBYE                # aiosmtpd's 502, then it closes
# aiosmtpd's answer past a command's call limit (COMMAND_LIMITS), then it closes
OVER_LIMIT = re.compile(r"421 4\.7\.0 [A-Z]+ sent too many times\Z")
# RFC 2920 3.1: these end a pipelined group; nothing may follow them before our reply
LAST_IN_GROUP = frozenset({"EHLO", "HELO", "LHLO", "DATA", "NOOP", "VRFY", "EXPN", "TURN"})
# Replies that are not the client's error: a hang-up, and the recipient limit's flow
# control (RFC 5321 4.5.3.1.10: the client sends the rest in another transaction), up to
# RCPT_OVERSHOOT of it
_OVERSHOOT = b"452 4.5.3"
_NOT_ERRORS = (b"421", _OVERSHOOT)
# A 4xx after DATA whose enhanced code is not a policy one (X.7.X, a rule's deferral) is our
# outage or a downstream's (disk full, registry down, downstream unreachable): not the
# client's error, and counting it would tarpit and then cut the MTA that retries it.
_OUR_FAULT = re.compile(rb"4\d\d 4\.[0-689]\.")
_TAKEN = re.compile(rb"(?:^|\n)2")             # a 2xx line in the replies after DATA
# In an argument: never legitimate, and a bare CR in EHLO or in a +detail would otherwise reach
# our Received: / Delivered-To: headers. With SMTPUTF8 the C1 controls and U+2028/U+2029 too:
# Python's str.splitlines, and so the email package, ends a line at NEL (U+0085), LINE and
# PARAGRAPH SEPARATOR. A sender holding one crashed the autoreply's To: (ValueError, 451 on
# every retry), and a message re-written by Python split our headers there (RFC 5198: C1
# controls never belong in text on the net).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# RFC 5321 4.2: reply text is HT and SP..~ only (a bare CR would split a reply line)
_NOT_TEXT = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
# aiosmtpd decodes an argument as UTF-8 with surrogateescape (we enable SMTPUTF8): a byte that
# is not UTF-8 becomes U+DC80..U+DCFF. No address or name holds one, and a sender holding one
# could never be recorded (the registry stores UTF-8): a 451 the MTA would retry forever
_NOT_UTF8 = re.compile(r"[\udc80-\udcff]")


def _refusal(reply: bytes) -> bool:
    """A reply refusing the command it answers, for the refusal counts of MAIL and of a
    RCPT the handler was not asked about: a 4xx or 5xx, but not a 421 (draining, hang-up),
    which closes the session and refuses no command."""
    return reply[:1] in (b"4", b"5") and not reply.startswith(b"421")


# Commands that deliver nothing, per session (Postfix's smtpd_junk_command_limit is 100): a
# client that keeps a session alive with them gets 421 and is disconnected. Transactions
# (MAIL, RCPT, DATA) are not limited: an MTA reuses one connection for many messages. RSET
# is counted since the last message taken (Postfix counts it as junk): a client that sends
# MAIL and RSET in a loop, taking no message, no longer holds its session for ever.
RESETS_WITHOUT_MAIL = 100
# RCPTs past max_recipients get 452 4.5.3: flow control, no error (RFC 5321 4.5.3.1.10: the
# client sends the rest in another transaction). A client that never does kept sending RCPT,
# each a command that restarts the idle timer, and held its session for ever. Past this many
# since the last message taken each one counts as an error (Postfix's
# smtpd_recipient_overshoot_limit, 1000), so max_errors ends the session.
RCPT_OVERSHOOT = 1000
# 64 KiB reads of a hung-up client's input dropped before the close (see hang_up)
HANG_UP_DRAIN = 16
COMMAND_LIMITS = {"NOOP": 100, "VRFY": 100, "EXPN": 100, "HELP": 100, "EHLO": 100,
                  "HELO": 100, "LHLO": 100, "*": 10**9}

# `<a@b>` or `<>` followed by optional parameters, with nothing that needs the full
# address parser: no quotes, comments, spaces, brackets or source routes inside.
_SIMPLE_PATH = re.compile(r"\s*<((?:[^<>()\[\]\\,;:@\"\s]+@[^<>()\[\]\\,;:@\"\s]+)?)>\s*(.*)\Z", re.S)
_ENHANCED = re.compile(rb"^[245]\.\d{1,3}\.\d{1,3}( |$)")
# Enhanced codes for aiosmtpd's own replies that lack one (RFC 3463, RFC 5248).
_DEFAULT_STATUS = {
    b"221": b"2.0.0", b"250": b"2.0.0", b"251": b"2.1.5", b"252": b"2.5.0",
    b"421": b"4.3.2", b"451": b"4.3.0", b"452": b"4.5.3",
    b"500": b"5.5.2", b"501": b"5.5.4", b"502": b"5.5.1", b"503": b"5.5.1",
    b"504": b"5.5.4", b"530": b"5.7.0", b"550": b"5.0.0", b"552": b"5.3.4",
    b"553": b"5.1.3", b"554": b"5.3.0", b"555": b"5.5.4",
}


# RFC 5321 4.5.3.1.5: a reply line is at most 512 octets with its CRLF. aiosmtpd's replies that
# quote the client (an unknown verb of up to 510 octets, VRFY's argument) went past it.
_REPLY_LINE = 510


def _fit(line: bytes) -> bytes:
    if len(line) <= _REPLY_LINE:
        return line
    return line[:_REPLY_LINE - 3].decode("utf-8", "ignore").encode("utf-8") + b"..."


def with_enhanced_code(line: bytes) -> bytes:
    code, sep, rest = line[:3], line[3:4], line[4:]
    if sep not in (b" ", b"-", b"") or code[:1] not in b"245" or _ENHANCED.match(rest):
        return line
    status = _DEFAULT_STATUS.get(code)
    if status is None:
        status = code[:1] + b".0.0"
    if code == b"552" and b"SIZE" in rest.upper():
        status = b"5.3.4"
    return code + (sep or b" ") + status + (b" " + rest if rest else b"")


class Envelope(_aiosmtpd_smtp.Envelope):
    """aiosmtpd's envelope, with the routing snapshot the transaction's first RCPT was
    checked against (intake.handler): the whole transaction is decided by that one. A
    reload between the RCPT and the final dot had the RCPT answered by the old rules and the
    message decided by the new ones (an address the reload removed: 250 at RCPT, then a DSN)."""

    routing: Any = None


class Protocol(SMTP):
    """aiosmtpd's SMTP with the hardening in the module docstring."""

    lmtp = False

    def _create_envelope(self) -> Envelope:
        return Envelope()

    def __init__(self, handler: Any, *, data_timeout: float = 180.0, data_deadline: float = 600.0,
                 data_budget: DataBudget | None = None, limits: Limits | None = None,
                 **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.data_timeout, self.data_deadline = data_timeout, data_deadline
        self.data_budget, self._held = data_budget, 0
        self.limits = limits or Limits()
        self.errors = 0                # refused commands since the last message taken
        self.resets = 0                # RSETs since the last message taken
        self.overshoot = 0             # 452 4.5.3 (RCPT past the limit) since then
        self._hung_up = False
        self._half_closed = False      # the client shut its sending side; we still write
        self._ehlo_in_progress = False
        self._pending: list[bytes] = []
        self._bare_line_end = False    # the command line just read did not end in one CRLF
        self._param_twice: str | None = None   # MAIL/RCPT named this parameter twice
        self._body = ""                        # the last MAIL/RCPT's BODY= value
        self._rcpt_unasked = False     # a RCPT runs and the handler was not asked (yet)
        self._mail_unanswered = False  # a MAIL runs: its one reply not pushed yet
        self.busy = False
        # 354 was said and no answer to this DATA is counted yet (metrics.observe_message):
        # a DATA phase we end with a 421 (data_deadline, data_timeout, shutdown_grace) is
        # counted where it is cut, as every other answer after DATA is
        self._data_uncounted = False
        self._reading_data = False     # in _read_data: a timeout there is data_timeout
        self._gone = False             # connection_lost was called
        self._wrap_commands()

    # -- replies ---------------------------------------------------------------------
    async def push(self, status: Any, *, final: bool = False) -> None:
        """Send a reply; `final` marks the replies after DATA (a 2xx among them resets
        the error count). Counts errors, waits past soft_errors, hangs up at max_errors."""
        if self._hung_up:            # we said goodbye: nothing more reaches the client
            return
        if isinstance(status, str) and status.startswith(BOGUS_GOODBYE):
            # aiosmtpd's answer to the fifth unknown command, before it closes: a server that
            # closes says 421 (RFC 5321 3.8), and this is our too-many-errors hang-up
            log.warning("event=too_many_errors peer=%s unknown_commands=%d", self.session and
                        self.session.peer, _aiosmtpd_smtp.BOGUS_LIMIT)
            await self.hang_up(TOO_MANY_ERRORS.format(self.hostname))
            return
        if self._param_twice is not None and isinstance(status, str) and status[:4] == "501 ":
            # aiosmtpd's "501 Syntax: MAIL FROM: <address> ..." for our _getparams' None
            status, self._param_twice = PARAM_TWICE.format(self._param_twice), None
        if status == _AIOSMTPD_BAD_BODY:
            # BODY=BINARYMIME (or any value but 7BIT, 8BITMIME): a parameter value not
            # implemented is 555 (RFC 5321 4.1.1.11), as Postfix answers, not 501 (syntax)
            status = BODY_UNSUPPORTED.format(self._body[:64])
        if isinstance(status, str) and OVER_LIMIT.match(status):
            # aiosmtpd closes after it but its loop went on running what the client had
            # pipelined behind (a RCPT looked up and logged): a hang-up runs nothing more
            await self.hang_up(status)
            return
        data = status.encode("utf-8" if self.enable_SMTPUTF8 else "ascii", "replace") \
            if isinstance(status, str) else status
        if self._ehlo_in_progress:
            # aiosmtpd pushes the EHLO reply line by line: one send() each. Gather
            # the lines and send the reply in one segment when its last line comes.
            self._pending.append(data)
            if data[3:4] == b"-":
                return
            data, self._pending = b"\r\n".join(self._pending), []
            if data[:1] in (b"4", b"5"):   # aiosmtpd's "501 Syntax: EHLO hostname" has no code
                data = with_enhanced_code(data)
        elif not data.startswith((b"220", b"354")):
            if data.startswith(b"500 "):   # aiosmtpd's 'command "VERB" not recognized' echoes
                data = _NOT_TEXT.sub(b"?", data)  # the verb as sent: a CR, NUL or ESC included
            data = b"\r\n".join(_fit(with_enhanced_code(line)) for line in data.split(b"\r\n"))
        if self._rcpt_unasked and _refusal(data):
            self._rcpt_unasked = False     # one reply per RCPT: counted once
            metrics.rcpt_refused(data)
        if self._mail_unanswered:          # the MAIL's one reply: a refusal is counted
            self._mail_unanswered = False
            if _refusal(data):
                metrics.mail_refused(data)
        limits = self.limits
        slow = self.errors >= limits.soft_errors and limits.error_delay > 0
        if final and _TAKEN.search(data):
            self.errors, self.resets, self.overshoot, slow = 0, 0, 0, False
        elif data.startswith(_OVERSHOOT):
            self.overshoot += 1
            self.errors += self.overshoot > RCPT_OVERSHOOT
        elif data[:1] in (b"4", b"5") and not data.startswith(_NOT_ERRORS) \
                and not (final and _OUR_FAULT.match(data)):
            self.errors += 1
        if slow:                     # the tarpit: this session waits, no other does
            await asyncio.sleep(limits.error_delay)
            if data.startswith(b"354") and (self.unread() or self._socket_input(1, socket.MSG_PEEK)):
                # Message text that came while our 354 waited here did not wait for it: it
                # was checked for at DATA only, before the wait, and then taken as the message
                await self._out_of_sync("before 354")
                return
        await super().push(data)
        if self.errors >= limits.max_errors:
            log.warning("event=too_many_errors peer=%s errors=%d", self.session and
                        self.session.peer, self.errors)
            await self.hang_up(TOO_MANY_ERRORS.format(self.hostname))

    async def hang_up(self, reply: str) -> None:
        """Say `reply` and close. Whatever the client sent after is dropped unread, and
        nothing more is answered (aiosmtpd's loop would otherwise run the buffered
        commands until the close is noticed)."""
        if self._hung_up or self.transport is None or self.transport.is_closing():
            return
        self._hung_up = True
        await SMTP.push(self, reply)
        # A socket closed with input unread is reset (RST), and the client's system may drop
        # our last reply with it: what waits in the socket is read and dropped first (an
        # early talker's whole session is still there when it is refused)
        for _ in range(HANG_UP_DRAIN):
            if not self._socket_input(1 << 16):
                break
        if self.transport is not None:
            self.transport.close()   # stops reading first, then the buffer is dropped
        self._reader._buffer.clear()  # type: ignore[attr-defined]

    def _timeout_cb(self) -> None:
        """command_timeout (or data_timeout inside DATA) passed in silence: say 421 4.4.2, as
        Postfix does, then let aiosmtpd close. aiosmtpd closes without a word, and the client
        cannot tell a timeout from a crash (RFC 5321 3.8: a server closing says 421)."""
        if not self._hung_up and self.transport is not None and not self.transport.is_closing():
            log.info("event=session_timeout peer=%s", self.session and self.session.peer)
            self._hung_up = True
            if self._reading_data:     # data_timeout: silent inside DATA
                self._count_cut(REPLY_TIMEOUT, "data_timeout")
            self._writer.write(TIMEOUT.format(self.hostname).encode() + b"\r\n")
        transport = cast(asyncio.Transport | None, self.transport)   # uvloop's is no subclass
        if transport is not None and transport.get_write_buffer_size():
            # Replies the client never read (it pipelines and does not read): close() would
            # wait for them to drain, forever, and the session would keep its max_connections
            # slot. Postfix's smtpd_timeout bounds writes too: cut it (RST).
            log.info("event=session_unread peer=%s", self.session and self.session.peer)
            transport.abort()
            return
        super()._timeout_cb()  # type: ignore[no-untyped-call]

    def unread(self) -> bytes:
        """Bytes the client sent that no command has read yet (asyncio.StreamReader's
        private buffer: there is no public way to peek at it)."""
        buffer = self._reader._buffer  # type: ignore[attr-defined]
        return bytes(buffer) if buffer else b""    # asked before most commands: mostly empty

    def _call_handler_hook(self, command: str, *args: Any) -> Coroutine[Any, Any, Any]:
        if command == "RCPT":       # the handler answers it, and counts its own refusals
            self._rcpt_unasked = False
        return super()._call_handler_hook(command, *args)    # (no await layer of its own)

    def _getparams(self, params: Sequence[str]) -> dict[str, str | bool] | None:
        """MAIL/RCPT parameters as aiosmtpd reads them (None: 501), None for a SIZE that is not
        ASCII digits, and None for a parameter given twice too (`SIZE=1 SIZE=2`,
        `BODY=7BIT BODY=8BITMIME`; names are upper-cased before this): aiosmtpd kept the
        last one silently, so which one counted was anyone's guess. `push` turns aiosmtpd's
        501 into REPLY_PARAM_TWICE naming it."""
        result = super()._getparams(params)
        size = result.get("SIZE") if result is not None else None
        body = result.get("BODY") if result is not None else None
        self._body = body if isinstance(body, str) else ""     # named in a 555 (push)
        if isinstance(size, str) and not (size.isascii() and size.isdigit()):
            # RFC 1870: ASCII digits. aiosmtpd's str.isdigit() took '²', '①', '1¹', which
            # int() then refused: a crash (451 4.3.0 and a traceback) for every such MAIL
            return None
        if result is not None and len(result) < len(params):
            seen: set[str] = set()
            for param in params:
                name = param.partition("=")[0]
                if name in seen:
                    self._param_twice = name
                    return None
                seen.add(name)
        return result

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """The path of MAIL and RCPT, read by `read_path` (None: aiosmtpd's 553 5.1.3)."""
        return read_path(arg, self.local_part_limit)

    async def _greeting(self, reply: Awaitable[None]) -> None:
        """Run EHLO/HELO/LHLO with push() gathering their reply lines into one send."""
        self._ehlo_in_progress = True
        try:
            await reply
        finally:
            self._ehlo_in_progress = False

    # The overrides below keep aiosmtpd's @syntax: HELP lists a command only when it has one
    @syntax("EHLO hostname")
    async def smtp_EHLO(self, hostname: str) -> None:
        await self._greeting(super().smtp_EHLO(hostname))

    @syntax("HELO hostname")
    async def smtp_HELO(self, hostname: str) -> None:
        await self._greeting(super().smtp_HELO(hostname))

    @syntax("HELP [command]")
    async def smtp_HELP(self, arg: str) -> None:
        """RFC 5321 4.1.1.8 and 4.2.1: help text is a 214 (aiosmtpd says 250), and a topic
        that is not a command here a 504 (aiosmtpd: 501 and the list). The topic is never
        echoed back."""
        if arg:
            method = self._smtp_methods.get(arg.upper())
            if not (method and self._syntax_available(method)):
                await self.push(str(REPLY_HELP_UNKNOWN))
                return
            text = method.__smtp_syntax__
            if self.session is not None and self.session.extended_smtp:
                text += method.__smtp_syntax_extended__ or ""
            await self.push(str(REPLY_HELP.with_text(f"Syntax: {text}")))
            return
        names = sorted(name for name, method in self._smtp_methods.items()
                       if self._syntax_available(method))
        await self.push(str(REPLY_HELP.with_text(f"Supported commands: {' '.join(names)}")))

    @syntax("QUIT")
    async def smtp_QUIT(self, arg: str) -> None:
        """221 and close, then nothing more: aiosmtpd's loop went on running what the client
        pipelined behind QUIT (a RCPT looked up and logged, NOOPs logged as improper
        pipelining) until a write noticed the close. The session is over (RFC 5321
        4.1.1.10): what follows is dropped unread, as after any hang-up."""
        await super().smtp_QUIT(arg)
        if not arg:
            self._hung_up = True
            self._reader._buffer.clear()  # type: ignore[attr-defined]

    async def smtp_AUTH(self, arg: str) -> None:
        # Not offered in EHLO: mailrouter takes mail from its MTA, not from users. aiosmtpd
        # would answer 538 "encryption required", which suggests it could work over TLS.
        await self.push(str(REPLY_AUTH_NOT_IMPLEMENTED))

    async def smtp_STARTTLS(self, arg: str) -> None:
        # Not offered either (TLS is the MTA's in front). aiosmtpd's 454 "TLS not available"
        # is a temporary failure (RFC 3207 4): a client requiring TLS would retry forever.
        await self.push(str(REPLY_STARTTLS_NOT_IMPLEMENTED))

    async def smtp_BDAT(self, arg: str) -> None:
        """CHUNKING (RFC 3030) is not offered, and a client that sends BDAT anyway follows it
        with its chunk: message text, not commands. aiosmtpd answered 500 and read the chunk
        as commands, so a chunk holding RSET, MAIL, RCPT and DATA was run and a message taken
        from them (SMTP smuggling by BDAT). As Postfix: 521 5.5.1 and hang up, the chunk
        unread. No @syntax: HELP does not list it. _guarded runs it before any other check
        (a refusal that kept the session open would read the chunk as commands)."""
        log.warning("event=bdat_refused peer=%s arg=%r", self.session and self.session.peer,
                    (arg or "")[:50])
        await self.hang_up(str(REPLY_BDAT_NOT_OFFERED))

    async def handle_exception(self, error: Exception) -> str:
        if self._half_closed and isinstance(error, asyncio.IncompleteReadError):
            # everything the half-closed client sent whole is answered: end the session (the
            # CancelledError passes aiosmtpd's handler; its push of no status is dropped)
            self._hung_up = True
            if self.transport is not None:
                self.transport.close()
            raise asyncio.CancelledError()
        log.error("event=session_error peer=%s error=%r", self.session and self.session.peer,
                  error, exc_info=error)
        return INTERNAL_ERROR

    # -- draining and per-command bookkeeping ----------------------------------------
    def _wrap_commands(self) -> None:
        # aiosmtpd looks each command up with _smtp_methods.get(); wrap it then, not all
        # twenty-odd methods for every connection (a session runs five or six commands)
        self._smtp_methods = _GuardedMethods(self, self._smtp_methods)

    def _guarded(self, name: str, method: Any) -> Any:
        async def run(arg: Any) -> None:
            if self._hung_up:
                return
            if name == "MAIL":   # push() counts its reply if a refusal (no coroutine layer)
                self._mail_unanswered = True
            if name == "BDAT":       # its chunk follows: nothing after it is read as commands
                await method(arg)
                return
            if self._bare_line_end:
                await self.push(BARE_LINE_END)
                return
            if (getattr(self.event_handler, "draining", False) and not self.in_transaction
                    and name != "QUIT"):
                await self.push(SHUTTING_DOWN)
                if self.transport is not None:
                    self.transport.close()
                return
            if (name in LAST_IN_GROUP or not (self.session and self.session.extended_smtp)) \
                    and self.unread():
                await self._out_of_sync(f"after {name}")
                return
            if isinstance(arg, str) and _CONTROL.search(arg):
                await self.push(CONTROL_CHAR)
                return
            if isinstance(arg, str) and _NOT_UTF8.search(arg):
                await self.push(NOT_UTF8)
                return
            if name == "RSET":
                self.resets += 1
                if self.resets > RESETS_WITHOUT_MAIL:
                    await self.push(str(REPLY_TOO_MANY_RESETS))   # OVER_LIMIT: hang up
                    return
            self.busy = True
            try:
                await method(arg)
            finally:
                self.busy = False
        wrapper = run
        if name == "RCPT":     # its refusals before the handler is asked, counted by push()
            async def rcpt(arg: Any) -> None:       # (a layer for RCPT alone: the hot path)
                self._rcpt_unasked = True
                try:
                    await run(arg)
                finally:
                    self._rcpt_unasked = False
            wrapper = rcpt
        # HELP reads the @syntax text from the method it finds: keep it on the wrapper
        for attr in ("__smtp_syntax__", "__smtp_syntax_extended__", "__smtp_syntax_when__"):
            if hasattr(method, attr):
                setattr(wrapper, attr, getattr(method, attr))
        return wrapper

    async def _handle_client(self) -> None:
        # RFC 5321 3.1: a server that is going away greets with 421 instead of 220.
        if getattr(self.event_handler, "draining", False):
            if self.transport is not None and not self.transport.is_closing():
                await self.push(SHUTTING_DOWN)
                self.transport.close()
            return
        if getattr(self.event_handler, "overloaded", lambda: False)():
            # RFC 5321 4.5.3.2 allows refusing a connection at greeting; the MTA retries.
            if self.transport is not None and not self.transport.is_closing():
                await self.push(TOO_MANY_SESSIONS)
                self.transport.close()
            return
        host = self.peer_host()
        local = is_loopback(host)
        cap = (self.limits.max_connections_per_loopback_client if local
               else self.limits.max_connections_per_client)
        count = getattr(self.event_handler, "sessions_from", None)
        if cap and count is not None and count(host) > cap:
            # one address holding every session (a flood, a stuck client); Postfix's
            # smtpd_client_connection_count_limit, which exempts its own networks
            log.warning("event=client_connection_limit peer=%s limit=%d setting=limits.%s",
                        host, cap, "max_connections_per_loopback_client" if local
                        else "max_connections_per_client")
            if self.transport is not None and not self.transport.is_closing():
                await self.push(TOO_MANY_FROM_CLIENT)
                self.transport.close()
            return
        delay = self.limits.greet_delay_loopback if local else self.limits.greet_delay
        if delay > 0:
            await asyncio.sleep(delay)
        # What the client sent before our 220, read by the loop or still in the socket (the
        # session's first step runs before the loop first reads a new socket: looking only
        # at what it had read, `greet_delay_loopback: 0`, the default, never caught one)
        early = self.unread() or self._socket_input(100, socket.MSG_PEEK)
        if early:
            await self._out_of_sync("before greeting", early)   # a bot that does not wait
            return
        await super()._handle_client()   # its 220 is written with no await in between

    def _socket_input(self, size: int, flags: int = 0) -> bytes:
        """Up to `size` bytes the client sent that the loop has not read yet, from the socket
        itself (through a dup of it): peeked with MSG_PEEK, else taken. b"" when there are
        none (it never waits) or the client is gone."""
        transport = self.transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is None:
            return b""
        try:
            with socket.fromfd(sock.fileno(), sock.family, sock.type) as dup:
                return dup.recv(size, flags | socket.MSG_DONTWAIT)
        except OSError:          # nothing there (EAGAIN), or the client is gone already
            return b""

    def peer_host(self) -> str:
        """The client's address as text ('' before the connection is made)."""
        peer = self.session.peer if self.session else None
        return str(peer[0] if isinstance(peer, tuple) and peer else peer or "")

    async def _out_of_sync(self, where: str, seen: bytes = b"") -> None:
        """RFC 5321 4.3.1 / RFC 2920 3.1 broken: 554 5.5.0 and hang up (Postfix 3.9)."""
        log.warning("event=improper_pipelining peer=%s where=%r input=%r",
                    self.session and self.session.peer, where, (seen or self.unread())[:100])
        await self.hang_up(SYNC_ERROR)

    def _cb_client_connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """aiosmtpd reads a command line up to LF and strips every CR and LF at its end, so a
        line ended by a bare LF (or CR CR LF) was run as a command, though DATA refuses the
        same bytes in a message. Note how each command line ended; _guarded refuses one that
        did not end in a single CRLF (RFC 5321 2.3.8, 4.1.1), as Postfix's
        smtpd_forbid_bare_newline = reject does."""
        super()._cb_client_connected(reader, writer)
        readuntil = reader.readuntil

        async def read_line(separator: bytes = b"\n") -> bytes:
            line = await readuntil(separator)
            self._bare_line_end = line[-2:] != b"\r\n" or line[-3:-2] == b"\r"
            return line
        reader.readuntil = read_line  # type: ignore[method-assign, assignment]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        register = getattr(self.event_handler, "register", None)
        if register is not None:
            register(self)
        if self._handler_coroutine is not None:
            self._handler_coroutine.add_done_callback(self._session_over)

    def _session_over(self, _task: asyncio.Task[None]) -> None:
        """The session's task has ended: close the socket if it is still open.  aiosmtpd
        cancels the task on EOF and closes the socket from inside it; a task cancelled before
        it ran (a client that connects and closes at once: a port scanner, a TCP health check)
        or while the greeting waits never did, so the socket stayed in CLOSE-WAIT and the
        session counted against max_connections until command_timeout."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def eof_received(self) -> bool | None:
        """The client shut its sending side. aiosmtpd cancels the session at once, dropping
        unanswered what arrived whole (a message and QUIT from `nc -N` or a script, which
        still reads). With something unread or a command running, let the reader end after
        what it holds instead: those commands are answered, a DATA cut short ends as a client
        gone (nothing stored), and the next read ends the session (handle_exception)."""
        if not (self.busy or self.unread()):
            return super().eof_received()
        self._half_closed = True
        asyncio.StreamReaderProtocol.eof_received(self)   # the reader's EOF, after its buffer
        return True                                        # keep our side open for the replies

    def client_gone(self) -> bool:
        """The connection is lost: a reply now would reach nobody (Transaction.gone)."""
        return self._gone

    def connection_lost(self, error: Exception | None) -> None:
        self._gone = True
        unregister = getattr(self.event_handler, "unregister", None)
        if unregister is not None:
            unregister(self)
        super().connection_lost(error)

    @property
    def in_transaction(self) -> bool:
        """MAIL was accepted and the transaction is not over (MAIL FROM:<> included)."""
        return self.envelope is not None and self.envelope.mail_from is not None

    def close_if_idle(self) -> None:
        """Called when draining: say 421 to a session between transactions."""
        if (not self.busy and not self.in_transaction and self.transport is not None
                and not self.transport.is_closing()):
            self._writer.write(SHUTTING_DOWN.encode() + b"\r\n")
            self.transport.close()

    def shut_down(self) -> None:
        """shutdown_grace is over and this session is still open (a client still sending
        its message, one being processed): say 421 4.3.2 and close, as RFC 5321 3.8 asks
        of a server that closes. It was closed without a word, and a client mid-DATA could
        not tell our shutdown from a crash. Nothing of the transaction is taken: a message
        still arriving is cut unread, one being processed is cancelled (`_unheard`) and
        gets no 250 (a push after this one is dropped)."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if not self._hung_up:
            self._hung_up = True
            self._count_cut(REPLY_SHUTTING_DOWN, "shutdown")
            log.info("event=session_shut_down peer=%s in_data=%s", self.session and
                     self.session.peer, self._reading_data)
            self._writer.write(SHUTTING_DOWN.encode() + b"\r\n")
            # the rest of a message still coming would reset the connection at the close,
            # and the client's system could drop our 421 with it (as in hang_up)
            for _ in range(HANG_UP_DRAIN):
                if not self._socket_input(1 << 16):
                    break
        transport.close()

    def _count_cut(self, reply: Reply, cause: str) -> None:
        """A DATA phase ended by our 421 before its answer: the message and its recipients
        (`reply` to each), and the cause in mailrouter_tempfails_total. Once per DATA."""
        if not self._data_uncounted:
            return
        self._data_uncounted = False
        n = max(1, len(self.envelope.rcpt_tos)) if self.envelope is not None else 1
        metrics.observe_message([reply] * n, None)
        metrics.child(metrics.TEMPFAILS, cause).inc(n)

    # -- DATA --------------------------------------------------------------------------
    def _replies(self, status: str) -> str:
        """One reply for SMTP; one per accepted recipient for LMTP (RFC 2033 4.2)."""
        if not self.lmtp:
            return status
        assert self.envelope is not None
        return "\r\n".join([status] * max(1, len(self.envelope.rcpt_tos)))

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push(self._no_rcpt_reply())
            return
        if arg:
            await self.push(str(REPLY_DATA_SYNTAX))
            return
        await self.push(str(REPLY_START_DATA))
        if self._hung_up:          # the text came before our 354 (push): nothing is read
            return
        self._data_uncounted = True
        try:
            await self._data_transaction()
        finally:
            self._data_uncounted = False
            if self.data_budget is not None:   # the content is gone with the transaction
                self.data_budget.give(self._held)
            self._held = 0

    def _no_rcpt_reply(self) -> str:
        """DATA with no accepted recipient. After MAIL whose every RCPT was refused: 554 5.5.1
        "no valid recipients", as Postfix says (RFC 5321 3.3 allows it): the transaction is
        in order, it has nowhere to go; a 503 "need RCPT" told a client whose RCPTs were
        all refused that it had skipped a command. Without MAIL, 503. LMTP keeps 503 in both
        cases: RFC 2033 4.2 requires it."""
        if self.lmtp or not self.in_transaction:
            return str(REPLY_NEED_RCPT)
        return str(REPLY_NO_VALID_RCPTS)

    async def _data_transaction(self) -> None:
        assert self.envelope is not None
        self._reading_data = True
        try:
            problem, content = await self._read_data()
        finally:
            self._reading_data = False
        if problem is DATA_TOO_SLOW:
            # The client is still sending: there is no reply it would read in the right
            # place, so say why and hang up (RFC 5321 3.8); the message was not accepted.
            # A hang-up, not push and close: push waited for the tarpit while more text came,
            # and aiosmtpd's loop then ran that message text as commands.
            log.warning("event=data_deadline peer=%s deadline=%s", self.session and
                        self.session.peer, self.data_deadline)
            self._count_cut(REPLY_DATA_TOO_SLOW, "data_deadline")   # was on no panel
            await self.hang_up(DATA_TOO_SLOW)
            return
        if problem:
            # answered here, not by the handler: counted as a message and its recipients
            # (a 552 too big was on no panel; no latency, nothing was processed)
            refused = _REFUSED.get(problem)
            if refused is not None:
                self._data_uncounted = False
                metrics.observe_message([refused] * len(self.envelope.rcpt_tos), None)
                if refused.temporary:    # DATA memory of all sessions spoken for: a cause
                    metrics.child(metrics.TEMPFAILS, "data_in_flight").inc(
                        len(self.envelope.rcpt_tos))
            await self.push(self._replies(problem), final=True)
            self._set_post_data_state()  # type: ignore[no-untyped-call]
            return
        self.envelope.content = self.envelope.original_content = content
        # The client waits in silence for our reply: the idle timer (command_timeout) must not
        # cut the processing, which process_timeout bounds (and answers 451 itself); re-armed
        # for the next command once there is a reply.
        self._reset_timeout(self.limits.process_timeout + self.limits.command_timeout)
        work = asyncio.ensure_future(self._call_handler_hook("DATA"))
        try:
            status = await asyncio.shield(work)
            self._data_uncounted = False      # the handler counted its answer
        except asyncio.CancelledError:
            self._unheard(work)
            raise
        except Exception as exc:
            log.error("event=data_error error=%r", exc, exc_info=exc)
            status = self._replies(INTERNAL_ERROR)
        self._reset_timeout()
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        await self.push(status, final=True)

    def _unheard(self, work: asyncio.Future[Any]) -> None:
        """The session was cancelled while its message was processed: the client reset the
        connection after its final dot (aiosmtpd's connection_lost cancels the session).
        That cancel used to reach the pipeline between the Maildir copies and their record:
        copies stored, the message unrecorded, and the MTA's retry gave an LMTP/SMTP
        downstream a second copy. The shielded work goes on to its record, as Postfix keeps
        a message whose dot it read; the retry then finds it delivered (one copy, one row).
        Its DATA memory stays counted until it ends. A shutdown past its grace still
        cancels it; process_timeout still bounds it (the handler's)."""
        if getattr(self.event_handler, "draining", False):
            work.cancel()
            return
        budget, held, self._held = self.data_budget, self._held, 0
        peer = self.session and self.session.peer

        def done(task: asyncio.Future[Any]) -> None:
            if budget is not None:
                budget.give(held)
            if not task.cancelled() and task.exception() is not None:
                log.error("event=data_error peer=%s", peer, exc_info=task.exception())
        work.add_done_callback(done)

    async def _read_data(self) -> tuple[str | None, bytes]:
        """Read to CRLF.CRLF; return (refusal or None, un-dot-stuffed content).

        Reads whatever the socket has, in bulk, and looks for the terminator with
        bytes.find: a line-by-line loop cost a tenth of the event loop's time. Bytes
        that follow the terminator (pipelined commands) go back to the reader. A
        virtual CRLF in front lets an empty message ('.' first) match the same way.
        """
        # The message goes into a BytesIO as it arrives, and its bytes become the content
        # without a copy (_content); `tail` is the last 4 bytes of the stream, starting with
        # the virtual CRLF, where the terminator is looked for across reads.
        body: io.BytesIO | None = io.BytesIO()
        tail = b"\r\n"
        limit, reader, loop, budget = self.data_size_limit, self._reader, self.loop, self.data_budget
        too_big, no_room, total = False, False, 0
        armed = started = loop.time()
        self._reset_timeout(self.data_timeout)
        while True:
            if loop.time() - armed > 1.0:   # re-arm the idle timer at most once a second
                armed = loop.time()
                if armed - started > self.data_deadline:   # a trickle that never ends
                    self._reset_timeout()
                    return DATA_TOO_SLOW, b""
                self._reset_timeout(self.data_timeout)
            chunk = await reader.read(_READ_ALL)
            if not chunk:                   # EOF mid-DATA: nothing was accepted
                raise ConnectionResetError("client closed the connection during DATA")
            if budget is not None and not (too_big or no_room):
                if budget.take(len(chunk) * MEMORY_PER_BYTE):
                    self._held += len(chunk) * MEMORY_PER_BYTE
                else:                       # memory for DATA is spoken for: read on, keep none
                    no_room = True
                    budget.give(self._held)
                    self._held = 0
            # where the terminator starts, from the chunk's start (< 0: in the tail)
            edge = (tail + chunk[:4]).find(b"\r\n.\r\n")
            at = edge - len(tail) if edge >= 0 else chunk.find(b"\r\n.\r\n")
            if edge >= 0 or at >= 0:
                if len(chunk) > at + 5:
                    _give_back(reader, chunk[at + 5:])
                total += at + 2             # the content ends with the CRLF before the dot
                if body is not None:
                    if at + 2 > 0:
                        body.write(chunk[:at + 2])
                    body.truncate(total)
                break
            if body is not None:
                body.write(chunk)
            total += len(chunk)
            tail = (tail + chunk[-4:])[-4:]
            # RFC 1870: the limit is on the message, not its dot-stuffing, which adds at
            # most a byte to a line of three ('.' CRLF): past a third more, it cannot fit
            over = limit is not None and limit > 0 and total > limit + limit // 3 + 1
            if (over or no_room) and body is not None:
                # Too big (or no room): read to the end (RFC 5321 4.2.5) but hold only a tail.
                body = None
            too_big = too_big or over
        self._reset_timeout()
        # More than the DATA memory of all sessions could ever hold (max_data_in_flight set
        # below twice max_message_size): no retry would ever fit, so not 452 "try later"
        # until the sender's queue gives up days later, but too big, as past the size limit.
        if too_big or (budget is not None and total * MEMORY_PER_BYTE > budget.limit):
            return TOO_BIG, b""
        if no_room or body is None:
            log.warning("event=data_budget_full peer=%s limit=%d", self.session and
                        self.session.peer, budget.limit if budget else 0)
            return NO_ROOM, b""
        problem, message = content(body)
        if limit and len(message) > limit:
            return TOO_BIG, b""
        return problem, as_stored(message)


_READ_ALL = 1 << 30                          # StreamReader.read(n): all that is buffered


def _give_back(reader: asyncio.StreamReader, rest: bytes) -> None:
    """Put the bytes read past the final dot (pipelined commands: QUIT) back for the command
    loop. read(_READ_ALL) emptied the buffer, so they go where they came from. feed_data
    asserts once the reader has seen EOF: a client that sent its message, QUIT and its FIN
    before the DATA phase read them (the 354 waited in the tarpit) got 451 4.3.0 and a
    traceback (AssertionError 'feed_data after feed_eof') for a message sent whole."""
    if reader.at_eof():          # EOF and an empty buffer: the half-closed client's last bytes
        reader._buffer.extend(rest)  # type: ignore[attr-defined]
    else:
        reader.feed_data(rest)
# The RFC 5322 parser's defects for a path it had to repair to read: an unquoted space in a
# local part (`<a b@x>` became `"a b"@x`) and a missing `>` (`<a@x`). Not the obsolete route,
# nor a dot-atom's stray dot (`taro.@docomo.ne.jp` is real, and Postfix takes it).
_REPAIRS = ("missing '.' between words", "missing trailing '>'")
# An RFC 2047 encoded word, which the header parser decodes in a quoted local part or in a
# word of an obsolete one (RFC 2047 5 forbids both; a path never holds one): the sender
# `<"=?utf-8?b?DQpYOiB5?="@x>` was "\r\nX: y"@x, past the control-character check, and
# crashed the autoreply's To: (451 on every retry); `<"=?utf-8?b?c2FsZXM=?="@example.com>` was
# delivered to sales@. A path whose address lost an encoded word it was sent with is malformed.
_ENCODED_WORD = re.compile(r"=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=")
# Whitespace that is not ASCII (U+00A0, U+2000..U+200A, U+3000...) inside a path: the parser
# takes it for folding white space and drops it (a domain is `''.join(text.split())`), so
# `<sales@exa\u00a0mple.com>` and `<sales@example.com\u3000>` were sales@example.com, taken even
# without SMTPUTF8 (the handler's ASCII check saw the address after the repair). No address
# holds one (IDNA refuses it in a domain): a path read only by dropping it is malformed.
_WIDE_SPACE = re.compile(r"[^\S\x00-\x7f]")


def read_path(arg: str, local_part_limit: int = 0) -> tuple[str | None, str | None]:
    """(address, parameters) of a MAIL FROM: or RCPT TO: argument, as this server reads
    it; (None, None) for a malformed path, which gets REPLY_MALFORMED_PATH (aiosmtpd's
    553 5.1.3). The plain `<local@domain> PARAMS` form takes a fast path; anything else goes
    to the RFC 5322 parser aiosmtpd uses (quoted local parts, source routes, comments), and
    a path it reads only by repairing it is malformed. `mailrouter explain` asks this too."""
    m = _SIMPLE_PATH.match(arg)
    if m is not None:
        return m.group(1) or "<>", m.group(2)
    if not arg:
        return "", ""
    try:
        token, rest = (get_angle_addr if arg.lstrip().startswith("<") else get_addr_spec)(arg)
        address = str(token.addr_spec)
    except (HeaderParseError, *_PARSER_FAULTS):
        return None, None
    if local_part_limit and len(address.rpartition("@")[0]) > local_part_limit:
        return None, None
    if address and _repaired(token):
        return None, None
    path = arg[:len(arg) - len(rest)] if rest and arg.endswith(rest) else arg
    if any(word not in address for word in _ENCODED_WORD.findall(path)):
        return None, None
    if not path.isascii() and _WIDE_SPACE.search(path.strip()):   # most paths are ASCII
        return None, None
    return address, rest


# What the RFC 5322 parser (a private module of the standard library) raises besides
# HeaderParseError on a path it cannot read: `<@a,(b<>` ran off the end of the text
# (IndexError), `<a@[b:"@c>` put a defect where a token belongs (AttributeError reading
# addr_spec), `a@[ \u00a0` left a local variable unset (UnboundLocalError). They reached
# aiosmtpd as a crash: 451 4.3.0, so the client retried a path that can never be read, and a
# traceback logged at ERROR for each such command.
_PARSER_FAULTS = (IndexError, AttributeError, NameError, ValueError, TypeError)


def _repaired(token: Any) -> bool:
    """True when aiosmtpd's parser read the path only by repairing it: Postfix refuses both
    (501 5.1.7 / 5.1.3), and taking them stored the mail under an address nobody sent
    (`"a b"@x` for `<a b@x>`) or took a truncated one (`<a@out side.test>` as `a@out`)."""
    return any(str(d).startswith(_REPAIRS) for d in token.all_defects)


class _GuardedMethods(dict[str, Any]):
    """The command table; `get` hands out each method inside Protocol._guarded."""

    def __init__(self, proto: Protocol, methods: dict[str, Any]) -> None:
        super().__init__(methods)
        self._proto = proto

    def get(self, name: str, default: Any = None) -> Any:
        method = super().get(name)
        return default if method is None else self._proto._guarded(name, method)


class LMTPProtocol(Protocol, LMTP):
    """LMTP (RFC 2033): LHLO only; one reply per recipient after DATA."""

    lmtp = True

    @syntax("LHLO hostname")
    async def smtp_LHLO(self, arg: str) -> None:
        if not arg:                # aiosmtpd's EHLO would say "Syntax: EHLO hostname"
            await self.push(LHLO_SYNTAX)
            return
        await self._greeting(SMTP.smtp_EHLO(self, arg))

    async def check_helo_needed(self, helo: str = "LHLO") -> bool:
        # MAIL, RCPT and DATA before LHLO: aiosmtpd would say "send HELO first", which LMTP refuses
        return await super().check_helo_needed("LHLO")

    async def smtp_EHLO(self, arg: str) -> None:
        await self.push(str(REPLY_LMTP_NO_EHLO))

    async def smtp_HELO(self, arg: str) -> None:
        await self.push(str(REPLY_LMTP_NO_HELO))
