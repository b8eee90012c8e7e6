"""Normalisation for matching: NFKC, case folding, ё -> е, Latin accents, № and ™, whitespace,
reply prefixes; and rules that compare text with and without accents, or with №, through a
real snapshot."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from mailrouter.routing.normalize import (
    normalize,
    normalize_address,
    normalize_subject,
    strip_reply_prefixes,
)
from tests.test_rules import mail, route, ruleset


@pytest.mark.parametrize(("text", "expected"), [
    ("СЧЁТ  на\tоплату ", "счет на оплату"),
    ("Ёлка", "елка"),
    ("е\u0308лка", "елка"),                # decomposed ё composes under NFKC, then folds
    ("Ｉｎｖｏｉｃｅ №５", "invoice 5"),      # fullwidth is a compatibility form; № a sign
    ("Счёт №5", "счет 5"),                # NFKC alone made it one word, "no5"
    ("Счёт № 5", "счет 5"),
    ("Acme™ Corp", "acme corp"),          # not "acmetm"
    ("Příliš žluťoučký kůň úpěl ďábelské ódy", "prilis zlutoucky kun upel dabelske ody"),
    ("PŘÍLOHA", "priloha"),
    ("P\u0159i\u0301loha", "priloha"),      # composed first, then folded
    ("Łódź, Kraków, Gdańsk", "lodz, krakow, gdansk"),
    ("Ærøskøbing", "aeroskobing"),
    ("Tiếng Việt", "tieng viet"),
    ("q\u030cx", "qx"),                    # a mark no letter composes with, after a Latin one
    ("Йошкар-Ола, чай", "йошкар-ола, чай"),  # й is a letter of its own, not и with a mark
    ("и\u0306од", "йод"),                  # decomposed й composes and stays
    ("Ґанок, їжак", "ґанок, їжак"),       # Ukrainian letters too
    ("Ελληνικά", "ελληνικά"),              # Greek keeps its accents
    ("关于发票的问题", "关 于 发 票 的 问 题"),   # no spaces in Chinese: each ideograph a word
    ("請求書について", "請 求 書 に つ い て"),   # Japanese kanji and hiragana too
    ("カタカナ 회의 안내", "カタカナ 회의 안내"),    # katakana and Hangul words stay whole
    ("Straße", "strasse"),
    ("ﬁle\u00a0name", "file name"),
    ("  \r\n ", ""),
    ("", ""),
])
def test_normalize(text: str, expected: str) -> None:
    """normalize applies NFKC, casefold, ё -> е, folds Latin accents (Cyrillic letters kept),
    reads № and ™ as spaces, collapses whitespace and strips."""
    assert normalize(text) == expected


def test_addresses_keep_their_accents() -> None:
    """normalize_address is normalize without the Latin fold: jiří@ is not jiri@."""
    assert normalize_address("Jiří@Příklad.CZ") == "jiří@příklad.cz"
    assert normalize("Jiří@Příklad.CZ") == "jiri@priklad.cz"


ACCENTS = """\
rules:
  - name: priloha
    when: {subject: {contains: příloha}}
    then: {tags: [priloha]}
  - name: faktura
    when: {subject: {contains: faktura*}}
    then: {tags: [faktura]}
  - name: lodz
    when: {body: {contains: "lodz kraków"}}
    then: {tags: [lodz]}
  - name: schet5
    when: {subject: {contains: "счёт №5"}}
    then: {tags: [schet5]}
  - name: five
    when: {subject: {contains: "5"}}
    then: {tags: [five]}
  - name: jod
    when: {subject: {contains: йод}}
    then: {tags: [jod]}
  - name: jiri
    when: {mail_from: {equals: jiří@příklad.cz}}
    then: {tags: [jiri]}
  - name: fapiao
    when: {subject: {contains: 发票}}
    then: {tags: [fapiao]}
