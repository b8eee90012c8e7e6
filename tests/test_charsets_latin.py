"""The Latin scores' fast paths against their plain definitions (mailrouter/charsets.py)."""

from __future__ import annotations

from collections import Counter

from hypothesis import example, given, settings
from hypothesis import strategies as st

from mailrouter.charsets import (_IN_WORD, _INVALID, _LATIN_LOG, _OPENERS, _PRICE_SIGNS, _QUESTION,
                                 _RARE_SYMBOL, _SYMBOL, _SYMBOLS, LATIN_CANDIDATES, LatinCounts,
                                 _latin_bound, resolve_charset)

# Texts as the Latin candidates read 8-bit bytes: ASCII and every character of their upper
# halves (letters, signs, C1 controls, replacement characters), plus a few from elsewhere.
_CHARS = sorted({ch for codec in LATIN_CANDIDATES
                 for ch in bytes(range(0x80, 0x100)).decode(codec, "replace")})
TEXTS = st.text(st.sampled_from(_CHARS + list("ab .,-(«1?Q") + ["İ", "ẞ", "ф", "½", "→", "✓"]), max_size=40)


@settings(max_examples=400, deadline=None)
@given(TEXTS)
def test_best_is_the_best_language_score(text: str) -> None:
    """LatinCounts.best() sums every language in one pass: the same floats as score(lang)."""
    counts = LatinCounts(text)
    assert counts.best() == max(counts.score(lang) for lang in _LATIN_LOG)


@settings(max_examples=400, deadline=None)
@given(TEXTS)
def test_counts_match_a_plain_loop(text: str) -> None:
    """Letters counted at C speed and signs found by regex: what one loop over every
    non-ASCII character counts."""
    counts = LatinCounts(text)
    assert (counts.letters, counts.rest) == _counts_reference(text)


def _counts_reference(text: str) -> tuple[Counter[str], float]:
    """LatinCounts as first written: one loop over every non-ASCII character."""
    letters: Counter[str] = Counter()
    rest = 0.0
    for i, ch in enumerate(text):
        if ch < "\x80":
            continue
        if ch == "\ufffd" or ch <= "\x9f":
            rest += _INVALID
        elif ch == "¿" and not (i and text[i - 1].isalpha()) and text[i + 1:i + 2].isupper():
            rest += _SYMBOL          # "¿Qué": a question opens
        elif ch == "¿" and not (i and text[i - 1].isalpha()) and text[i + 1:i + 2].isalpha() \
                and "?" in text[i + 2:]:
            rest += _QUESTION        # "¿vienes mañana?"
        elif ch.isalpha():
            letters[ch.lower()] += 1
        else:
            after = text[i + 1:i + 3]
            glued = after[:1].isalpha() or (after[:1] in _SYMBOLS and after[1:].isalpha())
            common = ch in _SYMBOLS or (ch in _PRICE_SIGNS and not glued)
            rest += _SYMBOL if common else _RARE_SYMBOL
            if glued and (ch not in _OPENERS or (i and text[i - 1].isalpha())):
                rest += _IN_WORD
    return letters, rest


@settings(max_examples=400, deadline=None)
@given(TEXTS)
@example("ÉÎÎ")      # x + x and 2 * x differ in the last bit: the bound was 1e-14 under
def test_latin_bound_is_a_bound(text: str) -> None:
    """reads_cyrillic skips the Latin scores when their bound already loses: the bound must
    never be under the best score (but for rounding: the two add the same logarithms in
    another order)."""
    assert _latin_bound(text) >= LatinCounts(text).best() - 1e-9


def test_resolve_charset_is_cached() -> None:
    """Resolving a label is done once (it was a quarter of decoding an encoded-word)."""
    resolve_charset.cache_clear()
    for _ in range(3):
        assert resolve_charset("Windows-1251") == "cp1251"
    info = resolve_charset.cache_info()
    assert (info.hits, info.misses) == (2, 1)
