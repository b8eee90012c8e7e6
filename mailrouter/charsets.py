"""Charset names and charset guessing for the message view.

What it does: maps the charset labels found in real mail (``cp1251``, ``x-cp1251``,
``win-1251``, ``koi8r``, ``x-mac-cyrillic``, ``ibm866``, ``windows-1250`` ...) to Python codecs
(a label naming a charset whose Windows superset mailers send is read as that: gb2312 as gbk,
shift_jis as cp932, euc-kr as cp949, iso-2022-jp as ``cp50220``, a codec registered here; 8-bit
bytes under the 7-bit iso-2022-jp or -kr as EUC-JP or Shift_JIS, EUC-KR), and guesses the
charset of unlabelled or mislabelled 8-bit bytes: valid UTF-8 first, then Japanese (EUC-JP,
Shift_JIS) told by its kana, then Chinese (GBK, Big5) and Korean (EUC-KR) told by their common
characters where the bytes read badly as Russian, then a Russian letter-frequency / case-pattern
scorer over the Cyrillic single-byte charsets for bytes that look Cyrillic and read better so
than as Latin text, else an accented-letter scorer over cp1252, cp1250 and ISO-8859-2 (Czech,
Polish, Slovak, German, French, Spanish, Italian, Portuguese, Danish/Norwegian, Swedish letter
frequencies). Raw 8-bit header bytes are read in the message's own charset when that is a
multi-byte one.

The scorer, not charset-normalizer.  Measured on the 60 short Russian subjects of
``tests/test_message.py`` (``RU_SUBJECTS``), each encoded in KOI8-R and in windows-1251, 120 cases
(``python -m tests.test_message`` repeats it):

    scorer here                                   118/120 right (98 %)
    charset-normalizer 3.5, free choice            14/120 right (12 %): it answers shift_jis,
                                                   big5, cp932, utf_16 ... for short strings
    charset-normalizer, cp_isolation koi8_r/cp1251 109/120 right (91 %)

The two misses are "КП" in both charsets: two capital letters carry no case pattern and too
little frequency evidence.  A case-insensitive unigram table over 33 letters plus a penalty for
"upper case straight after lower case" (KOI8-R and windows-1251 swap the cases, so the wrong
charset turns "Счет" into "сЧЕТ") is enough; a bonus for lower case, tried first, cost three
all-caps subjects ("ПРАЙС", "ТЗ") and was dropped.  It is also cheaper: about 80 us per subject
against about 1.8 ms for charset-normalizer on the same machine (measured once, not tested).
The text's shape counts too (_Russian): a word beginning with ь, ъ or ы, and more letters in
capital words than in small ones when it has both ("ЭДО подключено" in the other charset is
«щдн ОНДЙКЧВЕМН»; the letters alone scored it as well).

Refuses: codecs that are not text encodings (``base64``, ``rot13``, ``zlib``...), and the
Python-only ``unicode_escape`` family, ``idna``, ``punycode`` and ``undefined``: a label naming
one of those is treated as unknown.

Known limits: raw IBM866 and ISO-8859-5 header bytes are guessed only when every 8-bit byte is
a Russian letter in them and they read clearly better than as KOI8-R or windows-1251
(RARE_CYRILLIC): short words and ISO-8859-5 capitals stay a miss. Unlabelled Latin
text is told apart by its accented letters alone: a short text whose only accent is ambiguous
goes to the likelier letter ("\\xe8" alone is Czech "č" rather than French "è"; "\\xef" alone
is "ď" rather than "ï"; "\\xf8" alone is "ř" rather than Norwegian "ø"; "\\xbf" before a small
letter with no "?" after it is Polish "ż", not Spanish "¿", and one before a small letter with
a "?" after it is "¿": a Polish question whose only Polish letter is the ż of "że" reads as
Spanish), Hungarian letters are not in the tables, and a short Czech text under a Western label
whose only Czech letters are ř and í ("Jiøí Øehoø") keeps the label (it reads as Norwegian
about as well); unlabelled Chinese (GBK, Big5) and Korean (EUC-KR) text is told by its common
characters, and a text of two or three characters may go to the other one ("价格表" reads as
Korean), a Big5 or GBK text whose 8-bit bytes all read as letters, a few at a time inside words
of ASCII letters, reads as Latin (_latin_words: short Czech names were Chinese), and raw 8-bit
headers are read in the message's charset only when the top Content-Type names one; a label
that names the *other* Cyrillic charset (koi8-r declared, cp1251 sent, or the reverse) is
trusted unless the other one reads clearly better (`_CYRILLIC_PAIR`: a few capitals alone carry
too little to overrule a label), and other pairs (koi8-r declared, cp866 sent) are trusted;
UTF-8 under any 8-bit label is not: it is read as UTF-8 and noted; mac-cyrillic and cp1251
agree on most lowercase letters, so an unlabelled all-lowercase mac-cyrillic text is read as
cp1251 (identical result for those letters). Unlabelled KOI8-U (Ukrainian) is told from KOI8-R
by a і ї є ґ inside a word (_koi8_u); Ukrainian whose only such letter stands alone («є») stays
KOI8-R, and so does KOI8-U under a koi8-r label.
"""

from __future__ import annotations

import codecs
import email.errors
import email.header
import functools
import math
import re
import unicodedata
from collections import Counter
from itertools import repeat
from typing import Callable, Iterable, Iterator

__all__ = [
    "CYRILLIC_HEADER_CANDIDATES",
    "CYRILLIC_BODY_CANDIDATES",
    "resolve_charset",
    "looks_cyrillic",
    "reads_cyrillic",
    "score_russian",
    "guess_decode",
    "Decoded",
    "decode_bytes",
    "inspect_bytes",
    "decode_pieces",
    "PIECE_BYTES",
    "decode_header_value",
    "decode_header_bytes",
    "decode_param_value",
]

# Labels seen in the wild that Python's codec registry does not know, or knows as something else.
_ALIASES: dict[str, str] = {
    "x-cp1251": "cp1251", "win-1251": "cp1251", "win1251": "cp1251", "x-win-1251": "cp1251",
    "windows1251": "cp1251", "cp-1251": "cp1251", "x-cp1250": "cp1250", "win-1250": "cp1250",
    "koi8r": "koi8-r", "koi8u": "koi8-u", "x-koi8-r": "koi8-r", "koi": "koi8-r", "koi8": "koi8-r",
    "x-mac-cyrillic": "mac-cyrillic", "x-mac-ukrainian": "mac-cyrillic",
    "ibm-866": "cp866", "x-ibm866": "cp866", "dos-866": "cp866", "cp-866": "cp866",
    "unicode-1-1-utf-8": "utf-8", "x-unicode20utf8": "utf-8", "utf-8-sig": "utf-8",
    "x-user-defined": "cp1252", "windows-874": "cp874", "ks_c_5601": "euc_kr",
    # WHATWG Encoding Standard labels (what mail readers decode) that Python does not know;
    # iso-8859-N with -i or -e, or without dashes, is matched in resolve_charset
    "windows-31j": "cp932", "cseucpkdfmtjapanese": "euc_jp", "cn-big5": "big5",
    "x-x-big5": "big5", "gb_2312": "gb2312", "gb_2312-80": "gb2312", "ksc_5601": "euc_kr",
    "ks_c_5601-1989": "euc_kr", "csksc56011987": "euc_kr", "iso-ir-149": "euc_kr",
    "dos-874": "cp874", "sun_eu_greek": "iso8859-7", "csisolatin9": "iso8859-15",
    "logical": "iso8859-8", "visual": "iso8859-8", "mac": "mac-roman",
}
# "ISO-8859-8-I" (Hebrew in logical order: its letters are ISO-8859-8's), "iso88592"
_ISO_8859 = re.compile(r"^(?:cs)?iso[-_]?8859[-_]?(\d{1,2})(?:-?[ie])?$")
_REFUSED = {"undefined", "unicode-escape", "raw-unicode-escape", "idna", "punycode", "mbcs",
            "oem", "utf-8-sig"}
_LANG_TAG = re.compile(r"\*.*$")  # RFC 2231 section 5: charset*language
# RFC 5322 3.2.2 comments, which the stdlib's get_param leaves in a parameter's value:
# 'charset=windows-1251 (Cyrillic)' was an unknown charset, and the guess read "Ёж" as
# cp866 "иц"
_COMMENT = re.compile(r"\([^()]*\)")


@functools.lru_cache(maxsize=512)
def resolve_charset(label: str | None) -> str | None:
    """Return the Python codec name for a MIME charset label, or None if it is unknown.
    Cached: a mail has few labels and the same ones recur; resolving one (three regexes and
    up to three codec lookups) was a quarter of decoding an encoded-word (~4 of 18 us)."""
    if not label:
        return None
    name = _COMMENT.sub("", label) if "(" in label else label
    name = _LANG_TAG.sub("", name.strip().strip("\"'").lower()).strip()
    name = _ALIASES.get(name, _ISO_8859.sub(r"iso8859-\1", name))
    for candidate in (name, re.sub(r"^(?:x-|cs)", "", name),
                      re.sub(r"^(?:x-)?win(?:dows)?-?(\d{3,4})$", r"cp\1", name)):
        try:
            info = codecs.lookup(_ALIASES.get(candidate, candidate))
        except (LookupError, ValueError, TypeError):
            continue
        if getattr(info, "_is_text_encoding", True) and info.name not in _REFUSED:
            return info.name
    return None


# Russian letter frequencies in per mille (National Corpus of Russian, rounded); ё counts as е.
_FREQ = dict(zip("оеаинтсрвлкмдпуяызьбгчйхжшюцщэфъё",
                 (110, 85, 80, 74, 67, 63, 55, 47, 45, 44, 35, 32, 30, 28, 26, 20, 19, 17, 17,
                  16, 17, 14, 12, 10, 9, 7, 6, 5, 4, 3, 3, 1, 4)))
