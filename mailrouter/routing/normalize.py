"""Text normalisation for matching: the form rules compare, never the form shown.

What it does: ``normalize`` removes characters a reader shows as nothing (soft hyphen,
zero-width space and joiners, direction marks, the byte order mark), applies Unicode NFKC,
case folding, ё -> е, folds Latin letters to
their base letters (č -> c, ř -> r, ł -> l, ß -> ss), reads № and ™ as signs between words, and
collapses whitespace, so "СЧЁТ  на оплату" and "счет на оплату" match, and so do "Příloha" and
"priloha" (Czech and Slovak users, and some mailers, write without the accents); "Счёт №5" is
the words счет, 5 (NFKC alone made №5 one word "no5", which neither "№ 5" nor "5" found).
Cyrillic keeps its letters (й is not и; only ё is е). A Chinese or Japanese ideograph
(and hiragana) is a word of its own: those scripts space no words. Addresses (``normalize_address``) keep
their accents: jiří@ and jiri@ are two mailboxes, příklad.cz and priklad.cz two domains.
``strip_reply_prefixes`` removes the reply and forward markers mail clients put in front of a
subject (Re, RE[2], Fwd, Fw, AW, WG, SV, VS, Отв, Ответ, Пересл, Пересл., Переслать, ODP,
PŘ, Antw, Doorst, RIF, RV, ENC, Fwd[3], "Re: Re:" ...), repeatedly.

What it refuses: nothing; every string has a normal form.  Only prefixes followed by a colon
are stripped ("Reply to all" and "Ответственный" are left alone).

Known limits: a subject that *is* only prefixes ("Re:") normalises to ''; translated prefixes
beyond the list above (e.g. Polish "PD:", Italian "I:") are kept. Words that differ only in accents are
one word ("byt" and "být"); a rule that must tell them apart uses `regex`. ä ö ü fold to a o u,
not ae oe ue. Greek keeps its accents.
"""

from __future__ import annotations

import re
import unicodedata
from itertools import chain

__all__ = ["normalize", "normalize_address", "strip_reply_prefixes", "normalize_subject", "pieces"]

# Czech Outlook writes ODP (odpověď) and PŘ (předat); Dutch Antw and Doorst, Italian RIF,
# Spanish RV, Portuguese ENC; some Russian clients "Пересл.:" with its dot
_PREFIX_WORDS = ("re", "fwd", "fw", "aw", "wg", "sv", "vs", "tr", "отв", "ответ", "пересл",
                 "переслать", "переслано", "odp", "př", "antw", "doorst", "rif", "rv", "enc")

_SPACE = re.compile(r"\s+")
# Signs that NFKC spells with letters, glued to the word or number beside them ("№5" was
# "no5", "Acme™" "acmetm"): each is a space here, so the number is a word of its own.
_SIGN_CHARS = "\u2116\u2122\u2120\u2121\u213b\u20a8"      # № ™ ℠ ℡ ℻ ₨
_SIGNS = re.compile(f"[{_SIGN_CHARS}]")
# Characters a mail reader shows as nothing: the soft hyphen (Word and Outlook put one where
# a word may break: "опла\u00adтить"), zero-width space, non-joiner and joiner (HTML mail
# breaks long words with them; spam hides words behind them), the word joiner, the
# direction marks and embeddings (Outlook writes them around Hebrew and Arabic, and next to
# Latin or Cyrillic text too), the byte order mark (a UTF-8 text saved by Notepad begins
# with it, and so did its subject), the combining grapheme joiner, the Mongolian vowel
# separator and variation selectors. They were not letters, so they cut the word they were
# in: "опла\u00adтить" was the words "опла" and "тить", and `contains: оплатить`,
# `starts_with: счёт` (after a BOM) and `glob: "договор*"` missed text the reader shows
# whole. They are removed, as Unicode's default-ignorable code points are in search
# (ICU's and Lucene's folding).
_INVISIBLE_CHARS = ("\u00ad\u034f\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064"
                    "\u2066-\u206f\ufe00-\ufe0f\ufeff")
