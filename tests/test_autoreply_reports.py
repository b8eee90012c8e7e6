"""Robots whose sign is in the body's structure or wording, and the people next to them.

Each robot was answered before: an old Hotmail complaint report (JMRP: multipart/mixed, not
multipart/report), an ARF part inside another multipart, and an MTA's bounce whose subject is
only "Delivery Failure". The bytes are cut from real samples, named in each row: sisimai
set-of-emails (BSD 2-Clause, maildir/bsd/), flufl.bounce 6.0.0 tests/data (Apache 2.0),
imap_tools tests/messages (Apache 2.0). As in test_autoreply_corpus.py, the envelope sender
is a forwarder's, so only the message itself can tell.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mailrouter.autoreply import Policy, reason_kind, verdict
from mailrouter.message import MessageView
from mailrouter.routing.facts import robot_of
from mailrouter.routing.responders import Responder

AT = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
MOVED = Responder("moved", None, "Auto: {subject}", timedelta(days=7), "en", (("en", "moved"),))
FORWARDER = "fwd@relay.example"


def raw(*lines: str) -> MessageView:
    return MessageView(("\r\n".join(lines) + "\r\n").encode())


def answer(v: MessageView, mail_from: str = FORWARDER) -> tuple[bool, str]:
    got = verdict(MOVED, v, mail_from, our_domains=frozenset({"example.com"}), policy=Policy(),
                  history=None, at=AT)
    return got.send, got.reason


ORIGINAL = ("X-HmXmrOriginalRecipient: kijitora@example.com",
            "X-Reporter-IP: 192.0.2.22",
            "Date: Thu, 29 Apr 2016 23:34:45 +0200",
            "To: kijitora@example.com",
            "From: Neko <sironeko@example.com>",
            "Subject: Nyaan",
            "Content-Type: text/plain; charset=\"utf-8\"",
            "Message-ID: <0000000000fffffffff0000000000000@example.com>",
            "",
            "Nyaan")

# sisimai arf-22: Hotmail's complaint format, the complained-of message returned whole
HOTMAIL_COMPLAINT = ("From: staff@hotmail.com",
                     "Subject:  complaint about message from 192.0.2.222",
                     "To: abuse-report@example.com",
                     "MIME-Version: 1.0 ",
                     'Content-Type: multipart/mixed; boundary="F0000EEE2-0000-2111-AAB0-000000000000"',
                     "Message-ID: <CAT0-NNE-000000000000000022@CAT0-RRR.example.org>",
                     "",
                     "--F0000EEE2-0000-2111-AAB0-000000000000",
                     "Content-Type: message/rfc822",
                     "Content-Disposition: inline",
                     "",
                     *ORIGINAL,
                     "",
                     "--F0000EEE2-0000-2111-AAB0-000000000000--")

# sisimai arf-01's parts (an AOL-style ARF) under a multipart/mixed, as a relay that wraps
# reports sends them: the feedback-report part is the sign, not the top type
WRAPPED_ARF = ("From: <arf-daemon@example.com>",
               "To: <abuse@example.jp>",
               "Subject: Abuse report",
               "MIME-Version: 1.0",
               'Content-Type: multipart/mixed; boundary="part1_13d.2e68ed54_boundary"',
               "",
               "--part1_13d.2e68ed54_boundary",
               "Content-Type: text/plain; charset=\"US-ASCII\"",
               "",
               "This is an email abuse report for an email message received from IP"
               " 192.0.2.1 on Thu, 29 Apr 2010 00:00:00 +0900.",
               "",
               "--part1_13d.2e68ed54_boundary",
               "Content-Type: message/feedback-report",
               "",
               "Feedback-Type: abuse",
               "User-Agent: AOL SComp",
               "Version: 0.1",
               "Original-Mail-From: <shironeko@example.org>",
               "Original-Rcpt-To: <kijitora@example.jp>",
               "Source-IP: 192.0.2.1",
               "",
               "--part1_13d.2e68ed54_boundary--")

# flufl.bounce simple_36: Exchange 6.5, a non-null envelope sender, no robot header, no DSN
DELIVERY_FAILURE = ("X-MimeOLE: Produced By Microsoft Exchange V6.5",
                    "MIME-Version: 1.0",
                    'Content-Type: text/plain;\tcharset="iso-8859-1"',
                    "Content-Transfer-Encoding: quoted-printable",
                    "Subject: Delivery Failure",
                    "Message-ID: <633706571685360000@mx10.lttf.com>",
                    'From: <"System Administrator"@example.com>',
                    "To: <huntads-bounces@example.com>",
                    "",
                    "",
                    "Could not deliver message to the following recipient(s):",
                    "",
                    "Failed Recipient: userx@example.com",
                    "Reason: Remote host said: 550 unknown user <userx@example.com>",
                    "",
                    "   -- The header and top 20 lines of the message follows --")


@pytest.mark.parametrize("what, lines, reason, robot", [
    ("sisimai arf-22: Hotmail complaint, multipart/mixed", HOTMAIL_COMPLAINT,
     "a report (Hotmail complaint: X-HmXmrOriginalRecipient in the attached message)",
     "a report (Hotmail complaint: X-HmXmrOriginalRecipient in the attached message)"),
    ("an ARF feedback-report part under multipart/mixed", WRAPPED_ARF,
     "a report (complaint report: a message/feedback-report part)",
     "a report (complaint report: a message/feedback-report part)"),
    ("flufl.bounce simple_36: bare Delivery Failure", DELIVERY_FAILURE,
     "a bounce (Subject: Delivery Failure; body: following recipient)", None),
])
def test_reports_and_bounces_by_their_body_get_no_answer(what: str, lines: tuple[str, ...],
                                                          reason: str, robot: str | None) -> None:
    """Each was answered before; now it is not, the reason names the sign, and the complaint
    reports are robots to the rules too (robot_of); the bare subject is the verdict's only."""
    send, why = answer(raw(*lines))
    assert (send, why) == (False, reason)
    assert reason_kind(why) == "report"
    if robot is not None:
        assert robot_of(raw(*lines), FORWARDER) == (True, robot)


