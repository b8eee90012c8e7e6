"""Text normalisation for matching: the form rules compare, never the form shown.

What it does: ``normalize`` applies Unicode NFKC, case folding, ё -> е, and collapses whitespace,
so "СЧЁТ  на оплату" and "счет на оплату" match.  ``strip_reply_prefixes`` removes the reply and
forward markers mail clients put in front of a subject (Re, RE[2], Fwd, Fw, AW, WG, SV, VS, Отв,
Ответ, Пересл, Переслать, Fwd[3], "Re: Re:" ...), repeatedly.

What it refuses: nothing; every string has a normal form.  Only prefixes followed by a colon
are stripped ("Reply to all" and "Ответственный" are left alone).

Known limits: a subject that *is* only prefixes ("Re:") normalises to ''; translated prefixes
beyond the list above (e.g. "Antw:", "RIF:") are kept.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["normalize", "strip_reply_prefixes", "normalize_subject", "pieces"]

_PREFIX_WORDS = ("re", "fwd", "fw", "aw", "wg", "sv", "vs", "tr", "отв", "ответ", "пересл",
                 "переслать", "переслано")
# "Re:", "RE[2]:", "Re(2):", "Re^2:", "Fwd :", and fullwidth colons; case-insensitive.
_PREFIX = re.compile(
    r"^\s*(?:" + "|".join(re.escape(w) for w in _PREFIX_WORDS) + r")"
    r"\s*(?:\[\d+\]|\(\d+\)|\^\d+)?\s*[:：]\s*",
    re.IGNORECASE,
)
_SPACE = re.compile(r"\s+")
_RUN_START = re.compile(r"(?<!\s)\s")   # a cut inside a whitespace run would leave two spaces


# A long text (a body) is worked on in pieces of about this many characters, cut where
# nothing spans the cut: one piece's temporary strings instead of the whole text's (a
# regex substitution over 25 MB of text holds one string object per match, ten times its size).
PIECE = 1 << 16


def pieces(text: str, cut: re.Pattern[str], size: int = PIECE) -> list[str]:
    """`text` in consecutive pieces of at least `size` characters, each cut at the start of
    a match of `cut` (so `"".join(pieces(...)) == text`)."""
    out, at = [], 0
    while at < len(text):
        found = cut.search(text, at + size) if at + size < len(text) else None
        stop = found.start() if found else len(text)
        out.append(text[at:stop])
        at = stop
    return out


def normalize(text: str) -> str:
    """NFKC, casefold, ё -> е, whitespace runs to one space, stripped."""
    if len(text) > 2 * PIECE:   # whitespace is a boundary for all four steps
        return "".join(_normal(p) for p in pieces(text, _RUN_START)).strip()
    return _normal(text).strip()


def _normal(text: str) -> str:
    # NFKC again after casefold (Unicode's NFKC_Casefold recipe): folding can undo composition.
    # NFKC composes е + U+0308 into ё, so the fold below also catches the decomposed form.
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    folded = folded.replace("ё", "е")
    return _SPACE.sub(" ", folded)


def strip_reply_prefixes(subject: str) -> str:
    """Remove leading reply/forward markers until none is left; the rest is kept as is."""
    text = subject
    while True:
        stripped = _PREFIX.sub("", text, count=1)
        if stripped == text:
            return text.strip()
        text = stripped


def normalize_subject(subject: str) -> str:
    """The subject as rules match it: prefixes stripped, then normalised."""
    return normalize(strip_reply_prefixes(subject))
