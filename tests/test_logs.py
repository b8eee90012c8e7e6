"""Log lines a mail admin can grep and a collector can parse: one line per message with
every recipient and Postfix's queue id, kv or JSON by config, exceptions on one line with
a reference, syslog priorities when stderr is the journal. Real daemon processes."""

from __future__ import annotations

import io
import json
import logging
import os
import smtplib
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from mailrouter.config import load_config
from mailrouter.errors import ConfigErrors
from mailrouter.logs import Formatter, parse_message, upstream_id

POSTFIX_RECEIVED = (b"Received: from client.outside.test (client.outside.test [192.0.2.7])\r\n"
                    b"\tby mx.example.com (Postfix) with ESMTP id 4XyzAbC12q\r\n"
                    b"\tfor <sales@example.com>; Fri, 4 Dec 2026 10:00:00 +0000 (UTC)\r\n")
MESSAGE = POSTFIX_RECEIVED + (b"Received: from older.example (older [192.0.2.1]) by relay "
                              b"with SMTP id OLDER1; Fri, 4 Dec 2026 09:59:00 +0000\r\n"
                              b"Message-ID: <log1@outside.test>\r\nSubject: hi\r\n\r\nbody\r\n")


def _send(port: int) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.ehlo()
        s.mail("client@outside.test")
        assert s.rcpt("sales@example.com")[0] == 250
        assert s.rcpt("support@example.com")[0] == 250
        assert s.data(MESSAGE)[0] == 250


def _lines(proc, needle: str, count: int = 1, timeout: float = 20) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        found = [ln for ln in proc.log.read_text(encoding="utf-8").splitlines() if needle in ln]
        if len(found) >= count or time.monotonic() > deadline:
            return found


def test_upstream_id_is_the_top_received_only():
    """The id of the first Received header (Postfix's), never an older hop's; None without."""
    assert upstream_id(MESSAGE) == "4XyzAbC12q"
    assert upstream_id(b"Subject: x\r\n" + POSTFIX_RECEIVED + b"\r\n") is None
    assert upstream_id(b"Received: from a by b; Fri, 4 Dec 2026 10:00:00 +0000\r\n\r\n") is None


def test_kv_one_line_per_message_with_every_recipient(daemon_process):
    """kv: ONE event=message line for a two-recipient message, carrying Postfix's queue id
    and each recipient's decision and reply (there was one line per recipient, no id)."""
    proc = daemon_process()
    _send(proc.smtp)
    (line,) = _lines(proc, "event=message")
    assert "upstream_id=4XyzAbC12q " in line and "qid=" in line
    for n, rcpt in enumerate(("sales@example.com", "support@example.com")):
        assert f"rcpt.{n}={rcpt} action.{n}=deliver" in line
        assert f'reply.{n}="250 ' in line
    assert "mailbox.0=sales" in line and "mailbox.1=support" in line
    assert "Subject" not in line and "hi" not in line.split()
    # alembic's seven "setup plugin ..." lines at every start were noise
    assert "setup plugin" not in proc.log.read_text(encoding="utf-8")


def test_json_every_line_is_an_object(daemon_process):
    """log_format: json: every line of the daemon's log parses as JSON; the message line has
    the recipients as a list and the fields of the message's key=value text decoded."""
    proc = daemon_process(extra="log_format: json\n")
    _send(proc.smtp)
    _lines(proc, '"event": "message"')
    objs = [json.loads(ln) for ln in proc.log.read_text(encoding="utf-8").splitlines()]
    (msg,) = [o for o in objs if o.get("event") == "message"]
    assert msg["upstream_id"] == "4XyzAbC12q" and msg["level"] == "info"
    assert [(r["rcpt"], r["mailbox"], r["reply"][:3]) for r in msg["rcpts"]] == [
        ("sales@example.com", "sales", "250"), ("support@example.com", "support", "250")]
    started = [o for o in objs if o.get("event") == "started"]
    assert started and started[0]["smtp"] == f"127.0.0.1:{proc.smtp}"


