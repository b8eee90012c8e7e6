"""MessageView against shapes found in other projects' test mail: what a mail reader shows.

Each case is a minimal sample built on the shape of a message from another project's test
corpus (named in the test's docstring with its licence); the bytes here are written anew.
"""

from __future__ import annotations

from mailrouter.message import MessageView

_INVITE = (b"From: TEST <test@example.com>\r\nSubject: Calendar invite\r\nMIME-Version: 1.0\r\n"
           b'Content-Type: multipart/mixed; boundary="outer"\r\n\r\n'
           b'--outer\r\nContent-Type: multipart/alternative; boundary="inner"\r\n\r\n'
           b"--inner\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
           b"<p>You are invited to a meeting.</p>\r\n"
           b"--inner\r\nContent-Type: text/calendar; charset=utf-8; method=REQUEST\r\n\r\n"
           b"BEGIN:VCALENDAR\r\nMETHOD:REQUEST\r\nEND:VCALENDAR\r\n"
           b"--inner--\r\n"
           b'--outer\r\nContent-Type: application/ics; name="invite.ics"\r\n'
           b'Content-Disposition: attachment; filename="invite.ics"\r\n\r\n'
           b"BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n--outer--\r\n")


def test_html_beside_a_calendar_is_the_body() -> None:
    """An invitation whose alternatives are HTML and text/calendar (rspamd's
    test/functional/messages/alt-html-calendar.eml, Apache-2.0): body_text was the
    VCALENDAR source, as every text/* part but HTML counted as text/plain. Other text is
    the body only when there is no plain or HTML text."""
    v = MessageView(_INVITE)
    assert v.body_text == "You are invited to a meeting."
    assert [a.filename for a in v.attachments] == ["invite.ics"]
    alone = (b"Subject: invite\r\nContent-Type: text/calendar; method=REQUEST\r\n\r\n"
             b"BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n")
    assert MessageView(alone).body_text == "BEGIN:VCALENDAR\nEND:VCALENDAR\n"
    plain = _INVITE.replace(b"text/html", b"text/plain").replace(b"<p>", b"").replace(b"</p>", b"")
    assert MessageView(plain).body_text == "You are invited to a meeting."
