"""`contains` reads the word form alone, made from the body a piece at a time (issue 15).

The word form built from the body's pieces must be the one built from the whole text, a
word-form needle must match its UTF-8 form exactly as its text form, and an explanation
must quote the body as it did when the text was read whole.
"""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from mailrouter import message as message_mod
from mailrouter.message import MessageView
from mailrouter.routing.conditions import WordForms, contains_key, parse_condition
from mailrouter.routing.facts import Facts, words_of
from mailrouter.routing.normalize import normalize
from mailrouter.routing.patterns import utf8

AT = datetime(2026, 3, 2, 10, tzinfo=UTC)
LINES = ["Счёт на оплату N145\r\n", "СЧЕТ  на\tоплату\r\n", "e\u0301te\u0301 café\r\n", "ﬁle ①②\r\n",
         "don't-stop_me now!!\r\n", "\r\n", "   \r\n", "Ёлка\r\n", "ß STRASSE\r", "word\u200bjoin\r\n",
         "x" * 90 + "\r\n"]


def _view(body: str) -> MessageView:
    return MessageView(b"From: a@b.test\r\nSubject: s\r\nContent-Type: text/plain; charset=utf-8"
                       b"\r\n\r\n" + body.encode())


def _facts(view: MessageView) -> Facts:
    return Facts(view, "a@b.test", "sales@example.com", None, AT, {})


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(LINES), max_size=60), st.integers(8, 200))
def test_the_body_word_form_from_pieces_is_the_whole_one(lines: list[str], size: int) -> None:
    body = "".join(lines)
    old = message_mod.PIECE_BYTES
    message_mod.PIECE_BYTES = size
    try:
        pieced = _facts(_view(body))
        got = pieced.words_utf8("body"), pieced.tokens("body"), pieced.words("body")
        assert "body_text" not in pieced.view.__dict__          # never decoded whole
    finally:
        message_mod.PIECE_BYTES = old
    whole = _facts(_view(body))
    text = whole.view.body_text
    want = tuple(words_of(normalize(v)) for v in ((text,) if text else ()))
    assert got[2] == want
    assert got[0] == tuple(utf8(w) for w in want)
    assert got[1] == frozenset(t for w in want for t in w.split())


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["счет", "счета", "оплат", "оплату", "a", "ab", "ёж", "x_y", "2026"]),
                max_size=8),
       st.lists(st.sampled_from(["сче*", "оплат*", "a*", "ab", "еж*", "x_*", "счет"]), min_size=2,
                max_size=3))
def test_a_word_form_needle_matches_utf8_as_text(words: list[str], needle: list[str]) -> None:
    key = contains_key(normalize(" ".join(needle)))
    form = words_of(normalize(" ".join(words)))
    if isinstance(key, WordForms):
        assert key.found_in_utf8(utf8(form)) == key.found_in(form)
        assert key.found_in_utf8(bytearray(utf8(form))) == key.found_in(form)
    else:
        assert (utf8(key) in utf8(form)) == (key in form)


def test_contains_on_a_body_quotes_it_as_before_without_reading_it_whole() -> None:
    body = "Intro line\r\n" + "filler words here\r\n" * 30 + "please pay the ИНВОЙС now\r\n"
    node = parse_condition({"body": {"contains": ["оплата", "pay the инвойс*"]}}, [], {}, "r")
    assert node is not None
    pieced = _facts(_view(body))
    why = node.test(pieced)
    assert "body_text" not in pieced.view.__dict__
    whole = _facts(_view(body))
    _ = whole.raw("body")                      # read whole first: the old path
    assert why is not None and why == node.test(whole)
    assert "(value: 'Intro line\\nfiller" in why and f"({len(whole.view.body_text)} characters)" in why