def test_the_hotmail_header_on_the_report_itself() -> None:
    """X-HmXmrOriginalRecipient in the report's own headers (as some relays copy it up)."""
    v = raw("From: staff@hotmail.com", "X-HmXmrOriginalRecipient: kijitora@example.com",
            "Subject: complaint about message from 192.0.2.222", "", "x")
    assert answer(v) == (False, "a report (Hotmail complaint: X-HmXmrOriginalRecipient)")


def _forwarded(*inner: str) -> tuple[str, ...]:
    """A person's message with `inner` attached as message/rfc822."""
    return ("From: Ann <ann@client.example>", "To: old-abuse@example.com",
            "Subject: Fwd: complaint about message from 192.0.2.222", "MIME-Version: 1.0",
            'Content-Type: multipart/mixed; boundary="outer"', "",
            "--outer", "Content-Type: text/plain; charset=utf-8", "",
            "Why did Hotmail send us this? Delivery failure: 550 5.7.1 on our side too.", "",
            "--outer", "Content-Type: message/rfc822", "", *inner, "", "--outer--")


PEOPLE = [
    ("a person forwarding the Hotmail complaint as an attachment",
     _forwarded(*HOTMAIL_COMPLAINT)),
    ("a person forwarding the wrapped ARF as an attachment", _forwarded(*WRAPPED_ARF)),
    ("a customer's 'Delivery failure' with a confidentiality footer",
     ("From: Ann <ann@client.example>", "To: old-sales@example.com", "Subject: Delivery failure",
      "Content-Type: text/plain; charset=utf-8", "",
      "Order 12 was not delivered to the address below. Please send it again.",
      "NOTICE: If you are not the intended recipient, please notify the sender.")),
    ("a customer's 'Delivery status' asking about 5 parcels",
     ("From: Ann <ann@client.example>", "To: old-sales@example.com", "Subject: Delivery status",
      "Content-Type: text/plain; charset=utf-8", "",
      "Where are the 5 parcels (order 4.2.1)? The courier said 550 km away.")),
    ("imap_tools attachment_2_base64: a person's Yandex mail (X-Yandex-*, Yamail)",
     ("X-Yandex-Internal: 1", "X-Yandex-Front: mxback2g.mail.yandex.net",
      "X-Yandex-TimeMark: 1556695229.976", "X-Yandex-Spam: 1", "X-Yandex-Sender-Uid: 52494202",
      "From: =?utf-8?B?0JrQsNGD0LrQuNC9INCS0LvQsNC00LjQvNC40YA=?= <kaukinvk@yandex.ru>",
      "To: old-sales@example.com", "Subject: eml attachments ",
      "X-Mailer: Yamail [ http://yandex.ru ] 5.0", "Content-Type: text/plain; charset=utf-8",
      "Return-Path: kaukinvk@yandex.ru", "X-Yandex-Forward: d910e166fb8fe03380632bd988c8b67f",
      "", "Hi")),
]


@pytest.mark.parametrize("what, lines", PEOPLE, ids=[p[0] for p in PEOPLE])
def test_people_next_to_these_robots_are_answered(what: str, lines: tuple[str, ...]) -> None:
    """A forwarded report is a person's message; MTA words in a person's text are not an MTA's;
    Yandex's trace headers are on every message it carries, a person's too."""
    v = raw(*lines)
    assert answer(v, v.from_addr) == (True, "")
    assert robot_of(raw(*lines), v.from_addr) == (False, "")