_LOG = {ch: math.log(f / 1000) for ch, f in _FREQ.items()}
_NOT_LETTER = math.log(0.0002)   # a non-ASCII symbol where a letter should be
# Russian typography's own signs, where Russian text has them, cost what a common sign costs in
# a Latin reading (_SYMBOL): as _NOT_LETTER they made a windows-1251 subject that has them read
# better as windows-1252 ("Заказ № 88 — «Ок»" was "Çàêàç ¹ 88 — «Îê»", «Да» "«Äà»"). Where
# they are glued to a letter as text never has them (a dash inside a word, "—ек", is
# x-mac-cyrillic's "Чек" read as windows-1251), they cost _NOT_LETTER as before.
_RU_SIGN = math.log(0.01)
_OPENS, _CLOSES, _STANDS = frozenset("«"), frozenset("»"), frozenset("—–")   # № opens too
_SIGNS = _OPENS | _CLOSES | _STANDS | {"№"}
_MIXED_CASE = math.log(0.02)     # "сЧЕТ": upper case straight after lower case

CYRILLIC_HEADER_CANDIDATES = ("koi8-r", "cp1251")
CYRILLIC_BODY_CANDIDATES = ("koi8-r", "cp1251", "cp866", "mac-cyrillic")


def score_russian(text: str, score: float = 0.0) -> float:
    """Log-likelihood-like score that ``text`` is Russian; higher is better.  ``score`` is
    the score of the text before it (a long text is scored a piece at a time)."""
    prev = " "
    sign = ""           # a sign waiting for the character after it (_ru_sign)
    sign_prev = ""
    for ch in text:
        if sign:
            score += _RU_SIGN if _ru_sign(sign, sign_prev, ch) else _NOT_LETTER
            sign = ""
        if ch < "\x80":
            prev = ch
            continue
        low = ch.lower()
        if low in _LOG:
            score += _LOG[low]
            if ch != low and prev.isalpha() and prev.islower():
                score += _MIXED_CASE
        elif ch in _SIGNS:
            sign, sign_prev = ch, prev
        elif not ch.isspace():
            score += _NOT_LETTER
        prev = ch
    if sign:
        score += _RU_SIGN if _ru_sign(sign, sign_prev, "") else _NOT_LETTER
    return score


def _ru_sign(ch: str, prev: str, after: str) -> bool:
    """Is `ch` a sign of Russian typography where Russian text puts it: « and № with no
    letter before, » with none after, a dash with none on either side?"""
    if ch in _OPENS or ch == "№":
        return not prev.isalpha()
    if ch in _CLOSES:
        return not after.isalpha()
    return ch in _STANDS and not prev.isalpha() and not after.isalpha()


# Letters no Russian word begins with: KOI8-R read as windows-1251 (or the reverse) turns
# an abbreviation's Э into one ("ЭДО" was «ьдп»).
_NO_WORD_START = re.compile("(?<![^\\W\\d_])[ьъыЬЪЫ]")
_NO_START = math.log(0.01)
# KOI8-R and windows-1251 swap the cases: an abbreviation before lower-case words ("ЭДО
# подключено", "ЭЦП продление") read in the other charset is a lower-case word before a
# long capital one («щдн ОНДЙКЧВЕМН»), which the letters alone scored as well or better.
# Text that has words of both cases is mostly lower case: each letter of capital words
# (of three letters or more) beyond those of lower-case words costs CAPITALS_BEYOND (an
# all-capitals text, "ПРАЙС", "ТТН и УПД", none).
CAPITALS_BEYOND = math.log(0.5)
_UPPER = re.compile("[А-ЯЁ]{3,}")      # words of three letters or more: "ТТН и УПД" is
_LOWER = re.compile("[а-яё]{3,}")      # capitals


class _Russian:
    """How well a text reads as Russian, a piece at a time: score_russian, and what its
    shape says (a letter no word begins with at the start of a word; more letters in
    capital words than in small ones, in a text that has both). Pieces add up."""

    __slots__ = ("letters", "no_start", "upper", "lower")

    def __init__(self) -> None:
        self.letters, self.no_start, self.upper, self.lower = 0.0, 0, 0, 0

    def add(self, text: str) -> "_Russian":
        self.letters = score_russian(text, self.letters)
        self.no_start += len(_NO_WORD_START.findall(text))
        self.upper += sum(map(len, _UPPER.findall(text)))
        self.lower += sum(map(len, _LOWER.findall(text)))
        return self

    def score(self) -> float:
        beyond = self.upper - self.lower if self.lower and self.upper > self.lower else 0
        return self.letters + _NO_START * self.no_start + CAPITALS_BEYOND * beyond


def looks_cyrillic(data: bytes) -> bool:
    """True when most 8-bit bytes form words of their own, as letters of a non-Latin script do.

    Accented Latin text has 8-bit bytes inside ASCII words ("Grüße", "café"); Russian in any
    single-byte charset has whole words of 8-bit bytes, bounded by spaces, digits or punctuation.
    """
    high, own_word = _cyrillic_counts(data)
    return own_word * 2 > high


# A run of 8-bit bytes with no ASCII letter on either side (a word of its own), and one
# such byte alone: "č.", "20 €", "© 2026" say nothing either way and do not count.
_OWN_WORD = re.compile(rb"(?<![A-Za-z\x80-\xff])[\x80-\xff]+(?![A-Za-z\x80-\xff])")
_OWN_BYTE = re.compile(rb"(?<![A-Za-z\x80-\xff])[\x80-\xff](?![A-Za-z\x80-\xff])")
_ASCII = bytes(range(0x80))


def _cyrillic_counts(data: bytes) -> tuple[int, int]:
    """(8-bit bytes that count, those of them in words of their own) for looks_cyrillic,
    counted at C speed (a loop over the runs took 1.5 ms per 12 KB of accented text)."""
    alone = len(_OWN_BYTE.findall(data))
    high = len(data.translate(None, _ASCII))          # the 8-bit bytes
    return high - alone, len(b"".join(_OWN_WORD.findall(data))) - alone


