"""The parts of aiosmtpd that are not its public API and that mailrouter/intake/protocol.py uses.

pyproject.toml bounds aiosmtpd to the versions checked here. When a new aiosmtpd fails one
of these, re-check intake/protocol.py against the new source before raising the bound:
each failure names the member and what protocol.py does with it.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
from pathlib import Path

import aiosmtpd
import aiosmtpd.smtp
import pytest
from aiosmtpd.smtp import SMTP

import mailrouter.intake.protocol as protocol
import mailrouter.intake.speedups as speedups

PROTOCOL_PY = Path(protocol.__file__)
SPEEDUPS_PY = Path(speedups.__file__)
HINT = "re-check mailrouter/intake/protocol.py against aiosmtpd " + aiosmtpd.__version__

# Methods: name -> (coroutine?, parameter names after self, what protocol.py does with it)
METHODS = {
    "_getaddr": (False, ["arg"], "overridden with a fast path; falls back to super()._getaddr"),
    "_getparams": (False, ["params"], "overridden to refuse a parameter given twice: its None makes "
                   "smtp_MAIL/smtp_RCPT push their 501 at once, which push names it in"),
    "_handle_client": (True, [], "overridden to greet 421 when draining; then super()._handle_client"),
    "_set_post_data_state": (False, [], "called after our own DATA reading"),
    "_call_handler_hook": (True, ["command", "args"], "called with 'DATA' to run the handler"),
    "_reset_timeout": (False, ["duration"], "re-armed with the DATA timeout while reading DATA, longer while processing it"),
    "_timeout_cb": (False, [], "overridden to say 421 4.4.2 first; then super()._timeout_cb closes"),
    "_syntax_available": (False, ["method"], "our smtp_HELP (214) lists the commands it says are available"),
    "_cb_client_connected": (False, ["reader", "writer"],
                             "overridden to wrap the reader's readuntil: how each command line ended"),
}
# Attributes set on a live session: name -> (type, what protocol.py does with it)
ATTRIBUTES = {
    "_smtp_methods": (dict, "replaced by _GuardedMethods; SMTP._handle_client and smtp_HELP call .get"),
    "_reader": (asyncio.StreamReader, "DATA is read from it in bulk; the rest is fed back"),
    "_writer": (asyncio.StreamWriter, "the 421 to idle sessions is written to it"),
    "_handler_coroutine": (asyncio.Task, "its end closes a socket left open (EOF before greeting)"),
}
# Globals of aiosmtpd.smtp that speedups.py replaces to speed up SMTP.__init__
MODULE_GLOBALS = {
    "inspect": ("inspect.getmembers(", "inspect.signature("),
    "dir": ("dir(",),
}
# ... and the one that SMTP._handle_client calls for every command line
HANDLE_CLIENT_GLOBALS = {
    "sanitized_log": ("sanitized_log(log.debug,", "sanitized_log(log.info,"),
}


def _fail(name: str, problem: str, use: str) -> None:
    pytest.fail(f"aiosmtpd {name}: {problem}; mailrouter relies on it ({use}): {HINT}", pytrace=False)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_private_methods_still_exist_with_their_signature(name: str) -> None:
    """Each private SMTP method protocol.py overrides or calls exists, with the same kind
    (coroutine or not) and the same parameters."""
    is_coro, params, use = METHODS[name]
    member = getattr(SMTP, name, None)
    if member is None or not callable(member):
        _fail(f"SMTP.{name}", "is gone", use)
    if inspect.iscoroutinefunction(member) != is_coro:
        _fail(f"SMTP.{name}", f"is {'no longer' if is_coro else 'now'} a coroutine function", use)
    found = list(inspect.signature(member).parameters)[1:]
    if found != params:
        _fail(f"SMTP.{name}", f"takes ({', '.join(found)}), not ({', '.join(params)})", use)


def test_private_attributes_exist_on_a_live_session() -> None:
    """A real session (aiosmtpd's SMTP served on 127.0.0.1, a real client connected) has the
    private attributes protocol.py reads and replaces, of the expected types."""
    sessions: list[SMTP] = []

    class Handler:
        pass

    async def main() -> None:
        loop = asyncio.get_running_loop()

        def factory() -> SMTP:
            sessions.append(SMTP(Handler(), loop=loop))
            return sessions[-1]
        server = await loop.create_server(factory, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert (await reader.readline()).startswith(b"220")
        writer.write(b"QUIT\r\n")
        await writer.drain()
        await reader.read()
        writer.close()
        server.close()
        await server.wait_closed()

    asyncio.run(main())
    session = sessions[0]
    for name, (kind, use) in ATTRIBUTES.items():
        if not hasattr(session, name):
            _fail(f"SMTP().{name}", "is not set on a session", use)
        if not isinstance(getattr(session, name), kind):
            _fail(f"SMTP().{name}", f"is a {type(getattr(session, name)).__name__}, not {kind.__name__}",
                  use)
    if "EHLO" not in session._smtp_methods:
        _fail("SMTP()._smtp_methods", "no longer maps command names to methods", ATTRIBUTES["_smtp_methods"][1])


def test_the_patched_module_globals_are_still_what_smtp_init_looks_up() -> None:
    """speedups.py replaces aiosmtpd.smtp's `inspect` and `dir` with cached versions; that only
    works while SMTP.__init__ calls them through the module's globals. A session built now
    must have gone through our caches."""
    source = inspect.getsource(SMTP.__init__)
    for name, calls in MODULE_GLOBALS.items():
        for call in calls:
            if call not in source:
                _fail(f"aiosmtpd.smtp.{name}", f"SMTP.__init__ no longer calls {call}...)",
                      "speedups.py replaces the module global to cache per class")
    assert isinstance(aiosmtpd.smtp.inspect, speedups._CachedInspect)
    assert aiosmtpd.smtp.dir is speedups._cached_dir    # type: ignore[attr-defined]

    class Probe(SMTP):
        pass

    Probe(object(), loop=asyncio.new_event_loop())
    if Probe not in speedups._DIR_NAMES:
        _fail("aiosmtpd.smtp.dir", "SMTP.__init__ did not call the module's dir()",
              "protocol.py caches the smtp_/handle_ names per class")
    if Probe not in aiosmtpd.smtp.inspect._names:   # type: ignore[attr-defined]
        _fail("aiosmtpd.smtp.inspect", "SMTP.__init__ did not call the module's inspect.getmembers()",
              "protocol.py caches the auth_ names per class")


def test_the_command_log_still_goes_through_sanitized_log() -> None:
    """speedups.py replaces aiosmtpd.smtp's `sanitized_log` with one that asks the logger's
    level first; that only helps while _handle_client calls it through the module's globals
    with a logger's bound debug/info method."""
    source = inspect.getsource(SMTP._handle_client)
    for call in HANDLE_CLIENT_GLOBALS["sanitized_log"]:
        if call not in source:
            _fail("aiosmtpd.smtp.sanitized_log", f"_handle_client no longer calls {call}...)",
                  "protocol.py skips it when the level is off")
    assert aiosmtpd.smtp.sanitized_log is speedups._sanitized_log


def test_the_command_log_is_written_as_before_when_its_level_is_on(
        caplog: pytest.LogCaptureFixture) -> None:
    """With mail.log at DEBUG the command lines are logged, an AUTH secret masked by aiosmtpd's
    sanitize; at WARNING (the daemon's setting) nothing is."""
    log = logging.getLogger("mail.log")
    line = b"AUTH PLAIN c2VjcmV0\r\n"
    with caplog.at_level(logging.WARNING, logger="mail.log"):
        speedups._sanitized_log(log.debug, "_handle_client readline: %r", line)
        speedups._sanitized_log(log.info, "%r >> %r", ("127.0.0.1", 1), line)
    assert caplog.records == []
    with caplog.at_level(logging.DEBUG, logger="mail.log"):
        speedups._sanitized_log(log.debug, "_handle_client readline: %r", line)
        speedups._sanitized_log(log.info, "%r >> %r", ("127.0.0.1", 1), line)
    assert [r.getMessage() for r in caplog.records] == [
        "_handle_client readline: b'AUTH PLAIN ********\\r\\n'",
        "('127.0.0.1', 1) >> b'AUTH PLAIN ********\\r\\n'"]


def test_help_still_reads_the_syntax_attributes_the_command_wrapper_copies() -> None:
    """protocol.py wraps each command and copies aiosmtpd's @syntax attributes onto the
    wrapper so HELP keeps working: they must still be there under those names."""
    for attr in ("__smtp_syntax__", "__smtp_syntax_extended__", "__smtp_syntax_when__"):
        if not hasattr(SMTP.smtp_MAIL, attr):
            _fail(f"SMTP.smtp_MAIL.{attr}", "is gone", "Protocol._guarded copies it for HELP")
    if "__smtp_syntax__" not in inspect.getsource(SMTP.smtp_HELP):
        _fail("SMTP.smtp_HELP", "no longer reads __smtp_syntax__", "Protocol._guarded copies it for HELP")


def test_the_goodbye_to_unknown_commands_is_still_the_text_push_replaces() -> None:
    """SMTP._handle_client answers the BOGUS_LIMIT-th unknown command with a 502 and closes;
    Protocol.push recognises that reply by its text and says 421 4.7.0 instead."""
    source = inspect.getsource(SMTP._handle_client)
    if protocol.BOGUS_GOODBYE not in source or not isinstance(aiosmtpd.smtp.BOGUS_LIMIT, int):
        _fail("SMTP._handle_client", f"no longer sends {protocol.BOGUS_GOODBYE!r}",
              "Protocol.push turns it into 421 4.7.0")


def test_the_bad_body_reply_is_still_the_text_push_replaces() -> None:
    """SMTP.smtp_MAIL answers BODY= other than 7BIT, 8BITMIME with a 501 of this text;
    Protocol.push recognises it and says 555 5.5.4 (RFC 5321 4.1.1.11, as Postfix)."""
    if repr(protocol._AIOSMTPD_BAD_BODY[:25])[1:-1] not in inspect.getsource(SMTP.smtp_MAIL) \
            or protocol._AIOSMTPD_BAD_BODY[25:] not in inspect.getsource(SMTP.smtp_MAIL):
        _fail("SMTP.smtp_MAIL", f"no longer sends {protocol._AIOSMTPD_BAD_BODY!r}",
              "Protocol.push turns it into 555 5.5.4")


def test_the_goodbye_past_a_call_limit_is_still_the_text_push_replaces() -> None:
    """SMTP._handle_client answers a command past its call limit with '421 4.7.0 VERB sent
    too many times' and closes; Protocol.push recognises that text and hangs up instead."""
    source = inspect.getsource(SMTP._handle_client)
    if 'f"421 4.7.0 {command} sent too many times"' not in source \
            or not protocol.OVER_LIMIT.match("421 4.7.0 NOOP sent too many times"):
        _fail("SMTP._handle_client", "no longer sends '421 4.7.0 {command} sent too many times'",
              "Protocol.push hangs up on it")


def test_every_private_aiosmtpd_name_protocol_py_uses_is_checked_here() -> None:
    """The private names protocol.py reaches through self/super() that aiosmtpd's SMTP has are
    all in this file's lists, so a new use cannot slip past the version bound unchecked."""
    text = PROTOCOL_PY.read_text(encoding="utf-8")
    used = set(re.findall(r"(?:self|super\(\))\.(_[a-z]\w*)", text))
    smtp_source = inspect.getsource(aiosmtpd.smtp)
    theirs = {n for n in used if re.search(rf"(?:def |self\.){n}\b", smtp_source)}
    checked = set(METHODS) | set(ATTRIBUTES)
    missing = sorted(theirs - checked)
    assert not missing, (f"intake/protocol.py uses aiosmtpd's private {', '.join(missing)}: add them to "
                         f"tests/test_aiosmtpd_contract.py ({HINT})")
    patched = set(re.findall(r"_aiosmtpd_smtp\.(\w+)\s*=",
                             text + SPEEDUPS_PY.read_text(encoding="utf-8")))
    assert patched == set(MODULE_GLOBALS) | set(HANDLE_CLIENT_GLOBALS), (f"intake/ patches aiosmtpd.smtp.{patched}: "
                                            f"list them in MODULE_GLOBALS or HANDLE_CLIENT_GLOBALS ({HINT})")



def test_command_lines_are_read_with_readuntil_to_lf() -> None:
    """Protocol._cb_client_connected wraps the reader's readuntil to see how each command line
    ended (a bare LF is refused): SMTP._handle_client must still read them that way, and
    strip the line end itself."""
    source = inspect.getsource(SMTP._handle_client)
    if "self._reader.readuntil()" not in source or "rstrip(b'\\r\\n')" not in source:
        _fail("SMTP._handle_client", "no longer reads command lines with readuntil() up to LF",
              "Protocol._cb_client_connected notes a line not ended by CRLF")
