"""The answer's form (RFC 3834 3): built, then parsed back from its bytes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import parsedate_to_datetime

import pytest

from mailrouter.autoreply import Policy, build_reply, verdict
from mailrouter.message import MessageView
from mailrouter.routing.responders import Responder

AT = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
MOVED = Responder("moved", None, "Auto: {subject}", timedelta(days=7), "en",
                  (("en", "{old} is no longer used; write to {new}. You wrote: {subject}"),
                   ("ru", "Адрес {old} больше не используется, пишите на {new}.")))


def incoming(subject: str = "Question", *headers: str, body: str = "Hello") -> MessageView:
    head = ["From: Ann <ann@client.example>", "Reply-To: team@client.example",
            "To: old-sales@example.com", f"Subject: {subject}",
            "Message-ID: <q1@client.example>", "Content-Type: text/plain; charset=utf-8",
            *headers]
    return MessageView(("\r\n".join(head) + "\r\n\r\n" + body + "\r\n").encode())


def reply(view: MessageView, to: str = "bounce-ann@client.example",
          responder: Responder = MOVED) -> tuple[bytes, EmailMessage]:
    raw = build_reply(responder, view, to=to, old="old-sales@example.com",
                      new="sales@example.com", hostname="mx.test", at=AT)
    parsed = message_from_bytes(raw, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return raw, parsed


def test_reply_headers() -> None:
    """To the envelope sender (not From or Reply-To), marked auto-replied, threaded."""
    raw, m = reply(incoming("Question", "References: <a@x.example> <b@x.example>"))
    assert m["To"] == "bounce-ann@client.example"
    assert m["From"] == "old-sales@example.com"
    assert m["Subject"] == "Auto: Question"
    assert m["Auto-Submitted"] == "auto-replied"
    assert m["X-Auto-Response-Suppress"] == "All"
    assert m["In-Reply-To"] == "<q1@client.example>"
    assert m["References"] == "<a@x.example> <b@x.example> <q1@client.example>"
    assert parsedate_to_datetime(m["Date"]) == AT
    assert m["Message-ID"].endswith("@mx.test>") and m["Message-ID"] != "<q1@client.example>"
    assert m["X-Mailrouter-Loop"].startswith("mx.test; generated=autoreply")
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")


def test_long_references_keep_the_thread_root() -> None:
    """An answer to a message deep in a long thread names the thread's root first (mail
    readers thread by it), then the newest 19 and the message itself; before, the root was
    cut off with the oldest."""
    chain = " ".join(f"<{i}@x.example>" for i in range(40))
    _, m = reply(incoming("Question", f"References: {chain}"))
    assert m["References"].split() == (["<0@x.example>"] + [f"<{i}@x.example>" for i in range(21, 40)]
                                       + ["<q1@client.example>"])


def test_references_from_in_reply_to_when_the_original_has_none() -> None:
    """RFC 5322 3.6.4: an original with In-Reply-To naming one message and no References
    (mailers that write only In-Reply-To) is answered with References: that message, then
    the original; before, only the original (the thread was cut at our answer). Two ids
    in In-Reply-To say nothing of the thread: only the original."""
    _, m = reply(incoming("Re: Question", "In-Reply-To: <p1@client.example>"))
    assert m["References"] == "<p1@client.example> <q1@client.example>"
    assert m["In-Reply-To"] == "<q1@client.example>"
    _, m = reply(incoming("Re: Question", "In-Reply-To: <p1@client.example> <p2@x.example>"))
    assert m["References"] == "<q1@client.example>"


def test_fresh_message_id_each_time() -> None:
    """Two answers never share a Message-ID."""
    assert reply(incoming())[1]["Message-ID"] != reply(incoming())[1]["Message-ID"]


def test_no_message_id_no_threading() -> None:
    """An incoming message without Message-ID gets an answer without In-Reply-To."""
    view = MessageView(b"From: a@client.example\r\nSubject: x\r\n\r\nhi\r\n")
    _, m = reply(view)
    assert m["In-Reply-To"] is None and m["References"] is None


def test_utf8_body_and_encoded_subject() -> None:
    """A Russian message gets the Russian body in UTF-8 and an RFC 2047 subject."""
    raw, m = reply(incoming("Вопрос по счёту", body="Здравствуйте"))
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert head.isascii() and b"=?utf-8?" in head.lower()
    assert m["Subject"] == "Auto: Вопрос по счёту"
    assert m["Content-Language"] == "ru"
    assert m.get_content_charset() == "utf-8"
    assert m.get_content().strip() == ("Адрес old-sales@example.com больше не используется, "
                                       "пишите на sales@example.com.")


def test_subject_in_the_answers_language() -> None:
    """With a subject per language, Russian mail gets the Russian one, other mail the default."""
    both = Responder("moved", None, "Auto: {subject}", timedelta(days=7), "en", MOVED.bodies,
                     subjects=(("en", "Auto: {subject}"), ("ru", "Автоответ: {subject}")))
    assert reply(incoming("Вопрос по счёту", body="Здравствуйте"), responder=both)[1][
        "Subject"] == "Автоответ: Вопрос по счёту"
    assert reply(incoming("Question"), responder=both)[1]["Subject"] == "Auto: Question"


def test_encoded_incoming_subject_is_decoded_into_the_answer() -> None:
    """A KOI8-R RFC 2047 subject is decoded, then re-encoded as UTF-8."""
    encoded = "=?koi8-r?B?" + __import__("base64").b64encode("Счёт".encode("koi8-r")).decode() + "?="
    _, m = reply(incoming(encoded))
    assert m["Subject"] == "Auto: Счёт"


@pytest.mark.parametrize("subject, expected", [
    ("Invoice\r\n\tquestion", "Auto: Invoice question"),       # folded before a tab
    ("Invoice\tquestion", "Auto: Invoice question"),             # a tab between words
])
def test_a_tab_or_line_end_in_the_subject_is_a_space(subject: str, expected: str) -> None:
    """A subject folded before a TAB (RFC 5322 2.2.3 unfolds it to "Invoice\tquestion";
    Outlook Express, Lotus Notes and many scripts fold so) was answered "Auto:
    Invoicequestion" (from the daemon too): the tab was cut as a control, not read as the
    space between two words. Nothing of it reaches the header either."""
    raw, m = reply(incoming(subject))
    assert m["Subject"] == expected
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert b"\t" not in head and b"\r\nquestion" not in head


def test_english_body_has_placeholders_filled() -> None:
    """Every placeholder is replaced; literal braces stay."""
    r = Responder("x", "info@example.com", "Re: {subject} {{auto}}", timedelta(days=1), "en",
                  (("en", "{sender} wrote to {old}"),))
    _, m = reply(incoming(), responder=r)
    assert m["From"] == "info@example.com"
    assert m["Subject"] == "Re: Question {auto}"
    assert m.get_content().strip() == "bounce-ann@client.example wrote to old-sales@example.com"


def test_long_subject_is_folded() -> None:
    """A long subject is folded to lines under 78 characters, and reads back whole."""
    long = "Вопрос " * 30
    raw, m = reply(incoming(long.strip()))
    assert all(len(line) <= 78 for line in raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n"))
    assert m["Subject"] == "Auto: " + long.strip()


@pytest.mark.parametrize("words", ["A very long subject ", "Очень длинная тема "])
def test_a_huge_subject_is_quoted_cut(words: str) -> None:
    """A subject of 200,000 characters (380 KB on one header line, taken by the daemon) was
    answered with 1.1 MB: the subject in the answer's Subject and again in its body, to a
    sender nobody verified. Quoted, it is cut to 300 characters (SUBJECT_QUOTE_MAX) ending
    in an ellipsis; a subject of 300 is quoted whole."""
    raw, m = reply(incoming(words * 10_000))
    assert len(raw) < 5_000, len(raw)
    assert m["Subject"].startswith("Auto: " + words * 3)
    assert m["Subject"].endswith("\u2026") and len(m["Subject"]) <= len("Auto: ") + 300
    if words.isascii():      # MOVED's English body quotes the subject
        body = m.get_content()
        assert words * 3 in body and len(body) < 500, len(body)
    whole = "x" * 300
    assert reply(incoming(whole))[1]["Subject"] == "Auto: " + whole


def test_non_ascii_recipient_uses_utf8_headers() -> None:
    """An SMTPUTF8 sender's answer carries its address as UTF-8 (RFC 6531)."""
    raw, m = reply(incoming(), to="анна@клиент.рф")
    assert m["To"] == "анна@клиент.рф"
    assert "анна@клиент.рф".encode() in raw


@pytest.mark.parametrize("subject", ["Question", "Вопрос"])
def test_our_answer_is_never_answered(subject: str) -> None:
    """Two responders answering each other: our answer, as incoming mail, is suppressed."""
    raw, _ = reply(incoming(subject))
    v = verdict(MOVED, MessageView(raw), "old-sales@other.example", our_domains=frozenset(),
                policy=Policy(), history=None, at=AT)
    assert not v.send and "mail we generated" in v.reason