def _valid_utf8(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


_STRAY = re.compile("[\udc80-\udcff]")


def _utf8_counts(data: bytes) -> tuple[int, int]:
    """(characters of two or more bytes, bytes that are not UTF-8) in `data` read as UTF-8."""
    text = data.decode("utf-8", "surrogateescape")
    stray = len(text) - len(_STRAY.sub("", text))
    return len(text) - len(text.encode("ascii", "ignore")) - stray, stray


def _damaged_utf8(multi: int, stray: int) -> bool:
    """UTF-8 with a few bytes that are not (a character cut off at the end of a subject a
    mailer shortened, one stray windows-1252 byte in a signature): it is still UTF-8, and
    reading all of it as KOI8-R because of one byte would garble every letter. 8-bit
    Cyrillic text read as UTF-8 has almost no valid sequences ("О»" in «ООО»), and a stray
    byte for each letter."""
    return stray > 0 and multi >= 2 * stray


def guess_decode(data: bytes, candidates: tuple[str, ...] = CYRILLIC_HEADER_CANDIDATES,
                 rare: tuple[str, ...] = ()) -> tuple[str, str]:
    """Decode bytes of unknown charset; return (text, codec used).

    Order: pure ASCII, valid UTF-8, Japanese (EUC-JP, Shift_JIS) when the bytes decode in it
    and read as kana, the best-scoring Cyrillic candidate when the bytes look Cyrillic, else
    the best Latin one (cp1252, cp1250, ISO-8859-2).  `rare`: Cyrillic charsets that are
    candidates too, on RARE_CYRILLIC's terms (see there).  Never raises.
    """
    if data.isascii():
        return data.decode("ascii"), "ascii"
    text = _valid_utf8(data)
    if text is not None:
        return text, "utf-8"
    if _damaged_utf8(*_utf8_counts(data)):
        return data.decode("utf-8", "replace"), "utf-8"
    japanese = _japanese(lambda: (data,))
    if japanese is not None:
        return data.decode(japanese, "replace"), japanese
    cjk = _chinese_korean(lambda: (data,))
    if cjk is not None:
        return data.decode(cjk, "replace"), cjk
    if not looks_cyrillic(data):
        return guess_latin(data)
    rare = tuple(c for c in rare if c not in candidates and _all_russian_letters(data, c))
    candidates = (*_plausible(candidates, data, 0, len(data)), *rare)
    readings = {c: _Russian().add(data.decode(c, "replace")) for c in candidates}
    best = _best_cyrillic(candidates, {c: r.score() - RARE_CYRILLIC_PRIOR * (c in rare)
                                       for c, r in readings.items()})
    whole = len(data) <= PAIR_SCORED       # the sample is all of it: its score is known
    if not reads_cyrillic(data[:PAIR_SCORED], candidates,
                          readings[best].letters if whole else None):
        return guess_latin(data)
    best = _koi8_u(best, data)
    return data.decode(best, "replace"), best


# x-mac-cyrillic reads windows-1251's small letters as they are, and its Э and Ю (0xDD,
# 0xDE) as Ё and ё; Ё scores a little better than Э, so windows-1251 text with no other
# capital and no я ("Это тест.", "Это сообщение отправлено автоматически") was read as
# x-mac-cyrillic «Ёто тест.». A Mac Cyrillic text shows itself by a capital (0x80-0x9F,
# signs and letters no Russian word has in windows-1251: about 5 better each) or a я
# (0xDF, a capital Я inside a word there: 3.9): without one of those bytes it is not a
# candidate (its reading is windows-1251's, or worse), and with one it must still read
# better by MAC_CYRILLIC_PRIOR, which the rarer charset (no current mailer writes it) earns:
# "Я рад. Это тест." in windows-1251 reads 0.29 better as «я рад. Ёто тест.», and a Mac
# "Уже" 2.7 better than in any other charset.
MAC_CYRILLIC_PRIOR = 1.0
_PRIORS = {"mac-cyrillic": -MAC_CYRILLIC_PRIOR}
_MAC_OWN = re.compile(rb"[\x80-\x9f\xdf]")


_CP866_OWN = re.compile(rb"[\x80-\xaf]")


def _plausible(candidates: tuple[str, ...], data: bytes, start: int, end: int) -> tuple[str, ...]:
    """`candidates` less x-mac-cyrillic when data[start:end] has none of its own bytes, and
    less cp866 when it has none of its letters А-Я а-п (0x80-0xAF)."""
    drop = set()
    if "mac-cyrillic" in candidates and not _MAC_OWN.search(data, start, end):
        drop.add("mac-cyrillic")
    if "cp866" in candidates and not _CP866_OWN.search(data, start, end):
        drop.add("cp866")
    return tuple(c for c in candidates if c not in drop) if drop else candidates


# Raw 8-bit Subject and From bytes of a DOS (cp866) or ISO (iso-8859-5) mailer, in a
# message that declares no Cyrillic charset, were read as windows-1251 or KOI8-R
# ("‘зсв \xad\xa0 ®Ї«\xa0вг", "БзХв ЭР ЮЯЫРвг" for «Счёт на оплату»). They are guessed too
# (decode_header_bytes), on stricter terms than KOI8-R and windows-1251, which most Russian
# mail is in: iso-8859-5's letters sit on Latin-1's signs and capitals (a newsletter's border
# "·¸¸·´¯`·" read «ЗИИЗДЏ`З», better than as Latin) and cp866's on windows-1251's signs. A
# RARE_CYRILLIC charset is a candidate only when every 8-bit byte reads in it as a Russian
# letter, №, or a no-break space (_RUSSIAN_BYTES), and must read better by
# RARE_CYRILLIC_PRIOR: two letters ("ёж" in windows-1251 is «Иц» in iso-8859-5) tell too
# little. The Chinese and Korean check before is not widened: "發票" in Big5 reads as
# iso-8859-5 letters, and all-capital iso-8859-5 ("ЗАЯВКА") as GBK stays a known miss.
# Measured on tests/test_message.py's RU_SUBJECTS: 59 of 60 in cp866 (Ёлка is valid UTF-8
# there), 54 of 60 in iso-8859-5 (short words, capitals), the KOI8-R and windows-1251 ones
# as before; no non-ASCII string of the tests, in any of the charsets guessed, read worse.
RARE_CYRILLIC = ("cp866", "iso8859-5")
RARE_CYRILLIC_PRIOR = 3.0
_RUSSIAN_BYTES = {
    "cp866": bytes([*range(0x80, 0xB0), *range(0xE0, 0xF2), 0xFC, 0xFF]),
    "iso8859-5": bytes([0xA0, 0xA1, *range(0xB0, 0xF2)]),
}
_ASCII_AND = {c: bytes(range(0x80)) + b for c, b in _RUSSIAN_BYTES.items()}


def _all_russian_letters(data: bytes, codec: str) -> bool:
    """Every 8-bit byte of `data` reads in `codec` (one of RARE_CYRILLIC) as a Russian
    letter, №, or a no-break space."""
    return not data.translate(None, _ASCII_AND[codec])


def _best_cyrillic(candidates: tuple[str, ...], scores: dict[str, float]) -> str:
    """The candidate that reads best as Russian, with its prior (ties go to the first)."""
    return max(candidates, key=lambda c: scores[c] + _PRIORS.get(c, 0.0))


# KOI8-U (RFC 2319) is KOI8-R with Ukrainian і ї є ґ (and capitals) on 8 bytes where KOI8-R
# has box-drawing signs (0xA4 ╓, 0xA6 ╕, 0xA7 ╖, 0xAD ╜ and 0xB4, 0xB6, 0xB7, 0xBD); every
# other byte is the same letter. Unlabelled Ukrainian text guessed KOI8-R read «кв╕тень»,
# «Надсила╓мо»: a rule on «квітень» never matched. One of those bytes touching a letter byte
# (a KOI8 letter, ё/Ё, or another of them) is a Ukrainian letter inside a word: a box
# sign in Russian text (a table drawn in KOI8-R) stands among other signs and spaces, and
# Russian words have no such byte, so Russian mail keeps KOI8-R. Only a guess is changed:
# a koi8-r label is trusted, as every label is.
_KOI8_U_OWN = rb"[\xa4\xa6\xa7\xad\xb4\xb6\xb7\xbd]"
_KOI8_LETTER = rb"[\xa3\xb3\xc0-\xff\xa4\xa6\xa7\xad\xb4\xb6\xb7\xbd]"
_KOI8_U_WORD = re.compile(_KOI8_LETTER + _KOI8_U_OWN + b"|" + _KOI8_U_OWN + _KOI8_LETTER)


def _koi8_u(codec: str, data: bytes, start: int = 0, end: int | None = None) -> str:
    """`codec`, or koi8-u for a koi8-r guess whose bytes data[start:end] hold a Ukrainian
    letter inside a word (_KOI8_U_WORD)."""
    if codec != "koi8-r":
        return codec
    found = _KOI8_U_WORD.search(data, start, len(data) if end is None else end)
    return "koi8-u" if found is not None else codec


# Japanese text without a usable label (Shift_JIS under us-ascii: SpamAssassin's
# t/data/spam/008, read as windows-1252 "‚ð‚²Šó–]") is told by its kana: hiragana and
# katakana are two-byte characters whose first byte (Shift_JIS 0x82 0x83, EUC-JP 0xA4 0xA5)
# Russian text in KOI8-R, windows-1251 or cp866 almost never has where a pair would start,
# nor does Russian text decode in either (the spam above has two bad pairs in 1081 chars:
# up to one in JAPANESE_BAD is let through). KANA_SHARE of the non-ASCII characters must
# be kana (Japanese prose: a half or more; the spam above: 0.3).
JAPANESE_CANDIDATES = ("euc_jp", "cp932")      # EUC-JP text may decode as Shift_JIS too
KANA_SHARE = 0.2
JAPANESE_BAD = 50
_KANA = re.compile("[\u3041-\u30fa\u30fc]")
_WIDE = re.compile("[^\x00-\x7f]")


def _japanese(pieces: Callable[[], Iterable[bytes]]) -> str | None:
    """The Japanese codec `pieces` decode in (but for one bad pair in JAPANESE_BAD
    characters) and read as kana in, if any."""
    for codec in JAPANESE_CANDIDATES:
        kana = wide = bad = 0
        for piece in pieces():
            text = piece.decode(codec, "replace")
            kana += len(_KANA.findall(text))
            wide += len(_WIDE.findall(text))
            bad += text.count("\ufffd")
        if kana >= 2 and kana >= KANA_SHARE * wide and bad * JAPANESE_BAD <= wide:
            return codec
    return None


# Chinese (GB2312/GBK, Big5) and Korean (EUC-KR) without a label read as KOI8-R
# ("关于发票的问题" was "╧ьсз╥╒ф╠╣днйлБ"), or as windows-1252 ("Ãö©óµo²¼"): every byte
# a Cyrillic or Latin letter or sign, words a Russian rule could match by chance. They are
# told by their common characters: the text must decode in the codec (up to one bad pair in
# JAPANESE_BAD characters) and CJK_SHARE of its non-ASCII characters be of the rows people
# write most (GB2312 level 1 and punctuation; Big5 level 1 and symbols; the 2350 Hangul
# syllables of KS X 1001 and punctuation). Russian words of an even length decode in GBK too
# (KOI8-R "Счет на оплату" is 0.83 level-1 hanzi), so the bytes must also read badly as
# Russian: under CJK_RUSSIAN_FLOOR per 8-bit byte in every Cyrillic charset (the 120
# RU_SUBJECTS cases of tests/test_message.py score -3.75 at worst, Chinese and Korean
# subjects -5.3 at best). Korean text is also common GB2312 (Hangul rows B0-C8 are hanzi
# level 1 there); Chinese text reads mostly as hanja in EUC-KR, but a short one may read as
# Hangul: when both pass, Korean needs half its syllables among _HANGUL_FREQUENT. A line of
# Latin-1 signs ("·¸¸·´¯`" repeated, SpamAssassin's linuxplanet newsletter) is common GB2312
# too ("犯阜疮`"), but no text repeats three characters: half of them, or CJK_DISTINCT, must
# be different.
CJK_CANDIDATES = ("gbk", "big5", "cp949")      # ties go to the first
CJK_SHARE = 0.9
CJK_DISTINCT = 16
CJK_RUSSIAN_FLOOR = -4.5
_HANGUL = re.compile("[\uac00-\ud7a3]")
# frequent syllables of Korean (particles, endings, common business words)
_HANGUL_FREQUENT = frozenset(
    "이다는에하의고을가서지로기한사리를도자니어아대수시들나해으게요인정일적보주전부상세라"
    "우만것있제문과여스오구소내장면안미되성원비그화분동개생국위공중트관거현회신경마계방조무"
    "드연발행실물합할했습입감확청견첨파후께님립까및년월각당저희려씀결재송금액품목번호")


@functools.lru_cache(maxsize=1)
def _cjk_common() -> dict[str, frozenset[str]]:
    """The characters of each CJK candidate's most written rows (built once, ~10 ms)."""
    def rows(codec: str, leads: Iterable[int], top: bytes = b"\xff\xff") -> frozenset[str]:
        out = set()
        for lead in leads:
            for trail in range(0x40, 0xFF):
                pair = bytes([lead, trail])
                if pair <= top:
                    try:
                        out.add(pair.decode(codec))
                    except UnicodeDecodeError:
                        pass
        return frozenset(out)
    return {"gbk": rows("gb2312", [*range(0xA1, 0xA4), *range(0xB0, 0xD8)]),
            "big5": rows("big5", range(0xA1, 0xC7), b"\xc6\x7e"),
            "cp949": rows("euc_kr", [*range(0xA1, 0xA4), *range(0xB0, 0xC9)])}


def _chinese_korean(pieces: Callable[[], Iterable[bytes]]) -> str | None:
    """The Chinese or Korean codec `pieces` read as (see above), if any."""
    common = _cjk_common()
    passed: dict[str, float] = {}
    frequent = hangul = 0
    for codec in CJK_CANDIDATES:
        wide = bad = known = 0
        seen: set[str] = set()
        for piece in pieces():
            text = piece.decode(codec, "replace")
            chars = _WIDE.findall(text)
            wide += len(chars)
            if len(seen) < CJK_DISTINCT:
                seen.update(chars)
            bad += text.count("\ufffd")
            known += sum(1 for ch in chars if ch in common[codec])
            if codec == "cp949":
                syllables = _HANGUL.findall(text)
                hangul += len(syllables)
                frequent += sum(1 for ch in syllables if ch in _HANGUL_FREQUENT)
        if wide >= 2 and bad * JAPANESE_BAD <= wide and known >= CJK_SHARE * wide \
                and len(seen) >= min(wide / 2, CJK_DISTINCT):
            passed[codec] = known / wide
    if not passed or not _reads_badly_as_russian(pieces) or _latin_words(pieces):
        return None
    if "cp949" in passed and len(passed) > 1 and 2 * frequent < hangul:
        del passed["cp949"]
    if "cp949" in passed and 2 * frequent >= hangul:
        return "cp949"
    return max(passed, key=lambda c: (passed[c], -CJK_CANDIDATES.index(c)))


# Short Czech, Slovak and Polish words in ISO-8859-2 are common Big5 too: "\xa9i\xb9ka" (Šiška,
# a surname) is 姆隕a, "\xa9\xedma" (Šíma) 拗ma, "\xa9a\xb9a" (Šaša) 奄鈴: Big5 (and GBK) take an
# ASCII letter for a trail byte. Latin words have their 8-bit bytes inside them, a few at a
# time, among ASCII letters, and each is a letter; a CJK text has runs of them, or words of
# them alone, or signs among them ("會議通知" is "·|Ä³³qª¾" in windows-1252, "ˇ|Äłłq" in
# ISO-8859-2). Bytes that read so in one of LATIN_CANDIDATES are not CJK.
_EIGHT_BIT_RUN = re.compile(rb"[\x80-\xff]+")
_LATIN_RUN = 3          # "žluťoučký", "příliš", "Šťastný": no more 8-bit letters in a row


def _latin_words(pieces: Callable[[], Iterable[bytes]]) -> bool:
    """True when every run of 8-bit bytes is at most _LATIN_RUN long and touches an ASCII
    letter (one byte alone, "č." in "fakturu č. 5", may stand alone), and every 8-bit byte
    reads as a letter (Lu, Ll) in one of LATIN_CANDIDATES."""
    for piece in pieces():
        for run in _EIGHT_BIT_RUN.finditer(piece):
            start, end = run.span()
            if end - start > _LATIN_RUN:
                return False
            if end - start > 1 and not (piece[start - 1:start].isalpha()
                                        or piece[end:end + 1].isalpha()):
                return False
    return any(all(unicodedata.category(ch) in ("Lu", "Ll")
                   for piece in pieces() for ch in _WIDE.findall(piece.decode(codec, "replace")))
               for codec in LATIN_CANDIDATES)


def _reads_badly_as_russian(pieces: Callable[[], Iterable[bytes]]) -> bool:
    high = 0
    scores = dict.fromkeys(CYRILLIC_BODY_CANDIDATES, 0.0)
    for piece in pieces():
        high += len(piece.translate(None, _ASCII))
        for codec in CYRILLIC_BODY_CANDIDATES:
            scores[codec] = score_russian(piece.decode(codec, "replace"), scores[codec])
    return max(scores.values()) < CJK_RUSSIAN_FLOOR * high


# Words of 8-bit bytes alone (looks_cyrillic) are also Latin text's own: a Finnish
# "skandeja \xf6\xf6\xf6" (SpamAssassin's t.rules/SUBJ_ILLEGAL_CHARS/fp-bug4352-att2882), a
# file "attachment.\xe4\xf6\xfc" under iso-8859-1 (james-mime4j's
# attachment-filename-encoding-Latin1.msg), a line of "\xb7\xb8\xb8\xb7\xb4\xaf`" were read
# as windows-1251 ("ццц", "attachment.дць", "·ёё·ґЇ`"). The best Cyrillic reading must also
# beat the best Latin one by CYRILLIC_WINS_PER_BYTE per 8-bit byte: on the 120 RU_SUBJECTS
# cases of tests/test_message.py it does by 1.74 at least ("Щит" in KOI8-R), short capitals
# in cp866 or mac-cyrillic ("УФНС") by 1.1, and those three samples by 0.8 at most.
CYRILLIC_WINS_PER_BYTE = 1.0


def reads_cyrillic(sample: bytes, candidates: tuple[str, ...] = CYRILLIC_HEADER_CANDIDATES,
                   russian: float | None = None) -> bool:
    """True when `sample` (bytes that look Cyrillic) reads better in one of `candidates`
    (`russian`: the best score among them, if known) than in any Latin charset, by
    CYRILLIC_WINS_PER_BYTE per 8-bit byte."""
    high = len(sample.translate(None, _ASCII))
    if not high:
        return False
    if russian is None:
        russian = max(score_russian(sample.decode(c, "replace")) for c in candidates)
    readings = [sample.decode(c, "replace") for c in LATIN_CANDIDATES]
    if russian - max(map(_latin_bound, readings)) >= CYRILLIC_WINS_PER_BYTE * high:
        return True       # not even a bound of the Latin scores comes near: no need to score
    latin = max(LatinCounts(text).best() for text in readings)
    return russian - latin >= CYRILLIC_WINS_PER_BYTE * high


# Accented letters in per mille of all letters (Wikipedia's letter-frequency tables, rounded),
# with a prior per language: Czech and the western languages alike, Polish a little less
# (it shares cp1250 with Czech and would otherwise read Spanish "mañana" as "mańana"), and
# Slovak (rough figures; without it ISO-8859-2 Slovak was guessed windows-1252) between.
# Danish/Norwegian and Swedish as Polish: without them ø, å and æ were letters of no language
# and windows-1250's ř, ĺ and ć won ("Jřrn Střylen" for an iso-8859-1 "Jørn Støylen", the
# mail gem's spec/fixtures/emails/error_emails/header_fields_with_empty_values.eml); less
# than Czech, so a Czech "při" with nothing else to tell stays Czech.
_LATIN_LANGS: dict[str, tuple[float, str]] = {
    "cs": (0.0, "á8.7 č4.6 ď0.2 é6.3 ě12.2 í16.4 ň0.1 ó0.2 ř3.8 š6.9 ť0.1 ú0.5 ů2.0 ý10 ž7.2"),
    "pl": (-1.0, "ą7 ć4 ę10 ł21 ń3.6 ó11 ś6.6 ź0.8 ż7"),
    "sk": (-0.5, "á15 ä1 č9 ď2 é8 í16 ĺ0.2 ľ3 ň1 ó2 ô1.5 ŕ0.2 š7 ť5 ú7 ý14 ž8"),
    "de": (0.0, "ä5.8 ö4.4 ü10 ß3.1"),
    "fr": (0.0, "à4.9 â0.5 ç0.9 è2.7 é15 ê2.2 ë0.1 î0.5 ï0.1 ô0.2 ù0.6 û0.6 œ0.2"),
    "es": (0.0, "á5 é4.3 í7.3 ñ3.1 ó8.3 ú1.7 ü0.1"),
    "it": (0.0, "à6.4 è2.6 é0.3 ì0.3 ò0.2 ù1.7"),
    "pt": (0.0, "á5 à0.7 â1 ã7 ç5 é3.4 ê4 í1.3 ó2.6 ô1 õ1 ú1"),
    "no": (-1.0, "æ8.7 ø9.4 å11.9 é0.1"),
    "sv": (-1.0, "å13.4 ä18 ö13.1 é0.1"),
}
_LATIN_LOG = {lang: (prior, {e[0]: math.log(float(e[1:]) / 1000) for e in table.split()})
              for lang, (prior, table) in _LATIN_LANGS.items()}
LATIN_CANDIDATES = ("cp1252", "cp1250", "iso8859-2")      # ties go to the first
_SYMBOLS = set("€©®«»–—“”„‘’•…°±§·×¡")
_OPENERS = set("«»“”„‘’–—(¡")         # may stand right before a word
# Common signs too, but not glued to a letter: a price list under iso-8859-1 ("from \xa3 6.25",
# SpamAssassin's t/data/welcomelists/ryanairmail.com) read as Polish "from Ł 6.25" while £
# was a rare sign, and "\xa3\xf3d\xbc" is still "Łódź". ¡ opens a Spanish sentence
# ("\xa1Hola, se\xf1or!" was ISO-8859-2 "ĄHola, seńor!"). ¿ is Polish ż in windows-1250 and
# ISO-8859-2 ("¿e" is "że"), so it opens a question (_QUESTION) only where ż cannot be or a
# question follows: before a capital ("¿Qué", which would be "żQué"), or before a word with a
# "?" after it ("Hola, ¿vienes mañana?"). Otherwise, as before, it is a rare sign glued to
# its word: unlabelled Spanish read as windows-1250, "żQué tal? żCómo estás?", "seńor".
_PRICE_SIGNS = set("£¥¢")
_QUESTION = math.log(0.005)        # ¿ before a small letter, a "?" after it ("że" scores -6)
_FOREIGN_LETTER = math.log(0.0001)   # a letter the language does not write
# every language's log frequency of a letter, in _LATIN_LOG's order (LatinCounts.best)
_LATIN_PRIORS = [prior for prior, _ in _LATIN_LOG.values()]
_LATIN_ROWS = {letter: [table.get(letter, _FOREIGN_LETTER) for _, table in _LATIN_LOG.values()]
               for _, table in _LATIN_LOG.values() for letter in table}
_FOREIGN_ROW = [_FOREIGN_LETTER] * len(_LATIN_PRIORS)
_SYMBOL = math.log(0.01)             # common punctuation and signs
_RARE_SYMBOL = math.log(0.001)
_IN_WORD = math.log(0.01)            # extra, for a sign glued to the letter after it ("®ádost")
_INVALID = math.log(1e-7)            # C1 controls, bytes the codec does not define


_NOT_ASCII = re.compile(r"[^\x00-\x7f]")
# What the Latin candidates read 8-bit bytes as, other than letters (LatinCounts)
_LATIN_SIGNS = re.compile("[" + re.escape("".join(sorted({
    ch for codec in LATIN_CANDIDATES for ch in bytes(range(0x80, 0x100)).decode(codec, "replace")
    if not ch.isalpha()}))) + "]")
# Each letter the Latin candidates read, in either case, scored in the language that writes
# it most: summed over a text's letters, at least LatinCounts(text).best() (no prior is above
# 0, signs and the rest add less than 0; a letter not here counts 0), at C speed.
_LATIN_CHAR_BEST = {ch: max(_LATIN_ROWS.get(ch.lower(), _FOREIGN_ROW)) for ch in "".join(
    bytes(range(0x80, 0x100)).decode(c, "replace") for c in LATIN_CANDIDATES) if ch.isalpha()}


def _opens_question(text: str, i: int) -> float | None:
    """The score of the ¿ at text[i] as a Spanish question's opener, None if it is not one."""
    after = text[i + 1:i + 2]
    if (i and text[i - 1].isalpha()) or not after.isalpha():
        return None
    if after.isupper():
        return _SYMBOL
    return _QUESTION if "?" in text[i + 2:] else None


def _latin_bound(text: str) -> float:
    """At least LatinCounts(text).best(), for reads_cyrillic."""
    return sum(map(_LATIN_CHAR_BEST.get, filter(str.isalpha, _NOT_ASCII.findall(text)),
                   repeat(0.0)))


class LatinCounts:
    """What the Latin scores are made of, counted in one pass for every language: each
    letter (lower case) and how often, and the rest's score, which no language changes
    (signs, C1 controls and replacement characters). Counts of pieces add up."""

    __slots__ = ("letters", "rest")

    def __init__(self, text: str = "") -> None:
        # The letters are counted at C speed; the Python loop below runs over the rest, found
        # by _LATIN_SIGNS (what else is not ASCII is looked for only when there is such).
        chars = _NOT_ASCII.findall(text)
        letters = list(filter(str.isalpha, chars))
        self.letters: Counter[str] = Counter(map(str.lower, letters))
        self.rest = 0.0
        signs = list(_LATIN_SIGNS.finditer(text)) if len(letters) < len(chars) else []
        if len(letters) + len(signs) < len(chars):
            signs = [m for m in _NOT_ASCII.finditer(text) if not m.group().isalpha()]
        for found in signs:
            i, ch = found.start(), found.group()
            if ch == "\ufffd" or ch <= "\x9f":
                self.rest += _INVALID
            elif ch == "¿" and (opens := _opens_question(text, i)) is not None:
                self.rest += opens
            else:
                # glued to the letters after it ("®ádost", "lu»oučký"; a sign between, as in
                # "©»astný", too), unless it may open a word there ("»Ano«")
                after = text[i + 1:i + 3]
                glued = after[:1].isalpha() or (after[:1] in _SYMBOLS and after[1:].isalpha())
                common = ch in _SYMBOLS or (ch in _PRICE_SIGNS and not glued)
                self.rest += _SYMBOL if common else _RARE_SYMBOL
                if glued and (ch not in _OPENERS or (i and text[i - 1].isalpha())):
                    self.rest += _IN_WORD

    def add(self, other: "LatinCounts") -> None:
        self.letters.update(other.letters)
        self.rest += other.rest

    def score(self, lang: str) -> float:
        """How well the text reads as language `lang` (its prior included)."""
        prior, table = _LATIN_LOG[lang]
        return prior + self.rest + sum(n * table.get(low, _FOREIGN_LETTER)
                                       for low, n in self.letters.items())

    def best(self) -> float:
        """max(self.score(lang) for every language), the same sums in the same order, one
        pass over the letters (a language at a time, it was 65 us of a raw 8-bit Subject)."""
        sums = [0.0] * len(_LATIN_PRIORS)
        for low, n in self.letters.items():
            row = _LATIN_ROWS.get(low, _FOREIGN_ROW)
            sums = [total + n * x for total, x in zip(sums, row)]
        return max(prior + self.rest + total for prior, total in zip(_LATIN_PRIORS, sums))


def score_latin(text: str, lang: str) -> float:
    """How well ``text`` reads as language ``lang``, from its non-ASCII characters."""
    return LatinCounts(text).score(lang)


def guess_latin(data: bytes) -> tuple[str, str]:
    """(text, codec) for 8-bit Latin text with no usable label: each of LATIN_CANDIDATES
    read as each language of _LATIN_LANGS; the best pair wins ("fakturu \xe8." is "č" in
    Czech, "très" in French: the rest of the text decides, then the order above)."""
    readings = [(data.decode(codec, "replace"), codec) for codec in LATIN_CANDIDATES]
    return max(readings, key=lambda r: LatinCounts(r[0]).best())


# Decoding labelled and unlabelled bytes


class Decoded:
    """Text decoded from bytes, with what was guessed (notes) and what was wrong (defects)."""

    __slots__ = ("text", "charset", "notes", "defects")

    def __init__(self, text: str, charset: str | None, notes: list[str],
                 defects: list[str]) -> None:
        self.text, self.charset, self.notes, self.defects = text, charset, notes, defects


_LATIN_LABELS = {"ascii", "latin-1", "iso8859-1", "cp1252", "iso8859-15"}

# KOI8-R and windows-1251 put the Cyrillic letters on the same bytes in another order (and
# with the cases swapped): text in one, declared as the other, reads as a jumble of letters.
# A mailer that declares one of them whatever it sends is a known case in Russian mail. The
# label is trusted unless the other charset reads better by OTHER_WINS in all and
# OTHER_WINS_PER_BYTE per 8-bit byte: on the 60 Russian subjects of tests/test_message.py
# (RU_SUBJECTS), each in both charsets and rightly declared, the other charset never reads
# better by more than 0.75 (two capitals, "КП"), and 100 of the 120 declared wrongly are
# caught (the rest are a word or two); a line of prose reads ~0.5 per byte better.
_CYRILLIC_PAIR = {"koi8-r": "cp1251", "cp1251": "koi8-r"}
OTHER_WINS = 6.0
OTHER_WINS_PER_BYTE = 0.25
PAIR_SAMPLE = 8192        # bytes whose letters' case is counted: a body's first pages tell
PAIR_SCORED = 2048        # bytes scored when that count says capitals (as all of it would)


def _other_reads_better(declared: float, other: float, high: int) -> bool:
    return other - declared >= max(OTHER_WINS, OTHER_WINS_PER_BYTE * high)


def decode_bytes(data: bytes, label: str | None,
                 candidates: tuple[str, ...] = CYRILLIC_HEADER_CANDIDATES,
                 rare: tuple[str, ...] = ()) -> Decoded:
    """Decode ``data`` declared as ``label`` (None: no label); guess when the label is absent,
    unknown or plainly wrong (among ``candidates`` and ``rare``: guess_decode).  Never
    raises."""
    guessed_text: list[str] = []

    def guess() -> str:           # keeps the text it decoded: not decoded a second time
        text, codec = guess_decode(data, candidates, rare)
        guessed_text.append(text)
        return codec

    codec, guessed, notes, defects = _choose_charset(
        label, guess, lambda c: _mislabelled(data, c),
        lambda c: _decodes_eight_bit((data,), c))
    if guessed:
        text = guessed_text[0]
    else:
        read_as = _latin_read_as(codec, data, 0, len(data))
        if read_as not in (codec, "cp1252"):     # cp1252 for iso-8859-1: what the label means
            notes.append(f"declared {label} but bytes are {read_as}")
        codec = read_as
        try:
            text = data.decode(codec)
        except UnicodeDecodeError:
            text = data.decode(codec, "replace")
            defects.append(f"bytes not valid in {codec}, replaced")
    if "\ufffd" in text and not defects:
        defects.append(f"bytes not valid in {codec}, replaced")
    return Decoded(text, codec, notes, defects)


def _choose_charset(label: str | None, guess: Callable[[], str],
                    mislabelled: Callable[[str], bool], decodes: Callable[[str], bool]
                    ) -> tuple[str, bool, list[str], list[str]]:
    """(codec, whether it was guessed, notes, defects) for bytes declared as ``label``: the
    label's codec unless it is absent, unknown or `mislabelled`, else `guess()`; a 7-bit
    label's 8-bit form (_EIGHT_BIT_FORMS) when `decodes` (two 8-bit bytes or more, that
    decode in it) says so of it and not of the label's; for decode_bytes (whole bytes) and
    inspect_bytes (a piece at a time) alike."""
    notes: list[str] = []
    defects: list[str] = []
    codec = resolve_charset(label)
    if label and codec is None:
        codec = guess()
        notes.append(f"guessed {codec} for unknown charset {label!r}")
        defects.append(f"unknown charset {label!r}")
    elif codec is None:
        codec = guess()
        if codec != "ascii":
            notes.append(f"raw 8-bit guessed {codec}")
    elif mislabelled(codec):
        guessed = guess()
        notes.append(f"declared {label} but bytes are {guessed}")
        codec = guessed
    else:
        if codec in _EIGHT_BIT_FORMS and not decodes(codec):
            form = next((f for f in _EIGHT_BIT_FORMS[codec] if decodes(f)), None)
            if form is not None:
                notes.append(f"declared {label} but bytes are {form}")
                return form, False, notes, defects
        return _SUPERSETS.get(codec, codec), False, notes, defects
    return codec, True, notes, defects


# ISO-2022-JP and ISO-2022-KR are 7-bit: Japanese and Korean mailers (and gateways that
# convert the text, not the label) send EUC-JP or Shift_JIS, EUC-KR, under them. Such 8-bit
# bytes decoded as replacement characters from end to end (sisimai's set-of-emails
# lhost-ezweb-02.eml, a bounce in EUC-JP labelled iso-2022-jp; SpamAssassin's
# t.rules/PLING_QUERY/fp_bug6149_thomas_4480). The first form they decode in is read, EUC-JP
# before Shift_JIS: EUC-JP text often decodes as Shift_JIS too (as half-width katakana),
# Shift_JIS text almost never as EUC-JP. One 8-bit byte alone is not taken for a character
# ("Dij\x8aat.", the mail gem's attachment_with_encoded_name.eml, stays "Dij\ufffdat.").
_EIGHT_BIT_FORMS = {"iso2022_jp": ("euc_jp", "cp932"), "iso2022_jp_1": ("euc_jp", "cp932"),
                    "iso2022_jp_2": ("euc_jp", "cp932"), "iso2022_jp_3": ("euc_jis_2004",),
                    "iso2022_jp_2004": ("euc_jis_2004",), "iso2022_kr": ("cp949",)}


# Labels that mailers put on text in a superset of the charset they name: Outlook and Foxmail
# label GBK text gb2312 (mail readers, and the WHATWG Encoding Standard, read gb2312 as GBK;
# Python's strict gb2312 codec gave replacement characters for "拢" and the like). GBK reads
# as GB18030 (WHATWG's gbk decoder is its gb18030 decoder; Python's gb18030 reads every pair
# its gbk reads the same): Chinese mailers send GB18030 under a gbk or gb2312 label, and its
# four-byte letters (Uyghur, Tibetan, rare hanzi such as "𠀀") and "€" (A2E3) were replacement
# characters. The check for UTF-8 under the label (_mislabelled) is made with the label's own
# codec first.
_SUPERSETS = {"gb2312": "gb18030", "gbk": "gb18030", "euc_kr": "cp949", "shift_jis": "cp932",
              "iso2022_jp": "cp50220"}


# ISO-2022-JP as mail readers read it (the WHATWG decoder; Microsoft's CP50220): Windows
# mailers write the NEC and IBM rows of windows-31j in its double-byte runs (① № ㈱ Ⅱ 髙),
# which Python's iso2022_jp refuses: "ЖД№41" from a Japanese mailer read "ЖД\ufffd41".
# "cp50220" is Python's iso2022_jp with an error handler that reads each pair it refuses
# as that pair's windows-31j bytes (the handler runs for those pairs alone).
@functools.lru_cache(maxsize=1)
def _jis_pairs() -> dict[bytes, str]:
    """The double-byte pairs windows-31j reads and iso2022_jp does not (built once)."""
    table: dict[bytes, str] = {}
    for j1 in range(0x21, 0x7F):
        for j2 in range(0x21, 0x7F):
            s2 = j2 + 0x1F + (j2 >= 0x60) if j1 % 2 else j2 + 0x7E
            try:
                text = bytes([(j1 + 1) // 2 + (0x70 if j1 < 0x5F else 0xB0), s2]).decode("cp932")
            except UnicodeDecodeError:
                continue
            table[bytes([j1, j2])] = text
    return table


@functools.lru_cache(maxsize=None)
def _jis_errors(errors: str) -> str:
    """The name of an error handler: a refused pair's windows-31j reading, else `errors`."""
    name = f"mailrouter-cp50220-{errors}"

    def handler(exc: UnicodeError) -> tuple[str, int]:
        if isinstance(exc, UnicodeDecodeError):
            text = _jis_pairs().get(exc.object[exc.start:exc.end])
            if text is not None:
                return text, exc.end
        return codecs.lookup_error(errors)(exc)    # type: ignore[return-value]

    codecs.register_error(name, handler)
    return name


class _JisDecoder(codecs.IncrementalDecoder):
    def __init__(self, errors: str = "strict") -> None:
        super().__init__(errors)
        self._inner = codecs.getincrementaldecoder("iso2022_jp")(_jis_errors(errors))

    def decode(self, input: bytes, final: bool = False) -> str:  # type: ignore[override]  # bytes
        return self._inner.decode(input, final)

    def reset(self) -> None:
        self._inner.reset()


def _find_cp50220(name: str) -> codecs.CodecInfo | None:
    if name != "cp50220":
        return None
    jis = codecs.lookup("iso2022_jp")
    return codecs.CodecInfo(
        name="cp50220", encode=jis.encode, incrementaldecoder=_JisDecoder,
        decode=lambda data, errors="strict": jis.decode(data, _jis_errors(errors)))


codecs.register(_find_cp50220)


# Mailers label windows-1252 text iso-8859-1: its curly quotes, dashes and euro sign sit in
# 0x80-0x9F, where ISO-8859-1 has C1 controls that no text holds. Mail readers (and the
# WHATWG Encoding Standard) read the label as windows-1252; so do we, when such bytes are
# there and windows-1252 defines them all (Python's cp1252 leaves five undefined).
_C1 = re.compile(rb"[\x80-\x9f]")
_NOT_IN_1252 = re.compile(rb"[\x81\x8d\x8f\x90\x9d]")

# ISO-8859-2 and windows-1250 (Czech, Slovak, Polish mail) put š ť ž ś ź ą ľ and their
# capitals on different bytes, and Czech mail often carries one labelled as the other:
# windows-1250 text under an iso-8859-2 label lost them to C1 controls ("Příli luoučký"),
# ISO-8859-2 text under a windows-1250 label read "©»astný ®ofín". Where such bytes are
# (C1 bytes under iso-8859-2, ISO-8859-2's letters at 0xA1-0xBE under windows-1250), the
# label is overruled when the other reads better, scored on PAIR_SCORED bytes, by
# OTHER_WINS in all and LATIN_WINS_PER_BYTE per byte the two read differently. Measured on
# the Czech, Polish and Slovak subjects and texts of tests/test_message.py: a swapped label
# gains 3-4 per such byte (less for the rare ť), a right one at most 1.4 (Slovak ľ, which
# ISO-8859-2 reads as ž), and a short Polish "mąka" reads about as well either way and
# keeps its label.
LATIN_WINS_PER_BYTE = 2.0

# Czech and Polish text under a Western label (a webmail's form, a script's fixed header):
# windows-1250's ř č ě ů ň read as ø è ì ù ò in windows-1252 ("Pøíští týden"). The other
# Central European readings win by the same margin, per byte each reads differently from
# the label's. Measured on tests/test_message.py's Western subjects and texts: the best
# other reading stays at least 5.3 under that margin; Czech and Polish prose passes it
# (short subjects with one or two such letters keep the label).


def _differ(codec: str, other: str) -> re.Pattern[bytes]:
    """The bytes `codec` and `other` read differently."""
    diff = [b for b in range(0x80, 0x100)
            if bytes([b]).decode(codec, "replace") != bytes([b]).decode(other, "replace")]
    return re.compile(b"[" + b"".join(re.escape(bytes([b])) for b in diff) + b"]")


# label's codec -> the other readings scored against it, each with the bytes that count
# (and must be there): the pair's as measured above, every differing byte under a Western label
_OTHER_READINGS: dict[str, tuple[tuple[str, re.Pattern[bytes]], ...]] = {
    "iso8859-2": (("cp1250", _C1),),
    "cp1250": (("iso8859-2", re.compile(rb"[\xa1\xa5\xa6\xa9\xab\xac\xae\xb1\xb5\xb6"
                                        rb"\xb9\xbb\xbc\xbe]")),),
    **{western: tuple((other, _differ(western, other)) for other in ("cp1250", "iso8859-2"))
       for western in ("iso8859-1", "cp1252")},
}


def _latin_read_as(codec: str, data: bytes, start: int, end: int) -> str:
    """The codec a Latin label's bytes are read in: the label's, or the one the notes above
    say it stands for."""
    if codec == "iso8859-1" and _C1.search(data, start, end) \
            and not _NOT_IN_1252.search(data, start, end):
        codec = "cp1252"
    others = _OTHER_READINGS.get(codec, ())
    if not any(differ.search(data, start, end) for _, differ in others):
        return codec
    sample = data[start:min(end, start + PAIR_SCORED)]
    declared = LatinCounts(sample.decode(codec, "replace")).best()
    best, top = codec, declared
    for other, differ in others:     # of those that pass the margin, the one that reads best
        n = len(differ.findall(sample))
        score = LatinCounts(sample.decode(other, "replace")).best() if n else declared
        if score - declared >= max(OTHER_WINS, LATIN_WINS_PER_BYTE * n) and score > top:
            best, top = other, score
    return best


@functools.lru_cache(maxsize=None)
def _multi_byte_ascii(codec: str) -> bool:
    """A multi-byte codec that reads ASCII as ASCII, other than UTF-8 (gb2312, big5,
    shift_jis, euc-kr...): a LF byte ends a character there (no trail byte is 0x0A)."""
    if codecs.lookup(codec).name == "utf-8" or _single_byte(codec):
        return False
    try:
        return "a\n".encode(codec) == b"a\n"
    except (UnicodeError, LookupError):
        return False


def _decodes(data: bytes, codec: str) -> bool:
    try:
        data.decode(codec)
    except UnicodeDecodeError:
        return False
    return True


def _decodes_eight_bit(pieces: Iterable[bytes], codec: str) -> bool:
    """`pieces` hold two 8-bit bytes or more and every piece decodes in `codec`: what
    _choose_charset asks of a 7-bit label's 8-bit forms (one pass over the pieces)."""
    high = 0
    for piece in pieces:
        if not _decodes(piece, codec):
            return False
        high += len(piece.translate(None, _ASCII))
    return high > 1


@functools.lru_cache(maxsize=None)
def _single_byte(codec: str) -> bool:
    """One character per byte (koi8-r, cp1251, iso8859-2 ...), each read alone: not a
    multi-byte codec, nor one whose escapes change how the bytes after them read (hz,
    cp50220; the latter reads bytes(range(256)) as 256 characters)."""
    probe = bytes(range(256)) + b"\x1b$B$3\x1b(B~{<:~}"      # ISO-2022 and HZ escapes
    return probe.decode(codec, "replace") == "".join(
        bytes([b]).decode(codec, "replace") for b in probe)


def _mislabelled(data: bytes, codec: str) -> bool:
    """Mail clients label windows-1251 and KOI8-R text as us-ascii or iso-8859-1; UTF-8 labels
    also arrive on 8-bit Cyrillic text, and 8-bit labels (koi8-r, windows-1251, a script's
    fixed header) on UTF-8 text, which 8-bit text almost never is by chance: two Cyrillic
    letters in a row are never a valid UTF-8 sequence; so do multi-byte labels (gb2312,
    shift_jis...) on UTF-8 text that does not decode in them.  Such labels are not trusted
    when the bytes disagree."""
    if data.isascii():
        return False
    if codec == "ascii":
        return True
    if codec == "utf-8":
        return _valid_utf8(data) is None and not _damaged_utf8(*_utf8_counts(data))
    if _single_byte(codec) and _valid_utf8(data) is not None:
        return True
    if _multi_byte_ascii(codec) and _valid_utf8(data) is not None:
        return not _decodes(data, codec)      # gb2312, shift_jis... on UTF-8 text
    if codec in _CYRILLIC_PAIR:
        if not _mostly_capitals(data[:PAIR_SAMPLE], codec):
            return False                       # as prose is, in the charset it is in
        sample = data[:PAIR_SCORED]
        return looks_cyrillic(sample) and _other_reads_better(
            score_russian(sample.decode(codec, "replace")),
            score_russian(sample.decode(_CYRILLIC_PAIR[codec], "replace")),
            len(sample) - len(sample.decode("ascii", "ignore")))
    return codec in _LATIN_LABELS and looks_cyrillic(data) and reads_cyrillic(
        data[:PAIR_SCORED], CYRILLIC_BODY_CANDIDATES)


_C0_DF, _E0_FF = bytes(range(0xC0, 0xE0)), bytes(range(0xE0, 0x100))


def _mostly_capitals(data: bytes, codec: str) -> bool:
    """More capital letters than small ones in `data` read as `codec` (koi8-r: capitals at
    0xE0-0xFF; windows-1251: at 0xC0-0xDF), counted at C speed: text in the other charset
    reads as capitals ('дНАПШИ ДЕМЭ'), prose in its own mostly as small letters. Only such
    text (or real capitals, which the scores then keep) is scored: 2.8 ms for 10 KB."""
    c0 = len(data) - len(data.translate(None, _C0_DF))
    e0 = len(data) - len(data.translate(None, _E0_FF))
    return (e0 > c0) if codec == "koi8-r" else (c0 > e0)


# RFC 2047 header values

_FOLD = re.compile(rb"\r?\n(?=[ \t])")
_UNSAFE = re.compile(r"[\r\n\x00]")
_PART = tuple[bytes, "str | None"]


def decode_header_value(raw: bytes | str) -> tuple[str, list[str]]:
    """Decode one header value (RFC 2047 words, raw 8-bit guessed), unfolded and stripped.

    Returns (text, notes); notes name every guess and every problem.  Never raises.
    """
    result = decode_header_bytes(raw)
    return result.text, result.notes + [d for d in result.defects if d not in result.notes]


def decode_header_bytes(raw: bytes | str, fallback: str | None = None) -> Decoded:
    """Like decode_header_value, but keeps guesses (notes) and problems (defects) apart.
    ``fallback``: the charset the message declares for its text; raw 8-bit bytes are read in
    it when it is a multi-byte one they decode in (see _read_in_fallback), and a Cyrillic
    single-byte one is a candidate of the guess (_header_candidates)."""
    data = raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogateescape")
    data = _FOLD.sub(b"", data).replace(b"\r", b"").replace(b"\n", b"")
    notes: list[str] = []
    defects: list[str] = []
    pieces: list[str] = []
    if _plain_ascii(data):
        # No encoded-word (the stdlib's decode_header finds none without "=?") and no 8-bit
        # byte: the one unlabelled ASCII chunk decode_bytes would decode, with nothing to note.
        # Most headers are this; the words, the merge and the guess are skipped.
        pieces.append(data.decode("ascii"))
        parts: list[_PART] = []
    else:
        parts = _merge(_split_words(data, defects))
    candidates = _header_candidates(fallback)
    for chunk, label in parts:
        decoded = _read_in_fallback(chunk, fallback) if label is None and fallback else None
        if decoded is None:
            decoded = decode_bytes(chunk, label, candidates, RARE_CYRILLIC)
        pieces.append(decoded.text)
        notes += [n for n in decoded.notes if n not in notes]
        defects += [d for d in decoded.defects if d not in defects]
    text = "".join(pieces)
    if _UNSAFE.search(text):
        # An encoded-word may hide CR, LF or NUL; a decoded value that later goes into an
        # autoreply Subject must not be able to start a new header line.
        text = _UNSAFE.sub(" ", text)
        defects.append("CR, LF or NUL in a decoded value replaced by spaces")
    return Decoded(text.strip(), None, notes, defects)


# Cyrillic single-byte charsets a message may declare for its text. Raw 8-bit header bytes
# are guessed among KOI8-R and windows-1251 (CYRILLIC_HEADER_CANDIDATES), and cp866 and
# ISO-8859-5 on stricter terms (RARE_CYRILLIC: more candidates, more wrong guesses on a few
# short words); a DOS or ISO mailer writes its Subject and From in its own charset, and a
# message declaring IBM866 or ISO-8859-5 had them read as windows-1251 ("‘зсв \xad\xa0
# ®Ї«\xa0вг" for «Счёт на оплату»). Mail readers read such headers in the charset of the
# top Content-Type (Thunderbird), so that charset is a candidate too, first (ties go to it;
# no RARE_CYRILLIC terms for it); the scores still decide: the other Cyrillic charset under
# a koi8-r or windows-1251 label is read as what it is, as in a body. A console mailer on
# Russian Windows (code page 866) writes raw IBM866 subjects and file names: «Акт
# сверки.xls» was «ЂЄв бўҐаЄЁ.xls».
_DECLARED_CYRILLIC = frozenset({"koi8-r", "koi8-u", "cp1251", "cp866", "iso8859-5",
                                "mac-cyrillic"})


@functools.lru_cache(maxsize=64)
def _header_candidates(fallback: str | None) -> tuple[str, ...]:
    """The charsets raw 8-bit header bytes are guessed among, in a message whose text is
    declared as `fallback`."""
    codec = resolve_charset(fallback) if fallback else None
    if codec not in _DECLARED_CYRILLIC:
        return CYRILLIC_HEADER_CANDIDATES
    return (codec, *(c for c in CYRILLIC_HEADER_CANDIDATES if c != codec))


def _read_in_fallback(chunk: bytes, label: str) -> Decoded | None:
    """Raw 8-bit header bytes read in the multi-byte charset the message declares for its
    text (gb2312, big5, shift_jis, euc-kr...), when they decode in it and are not UTF-8. The
    guess knows single-byte charsets only: a GB2312 Subject and From of a message whose text
    is gb2312 (SpamAssassin's t/data/nice/cjk/gb2312.1) read as KOI8-R ('х╚пбт╜в╟╫Ь'), a Big5
    one (nice/cjk/big5-base64.1) as ISO-8859-2."""
    codec = resolve_charset(label)
    if codec is None or chunk.isascii() or not _multi_byte_ascii(codec) \
            or _valid_utf8(chunk) is not None:
        return None
    codec = _SUPERSETS.get(codec, codec)
    try:
        text = chunk.decode(codec)
    except UnicodeDecodeError:
        return None
    return Decoded(text, codec, [f"raw 8-bit read as {codec}, the message's charset"], [])


def _plain_ascii(data: bytes) -> bool:
    """ASCII with no '=?': nothing for RFC 2047 or a charset guess to do."""
    return data.isascii() and b"=?" not in data


# More encoded-words than a person's mailer writes in one header (an Outlook Subject of 998
# characters is about 40): past this, they are decoded one by one (_split_words).
_MANY_WORDS = 256


def _split_words(data: bytes, defects: list[str]) -> list[_PART]:
    """Split into (bytes, charset label) with the stdlib; latin-1 keeps every byte one char."""
    text = data.decode("latin-1")
    if text.count("=?") <= _MANY_WORDS:
        try:
            return _as_bytes(email.header.decode_header(text))
        except (email.errors.HeaderParseError, ValueError, TypeError):
            pass
    # One broken encoded-word must not lose the others: decode word by word. So are many
    # words: the stdlib's decode_header takes time quadratic in their number (list.pop(0)).
    parts: list[_PART] = []
    pos = 0
    # ecre is the stdlib's encoded-word pattern; typeshed does not declare it.
    for match in email.header.ecre.finditer(text):  # type: ignore[attr-defined]
        if match.start() > pos:
            parts.append((text[pos:match.start()].encode("latin-1"), None))
        try:
            parts += _as_bytes(email.header.decode_header(match.group(0)))
        except (email.errors.HeaderParseError, ValueError, TypeError):
            defects.append(f"undecodable encoded-word {match.group(0)[:60]!r}")
            parts.append((match.group(0).encode("latin-1"), None))
        pos = match.end()
    parts.append((text[pos:].encode("latin-1"), None))
    return _drop_space_between_words(parts)


def _as_bytes(parts: list[tuple[bytes | str, str | None]]) -> list[_PART]:
    return [(p.encode("latin-1") if isinstance(p, str) else p, c) for p, c in parts]


def _drop_space_between_words(parts: list[_PART]) -> list[_PART]:
    """RFC 2047 section 6.2: whitespace between two encoded-words is not displayed."""
    kept: list[_PART] = []
    for i, (chunk, label) in enumerate(parts):
        between = 0 < i < len(parts) - 1 and parts[i - 1][1] and parts[i + 1][1]
        if label is None and between and not chunk.strip():
            continue
        if chunk or label:
            kept.append((chunk, label))
    return kept


def _merge(parts: list[_PART]) -> list[_PART]:
    """Join adjacent words of one charset before decoding: a UTF-8 character may be split
    across two encoded-words (RFC 2047 forbids it, Outlook and others do it), and
    ``UTF-8*ru`` and ``utf-8`` are one charset. Joined once per run (adding each word to
    the bytes so far was quadratic in the run's length)."""
    merged: list[tuple[list[bytes], str | None]] = []
    for chunk, label in parts:
        if merged and label and merged[-1][1] and _same(merged[-1][1], label):
            merged[-1][0].append(chunk)
        else:
            merged.append(([chunk], label))
    return [(b"".join(chunks), label) for chunks, label in merged]


def _same(a: str | None, b: str) -> bool:
    ca, cb = resolve_charset(a), resolve_charset(b)
    return ca == cb if ca else (a or "").lower() == b.lower()


def decode_param_value(value: str | tuple[str, str, str] | None) -> Decoded:
    """Decode a MIME parameter as ``email.message.Message.get_param`` returns it.

    A tuple is RFC 2231 (charset, language, text whose chars are the raw bytes, latin-1); a
    string may hold RFC 2047 words (not allowed there, but Outlook and Thunderbird write them)
    or raw 8-bit bytes, also as latin-1 chars.
    """
    if value is None:
        return Decoded("", None, [], [])
    if isinstance(value, tuple):
        charset, _language, text = value
        return decode_bytes(text.encode("latin-1", "replace"), charset or None)
    return decode_header_bytes(value.encode("latin-1", "replace"))


# Long bytes (a body): the same decisions as decode_bytes, a piece at a time

PIECE_BYTES = 1 << 16      # decoding a piece holds up to about 4 times its size


def _byte_pieces(data: bytes, start: int, end: int, size: int) -> Iterator[bytes]:
    """data[start:end] in consecutive pieces of about `size` bytes, each but the last ending
    just after a LF: no run of 8-bit bytes, no UTF-8 sequence and no word spans a cut, and
    every guess above restarts its context at an ASCII byte that is not a letter."""
    at = start
    while at < end:
        cut = data.find(b"\n", at + size, end) if at + size < end else -1
        stop = end if cut < 0 else cut + 1
        yield data[at:stop]
        at = stop


def decode_pieces(data: bytes, codec: str, start: int = 0, end: int | None = None,
                  size: int = PIECE_BYTES) -> Iterator[str]:
    """data[start:end] decoded as `codec` with replacement, a piece at a time: the pieces
    join to ``data[start:end].decode(codec, "replace")``."""
    stop = len(data) if end is None else end
    if _cut_at_lf(codec):      # each piece decodes on its own: no buffered copy of it
        for piece in _byte_pieces(data, start, stop, size):
            yield piece.decode(codec, "replace")
        return
    decoder = codecs.getincrementaldecoder(codec)("replace")
    for piece in _byte_pieces(data, start, stop, size):
        text = decoder.decode(piece)
        if text:
            yield text
    tail = decoder.decode(b"", True)
    if tail:
        yield tail


@functools.lru_cache(maxsize=64)
def _cut_at_lf(codec: str) -> bool:
    """True for UTF-8 and the single-byte codecs: a LF byte always ends a character there,
    so a piece ending in LF decodes alone as it would in the whole."""
    if codecs.lookup(codec).name == "utf-8":
        return True
    try:
        return _single_byte(codec)
    except (LookupError, ValueError, TypeError):
        return False


def inspect_bytes(data: bytes, label: str | None,
                  candidates: tuple[str, ...] = CYRILLIC_HEADER_CANDIDATES,
                  start: int = 0, end: int | None = None, size: int = PIECE_BYTES) -> Decoded:
    """What ``decode_bytes(data[start:end], label, candidates)`` finds (charset, notes,
    defects) without holding the decoded text: the bytes are read in pieces of `size`. The
    text is '' (decode_pieces gives it, a piece at a time) except for bytes of at most
    `size`, which are decoded at once as before."""
    end = len(data) if end is None else end
    if end - start <= size:
        return decode_bytes(data[start:end], label, candidates)
    codec, guessed, notes, defects = _choose_charset(
        label, lambda: _guess_pieces(data, start, end, size, candidates),
        lambda c: _mislabelled_pieces(data, start, end, size, c),
        lambda c: _decodes_eight_bit(_byte_pieces(data, start, end, size), c))
    if not guessed:
        read_as = _latin_read_as(codec, data, start, end)
        if read_as not in (codec, "cp1252"):
            notes.append(f"declared {label} but bytes are {read_as}")
        codec = read_as
    if codec != "ascii" and not defects and any(     # ascii: only ASCII bytes get here
            "\ufffd" in t for t in decode_pieces(data, codec, start, end, size)):
        defects.append(f"bytes not valid in {codec}, replaced")
    return Decoded("", codec, notes, defects)


def _is_ascii(data: bytes, start: int, end: int, size: int) -> bool:
    return all(p.isascii() for p in _byte_pieces(data, start, end, size))


def _is_utf8(data: bytes, start: int, end: int, size: int) -> bool:
    try:       # a piece ends with LF or the data: no UTF-8 sequence spans two pieces
        for piece in _byte_pieces(data, start, end, size):
            piece.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _damaged_utf8_pieces(data: bytes, start: int, end: int, size: int) -> bool:
    multi = stray = 0       # a piece ends with LF or the data: no sequence spans two pieces
    for piece in _byte_pieces(data, start, end, size):
        m, s = _utf8_counts(piece)
        multi, stray = multi + m, stray + s
    return _damaged_utf8(multi, stray)


def _looks_cyrillic_pieces(data: bytes, start: int, end: int, size: int) -> bool:
    high = own_word = 0
    for piece in _byte_pieces(data, start, end, size):
        h, o = _cyrillic_counts(piece)
        high, own_word = high + h, own_word + o
    return own_word * 2 > high


def _mislabelled_pieces(data: bytes, start: int, end: int, size: int, codec: str) -> bool:
    """_mislabelled, a piece at a time."""
    if _is_ascii(data, start, end, size):
        return False
    if codec == "ascii":
        return True
    if codec == "utf-8":
        return not _is_utf8(data, start, end, size) and not _damaged_utf8_pieces(
            data, start, end, size)
    if _single_byte(codec) and _is_utf8(data, start, end, size):
        return True
    if _multi_byte_ascii(codec) and _is_utf8(data, start, end, size):
        return not all(_decodes(p, codec) for p in _byte_pieces(data, start, end, size))
    if codec in _CYRILLIC_PAIR:       # on the first PAIR_SAMPLE bytes, as _mislabelled
        return _mislabelled(data[start:min(end, start + PAIR_SAMPLE)], codec)
    return codec in _LATIN_LABELS and _looks_cyrillic_pieces(data, start, end, size) and \
        reads_cyrillic(data[start:min(end, start + PAIR_SCORED)], CYRILLIC_BODY_CANDIDATES)


# An unlabelled body's letters are scored (in Python, per character and candidate) on its
# first GUESS_SCORED bytes: a mailer writes a whole body in one charset, and scoring all of
# a 25 MB body took ~10 s of CPU (bench/README.md, ninth pass).
GUESS_SCORED = 256 * 1024


def _guess_pieces(data: bytes, start: int, end: int, size: int,
                  candidates: tuple[str, ...]) -> str:
    """The codec guess_decode picks, a piece at a time (same order, same scores; the
    letters are scored on the first GUESS_SCORED bytes, the checks before read all)."""
    if _is_ascii(data, start, end, size):
        return "ascii"
    if _is_utf8(data, start, end, size) or _damaged_utf8_pieces(data, start, end, size):
        return "utf-8"
    scored = min(end, start + GUESS_SCORED)
    japanese = _japanese(lambda: _byte_pieces(data, start, scored, size))
    if japanese is not None:
        return japanese
    cjk = _chinese_korean(lambda: _byte_pieces(data, start, scored, size))
    if cjk is not None:
        return cjk
    if not _looks_cyrillic_pieces(data, start, end, size) or not reads_cyrillic(
            data[start:min(end, start + PAIR_SCORED)], candidates):
        latin = {c: LatinCounts() for c in LATIN_CANDIDATES}
        for piece in _byte_pieces(data, start, scored, size):
            for codec in LATIN_CANDIDATES:
                latin[codec].add(LatinCounts(piece.decode(codec, "replace")))
        return max(LATIN_CANDIDATES, key=lambda c: latin[c].best())
    candidates = _plausible(candidates, data, start, scored)
    russian = {codec: _Russian() for codec in candidates}
    for piece in _byte_pieces(data, start, scored, size):
        for codec in candidates:
            russian[codec].add(piece.decode(codec, "replace"))
    return _koi8_u(_best_cyrillic(candidates, {c: r.score() for c, r in russian.items()}),
                   data, start, scored)
