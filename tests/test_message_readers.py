"""MessageView against shapes found in other projects' test mail: what a mail reader shows.

Each case is a minimal sample built on the shape of a message from another project's test
corpus (named in the test's docstring with its licence); the bytes here are written anew.
"""

from __future__ import annotations

import base64
import binascii

import pytest

from mailrouter.charsets import resolve_charset
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


@pytest.mark.parametrize(("label", "text"), [
    ("iso-8859-8-i", "מענה 'אני לא נמצא': Invoice 02722027"),
    ("csISO88598I", "מענה"), ("iso-8859-6-e", "مرحبا"), ("iso88592", "Příliš žluťoučký"),
    ("windows-31j", "請求書①"), ("ks_c_5601-1989", "청구서"),
])
def test_charset_labels_mail_readers_know(label: str, text: str) -> None:
    """Labels of the WHATWG Encoding Standard that Python's codec registry does not know.
    An out-of-office reply's Subject =?iso-8859-8-i?B?...?= (php-mime-mail-parser's
    tests/mails/issue149, MIT) was an 'unknown charset', guessed windows-1251: Hebrew read
    as Cyrillic letters ("отрд 'арй ма роца'")."""
    codec = resolve_charset(label)
    assert codec is not None
    word = base64.b64encode(text.encode(codec)).decode()
    v = MessageView(f"Subject: =?{label}?B?{word}?=\r\n\r\nx\r\n".encode())
    assert (v.subject, v.charset_notes, v.defects) == (text, [], [])


def test_iso_2022_jp_with_the_windows_rows() -> None:
    """ISO-2022-JP as Windows mailers write it: "ЖД№41 от 28.09.2016" with № from the NEC
    row (php-mime-mail-parser's tests/mails/issue116, MIT) read "ЖД\\ufffd41", Python's
    iso2022_jp knowing JIS X 0208 alone; mail readers (CP50220, WHATWG) read it. A body of
    more than a piece (read a piece at a time) keeps its double-byte mode across pieces."""
    v = MessageView(b"Subject: =?iso-2022-jp?B?GyRCJygnJS1iGyhCNDEgGyRCJ2AnZBsoQiAyOC4wOS4yMDE2?=\r\n"
                    b"Content-Type: text/plain; charset=iso-2022-jp\r\n\r\n"
                    + b"\x1b$B-!$N7o\x1b(B\r\n\x1b$B-\"\r\n-#\x1b(B\r\n" * 8000)
    assert v.subject == "ЖД№41 от 28.09.2016"
    assert v.body_text == "①の件\n②\n③\n" * 8000
    assert v.defects == [] and v.charset_notes == []
    assert MessageView(b"Subject: =?iso-2022-jp?B?" + base64.b64encode(b"\x1b$B$3\x1b(B\xff")
                       + b"?=\r\n\r\n").subject == "こ\ufffd"


@pytest.mark.parametrize(("label", "text", "codec"), [
    ("shift_jis", "①番 ㈱テスト", "cp932"), ("euc-kr", "똠방각하", "cp949"),
])
def test_labels_read_as_the_windows_superset(label: str, text: str, codec: str) -> None:
    """Shift_JIS and EUC-KR labels on windows-31j and windows-949 text (① and ㈱; Hangul
    syllables outside KS X 1001), as Outlook sends them and mail readers show them."""
    v = MessageView(f"Content-Type: text/plain; charset={label}\r\n\r\n".encode()
                    + text.encode(codec))
    assert (v.body_text, v.body_charset, v.defects) == (text, codec, [])


@pytest.mark.parametrize("eol", [b"\r\n", b"\n"])      # the byte walk, and the stdlib's parse
def test_boundary_folded_inside_its_quotes(eol: bytes) -> None:
    """RFC 2046's sample message folds its boundary inside the quotes
    (`boundary="simple<CRLF> boundary"`; james-mime4j's mimetools-testmsgs/multi-simple.msg,
    Apache-2.0): the compat32 parser kept the line break in the boundary, matched no
    boundary line, and read the whole message, MIME lines and all, as one text part."""
    raw = eol.join([
        b"From: Nathaniel Borenstein <nsb@example.com>", b"Subject: Sample message",
        b"MIME-Version: 1.0", b'Content-type: multipart/mixed; boundary="simple',
        b' boundary"', b"", b"This is the preamble.", b"--simple boundary", b"",
        b"This is implicitly typed plain ASCII text.", b"--simple boundary",
        b'Content-Type: application/pdf; name="a.pdf"', b"", b"%PDF-1.4",
        b"--simple boundary--", b""])
    v = MessageView(raw)
    assert v.body_text == "This is implicitly typed plain ASCII text."
    assert [(a.filename, a.content_type) for a in v.attachments] == [("a.pdf", "application/pdf")]
    assert v.defects == []