_INVISIBLE = re.compile(f"[{_INVISIBLE_CHARS}]")
# "Re:", "RE[2]:", "Re(2):", "Re^2:", "Fwd :", and fullwidth colons; case-insensitive; after
# a byte order mark or another invisible character too.
_PREFIX = re.compile(
    rf"^[\s{_INVISIBLE_CHARS}]*(?:" + "|".join(re.escape(w) for w in _PREFIX_WORDS) + r")"
    r"\.?\s*(?:\[\d+\]|\(\d+\)|\^\d+)?\s*[:：]\s*",
    re.IGNORECASE,
)
# Ideographs (see _IDEOGRAPH below) get a space on either side.
_IDEOGRAPHS = "\u3040-\u309f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
# A cut inside a run of whitespace (and those signs, spaces too), or after an ideograph or
# an invisible character (removed: the whitespace before it joins the run), would leave
# two spaces.
_RUN_START = re.compile(rf"(?<![\s{_SIGN_CHARS}{_IDEOGRAPHS}{_INVISIBLE_CHARS}])[\s{_SIGN_CHARS}]")


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
    """NFKC, casefold, ё -> е, Latin letters to their base letters, № and ™ as spaces,
    whitespace runs to one space, stripped."""
    return _normalize(text, True)


def normalize_address(text: str) -> str:
    """normalize, but the accents kept: the form address fields compare (an IDN domain or
    an SMTPUTF8 mailbox with and without its accents are two addresses)."""
    return _normalize(text, False)


def _normalize(text: str, fold: bool) -> str:
    if len(text) > 2 * PIECE:   # whitespace is a boundary for every step
        return "".join(_normal(p, fold) for p in pieces(text, _RUN_START)).strip()
    return _normal(text, fold).strip()


def _latin_base() -> dict[int, str]:
    """Each Latin letter with marks (Latin-1 to Latin Extended-B, Latin Extended Additional)
    -> its letter without them, lower case, from Unicode's decompositions; plus the letters
    Unicode does not decompose but people type so (ł -> l, ø -> o, æ -> ae)."""
    table: dict[int, str] = {}
    for cp in chain(range(0xC0, 0x250), range(0x1E00, 0x1F00)):
        ch = chr(cp)
        if not ch.isalpha() or not unicodedata.name(ch, "").startswith("LATIN"):
            continue
        base = "".join(c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c))
        if base != ch and base.isascii() and base.isalpha():
            table[cp] = base.casefold()
    extra = {"ł": "l", "đ": "d", "ø": "o", "ħ": "h", "ŧ": "t", "ı": "i", "ŀ": "l", "æ": "ae",
             "œ": "oe", "ð": "d", "þ": "th", "ƶ": "z", "ɨ": "i"}
    for low, base in extra.items():
        table[ord(low)] = table[ord(low.upper())] = base
    return table


_LATIN_BASE = _latin_base()
_FOLDABLE = re.compile("[" + "".join(map(chr, sorted(_LATIN_BASE))) + "]")
# Chinese and Japanese write no spaces between words, and a run of ideographs was one word:
# `contains: 发票` never matched «关于发票的问题», nor did a search for 发票. Each ideograph
# (and hiragana, which writes Japanese endings and particles) is a word of its own here, as
# in Lucene's StandardTokenizer; a word of several is then the phrase of its characters,
# which `contains` finds in order. Katakana and Hangul (Korean spaces its words) stay words.
_IDEOGRAPH = re.compile(f"([{_IDEOGRAPHS}])")
# marks NFKC found no precomposed letter for ("q\u030c"), left after a Latin letter
_MARKS = re.compile("(?<=[a-z])[\u0300-\u036f]+")


def _normal(text: str, fold: bool = True) -> str:
    if not text.isascii() and _INVISIBLE.search(text):
        text = _INVISIBLE.sub("", text)
    if _SIGNS.search(text):
        text = _SIGNS.sub(" ", text)
    # NFKC again after casefold (Unicode's NFKC_Casefold recipe): folding can undo composition.
    # NFKC composes е + U+0308 into ё, so the fold below also catches the decomposed form.
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    folded = folded.replace("ё", "е")
    if fold and not folded.isascii():
        # Composed first (NFKC above), so one table lookup per letter; й and the rest of
        # Cyrillic are not in the table. A text with no such letter (most Russian text) is
        # not translated: a translation costs about 0.1 us per character.
        if _FOLDABLE.search(folded):
            folded = folded.translate(_LATIN_BASE)
        if _MARKS.search(folded):
            folded = _MARKS.sub("", folded)
        if _IDEOGRAPH.search(folded):
            folded = _IDEOGRAPH.sub(r" \1 ", folded)
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