def test_exception_is_one_line_with_a_reference_and_its_traceback_line():
    """log.exception: the record's line ends with error_ref and the exception; the traceback
    is ONE more line with the same reference; no line breaks inside either."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(Formatter("kv"))
    logger = logging.getLogger("mailrouter.test_logs")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        try:
            {}["missing\nkey"]
        except KeyError:
            logger.exception("event=process_crashed peer=%s", "127.0.0.1:1")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    first, second = out.getvalue().splitlines()
    ref = first.split("error_ref=")[1].split()[0]
    assert "event=process_crashed peer=127.0.0.1:1 error_ref=" in first
    assert 'exc="KeyError: ' in first
    assert f"event=traceback error_ref={ref} traceback=" in second
    assert "Traceback (most recent call last)" in second and "\\n" in second


def test_json_exception_fields():
    """JSON: the exception is in the object (error_ref, exc, traceback), one line."""
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        import sys
        record = logging.LogRecord("mailrouter", logging.ERROR, __file__, 1,
                                   "event=x reply=%r", ("451 4.3.0 later",), sys.exc_info())
    (line,) = Formatter("json").format(record).splitlines()
    obj = json.loads(line)
    assert obj["event"] == "x" and obj["reply"] == "451 4.3.0 later"
    assert obj["exc"] == "ValueError: bad\nthing" and len(obj["error_ref"]) == 8
    assert obj["traceback"].startswith("Traceback")


def test_parse_message_keeps_text_and_decodes_reprs():
    """A message mixing text and pairs: the text as msg, reprs decoded, quotes kept inside."""
    assert parse_message("reload failed: event=x error='it\\'s' b=\"q r\" c=plain") == {
        "msg": "reload failed:", "event": "x", "error": "it's", "b": "q r", "c": "plain"}
    assert parse_message("routing files have errors; not starting") == {
        "msg": "routing files have errors; not starting"}
    assert parse_message("event=a reply='250 2.0.0 ok' n=3") == {
        "event": "a", "reply": "250 2.0.0 ok", "n": "3"}


def test_syslog_priorities_when_stderr_is_the_journal(daemon_process, tmp_path, monkeypatch):
    """JOURNAL_STREAM naming the daemon's stderr: every line starts <N> with the record's
    priority (<6> info, <4> warning); sd-daemon(3)'s journald prefix."""
    log = tmp_path / "daemon.log"
    log.touch()
    st = os.stat(log)
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    proc = daemon_process()
    _send(proc.smtp)
    (line,) = _lines(proc, "event=message")
    assert line.startswith("<6>")
    lines = [ln for ln in proc.log.read_text(encoding="utf-8").splitlines() if ln]
    assert all(ln[:3] in ("<6>", "<4>", "<3>", "<7>") for ln in lines), lines[:3]


def test_no_priority_prefix_when_journal_stream_is_another_file(daemon_process, monkeypatch):
    """JOURNAL_STREAM inherited from a shell but stderr redirected elsewhere: no prefix."""
    monkeypatch.setenv("JOURNAL_STREAM", "1:2")
    proc = daemon_process()
    _send(proc.smtp)
    (line,) = _lines(proc, "event=message")
    assert not line.startswith("<")


def test_log_format_is_checked(tmp_path: Path):
    """log_format other than kv or json is a config error naming the choice."""
    cfg = tmp_path / "config.yaml"
    cfg.write_text("log_format: xml\n", encoding="utf-8")
    with pytest.raises(ConfigErrors, match="'log_format' must be kv or json, not 'xml'"):
        load_config(cfg)


@pytest.mark.parametrize("fmt", ["kv", "json"])
def test_a_clients_control_bytes_never_reach_the_log_raw(daemon_process, fmt):
    """aiosmtpd logs an unknown command as the client sent it ("unrecognised: ..."): a NUL,
    an ESC (a terminal escape) or DEL in it is written escaped, so the log stays one clean
    line per record; in JSON the line still parses to the same text."""
    proc, lines = _unrecognised(daemon_process, fmt, b"MA\x00IL\x1b[2J\x7fX")
    assert lines, proc.log.read_text(encoding="utf-8")
    raw = proc.log.read_bytes()
    for bad in (b"\x00", b"\x1b", b"\x7f"):
        assert bad not in raw
    if fmt == "json":
        assert "MA\x00IL\x1b[2J\x7fX" in json.loads(lines[0])["msg"]
    else:
        assert "MA\\u0000IL\\u001b[2J\\u007fX" in lines[0]


def _unrecognised(daemon_process: Any, fmt: str, verb: bytes) -> tuple[Any, list[str]]:
    """A daemon logging in `fmt`, sent the command line `verb` after EHLO: (the daemon,
    its log lines saying 'unrecognised')."""
    proc = daemon_process(extra=f"log_format: {fmt}\nworkers: 1\n")
    with socket.create_connection(("127.0.0.1", proc.smtp), timeout=10) as s:
        s.recv(100)
        s.sendall(b"EHLO x\r\n")
        s.recv(1000)
        s.sendall(verb + b"\r\n")
        s.recv(1000)
        s.sendall(b"QUIT\r\n")
        while s.recv(1000):
            pass
    return proc, _lines(proc, "unrecognised")


@pytest.mark.parametrize("fmt", ["kv", "json"])
def test_a_clients_tab_cannot_make_fields_of_its_own(daemon_process, fmt):
    """aiosmtpd logs an unknown verb as sent, and a verb may hold a TAB (only a space ends
    it): "X<TAB>EVENT=MESSAGE<TAB>QID=FORGED" became fields EVENT and QID in JSON, and a raw
    TAB, a field separator to logfmt readers, in kv. The TAB is written escaped, and a pair
    counts only at the start of the message or after a space."""
    proc, lines = _unrecognised(daemon_process, fmt, b"X\tEVENT=MESSAGE\tQID=FORGED")
    assert lines, proc.log.read_text(encoding="utf-8")
    assert b"\t" not in proc.log.read_bytes()
    if fmt == "json":
        obj = json.loads(lines[0])
        assert "EVENT" not in obj and "QID" not in obj, obj
        assert obj["msg"].endswith("unrecognised: X\tEVENT=MESSAGE\tQID=FORGED"), obj
    else:
        assert lines[0].endswith("unrecognised: X\\u0009EVENT=MESSAGE\\u0009QID=FORGED")
