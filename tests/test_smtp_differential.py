"""Differential test: hostile SMTP sessions, byte for byte, against mailrouter and a real Postfix.

Each case is a session as raw bytes (pipelined groups included) run at once against
mailrouter's real server on loopback and a private Postfix smtpd (tests/support/postfix.py)
configured as the hardened MTA mailrouter imitates. What is compared is the transcript: each
reply's code and enhanced status code, whether the server hung up, and how many messages it
took (Postfix: queue files in its hold queue; mailrouter: Maildir files and registry rows).

A case where Postfix answers otherwise is in POSTFIX_DIFFERS with the reason ours stands (by RFC);
everything else must match Postfix exactly. LMTP has no Postfix server to compare with: its cases check
mailrouter against RFC 2033 alone.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import maildir_files
from tests.support.postfix import _MASTER, PostfixServer, _binary

# --- the two servers ---------------------------------------------------------------------

MAX_SIZE = 20000      # message_size_limit / limits.max_message_size
MAX_RCPTS = 3         # smtpd_recipient_limit / limits.max_recipients
TIMEOUT = 2           # smtpd_timeout / command_timeout, data_timeout (the "slow" profile)
KNOWN = ["sales@example.com", "support@example.com", "invoices@example.com",
         "postmaster@example.com"]

# Postfix as the MTA in front of us is hardened: HELO required, the RFC 2920 pipelining
# rules enforced, bare LF refused, no relaying for loopback (mynetworks elsewhere), unknown
# recipients refused at RCPT, and every message accepted parked on hold (nothing leaves).
_HARDENED = f"""
mynetworks = 192.0.2.1/32
relay_domains = example.com
relay_recipient_maps = texthash:{{etc}}/recipients
smtpd_helo_required = yes
smtpd_forbid_unauth_pipelining = yes
smtpd_forbid_bare_newline = reject
smtpd_forbid_bare_newline_exclusions =
smtpd_data_restrictions = check_client_access static:HOLD
smtpd_error_sleep_time = 0
smtpd_recipient_limit = {MAX_RCPTS}
message_size_limit = {MAX_SIZE}
smtpd_discard_ehlo_keywords = chunking, dsn, etrn, silent-discard
smtpd_timeout = 30s
"""


@dataclass
class Postfix:
    server: PostfixServer
    slow_port: int              # the same smtpd with smtpd_timeout = TIMEOUT

    def held(self) -> int:
        hold = self.server.dir / "queue" / "hold"
        return sum(1 for p in hold.rglob("*") if p.is_file()) if hold.exists() else 0


@pytest.fixture(scope="module")
def postfix_mta() -> Iterator[Postfix]:
    if _binary() is None or not Path(_MASTER).exists():
        pytest.skip("postfix binary not found (apt-get install postfix)")
    root = Path(tempfile.mkdtemp(prefix="pfx."))
    root.chmod(0o755)
    with socket.socket() as s:                   # a relayhost nobody listens on (all is held)
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    server = PostfixServer(root, dead, lmtp=False)
    (server.etc / "recipients").write_text("".join(f"{a} ok\n" for a in KNOWN))
    with open(server.etc / "main.cf", "a") as f:
        f.write(_HARDENED.format(etc=server.etc))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        slow = s.getsockname()[1]
    with open(server.etc / "master.cf", "a") as f:
        f.write(f"127.0.0.1:{slow} inet n - n - - smtpd -o smtpd_timeout={TIMEOUT}s\n")
    try:
        server.start()
        yield Postfix(server, slow)
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


# --- a session -------------------------------------------------------------------------------

_CODE = re.compile(r"(\d{3})[ -]?(\d\.\d{1,3}\.\d{1,3})?")
WAIT = 3.0            # for a reply that does not come (a server that reads more than we meant)


class Closed(Exception):
    pass


async def _reply(reader: asyncio.StreamReader, wait: float) -> str:
    """The last line of one reply."""
    while True:
        async with asyncio.timeout(wait):
            raw = await reader.readline()
        if not raw:
            raise Closed
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if len(line) < 4 or line[3] != "-":
            return line


def code(line: str) -> str:
    """A reply as 'code enhanced' ('250 2.1.0', '220'); the markers as they are."""
    m = _CODE.match(line)
    return " ".join(g for g in m.groups() if g) if m else line


@dataclass
class Case:
    """`steps`: bytes to send, and ints: how many replies to wait for before going on
    (a float: sleep that long first). The greeting is read first unless `early`. After the
    steps the session sends QUIT if it is still open and reads what is left to the close."""

    name: str
    steps: list[Any]
    early: bool = False                     # talk before the greeting
    slow: bool = False                      # the short-timeout profile
    drop: bool = False                      # close without QUIT after the steps
    limits: dict[str, Any] = field(default_factory=dict)   # mailrouter's, for this case


async def run_session(port: int, case: Case) -> list[str]:
    out: list[str] = []
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        if not case.early:
            out.append(await _reply(reader, WAIT))
        for step in case.steps:
            if isinstance(step, bytes):
                writer.write(step)
                await writer.drain()
            elif isinstance(step, float):
                await asyncio.sleep(step)
            else:
                for _ in range(step):
                    try:
                        out.append(await _reply(reader, WAIT if not case.slow else 3 * TIMEOUT))
                    except TimeoutError:
                        out.append("silence")
                        break
        if case.drop:
            return out
        writer.write(b"QUIT\r\n")
        await writer.drain()
        while True:
            out.append(await _reply(reader, WAIT))
    except Closed:
        out.append("closed")
    except TimeoutError:
        out.append("silence")
    except ConnectionResetError:       # a hang-up racing our QUIT: the same for the client
        out.append("closed")
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionError, OSError):
            pass
    return out


# --- the cases -----------------------------------------------------------------------------

E = b"EHLO client.test\r\n"
M = b"MAIL FROM:<a@outside.test>\r\n"
R = b"RCPT TO:<sales@example.com>\r\n"
D = b"DATA\r\n"
BODY = b"Subject: t\r\n\r\nhello\r\n.\r\n"


def txn(body: bytes, *, mail: bytes = M, rcpt: bytes = R) -> list[Any]:
    return [E, 1, mail, 1, rcpt, 1, D, 1, body, 1]


def smuggle(term: bytes) -> bytes:
    """A message whose `term` some server might take for the end of DATA, followed by a
    second transaction written as message text."""
    return (b"Subject: t\r\n\r\nhello" + term + b"MAIL FROM:<evil@outside.test>\r\n"
            b"RCPT TO:<support@example.com>\r\nDATA\r\n\r\nsmuggled\r\n.\r\n")


CASES = [
    Case("plain", txn(BODY)),
    # SMTP smuggling
    Case("smuggle_lf_dot_lf", txn(smuggle(b"\n.\n"))),
    Case("smuggle_cr_dot_lf", txn(smuggle(b"\r.\n"))),
    Case("smuggle_lf_dot_crlf", txn(smuggle(b"\n.\r\n"))),
    Case("smuggle_crlf_dot_cr", txn(smuggle(b"\r\n.\r"))),
    Case("smuggle_dot_cr_crlf", txn(smuggle(b"\r\n.\r\r\n"))),
    Case("smuggle_cr_dot_cr", txn(smuggle(b"\r.\r"))),
    Case("smuggle_cr_dot_crlf", txn(smuggle(b"\r.\r\n"))),
    Case("smuggle_crlf_dot_lf", txn(smuggle(b"\r\n.\n"))),
    Case("smuggle_crlf_dot_nul_crlf", txn(smuggle(b"\r\n.\x00\r\n"))),
    Case("smuggle_crlf_dot_sp_crlf", txn(smuggle(b"\r\n. \r\n"))),
    Case("bare_lf_in_data", txn(b"Subject: t\r\n\r\nhello\nworld\r\n.\r\n")),
    Case("bare_cr_in_data", txn(b"Subject: t\r\n\r\nhello\rworld\r\n.\r\n")),
    Case("nul_in_data", txn(b"Subject: t\r\n\r\nhel\x00lo\r\n.\r\n")),
    Case("8bit_in_data", txn(b"Subject: t\r\n\r\nh\xe9llo \xd0\xbf\r\n.\r\n")),
    Case("long_line_in_data", txn(b"Subject: t\r\n\r\n" + b"x" * 5000 + b"\r\n.\r\n")),
    Case("dot_stuffed", txn(b"Subject: t\r\n\r\n..hello\r\n...\r\n.\r\n")),
    Case("empty_message", txn(b".\r\n")),
    # bare CR / LF / NUL / 8-bit in commands
    Case("bare_lf_ehlo", [b"EHLO client.test\n", 1]),
    Case("bare_lf_mail", [E, 1, b"MAIL FROM:<a@outside.test>\n", 1]),
    Case("bare_cr_mail", [E, 1, b"MAIL FROM:<a@outside.test>\rRCPT TO:<sales@example.com>\r\n", 1]),
    Case("cr_in_ehlo", [b"EHLO client\r.test\r\n", 1]),
    Case("nul_in_mail", [E, 1, b"MAIL FROM:<a\x00b@outside.test>\r\n", 1]),
    Case("nul_in_verb", [E, 1, b"NO\x00OP\r\n", 1]),
    Case("nul_in_ehlo", [b"EHLO cl\x00ient.test\r\n", 1]),
    Case("utf8_mail_no_smtputf8", [E, 1, "MAIL FROM:<café@outside.test>\r\n".encode(), 1]),
    Case("latin1_mail", [E, 1, b"MAIL FROM:<caf\xe9@outside.test>\r\n", 1]),
    Case("8bit_verb", [E, 1, b"N\xc3\x96OP\r\n", 1]),
    Case("esc_in_rcpt", [E, 1, M, 1, b"RCPT TO:<sa\x1bles@example.com>\r\n", 1]),
    # overlong
    Case("long_noop", [E, 1, b"NOOP " + b"x" * 5000 + b"\r\n", 1]),
    Case("long_mail_line", [E, 1, b"MAIL FROM:<a@outside.test> " + b"X-FOO=" + b"y" * 3000 + b"\r\n", 1]),
    Case("long_local_part", [E, 1, b"MAIL FROM:<" + b"a" * 100 + b"@outside.test>\r\n", 1]),
    Case("long_path", [E, 1, b"MAIL FROM:<" + b"a" * 60 + b"@" + b"b" * 60 + b"." + b"c" * 300 + b".test>\r\n", 1]),
    Case("long_rcpt", [E, 1, M, 1, b"RCPT TO:<" + b"s" * 300 + b"@example.com>\r\n", 1]),
    # order
    Case("mail_before_helo", [M, 1, R, 1]),
    Case("rcpt_before_mail", [E, 1, R, 1]),
    Case("data_without_mail", [E, 1, D, 1]),
    Case("data_without_rcpt", [E, 1, M, 1, D, 1]),
    Case("double_mail", [E, 1, M, 1, M, 1]),
    Case("ehlo_resets_txn", [E, 1, M, 1, R, 1, E, 1, D, 1]),
    Case("helo_then_ehlo", [b"HELO client.test\r\n", 1, E, 1, M, 1]),
    Case("ehlo_no_arg", [b"EHLO\r\n", 1, b"HELO\r\n", 1]),
    Case("data_with_arg", [E, 1, M, 1, R, 1, b"DATA now\r\n", 1]),
    # pipelining
    Case("pipelined_txn", [E, 1, M + R + D, 3, BODY, 1]),
    Case("pipelined_body_before_354", [E, 1, M + R + D + BODY, 4]),
    Case("pipelined_after_data_ok", [E, 1, M, 1, R, 1, D, 1, BODY + b"NOOP\r\n", 2]),
    Case("pipelined_after_ehlo", [E + M, 2]),
    Case("pipelined_after_helo", [b"HELO client.test\r\n", 1, M + R, 2]),
    Case("pipelined_after_noop", [E, 1, b"NOOP\r\n" + M, 2]),
    Case("early_talker", [E, 2], early=True, limits={"greet_delay_loopback": 0.3}),
    # unknown commands, the error limit
    Case("unknown_command", [E, 1, b"FOO bar\r\n", 1]),
    Case("empty_line", [E, 1, b"\r\n", 1]),
    Case("lowercase", [b"ehlo client.test\r\n", 1, b"mail from:<a@outside.test>\r\n", 1,
                       b"rcpt to:<sales@example.com>\r\n", 1, b"data\r\n", 1, BODY, 1]),
    Case("unknown_x25", [E, 1] + [b"FOO\r\n", 1] * 25),
    Case("rcpt_unknown_x25", [E, 1, M, 1] + [b"RCPT TO:<nobody@example.com>\r\n", 1] * 25),
    Case("rcpt_unknown_then_ok", [E, 1, M, 1] + [b"RCPT TO:<nobody@example.com>\r\n", 1] * 15
         + [R, 1, D, 1, BODY, 1] + [b"RCPT TO:<nobody@example.com>\r\n", 1] * 10),
    # RSET NOOP VRFY EXPN HELP QUIT
    Case("rset", [E, 1, M, 1, R, 1, b"RSET\r\n", 1, D, 1]),
    Case("rset_arg", [E, 1, b"RSET x\r\n", 1]),
    Case("noop_arg", [E, 1, b"NOOP x\r\n", 1]),
    Case("vrfy", [E, 1, b"VRFY sales@example.com\r\n", 1, b"VRFY nobody@example.com\r\n", 1,
                  b"VRFY\r\n", 1]),
    Case("expn", [E, 1, b"EXPN sales@example.com\r\n", 1]),
    Case("help", [E, 1, b"HELP\r\n", 1, b"HELP MAIL\r\n", 1, b"HELP FOO\r\n", 1]),
    Case("quit_arg", [E, 1, b"QUIT now\r\n", 1]),
    Case("quit_then_more", [E, 1, b"QUIT\r\nNOOP\r\n", 2], drop=True),
    # MAIL parameters
    Case("size_over", [E, 1, b"MAIL FROM:<a@outside.test> SIZE=%d\r\n" % (MAX_SIZE + 1), 1]),
    Case("size_ok", [E, 1, b"MAIL FROM:<a@outside.test> SIZE=100\r\n", 1]),
    Case("size_junk", [E, 1, b"MAIL FROM:<a@outside.test> SIZE=abc\r\n", 1]),
    Case("size_huge", [E, 1, b"MAIL FROM:<a@outside.test> SIZE=99999999999999999999999\r\n", 1]),
    Case("size_twice", [E, 1, b"MAIL FROM:<a@outside.test> SIZE=10 SIZE=20\r\n", 1]),
    Case("body_8bitmime", txn(BODY, mail=b"MAIL FROM:<a@outside.test> BODY=8BITMIME\r\n")),
    Case("body_7bit", [E, 1, b"MAIL FROM:<a@outside.test> BODY=7BIT\r\n", 1]),
    Case("body_binarymime", [E, 1, b"MAIL FROM:<a@outside.test> BODY=BINARYMIME\r\n", 1]),
    Case("body_unknown", [E, 1, b"MAIL FROM:<a@outside.test> BODY=FOO\r\n", 1]),
    Case("body_twice", [E, 1, b"MAIL FROM:<a@outside.test> BODY=7BIT BODY=8BITMIME\r\n", 1]),
    Case("unknown_param", [E, 1, b"MAIL FROM:<a@outside.test> FOO=bar\r\n", 1]),
    Case("rcpt_param", [E, 1, M, 1, b"RCPT TO:<sales@example.com> NOTIFY=NEVER\r\n", 1]),
    Case("smtputf8", txn(BODY, mail="MAIL FROM:<пётр@пример.рф> SMTPUTF8\r\n".encode())),
    Case("smtputf8_rcpt_unknown", [E, 1, b"MAIL FROM:<a@outside.test> SMTPUTF8\r\n", 1,
                                   "RCPT TO:<пётр@example.com>\r\n".encode(), 1]),
    Case("smtputf8_twice", [E, 1, b"MAIL FROM:<a@outside.test> SMTPUTF8 SMTPUTF8\r\n", 1]),
    Case("smtputf8_arg", [E, 1, b"MAIL FROM:<a@outside.test> SMTPUTF8=yes\r\n", 1]),
    Case("helo_with_size", [b"HELO client.test\r\n", 1, b"MAIL FROM:<a@outside.test> SIZE=100\r\n", 1]),
    # address syntax
    Case("source_route_mail", [E, 1, b"MAIL FROM:<@a.test,@b.test:u@outside.test>\r\n", 1]),
    Case("source_route_rcpt", txn(BODY, rcpt=b"RCPT TO:<@x.test:sales@example.com>\r\n")),
    Case("quoted_local", [E, 1, b'MAIL FROM:<"a b"@outside.test>\r\n', 1]),
    Case("quoted_rcpt", [E, 1, M, 1, b'RCPT TO:<"sales"@example.com>\r\n', 1]),
    Case("null_sender", txn(BODY, mail=b"MAIL FROM:<>\r\n")),
    Case("null_rcpt", [E, 1, M, 1, b"RCPT TO:<>\r\n", 1]),
    Case("no_brackets", [E, 1, b"MAIL FROM:a@outside.test\r\n", 1, b"RCPT TO:sales@example.com\r\n", 1]),
    Case("space_after_colon", [E, 1, b"MAIL FROM: <a@outside.test>\r\n", 1]),
    Case("space_before_colon", [E, 1, b"MAIL FROM :<a@outside.test>\r\n", 1]),
    Case("space_in_local", [E, 1, b"MAIL FROM:<a b@outside.test>\r\n", 1]),
    Case("missing_gt", [E, 1, b"MAIL FROM:<a@outside.test\r\n", 1]),
    Case("two_addresses", [E, 1, b"MAIL FROM:<a@outside.test> <b@outside.test>\r\n", 1]),
    Case("rcpt_uppercase", txn(BODY, rcpt=b"RCPT TO:<SALES@EXAMPLE.COM>\r\n")),
    Case("rcpt_other_domain", [E, 1, M, 1, b"RCPT TO:<x@elsewhere.test>\r\n", 1]),
    Case("rcpt_postmaster_bare", [E, 1, M, 1, b"RCPT TO:<postmaster>\r\n", 1]),
    Case("rcpt_unqualified", [E, 1, M, 1, b"RCPT TO:<sales>\r\n", 1]),
    Case("mail_unqualified", [E, 1, b"MAIL FROM:<a>\r\n", 1]),
    Case("ip_literal", [E, 1, b"MAIL FROM:<a@[192.0.2.1]>\r\n", 1]),
    # not offered
    Case("auth", [E, 1, b"AUTH PLAIN AGFAYg==\r\n", 1]),
    Case("starttls", [E, 1, b"STARTTLS\r\n", 1]),
    Case("bdat", [E, 1, M, 1, R, 1, b"BDAT 7 LAST\r\nhello\r\n", 2]),
    Case("etrn", [E, 1, b"ETRN example.com\r\n", 1]),
    # limits
    Case("too_many_rcpts", [E, 1, M, 1]
         + [x for a in KNOWN for x in (b"RCPT TO:<%s>\r\n" % a.encode(), 1)] + [D, 1, BODY, 1]),
    Case("oversize_data", txn(b"Subject: t\r\n\r\n" + b"0123456789abcdef\r\n" * 1500 + b".\r\n")),
    # slow clients, drops
    Case("idle_timeout", [E, 1, 1], slow=True),
    Case("data_timeout", [E, 1, M, 1, R, 1, D, 1, b"Subject: t\r\n\r\nhal", 1], slow=True),
    Case("drop_mid_data", [E, 1, M, 1, R, 1, D, 1, b"Subject: t\r\n\r\nhalf a mess", 0.3], drop=True),
    Case("drop_after_dot_unanswered", [E, 1, M, 1, R, 1, D, 1, b"Subject: t\r\n\r\nhello\r\n.\r"],
         drop=True),
    Case("slow_trickle", [E, 1, M, 1, R, 1, D, 1, b"Subject: t\r\n", 0.5, b"\r\nhel", 0.5, b"lo\r\n",
                          0.5, b".\r\n", 1], slow=True),
    # more of the same kinds
    Case("cr_cr_lf_mail", [E, 1, b"MAIL FROM:<a@outside.test>\r\r\n", 1]),
    Case("bdat_smuggle", [E, 1, M, 1, R, 1, b"BDAT 86 LAST\r\nRSET\r\nMAIL FROM:<evil@outside.test>\r\n"
                          b"RCPT TO:<support@example.com>\r\nDATA\r\n", 5, BODY, 1]),
    Case("pipelined_harvest", [E, 1, M + b"RCPT TO:<a1@example.com>\r\nRCPT TO:<a2@example.com>\r\n"
                               + R + b"RCPT TO:<a3@example.com>\r\n" + D, 6, BODY, 1]),
    Case("pipelined_rset_after_dot", [E, 1, M + R + D, 3, BODY + b"RSET\r\n" + M + R + D, 5,
                                      b"Subject: second\r\n\r\nanother\r\n.\r\n", 1]),
    Case("turn", [E, 1, b"TURN\r\n", 1]),
    Case("helo_twice", [b"HELO client.test\r\n", 1, b"HELO client.test\r\n", 1]),
    Case("size_at_limit", [E, 1, b"MAIL FROM:<a@outside.test> SIZE=%d\r\n" % MAX_SIZE, 1]),
    Case("long_ehlo", [b"EHLO " + b"h" * 600 + b".test\r\n", 1]),
    Case("utf8_ehlo", ["EHLO пример.рф\r\n".encode(), 1]),
    Case("ehlo_literal", [b"EHLO [127.0.0.1]\r\n", 1]),
    Case("mail_display_name", [E, 1, b"MAIL FROM:Name <a@outside.test>\r\n", 1]),
    Case("rcpt_comment", [E, 1, M, 1, b"RCPT TO:<sales@example.com> (hi)\r\n", 1]),
    Case("data_twice", txn(BODY) + [D, 1]),
    Case("noop_x101", [E, 1] + [b"NOOP\r\n", 1] * 101),
    Case("dot_in_command", [E, 1, b".\r\n", 1, b"..\r\n", 1]),
]

L = b"LHLO client.test\r\n"
RCPTS = b"RCPT TO:<sales@example.com>\r\nRCPT TO:<nobody@example.com>\r\nRCPT TO:<support@example.com>\r\n"


def ltxn(body: bytes) -> list[Any]:
    """LHLO, then MAIL, three RCPTs (one unknown) and DATA pipelined; the replies after DATA."""
    return [L, 1, M + RCPTS + D, 5, body, 2]


# LMTP: no Postfix to compare with; the answers are RFC 2033's (one reply per accepted
# recipient after DATA, in RCPT order, on every path).
LMTP_CASES = [
    Case("lmtp_plain", ltxn(BODY)),
    Case("lmtp_ehlo", [E, 1, b"HELO client.test\r\n", 1, M, 1]),
    Case("lmtp_bare_lf", ltxn(b"Subject: t\r\n\r\nhello\nworld\r\n.\r\n")),
    Case("lmtp_smuggle", ltxn(smuggle(b"\n.\r\n"))),
    Case("lmtp_oversize", ltxn(b"Subject: t\r\n\r\n" + b"0123456789abcdef\r\n" * 1500 + b".\r\n")),
    Case("lmtp_no_valid_rcpt", [L, 1, M + b"RCPT TO:<nobody@example.com>\r\n" + D, 3]),
    Case("lmtp_pipelined_after_lhlo", [L + M, 2]),
    Case("lmtp_body_before_354", [L, 1, M + R + D + BODY, 4]),
    Case("lmtp_bdat", [L, 1, M, 1, R, 1, b"BDAT 7 LAST\r\nhello\r\n", 2]),
    Case("lmtp_drop_mid_data", [L, 1, M, 1, R, 1, D, 1, b"Subject: t\r\n\r\nhalf", 0.3], drop=True),
    Case("lmtp_too_many_rcpts", [L, 1, M, 1] + [x for a in KNOWN for x in (b"RCPT TO:<%s>\r\n" % a.encode(), 1)]
         + [D, 1, BODY, 3]),
]


# Reasons shared by several differences
BARE_IN_DATA = (
    "RFC 5321 2.3.8 and 4.1.1.4: lines end in CRLF and no client may send a bare CR, LF or NUL. "
    "We refuse the whole message (550 5.6.0, permanent: a retry sends the same bytes) rather "
    "than repair what the sender signed. Postfix (smtpd_forbid_bare_newline = reject) refuses "
    "a bare LF too (550 5.5.2) but takes a bare CR and NUL. Neither ends DATA early: nothing "
    "is smuggled by either (one message at most).")
BARE_IN_COMMAND = (
    "RFC 5321 2.3.8 and 4.1.1: a command line ends in CRLF. Both refuse it; Postfix also "
    "hangs up, we answer 500 5.5.2, do not run it and go on (the error limit ends a client "
    "that keeps at it). Postfix strips a CR before the CRLF; we refuse it like a bare LF.")
BAD_EHLO = (
    "RFC 5321 4.1.1.1: the EHLO argument is a domain or an address literal, and a CR or NUL is "
    "neither (ours would reach our Received: header): 501. Postfix takes any argument.")
BAD_BYTES_IN_ARG = (
    "Both refuse. We say 501 5.5.2 for any control character or invalid UTF-8 in an argument "
    "before reading it; Postfix reads it first and then refuses the address or the command.")
LONG_LINE = (
    "RFC 5321 4.5.3.1.4: a command line is at most 512 octets (plus what the extensions we "
    "offer add); past it \"500 Line too long\" is the RFC's own example reply (4.5.3.1). "
    "Postfix reads up to line_length_limit (2048) and parses what it got.")
PARAM_501 = (
    "Known and accepted: aiosmtpd answers a MAIL/RCPT argument it cannot parse with 501 5.5.4 "
    "where Postfix says 555 5.5.4 (RFC 5321 4.1.1.11). Both refuse it.")
BAD_PATH = (
    "Both refuse a malformed path (RFC 5321 4.1.2): ours 553 5.1.3 (mailbox syntax, RFC 3463), "
    "Postfix 501 5.1.7.")
NOT_A_RELAY = (
    "Both refuse. We know only the address book: 550 5.1.1 (no such address here); Postfix "
    "says 554 5.7.1 (relay access denied) for a domain it does not serve.")

# What mailrouter answers, case by case ('X *N': N replies X in a row).
PARAM_TWICE = (
    "No extension says what a parameter given twice means (RFC 5321 4.1.1.11 leaves a parameter "
    "to its extension): which value counts is a guess, and two hops may guess apart (SIZE=10 "
    "SIZE=20000000). Postfix takes one silently; we refuse the command as a syntax error in its "
    "parameters (501 5.5.4, RFC 5321 4.2.3, RFC 3463), naming the parameter.")
ANSWERS = {
    "plain": "220 | 250 | 250 2.1.0 | 250 2.1.5 | 354 | 250 2.0.0 | 221 2.0.0 | closed | stored=1",
    "smuggle_lf_dot_lf": "220 | 250 | 250 2.1.0 | 250 2.1.5 | 354 | 550 5.6.0 | 221 2.0.0 | closed | stored=0",
    "smuggle_cr_dot_lf": "220 | 250 | 250 2.1.0 | 250 2.1.5 | 354 | 550 5.6.0 | 221 2.0.0 | closed | stored=0",
    "smuggle_lf_dot_crlf": "220 | 250 | 250 2.1.0 | 250 2.1.5 | 354 | 550 5.6.0 | 221 2.0.0 | closed | stored=0",
    "smuggle_crlf_dot_cr": "220 | 250 | 250 2.1.0 | 250 2.1.5 | 354 | 550 5.6.0 | 221 2.0.0 | closed | stored=0",
    "smuggle_dot_cr_crlf": "220 | 250 | 250 2.1.0 | 250 2.1.5 | 354 | 550 5.6.0 | 221 2.0.0 | closed | stored=0",
    "smuggle_cr_dot_cr": "220 | 250 | 250 2.1.0 | 250 2.1.5 | 354 | 550 5.6.0 | 221 2.0.0 | closed | stored=0",
    "smuggle_cr_dot_crlf": "220 | 250 | 250 2.1.0 | 250 2.1.5 | 354 | 550 5.6.0 | 221 2.0.0 | closed | stored=0",
    "smuggle_crlf_dot_lf": "220 | 250 | 250 2.1.0 | 250 2.1.5 | 354 | 550 5.6.0 | 221 2.0.0 | closed | stored=0",
    "smuggle_crlf_dot_nul_crlf": "220 | 250 | 250 2.1.0 | 250 2.1.5 | 354 | 550 5.6.0 | 221 2.0.0 | closed | stored=0",
    "smuggle_crlf_dot_sp_crlf": "220 | 250 | 250 2.1.0 | 250 2.1.5 | 354 | 250 2.0.0 | 221 2.0.0 | closed | stored=1",
    "bare_lf_in_data": "220 | 250 | 250 2.1.0 | 250 2.1.5 | 354 | 550 5.6.0 | 221 2.0.0 | closed | stored=0",
    "bare_cr_in_data": "220 | 250 | 250 2.1.0 | 250 2.1.5 | 354 | 550 5.6.0 | 221 2.0.0 | closed | stored=0",
    "nul_in_data": "220 | 250 | 250 2.1.0 | 250 2.1.5 | 354 | 550 5.6.0 | 221 2.0.0 | closed | stored=0",
    "8bit_in_data": "220 | 250 | 250 2.1.0 | 250 2.1.5 | 354 | 250 2.0.0 | 221 2.0.0 | closed | stored=1",
    "long_line_in_data": "220 | 250 | 250 2.1.0 | 250 2.1.5 | 354 | 250 2.0.0 | 221 2.0.0 | closed | stored=1",
    "dot_stuffed": "220 | 250 | 250 2.1.0 | 250 2.1.5 | 354 | 250 2.0.0 | 221 2.0.0 | closed | stored=1",
    "empty_message": "220 | 250 | 250 2.1.0 | 250 2.1.5 | 354 | 250 2.0.0 | 221 2.0.0 | closed | stored=1",
    "bare_lf_ehlo": "220 | 500 5.5.2 | 221 2.0.0 | closed | stored=0",
    "bare_lf_mail": "220 | 250 | 500 5.5.2 | 221 2.0.0 | closed | stored=0",
    "bare_cr_mail": "220 | 250 | 501 5.5.2 | 221 2.0.0 | closed | stored=0",
    "cr_in_ehlo": "220 | 501 5.5.2 | 221 2.0.0 | closed | stored=0",
    "nul_in_mail": "220 | 250 | 501 5.5.2 | 221 2.0.0 | closed | stored=0",
    "nul_in_verb": "220 | 250 | 500 5.5.2 | 221 2.0.0 | closed | stored=0",
    "nul_in_ehlo": "220 | 501 5.5.2 | 221 2.0.0 | closed | stored=0",
    "utf8_mail_no_smtputf8": "220 | 250 | 553 5.6.7 | 221 2.0.0 | closed | stored=0",
    "latin1_mail": "220 | 250 | 501 5.5.2 | 221 2.0.0 | closed | stored=0",
    "8bit_verb": "220 | 250 | 500 5.5.2 | 221 2.0.0 | closed | stored=0",
    "esc_in_rcpt": "220 | 250 | 250 2.1.0 | 501 5.5.2 | 221 2.0.0 | closed | stored=0",
    "long_noop": "220 | 250 | 500 5.5.2 | 221 2.0.0 | closed | stored=0",
    "long_mail_line": "220 | 250 | 500 5.5.2 | 221 2.0.0 | closed | stored=0",
    "long_local_part": "220 | 250 | 250 2.1.0 | 221 2.0.0 | closed | stored=0",
    "long_path": "220 | 250 | 250 2.1.0 | 221 2.0.0 | closed | stored=0",
    "long_rcpt": "220 | 250 | 250 2.1.0 | 550 5.1.1 | 221 2.0.0 | closed | stored=0",
    "mail_before_helo": "220 | 503 5.5.1 | 503 5.5.1 | 221 2.0.0 | closed | stored=0",
    "rcpt_before_mail": "220 | 250 | 503 5.5.1 | 221 2.0.0 | closed | stored=0",
    "data_without_mail": "220 | 250 | 503 5.5.1 | 221 2.0.0 | closed | stored=0",
    "data_without_rcpt": "220 | 250 | 250 2.1.0 | 554 5.5.1 | 221 2.0.0 | closed | stored=0",
    "double_mail": "220 | 250 | 250 2.1.0 | 503 5.5.1 | 221 2.0.0 | closed | stored=0",
    "ehlo_resets_txn": "220 | 250 | 250 2.1.0 | 250 2.1.5 | 250 | 503 5.5.1 | 221 2.0.0 | closed | stored=0",
    "helo_then_ehlo": "220 | 250 | 250 | 250 2.1.0 | 221 2.0.0 | closed | stored=0",
    "ehlo_no_arg": "220 | 501 5.5.4 | 501 5.5.4 | 221 2.0.0 | closed | stored=0",
    "data_with_arg": "220 | 250 | 250 2.1.0 | 250 2.1.5 | 501 5.5.4 | 221 2.0.0 | closed | stored=0",
    "pipelined_txn": "220 | 250 | 250 2.1.0 | 250 2.1.5 | 354 | 250 2.0.0 | 221 2.0.0 | closed | stored=1",
    "pipelined_body_before_354": "220 | 250 | 250 2.1.0 | 250 2.1.5 | 554 5.5.0 | closed | stored=0",
    "pipelined_after_data_ok": "220 | 250 | 250 2.1.0 | 250 2.1.5 | 354 | 250 2.0.0 | 250 2.0.0 | 221 2.0.0 | closed | stored=1",
    "pipelined_after_ehlo": "220 | 554 5.5.0 | closed | stored=0",
    "pipelined_after_helo": "220 | 250 | 554 5.5.0 | closed | stored=0",
    "pipelined_after_noop": "220 | 250 | 554 5.5.0 | closed | stored=0",
    "early_talker": "554 5.5.0 | closed | stored=0",
    "unknown_command": "220 | 250 | 500 5.5.2 | 221 2.0.0 | closed | stored=0",
    "empty_line": "220 | 250 | 500 5.5.2 | 221 2.0.0 | closed | stored=0",
    "lowercase": "220 | 250 | 250 2.1.0 | 250 2.1.5 | 354 | 250 2.0.0 | 221 2.0.0 | closed | stored=1",
    "unknown_x25": "220 | 250 | 500 5.5.2 *4 | 421 4.7.0 | closed | stored=0",
    "rcpt_unknown_x25": "220 | 250 | 250 2.1.0 | 550 5.1.1 *20 | 421 4.7.0 | closed | stored=0",
    "rcpt_unknown_then_ok": "220 | 250 | 250 2.1.0 | 550 5.1.1 *15 | 250 2.1.5 | 354 | 250 2.0.0 | 503 5.5.1 *10 | 221 2.0.0 | closed | stored=1",
    "rset": "220 | 250 | 250 2.1.0 | 250 2.1.5 | 250 2.0.0 | 503 5.5.1 | 221 2.0.0 | closed | stored=0",
    "rset_arg": "220 | 250 | 501 5.5.4 | 221 2.0.0 | closed | stored=0",
    "noop_arg": "220 | 250 | 250 2.0.0 | 221 2.0.0 | closed | stored=0",
    "vrfy": "220 | 250 | 252 2.5.0 | 252 2.5.0 | 501 5.5.4 | 221 2.0.0 | closed | stored=0",
    "expn": "220 | 250 | 502 5.5.1 | 221 2.0.0 | closed | stored=0",
    "help": "220 | 250 | 214 2.0.0 | 214 2.0.0 | 504 5.5.4 | 221 2.0.0 | closed | stored=0",
    "quit_arg": "220 | 250 | 501 5.5.4 | 221 2.0.0 | closed | stored=0",
    "quit_then_more": "220 | 250 | 221 2.0.0 | closed | stored=0",
    "size_over": "220 | 250 | 552 5.3.4 | 221 2.0.0 | closed | stored=0",
    "size_ok": "220 | 250 | 250 2.1.0 | 221 2.0.0 | closed | stored=0",
    "size_junk": "220 | 250 | 501 5.5.4 | 221 2.0.0 | closed | stored=0",
    "size_huge": "220 | 250 | 552 5.3.4 | 221 2.0.0 | closed | stored=0",
    "size_twice": "220 | 250 | 501 5.5.4 | 221 2.0.0 | closed | stored=0",
    "body_8bitmime": "220 | 250 | 250 2.1.0 | 250 2.1.5 | 354 | 250 2.0.0 | 221 2.0.0 | closed | stored=1",
    "body_7bit": "220 | 250 | 250 2.1.0 | 221 2.0.0 | closed | stored=0",
    "body_unknown": "220 | 250 | 555 5.5.4 | 221 2.0.0 | closed | stored=0",
    "body_binarymime": "220 | 250 | 555 5.5.4 | 221 2.0.0 | closed | stored=0",
    "body_twice": "220 | 250 | 501 5.5.4 | 221 2.0.0 | closed | stored=0",
    "unknown_param": "220 | 250 | 555 5.5.4 | 221 2.0.0 | closed | stored=0",
    "rcpt_param": "220 | 250 | 250 2.1.0 | 555 5.5.4 | 221 2.0.0 | closed | stored=0",
    "smtputf8": "220 | 250 | 250 2.1.0 | 250 2.1.5 | 354 | 250 2.0.0 | 221 2.0.0 | closed | stored=1",
    "smtputf8_rcpt_unknown": "220 | 250 | 250 2.1.0 | 550 5.1.1 | 221 2.0.0 | closed | stored=0",
    "smtputf8_twice": "220 | 250 | 501 5.5.4 | 221 2.0.0 | closed | stored=0",
    "smtputf8_arg": "220 | 250 | 501 5.5.4 | 221 2.0.0 | closed | stored=0",
    "helo_with_size": "220 | 250 | 501 5.5.4 | 221 2.0.0 | closed | stored=0",
    "source_route_mail": "220 | 250 | 250 2.1.0 | 221 2.0.0 | closed | stored=0",
    "source_route_rcpt": "220 | 250 | 250 2.1.0 | 250 2.1.5 | 354 | 250 2.0.0 | 221 2.0.0 | closed | stored=1",
    "quoted_local": "220 | 250 | 250 2.1.0 | 221 2.0.0 | closed | stored=0",
    "quoted_rcpt": "220 | 250 | 250 2.1.0 | 250 2.1.5 | 221 2.0.0 | closed | stored=0",
    "null_sender": "220 | 250 | 250 2.1.0 | 250 2.1.5 | 354 | 250 2.0.0 | 221 2.0.0 | closed | stored=1",
    "null_rcpt": "220 | 250 | 250 2.1.0 | 501 5.1.3 | 221 2.0.0 | closed | stored=0",
    "no_brackets": "220 | 250 | 250 2.1.0 | 250 2.1.5 | 221 2.0.0 | closed | stored=0",
    "space_after_colon": "220 | 250 | 250 2.1.0 | 221 2.0.0 | closed | stored=0",
    "space_before_colon": "220 | 250 | 501 5.5.4 | 221 2.0.0 | closed | stored=0",
    "space_in_local": "220 | 250 | 553 5.1.3 | 221 2.0.0 | closed | stored=0",
    "missing_gt": "220 | 250 | 553 5.1.3 | 221 2.0.0 | closed | stored=0",
    "two_addresses": "220 | 250 | 501 5.5.4 | 221 2.0.0 | closed | stored=0",
    "rcpt_uppercase": "220 | 250 | 250 2.1.0 | 250 2.1.5 | 354 | 250 2.0.0 | 221 2.0.0 | closed | stored=1",
    "rcpt_other_domain": "220 | 250 | 250 2.1.0 | 550 5.1.1 | 221 2.0.0 | closed | stored=0",
    "rcpt_postmaster_bare": "220 | 250 | 250 2.1.0 | 250 2.1.5 | 221 2.0.0 | closed | stored=0",
    "rcpt_unqualified": "220 | 250 | 250 2.1.0 | 550 5.1.1 | 221 2.0.0 | closed | stored=0",
    "mail_unqualified": "220 | 250 | 250 2.1.0 | 221 2.0.0 | closed | stored=0",
    "ip_literal": "220 | 250 | 250 2.1.0 | 221 2.0.0 | closed | stored=0",
    "auth": "220 | 250 | 502 5.5.1 | 221 2.0.0 | closed | stored=0",
    "starttls": "220 | 250 | 502 5.5.1 | 221 2.0.0 | closed | stored=0",
    "bdat": "220 | 250 | 250 2.1.0 | 250 2.1.5 | 521 5.5.1 | closed | stored=0",
    "etrn": "220 | 250 | 500 5.5.2 | 221 2.0.0 | closed | stored=0",
    "too_many_rcpts": "220 | 250 | 250 2.1.0 | 250 2.1.5 *3 | 452 4.5.3 | 354 | 250 2.0.0 | 221 2.0.0 | closed | stored=1",
    "oversize_data": "220 | 250 | 250 2.1.0 | 250 2.1.5 | 354 | 552 5.3.4 | 221 2.0.0 | closed | stored=0",
    "idle_timeout": "220 | 250 | 421 4.4.2 | closed | stored=0",
    "data_timeout": "220 | 250 | 250 2.1.0 | 250 2.1.5 | 354 | 421 4.4.2 | closed | stored=0",
    "drop_mid_data": "220 | 250 | 250 2.1.0 | 250 2.1.5 | 354 | stored=0",
    "drop_after_dot_unanswered": "220 | 250 | 250 2.1.0 | 250 2.1.5 | 354 | stored=0",
    "slow_trickle": "220 | 250 | 250 2.1.0 | 250 2.1.5 | 354 | 250 2.0.0 | 221 2.0.0 | closed | stored=1",
    "cr_cr_lf_mail": "220 | 250 | 500 5.5.2 | 221 2.0.0 | closed | stored=0",
    "bdat_smuggle": "220 | 250 | 250 2.1.0 | 250 2.1.5 | 521 5.5.1 | closed | stored=0",
    "pipelined_harvest": "220 | 250 | 250 2.1.0 | 550 5.1.1 | 550 5.1.1 | 250 2.1.5 | 550 5.1.1 | 354 | 250 2.0.0 | 221 2.0.0 | closed | stored=1",
    "pipelined_rset_after_dot": "220 | 250 | 250 2.1.0 | 250 2.1.5 | 354 | 250 2.0.0 | 250 2.0.0 | 250 2.1.0 | 250 2.1.5 | 354 | 250 2.0.0 | 221 2.0.0 | closed | stored=2",
    "turn": "220 | 250 | 500 5.5.2 | 221 2.0.0 | closed | stored=0",
    "helo_twice": "220 | 250 | 250 | 221 2.0.0 | closed | stored=0",
    "size_at_limit": "220 | 250 | 250 2.1.0 | 221 2.0.0 | closed | stored=0",
    "long_ehlo": "220 | 500 5.5.2 | 221 2.0.0 | closed | stored=0",
    "utf8_ehlo": "220 | 250 | 221 2.0.0 | closed | stored=0",
    "ehlo_literal": "220 | 250 | 221 2.0.0 | closed | stored=0",
    "mail_display_name": "220 | 250 | 501 5.5.4 | 221 2.0.0 | closed | stored=0",
    "rcpt_comment": "220 | 250 | 250 2.1.0 | 501 5.5.4 | 221 2.0.0 | closed | stored=0",
    "data_twice": "220 | 250 | 250 2.1.0 | 250 2.1.5 | 354 | 250 2.0.0 | 503 5.5.1 | 221 2.0.0 | closed | stored=1",
    "noop_x101": "220 | 250 | 250 2.0.0 *100 | 421 4.7.0 | closed | stored=0",
    "dot_in_command": "220 | 250 | 500 5.5.2 | 500 5.5.2 | 221 2.0.0 | closed | stored=0",
    "lmtp_plain": "220 | 250 | 250 2.1.0 | 250 2.1.5 | 550 5.1.1 | 250 2.1.5 | 354 | 250 2.0.0 | 250 2.0.0 | 221 2.0.0 | closed | stored=1",
    "lmtp_ehlo": "220 | 500 5.5.1 | 500 5.5.1 | 503 5.5.1 | 221 2.0.0 | closed | stored=0",
    "lmtp_bare_lf": "220 | 250 | 250 2.1.0 | 250 2.1.5 | 550 5.1.1 | 250 2.1.5 | 354 | 550 5.6.0 | 550 5.6.0 | 221 2.0.0 | closed | stored=0",
    "lmtp_smuggle": "220 | 250 | 250 2.1.0 | 250 2.1.5 | 550 5.1.1 | 250 2.1.5 | 354 | 550 5.6.0 | 550 5.6.0 | 221 2.0.0 | closed | stored=0",
    "lmtp_oversize": "220 | 250 | 250 2.1.0 | 250 2.1.5 | 550 5.1.1 | 250 2.1.5 | 354 | 552 5.3.4 | 552 5.3.4 | 221 2.0.0 | closed | stored=0",
    "lmtp_no_valid_rcpt": "220 | 250 | 250 2.1.0 | 550 5.1.1 | 503 5.5.1 | 221 2.0.0 | closed | stored=0",
    "lmtp_pipelined_after_lhlo": "220 | 554 5.5.0 | closed | stored=0",
    "lmtp_body_before_354": "220 | 250 | 250 2.1.0 | 250 2.1.5 | 554 5.5.0 | closed | stored=0",
    "lmtp_bdat": "220 | 250 | 250 2.1.0 | 250 2.1.5 | 521 5.5.1 | closed | stored=0",
    "lmtp_drop_mid_data": "220 | 250 | 250 2.1.0 | 250 2.1.5 | 354 | stored=0",
    "lmtp_too_many_rcpts": "220 | 250 | 250 2.1.0 | 250 2.1.5 *3 | 452 4.5.3 | 354 | 250 2.0.0 *3 | 221 2.0.0 | closed | stored=1",
}

# Where Postfix answers otherwise: its transcript, and why ours stands (by RFC).
POSTFIX_DIFFERS = {
    "size_twice": ("220 | 250 | 250 2.1.0 | 221 2.0.0 | closed | stored=0", PARAM_TWICE),
    "body_twice": ("220 | 250 | 250 2.1.0 | 221 2.0.0 | closed | stored=0", PARAM_TWICE),
    "smtputf8_twice": ("220 | 250 | 250 2.1.0 | 221 2.0.0 | closed | stored=0", PARAM_TWICE),
    "smuggle_lf_dot_lf": ("220 | 250 | 250 2.1.0 | 250 2.1.5 | 354 | 550 5.5.2 | 221 2.0.0 | closed | stored=0",
        BARE_IN_DATA),
    "smuggle_cr_dot_lf": ("220 | 250 | 250 2.1.0 | 250 2.1.5 | 354 | 550 5.5.2 | 221 2.0.0 | closed | stored=0",
        BARE_IN_DATA),
    "smuggle_lf_dot_crlf": ("220 | 250 | 250 2.1.0 | 250 2.1.5 | 354 | 550 5.5.2 | 221 2.0.0 | closed | stored=0",
        BARE_IN_DATA),
    "smuggle_crlf_dot_cr": ("220 | 250 | 250 2.1.0 | 250 2.1.5 | 354 | 250 2.0.0 | 221 2.0.0 | closed | stored=1",
        BARE_IN_DATA),
    "smuggle_dot_cr_crlf": ("220 | 250 | 250 2.1.0 | 250 2.1.5 | 354 | 250 2.0.0 | 221 2.0.0 | closed | stored=1",
        BARE_IN_DATA),
    "smuggle_cr_dot_cr": ("220 | 250 | 250 2.1.0 | 250 2.1.5 | 354 | 250 2.0.0 | 221 2.0.0 | closed | stored=1",
        BARE_IN_DATA),
    "smuggle_cr_dot_crlf": ("220 | 250 | 250 2.1.0 | 250 2.1.5 | 354 | 250 2.0.0 | 221 2.0.0 | closed | stored=1",
        BARE_IN_DATA),
    "smuggle_crlf_dot_lf": ("220 | 250 | 250 2.1.0 | 250 2.1.5 | 354 | 550 5.5.2 | 221 2.0.0 | closed | stored=0",
        BARE_IN_DATA),
    "smuggle_crlf_dot_nul_crlf": ("220 | 250 | 250 2.1.0 | 250 2.1.5 | 354 | 250 2.0.0 | 221 2.0.0 | closed | stored=1",
        BARE_IN_DATA),
    "bare_lf_in_data": ("220 | 250 | 250 2.1.0 | 250 2.1.5 | 354 | 550 5.5.2 | 221 2.0.0 | closed | stored=0",
        BARE_IN_DATA),
    "bare_cr_in_data": ("220 | 250 | 250 2.1.0 | 250 2.1.5 | 354 | 250 2.0.0 | 221 2.0.0 | closed | stored=1",
        BARE_IN_DATA),
    "nul_in_data": ("220 | 250 | 250 2.1.0 | 250 2.1.5 | 354 | 250 2.0.0 | 221 2.0.0 | closed | stored=1",
        BARE_IN_DATA),
    "bare_lf_ehlo": ("220 | 550 5.5.2 | closed | stored=0",
        BARE_IN_COMMAND),
    "bare_lf_mail": ("220 | 250 | 550 5.5.2 | closed | stored=0",
        BARE_IN_COMMAND),
    "bare_cr_mail": ("220 | 250 | 555 5.5.4 | 221 2.0.0 | closed | stored=0",
        "A CR inside the line: we say 501 5.5.2 (a control character in an argument), Postfix reads "
        "what follows as a parameter (555). Both refuse it."),
    "cr_in_ehlo": ("220 | 250 | 221 2.0.0 | closed | stored=0",
        BAD_EHLO),
    "nul_in_mail": ("220 | 250 | 501 5.1.7 | 221 2.0.0 | closed | stored=0",
        BAD_BYTES_IN_ARG),
    "nul_in_ehlo": ("220 | 250 | 221 2.0.0 | closed | stored=0",
        BAD_EHLO),
    "utf8_mail_no_smtputf8": ("220 | 250 | 250 2.1.0 | 221 2.0.0 | closed | stored=0",
        "RFC 6531 3.4: a non-ASCII address needs SMTPUTF8 on MAIL; 553 5.6.7 is Postfix's own reply "
        "with strict_smtputf8 = yes. By default Postfix takes it and fails at delivery."),
    "latin1_mail": ("220 | 250 | 500 5.5.2 | 221 2.0.0 | closed | stored=0",
        BAD_BYTES_IN_ARG),
    "esc_in_rcpt": ("220 | 250 | 250 2.1.0 | 550 5.1.1 | 221 2.0.0 | closed | stored=0",
        BAD_BYTES_IN_ARG),
    "long_noop": ("220 | 250 | 250 2.0.0 | 221 2.0.0 | closed | stored=0",
        LONG_LINE),
    "long_mail_line": ("220 | 250 | 555 5.5.4 | 221 2.0.0 | closed | stored=0",
        LONG_LINE),
    "long_path": ("220 | 250 | 501 5.1.7 | 221 2.0.0 | closed | stored=0",
        "RFC 5321 4.5.3.1 asks servers to avoid length limits where they can: we take the path (the "
        "registry stores it whole). Postfix refuses a domain past its hostname check's 255 "
        "octets and 63 per label (RFC 1035 2.3.4), a DNS limit, not SMTP's."),
    "ehlo_no_arg": ("220 | 501 | 501 | 221 2.0.0 | closed | stored=0",
        "RFC 2034 3: once ENHANCEDSTATUSCODES is offered every reply carries a code, and ours all "
        "do, before EHLO too (as Postfix's 503 5.5.1 for MAIL before HELO). Postfix's '501 Syntax: "
        "EHLO hostname' is its one reply without, after an EHLO that offered them as well."),
    "early_talker": ("220 | 250 | 221 2.0.0 | closed | stored=0 || 554 5.5.0 | closed | stored=0",
        "RFC 5321 4.3.1, RFC 2920 3.1: a client waits for the 220. With limits.greet_delay we refuse "
        "one that talks first (554 5.5.0, hang-up), as Postfix's postscreen pregreet test does; "
        "Postfix's smtpd alone (smtpd_forbid_unauth_pipelining) sees it only when the EHLO is "
        "there before its 220 goes out, which is a race: either answer is Postfix's."),
    "unknown_x25": ("220 | 250 | 500 5.5.2 *20 | 421 4.7.0 | closed | stored=0",
        "aiosmtpd hangs up at the fifth unknown command (421 4.7.0, our text for its goodbye), "
        "Postfix at smtpd_hard_error_limit (20). An MTA never sends a command we did not offer; "
        "RFC 5321 sets no number."),
    "vrfy": ("220 | 250 | 252 2.0.0 | 550 5.1.1 | 501 5.5.4 | 221 2.0.0 | closed | stored=0",
        "RFC 5321 3.5.3 and 7.3: 252 (cannot verify, will try) is allowed for every VRFY. A 550 for "
        "an unknown address would let VRFY harvest the address book that RCPT guards with the "
        "error limit."),
    "expn": ("220 | 250 | 500 5.5.2 | 221 2.0.0 | closed | stored=0",
        "RFC 5321 3.5.2 makes EXPN optional; 502 is the reply for a command known but not "
        "implemented. Postfix does not know it (500)."),
    "help": ("220 | 250 | 500 5.5.2 | 500 5.5.2 | 500 5.5.2 | 221 2.0.0 | closed | stored=0",
        "RFC 5321 4.5.1 does not require HELP; we implement it (214, RFC 5321 4.2.1; 504 for a "
        "topic that is not a command), Postfix does not (500)."),
    "quit_arg": ("220 | 250 | 221 2.0.0 | closed | stored=0",
        "RFC 5321 4.1.1.10: QUIT takes no argument, so 501 and the session goes on; Postfix ignores "
        "the argument and closes."),
    "rcpt_param": ("220 | 250 | 250 2.1.0 | 501 5.7.1 | 221 2.0.0 | closed | stored=0",
        "RFC 5321 4.1.1.11: a parameter of an extension not offered (DSN, by neither) is 555; "
        "Postfix says 501 5.7.1 \"DSN support is disabled\"."),
    "smtputf8_arg": ("220 | 250 | 555 5.5.4 | 221 2.0.0 | closed | stored=0",
        PARAM_501),
    "helo_with_size": ("220 | 250 | 250 2.1.0 | 221 2.0.0 | closed | stored=0",
        "RFC 5321 4.1.1.11 and RFC 1869 4: MAIL parameters belong to extensions negotiated by "
        "EHLO, and after HELO there are none: 501. Postfix takes SIZE anyway."),
    "space_in_local": ("220 | 250 | 501 5.1.7 | 221 2.0.0 | closed | stored=0",
        BAD_PATH),
    "missing_gt": ("220 | 250 | 501 5.1.7 | 221 2.0.0 | closed | stored=0",
        BAD_PATH),
    "two_addresses": ("220 | 250 | 555 5.5.4 | 221 2.0.0 | closed | stored=0",
        PARAM_501),
    "rcpt_other_domain": ("220 | 250 | 250 2.1.0 | 554 5.7.1 | 221 2.0.0 | closed | stored=0",
        NOT_A_RELAY),
    "rcpt_unqualified": ("220 | 250 | 250 2.1.0 | 554 5.7.1 | 221 2.0.0 | closed | stored=0",
        NOT_A_RELAY),
    "auth": ("220 | 250 | 503 5.5.1 | 221 2.0.0 | closed | stored=0",
        "AUTH is not offered: ours says 502 5.5.1 \"not implemented\" (as for STARTTLS), Postfix "
        "503 5.5.1 \"authentication not enabled\"; both refuse (RFC 4954 4)."),
    "etrn": ("220 | 250 | 250 | 221 2.0.0 | closed | stored=0",
        "ETRN (RFC 1985) asks a queue to run; we have no queue and do not know it (500). Postfix "
        "runs it though it does not advertise it here."),
    "cr_cr_lf_mail": ("220 | 250 | 250 2.1.0 | 221 2.0.0 | closed | stored=0",
        BARE_IN_COMMAND),
    "long_ehlo": ("220 | 250 | 221 2.0.0 | closed | stored=0",
        LONG_LINE),
    "mail_display_name": ("220 | 250 | 555 5.5.4 | 221 2.0.0 | closed | stored=0",
        PARAM_501),
    "rcpt_comment": ("220 | 250 | 250 2.1.0 | 555 5.5.4 | 221 2.0.0 | closed | stored=0",
        PARAM_501),
    "noop_x101": ("220 | 250 | 250 2.0.0 *101 | 221 2.0.0 | closed | stored=0",
        "Past smtpd_junk_command_limit (100) Postfix counts each junk command as an error; we "
        "hang up at the 101st (COMMAND_LIMITS, aiosmtpd's call limit: 421 4.7.0)."),
    "dot_in_command": ("220 | 250 | 221 2.7.0 | closed | stored=0",
        "Both refuse message text read as a command. Postfix (smtpd_forbidden_commands /^[^A-Z]/) "
        "hangs up with 221 2.7.0; we answer 500 to each such line and the error limit ends a "
        "client that goes on."),
}


def transcript(text: str) -> list[str]:
    out: list[str] = []
    for item in text.split(" | "):
        reply, _, times = item.partition(" *")
        out += [reply] * int(times or 1)
    return out


async def _stored(app: Any, root: Path) -> str:
    """How many messages mailrouter took: registry rows, and never a Maildir copy without one."""
    files = maildir_files(root / "var" / "mail")
    recorded = await app.registry.count_messages()
    assert bool(files) == bool(recorded), (files, recorded)
    return f"stored={recorded}"


def _record(name: str, ours: list[str], theirs: list[str], said: Any) -> None:
    """MAILROUTER_DIFF_RECORD=file: append each case's transcripts and reply lines (to
    rewrite the tables after a deliberate change)."""
    path = os.environ.get("MAILROUTER_DIFF_RECORD")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"name": name, "ours": ours, "postfix": theirs, "said": said}) + "\n")


def test_every_case_has_its_answer() -> None:
    names = [c.name for c in CASES + LMTP_CASES]
    assert len(set(names)) == len(names)
    assert set(ANSWERS) == set(names)
    assert set(POSTFIX_DIFFERS) <= {c.name for c in CASES}
    assert all(why for _, why in POSTFIX_DIFFERS.values())


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
async def test_differential(case: Case, postfix_mta: Postfix, make_app: Any, tmp_path: Path) -> None:
    """The session against mailrouter and Postfix at once: mailrouter gives ANSWERS, and
    Postfix the same unless POSTFIX_DIFFERS says what it gives and why ours stands."""
    limits: dict[str, Any] = {"max_message_size": MAX_SIZE, "max_recipients": MAX_RCPTS}
    if case.slow:
        limits |= {"command_timeout": TIMEOUT, "data_timeout": TIMEOUT}
    app = await make_app(limits=limits | case.limits)
    held = postfix_mta.held()
    ports = (app.bound["smtp"][1], postfix_mta.slow_port if case.slow else postfix_mta.server.port)
    said = await asyncio.gather(*(run_session(p, case) for p in ports))
    if case.drop:
        await asyncio.sleep(0.2)             # let both servers see the close
    ours = [code(line) for line in said[0]] + [await _stored(app, tmp_path)]
    theirs = [code(line) for line in said[1]] + [f"stored={postfix_mta.held() - held}"]
    _record(case.name, ours, theirs, said)
    assert ours == transcript(ANSWERS[case.name]), said[0]
    differs = POSTFIX_DIFFERS.get(case.name)
    expected = differs[0] if differs else ANSWERS[case.name]     # " || ": Postfix races
    assert theirs in [transcript(one) for one in expected.split(" || ")], said[1]


@pytest.mark.parametrize("case", LMTP_CASES, ids=lambda c: c.name)
async def test_lmtp(case: Case, make_app: Any, tmp_path: Path) -> None:
    """LMTP sessions against mailrouter alone, answered as RFC 2033 says."""
    app = await make_app(limits={"max_message_size": MAX_SIZE, "max_recipients": MAX_RCPTS})
    said = await run_session(app.bound["lmtp"][1], case)
    if case.drop:
        await asyncio.sleep(0.2)
    ours = [code(line) for line in said] + [await _stored(app, tmp_path)]
    _record(case.name, ours, ours, [said, []])
    assert ours == transcript(ANSWERS[case.name]), said