"""


@pytest.mark.parametrize(("subject", "body", "mail_from", "rule"), [
    ("Priloha smlouvy", "text", "a@b.example", "priloha"),      # typed without accents
    ("PŘÍLOHA smlouvy", "text", "a@b.example", "priloha"),
    ("Fakturá č. 12", "text", "a@b.example", "faktura"),
    ("Zásilka", "Dodávka Łódź Krakow", "a@b.example", "lodz"),
    ("Счёт № 5 за октябрь", "text", "a@b.example", "schet5"),    # № apart from its number
    ("СЧЕТ №5", "text", "a@b.example", "schet5"),
    ("Заказ №5", "text", "a@b.example", "five"),                # the number is a word
    ("Йод", "text", "a@b.example", "jod"),
    ("Иод", "text", "a@b.example", None),                       # й is not и
    ("x", "text", "jiří@příklad.cz", "jiri"),
    ("x", "text", "jiri@priklad.cz", None),                     # another mailbox
    ("关于发票的问题", "text", "a@b.example", "fapiao"),         # a word inside a run
    ("关于发的票问题", "text", "a@b.example", None),             # its characters apart
])
def test_rules_match_text_with_and_without_accents(subject: str, body: str, mail_from: str,
                                                    rule: str | None) -> None:
    """Rules written with accents match mail without them (and the reverse); № is a sign
    apart from its number; Cyrillic й and addresses are compared as written."""
    d = route(ruleset(ACCENTS), mail(subject, body), "sales@example.com", mail_from)
    assert (d.rules[0].name if d.rules else None) == rule


@pytest.mark.parametrize(("subject", "expected"), [
    ("Re: Счет", "Счет"),
    ("RE[2]: Fwd: AW: WG: Счет", "Счет"),
    ("Fwd[3]: Fw: счет", "счет"),
    ("Отв: Ответ: Пересл: Заказ", "Заказ"),
    ("re:re:  RE :x", "x"),
    ("Re(2): Re^3: x", "x"),
    ("SV: VS: x", "x"),
    ("Reply to all", "Reply to all"),
    ("Ответственный: Петров", "Ответственный: Петров"),
    ("Re:", ""),
    ("Счет Re: 5", "Счет Re: 5"),
    ("ODP: PŘ: Faktura 17", "Faktura 17"),            # Czech Outlook
    ("Odp: Re: x", "x"),
    ("Пересл.: Заказ", "Заказ"),
    ("Antw: Doorst: RIF: RV: ENC: x", "x"),
    ("Odpověď: ano", "Odpověď: ano"),
    ("Přehled: květen", "Přehled: květen"),
    ("Encuesta: x", "Encuesta: x"),
])
def test_strip_reply_prefixes(subject: str, expected: str) -> None:
    """Leading reply/forward prefixes go, repeatedly; words that merely start alike stay."""
    assert strip_reply_prefixes(subject) == expected


def test_normalize_subject() -> None:
    """normalize_subject strips prefixes, then normalises."""
    assert normalize_subject("RE[2]: Fwd:  СЧЁТ на оплату") == "счет на оплату"


@given(st.text())
def test_normalize_is_idempotent(text: str) -> None:
    """Normalising twice changes nothing, whatever the input."""
    once = normalize(text)
    assert normalize(once) == once


@given(st.text())
def test_strip_reply_prefixes_is_idempotent(text: str) -> None:
    """Stripping prefixes twice changes nothing, whatever the input."""
    once = strip_reply_prefixes(text)
    assert strip_reply_prefixes(once) == once


_MIXED = st.text(alphabet=st.sampled_from(list(
    "aZ ё\u0308е\u0301\t\n\u00a0\u3000.,-_ЁÅ\u212b\ufb01ß\u0130Σς1čŁ№™\u030cй发の"
    "\u00ad\u200b\ufeff")))


@given(_MIXED, st.integers(1, 8))
@example("a \u200b b", 2)      # a cut after an invisible character left two spaces
def test_normalize_in_pieces_is_normalize_of_the_whole(text: str, size: int) -> None:
    """A long text (a body) is normalised piece by piece, cut at whitespace runs: the same
    text as normalising it in one go, whatever the cuts."""
    from mailrouter.routing.normalize import _RUN_START, _normal, pieces
    cut = pieces(text, _RUN_START, size)
    assert "".join(cut) == text
    assert "".join(_normal(p) for p in cut).strip() == _normal(text).strip()


@given(_MIXED, st.integers(1, 8))
def test_word_form_in_pieces_is_the_word_form_of_the_whole(text: str, size: int) -> None:
    """The `contains` word form and its token set, built piece by piece, are the whole's."""
    import re

    from mailrouter.routing.facts import _NOT_WORD, _SPACE
    from mailrouter.routing.normalize import pieces
    whole = " ".join(re.findall(r"\w+", text))
    found = (" ".join(re.findall(r"\w+", p)) for p in pieces(text, _NOT_WORD, size))
    assert " ".join(w for w in found if w) == whole
    tokens: set[str] = set()
    for p in pieces(" " + whole + " ", _SPACE, size):
        tokens.update(p.split())
    assert tokens == set(whole.split())


def test_long_text_takes_the_piece_path() -> None:
    """normalize and words_of of a body longer than two pieces give the one-go result."""
    from mailrouter.routing.facts import words_of
    from mailrouter.routing.normalize import PIECE, _normal
    text = ("Счёт  N°5 на\u00a0оплату,\tСУММА ё\u0308 ﬁnal. " * (3 * PIECE // 40))
    assert len(text) > 2 * PIECE
    assert normalize(text) == _normal(text).strip()
    import re
    assert words_of(normalize(text)) == " " + " ".join(re.findall(r"\w+", normalize(text))) + " "
