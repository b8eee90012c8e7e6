"""The body is inspected and decoded a piece at a time (issue 15, memory per message).

`charsets.inspect_bytes` must reach exactly what `decode_bytes` reaches on the whole bytes
(charset, notes, defects), and `decode_pieces` must join to the same text; the view's
reports (defects, charset_notes, body_charset) must not hold the decoded body, and its body
text must be what it was when it was decoded at once.
"""

from __future__ import annotations

import gc
import tracemalloc

from hypothesis import given, settings
from hypothesis import strategies as st

from mailrouter import message as message_mod
from mailrouter.charsets import CYRILLIC_BODY_CANDIDATES, decode_bytes, decode_pieces, inspect_bytes
from mailrouter.message import MessageView

LINES = [
    "Счет на оплату\n".encode("koi8-r"), "Счёт N145 от 12.03\r\n".encode("cp1251"),
    "Привет, как дела?\n".encode("cp866"), "Žádost o fakturu č. 5\n".encode("cp1250"),
    "Grüße aus München\r\n".encode("cp1252"), "Zażółć gęślą jaźń\n".encode("iso8859-2"),
    "Ёлка и щит\n".encode("utf-8"), "plain ascii words\r\n".encode(), b"\xff\xfe broken\n",
    b"\xd0\n", b"\xa0\xe9 \xe8.\n", b"\r", "mañana señor\n".encode("cp1252"), "\ufffd\n".encode(),
]
LABELS = [None, "utf-8", "us-ascii", "iso-8859-1", "koi8-r", "windows-1251", "x-unknown", "cp1250"]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(LINES), min_size=1, max_size=40), st.sampled_from(LABELS),
       st.integers(1, 64))
def test_inspect_in_pieces_decides_as_the_whole(lines: list[bytes], label: str | None,
                                                size: int) -> None:
    data = b"<" + b"".join(lines) + b">"
    whole = decode_bytes(data, label, CYRILLIC_BODY_CANDIDATES)
    pieced = inspect_bytes(b"xx" + data + b"yy", label, CYRILLIC_BODY_CANDIDATES,
                           start=2, end=len(data) + 2, size=size)
    assert (pieced.charset, pieced.notes, pieced.defects) == (
        whole.charset, whole.notes, whole.defects)
    assert whole.charset is not None
    text = "".join(decode_pieces(b"xx" + data + b"yy", whole.charset, 2, len(data) + 2, size))
    assert text == whole.text


def _text_mail(body: bytes, charset: str = "utf-8") -> bytes:
    return (b"From: a@b.test\r\nTo: c@d.test\r\nSubject: big\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: text/plain; charset=" + charset.encode() + b"\r\n\r\n" + body)


def test_a_big_body_reads_as_it_did_decoded_at_once(monkeypatch) -> None:
    body = ("Счёт на оплату, строка текста\r\n".encode("cp1251") * 40
            + b"\xff plain\r\n" + b"tail\r")
    raw = _text_mail(body, "windows-1251")
    monkeypatch.setattr(message_mod, "PIECE_BYTES", 64)     # many pieces, small message
    pieced = MessageView(raw)
    seen = (pieced.defects, pieced.charset_notes, pieced.body_charset)
    monkeypatch.setattr(message_mod, "PIECE_BYTES", 1 << 30)
    whole = MessageView(raw)
    assert seen == (whole.defects, whole.charset_notes, whole.body_charset)
    assert "".join(pieced.body_pieces()) == pieced.body_text == whole.body_text
    assert whole.body_text == body.decode("cp1251").replace("\r\n", "\n").replace("\r", "\n")


def test_the_reports_do_not_hold_the_decoded_body() -> None:
    """Before: defects and charset_notes decoded the whole body (one more copy of it)."""
    size = 8 << 20
    raw = _text_mail("Ёлка и щит, строка текста.\r\n".encode() * (size // 46))
    gc.collect()
    tracemalloc.start()
    try:
        view = MessageView(raw)
        _ = view.defects, view.charset_notes, view.body_charset
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert view.body_charset == "utf-8" and view.defects == []
    assert peak < 0.2 * len(raw), peak / len(raw)


def test_body_pieces_hold_one_piece_at_a_time() -> None:
    raw = _text_mail(b"The quick brown fox jumps over the lazy dog.\r\n" * (200_000))
    view = MessageView(raw)
    _ = view.body_charset
    gc.collect()
    tracemalloc.start()
    try:
        count = sum(len(p) for p in view.body_pieces())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == len(view.body_text)
    assert peak < 0.2 * len(raw), peak / len(raw)


def test_an_html_body_fed_in_pieces_reads_as_at_once(monkeypatch) -> None:
    html = (b"<html><head><title>t</title><style>p{}</style></head><body>"
            + b"<p>caf&eacute; &amp; more</p>\r\n<div>line</div>\r\n" * 50 + b"</body></html>")
    raw = (b"From: a@b.test\r\nSubject: h\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
           + html)
    monkeypatch.setattr(message_mod, "PIECE_BYTES", 40)
    pieced = MessageView(raw).body_text
    monkeypatch.setattr(message_mod, "PIECE_BYTES", 1 << 30)
    assert pieced == MessageView(raw).body_text and "café & more" in pieced


BODY_LINES = ["first line\r\n", "\r\n", "  \r\n", "Счёт\r\n", "form\x0cfeed\r\n", "sep\u2028arator\r\n",
              "no end", "x" * 50 + "\r\n", "\r"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(BODY_LINES), max_size=30), st.integers(4, 80), st.integers(0, 300))
def test_body_lines_and_head_are_those_of_the_whole_text(lines: list[str], size: int,
                                                         chars: int) -> None:
    raw = _text_mail("".join(lines).encode())
    old = message_mod.PIECE_BYTES
    message_mod.PIECE_BYTES = size
    try:
        pieced = MessageView(raw)
        got = list(pieced.body_lines()), pieced.body_head(chars)
        assert "body_text" not in pieced.__dict__
    finally:
        message_mod.PIECE_BYTES = old
    text = MessageView(raw).body_text
    assert got == (text.splitlines(), text[:chars])


def test_the_first_line_and_the_head_decode_no_more_than_they_need() -> None:
    """The control marker check split the whole body into lines (about 10x its size) and
    the autoreply language check decoded all of it to read 4,000 characters."""
    from mailrouter.autoreply import choose_language
    from mailrouter.control.service import _marked

    raw = _text_mail("\r\n[closed] please\r\n".encode() + "Обычная строка текста.\r\n".encode()
                     * ((8 << 20) // 40))
    view = MessageView(raw)
    _ = view.body_charset
    gc.collect()
    tracemalloc.start()
    try:
        marked = _marked(view, "[CLOSED]")
        language = choose_language(view, ["en", "ru"], "en")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert marked and language == "ru"
    assert peak < 0.2 * len(raw), peak / len(raw)
