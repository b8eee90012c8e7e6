"""Normalisation for matching: NFKC, case folding, ё -> е, whitespace, reply prefixes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailrouter.routing.normalize import normalize, normalize_subject, strip_reply_prefixes


@pytest.mark.parametrize(("text", "expected"), [
    ("СЧЁТ  на\tоплату ", "счет на оплату"),
    ("Ёлка", "елка"),
    ("е\u0308лка", "елка"),                # decomposed ё composes under NFKC, then folds
    ("Ｉｎｖｏｉｃｅ №５", "invoice no5"),    # fullwidth and № are compatibility forms
    ("Straße", "strasse"),
    ("ﬁle\u00a0name", "file name"),
    ("  \r\n ", ""),
    ("", ""),
])
def test_normalize(text: str, expected: str) -> None:
    """normalize applies NFKC, casefold, ё -> е, collapses whitespace and strips."""
    assert normalize(text) == expected


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