_INNER = (b"From: a@example.org\r\nSubject: =?utf-8?B?" + base64.b64encode("Счёт 145".encode())
          + b"?=\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=i\r\n\r\n"
          b"--i\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + "Оплатите.".encode()
          + b"\r\n--i\r\nContent-Type: application/pdf\r\n"
          b'Content-Disposition: attachment; filename="invoice.pdf"\r\n\r\n%PDF\r\n--i--\r\n')


def test_forwarded_message_in_base64_is_read() -> None:
    """A message/rfc822 part in base64, as SwiftMailer attaches an .eml
    (php-mime-mail-parser's tests/mails/issue274.eml, MIT; james-mime4j's
    testmsgs/base64encoded-rfc822message.msg, Apache-2.0): the parser read its base64 lines
    as a body, so the rules read base64 and the files inside were lost. Mail readers decode
    it; so does the view, and notes the encoding RFC 2046 does not allow there."""
    encoded = base64.encodebytes(_INNER).replace(b"\n", b"\r\n")
    part = b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n" + encoded
    raw = (b"Subject: Fwd\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=o\r\n\r\n"
           b"--o\r\nContent-Type: text/plain\r\n\r\nSee below.\r\n--o\r\n" + part + b"--o--\r\n")
    v = MessageView(raw)
    assert v.body_text == "See below."
    assert [a.filename for a in v.attachments] == ["Счёт 145.eml", "invoice.pdf"]
    assert v.defects == ["InvalidMultipartContentTransferEncodingDefect"]
    alone = MessageView(b"Subject: Fwd\r\nMIME-Version: 1.0\r\n" + part)
    assert alone.body_text == "Оплатите."
    assert [a.filename for a in alone.attachments] == ["invoice.pdf"]


def test_forwarded_message_in_base64_with_an_8bit_line_is_read() -> None:
    """The same, with a line of 8-bit text after the base64 (a list server's footer in
    Russian): the stdlib hands that line back as U+FFFD, whose ASCII encoding raised, and the
    whole body was lost (body_text '', defect "body: UnicodeEncodeError"), so neither the
    text nor the invoice inside reached the rules."""
    encoded = base64.encodebytes(_INNER).replace(b"\n", b"\r\n")
    part = (b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n" + encoded
            + "_____\r\nРассылка фирмы\r\n".encode())
    raw = (b"Subject: Fwd\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=o\r\n\r\n"
           b"--o\r\n" + part + b"--o--\r\n")
    v = MessageView(raw)
    assert v.body_text == "Оплатите."
    assert [a.filename for a in v.attachments] == ["Счёт 145.eml", "invoice.pdf"]
    assert v.defects == ["InvalidMultipartContentTransferEncodingDefect"]


def _uuencoded(name: bytes, data: bytes) -> bytes:
    lines = [binascii.b2a_uu(data[i:i + 45]) for i in range(0, len(data), 45)]
    return b"begin 644 " + name + b"\n" + b"".join(lines) + b"`\nend\n"


@pytest.mark.parametrize("eol", [b"\r\n", b"\n"])      # the byte walk, and the stdlib's parse
def test_uuencoded_files_in_the_text_are_attachments(eol: bytes) -> None:
    """Files uuencoded into the text (`uuencode scan.pdf | mail`, Outlook Express; horde/Mime's
    test/Unnamespaced/fixtures/uudecode.txt, LGPL-2.1, james-mime4j's uu-zeegee.msg,
    Apache-2.0): mail readers list them, the view listed nothing, so no attachment rule
    saw them. Named by the `begin` line (raw 8-bit names guessed as header bytes are)."""
    pdf = b"%PDF-1.4\n" + bytes(range(256)) * 3
    text = (b"Scan attached.\n\n" + _uuencoded("Счёт 145.pdf".encode("cp1251"), pdf)
            + b"\nbegin the meeting at 10\n" + _uuencoded(b"a.txt", b"hello"))
    single = b"Subject: scan\nContent-Type: text/plain\n\n" + text
    multi = (b'Subject: scan\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="b"\n\n'
             b"--b\nContent-Type: text/plain\n\n" + text + b"--b--\n")
    for raw in (single, multi):
        v = MessageView(raw.replace(b"\n", eol))
        assert [(a.filename, a.content_type, a.size) for a in v.attachments] == [
            ("Счёт 145.pdf", "application/pdf", len(pdf)), ("a.txt", "text/plain", 5)]
        assert "Attachment name: raw 8-bit guessed cp1251" in v.charset_notes
    plain = MessageView(b"Subject: x\r\n\r\nbegin 644 notes.txt, then end\r\nend\r\n")
    assert [a.filename for a in plain.attachments] == ["notes.txt, then end"]
    assert MessageView(b"Subject: x\r\n\r\nbegin 644 a.txt\r\nno end line\r\n").attachments == []
