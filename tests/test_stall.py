"""Rules that cannot stall the daemon: RE2 patterns, decisions off the event loop, process_timeout.

Issue 9: `subject: {regex: '(a+)+$'}` held a worker for 87 s on a 31-byte subject, and
a 21 MB message stalled every session of its worker while it was decided. These tests
run the real daemon on loopback with real clients; they assert on what the clients
get and in which order, never on how long anything took.
"""

from __future__ import annotations

import asyncio
import shutil
import smtplib
import subprocess
import sys
from pathlib import Path

import aiosmtplib
import pytest

from mailrouter.pipeline import DECIDE, INLINE_BELOW
from tests.support.daemon import RULES, maildir_files, write_config

BIG = 20 * 1024 * 1024


def rules_dir(tmp_path: Path, rules: str) -> tuple[str, ...]:
    """The shipped address book plus one rules file: the routing globs of a test config."""
    d = tmp_path / "routing"
    d.mkdir(exist_ok=True)
    shutil.copy(RULES / "company.yaml", d / "company.yaml")
    (d / "stall.yaml").write_text(rules, encoding="utf-8")
    return (str(d / "*.yaml"),)


def subject_of(text: str) -> str:
    """A Subject header of any length in lines under 998 bytes: RFC 2047 words that decode
    back to `text` with nothing between them (RFC 2047 section 6.2)."""
    words = [f"=?us-ascii?Q?{text[i:i + 60]}?=" for i in range(0, len(text), 60)]
    return "\r\n ".join(words)


def message(subject: str, body: str = "Just a test.\r\n", to: str = "sales@example.com") -> bytes:
    return (f"From: Client <c@outside.test>\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\n\r\n{body}").encode()


def body_rules(n: int) -> str:
    """n body regexes that all match, only at the very end of a big message's body, and all
    run (`continue: true`): each scans the whole body, so the rule index's one-pass RE2 Set
    cannot answer for them and a 20 MB decision stays slow whatever the machine."""
    return "rules:\n" + "".join(
        f"  - {{name: b{i}, when: {{body: {{regex: '[0-9]zq{i}x|{TAIL}'}}}}, then: {{tags: [b{i}]}},"
        f" continue: true}}\n" for i in range(n))


TAIL = "zq-tail"
BODY_RULES = 30     # 30 full scans of 20 MB: about a second of CPU on an idle machine


def big_message() -> bytes:
    line = "Оплата по счёту, строка тела письма, ничего особенного 0123456789\r\n"
    return message("Big one", line * (BIG // len(line.encode())) + TAIL + "\r\n")


def test_catastrophic_regex_is_linear_and_a_long_subject_gets_250(tmp_path: Path, daemon_process):
    """(a+)+$ loads (RE2 takes it, in linear time): a 10,000-character aaaa…! subject is
    decided and answered 250, and an all-a subject matches the rule."""
    routing = rules_dir(tmp_path, "rules:\n  - name: aaa\n    when: {subject: {regex: '(a+)+$'}}\n"
                                  "    then: {folder: Aaa}\n")
    d = daemon_process(routing=routing[0])
    # A separate process and a client with its own timeout: under Python's re this hangs
    # the daemon, and the client fails on its socket timeout instead of waiting forever.
    for subject in ("a" * 10_000 + "!", "a" * 10_000):
        with smtplib.SMTP("127.0.0.1", d.smtp, timeout=120) as s:
            s.ehlo()
            s.mail("c@outside.test")
            s.rcpt("sales@example.com")
            code, text = s.data(message(subject_of(subject)))
            assert (code, text[:5]) == (250, b"2.0.0")
    mail = tmp_path / "var" / "mail" / "sales"
    assert len(maildir_files(mail / ".Aaa")) == 1            # the one without '!'
    assert len(maildir_files(mail)) == 2


def test_check_refuses_a_backreference_with_file_line_and_why(tmp_path: Path):
    """`mailrouter check` refuses (a)\\1 with file:line:column, the position and why."""
    routing = rules_dir(tmp_path, "rules:\n  - name: twice\n    when: {subject: {regex: '(a)\\1'}}\n"
                                  "    then: {folder: X}\n")
    cfg = write_config(tmp_path / "config.yaml", 1, 2, 3, routing=routing[0])
    out = subprocess.run([sys.executable, "-m", "mailrouter.cli", "check", "-c", str(cfg)],
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 1
    rules = tmp_path / "routing" / "stall.yaml"
    assert (f"{rules}:3:29: rule 'twice': bad regex '(a)\\\\1': RE2 has no backreferences at "
            "position 3; write the repeated text out, or test each part in its own condition "
            "under 'all:'; see rules/README.md") in out.stderr, out.stderr


@pytest.mark.asyncio
async def test_small_mail_is_answered_while_a_big_one_is_being_decided(make_app, tmp_path: Path):
    """While a 20 MB message is decided (100 body regexes over its body), small messages on
    other sessions of the same worker get 250, before the big one is answered."""
    app = await make_app(routing=rules_dir(tmp_path, body_rules(BODY_RULES)),
                         limits={"max_message_size": BIG + BIG // 2})
    port = app.bound["smtp"][1]
    big = asyncio.create_task(aiosmtplib.send(
        big_message(), hostname="127.0.0.1", port=port, sender="c@outside.test",
        recipients=["sales@example.com"], timeout=600))
    while not DECIDE.busy:                 # the big message has reached its decision
        assert not big.done(), "the big message was answered without being decided off the loop"
        await asyncio.sleep(0.01)
    for i in range(3):
        small = message(f"small {i}")
        assert len(small) < INLINE_BELOW
        errors, reply = await aiosmtplib.send(small, hostname="127.0.0.1", port=port,
                                              sender="c@outside.test",
                                              recipients=["sales@example.com"], timeout=600)
        assert errors == {} and reply.startswith("2.0.0")
        assert not big.done() and DECIDE.busy        # answered while the big one is decided
    errors, reply = await big
    assert errors == {} and reply.startswith("2.0.0")
    assert len(maildir_files(tmp_path / "var" / "mail" / "sales")) == 4


@pytest.mark.asyncio
async def test_process_timeout_answers_451_during_a_slow_decision_and_nothing_is_delivered(
        make_app, tmp_path: Path):
    """A decision that outlasts process_timeout: the client gets 451 4.3.0 while it still
    runs, and once it has finished no copy exists and nothing is recorded."""
    # 20 MB of Cyrillic body decoded and scanned cannot take 20 ms; the rule index (one RE2
    # Set per field) made 100 body rules fast enough that 0.5 s was sometimes not outlasted.
    app = await make_app(routing=rules_dir(tmp_path, body_rules(BODY_RULES)),
                         limits={"max_message_size": BIG + BIG // 2, "process_timeout": 0.02})
    with pytest.raises(aiosmtplib.SMTPDataError) as info:
        await aiosmtplib.send(big_message(), hostname="127.0.0.1", port=app.bound["smtp"][1],
                              sender="c@outside.test", recipients=["sales@example.com"],
                              timeout=600)
    assert (info.value.code, info.value.message[:5]) == (451, "4.3.0")
    assert DECIDE.busy, "the reply came only after the decision had finished"
    while DECIDE.busy:                     # the abandoned decision runs to its end...
        await asyncio.sleep(0.05)
    for _ in range(10):                    # ...and nothing acts on it afterwards
        await asyncio.sleep(0)
    assert maildir_files(tmp_path / "var" / "mail") == []
    assert await app.registry.count_messages() == 0
