"""Rule patterns (`regex`, `glob`) compiled to RE2: matching time linear in the text, always.

Python's `re` backtracks: `(a+)+$` against 31 bytes of `aaaa…!` ran for 87 seconds on
the event loop, where no `asyncio.timeout` can interrupt it. RE2 (google-re2) runs
every pattern it accepts in time linear in the text and in bounded memory, and
releases the GIL while it runs.

The dialect is RE2's, written as the rule authors wrote Python's: the patterns both
accept mean the same here. Where the two differ, the pattern is rewritten:
`\\w \\d \\s` (and `\\W \\D \\S`) keep Python's Unicode meaning (RE2's are ASCII-only),
`\\Z` is RE2's `\\z`, `\\uXXXX` is `\\x{XXXX}`, and `$` without `(?m)` also matches
before a final newline, as Python's does.

What it refuses (`PatternError`, with the position and why): what RE2 has no
linear-time form for — backreferences, lookahead and lookbehind, atomic groups,
possessive quantifiers, conditionals — plus `(?x)` verbose mode, `(?#...)` comments,
repeats above 1000, programs above RE2's memory limit (8 MiB), `\\W`/`\\S` inside
`[...]`, and `\\b`/`\\B` in a pattern with non-ASCII letters or `\\w`/`\\p{..}`: RE2's
word boundary knows only ASCII, so there it would silently never match.

Globs are `fnmatch` globs (`*`, `?`, `[...]`, `[!...]`), translated here to RE2 rather
than through `fnmatch.translate`, whose output (atomic groups, `\\Z`) RE2 cannot take.

Matching is yes/no on str; text goes to RE2 as UTF-8 (lone surrogates passed through,
never an exception).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import re2  # type: ignore[import-untyped]

__all__ = ["Glob", "PatternError", "Regex", "compile_glob", "compile_regex", "utf8"]

_WORD = r"\p{L}\p{N}_"
# Python's \s on str, code point by code point (str.isspace): RE2's \s lacks \v and non-ASCII.
_SPACE = (r"\t\n\x0b\f\r\x1c-\x1f \x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}"
          r"\x{202f}\x{205f}\x{3000}")
_OUTSIDE = {"w": f"[{_WORD}]", "W": f"[^{_WORD}]", "d": r"\p{Nd}", "D": r"\P{Nd}",
            "s": f"[{_SPACE}]", "S": f"[^{_SPACE}]", "Z": r"\z"}
_IN_CLASS = {"w": _WORD, "d": r"\p{Nd}", "D": r"\P{Nd}", "s": _SPACE}
_HEX = {"u": 4, "U": 8}
_README = "see rules/README.md"

# RE2's complaint (the text after its colon) -> why, for the constructs Python has and RE2 not.
_WHY: tuple[tuple[str, str], ...] = (
    (r"\\[1-9]|\\g|\(\?P=", "RE2 has no backreferences"),
    (r"\(\?<?[=!]", "RE2 has no lookahead or lookbehind"),
    (r"\(\?>", "RE2 has no atomic groups"),
    (r"[*+?}]\+$", "RE2 has no possessive quantifiers"),
    (r"\(\?\(", "RE2 has no conditionals"),
    (r"\(\?#", "RE2 has no (?#...) comments"),
    (r"\(\?[a-zA-Z-]", "RE2 knows only the flags i, m, s and U"),
    (r"\{\d*,?\d*\}$", "RE2 repeats at most 1000 times, nested repeats multiplied"),
    (r"\\N", "RE2 has no \\N{NAME}; write \\x{HEX}"),
)


class PatternError(ValueError):
    """A pattern RE2 cannot take, or cannot take with the meaning it had under Python's re."""

    def __init__(self, why: str, pos: int | None, hint: str = _README) -> None:
        self.why, self.pos, self.hint = why, pos, hint
        super().__init__(why if pos is None else f"{why} at position {pos}")


def utf8(text: str) -> bytes:
    """What RE2 reads: UTF-8, with the lone surrogates of undecodable input passed through."""
    return text.encode("utf-8", "surrogatepass")


@dataclass(frozen=True, slots=True)
class Regex:
    """A compiled `regex:` needle; equal when written the same (lint compares them)."""

    source: str
    test: Callable[[bytes], bool] = field(compare=False, repr=False)

    def search(self, text: str | bytes) -> bool:
        return self.test(text if isinstance(text, bytes) else utf8(text))


@dataclass(frozen=True, slots=True)
class Glob:
    """A compiled `glob:` needle, matching the whole value."""

    source: str
    test: Callable[[bytes], bool] = field(compare=False, repr=False)

    def match(self, text: str) -> bool:
        return self.test(utf8(text))


def _tester(compiled: Any, whole: bool) -> Callable[[bytes], bool]:
    """Yes/no through RE2's own Match: google-re2's Python-level search() (spans, offsets,
    a match object) costs more than the match itself; bench_rules.py measured 6.0 against
    2.6 us per pattern over 1,000 subject patterns. Falls back to the public API should
    the package's internals change."""
    inner = getattr(compiled, "_regexp", None)
    if inner is None or not hasattr(inner, "Match"):
        public = compiled.fullmatch if whole else compiled.search
        return lambda text: public(text) is not None
    match, anchor = inner.Match, re2._Anchor.ANCHOR_BOTH if whole else re2._Anchor.UNANCHORED
    return lambda text: bool(match(anchor, text, 0, len(text))[0][0] >= 0)


def _options() -> Any:
    opts = re2.Options()
    opts.log_errors = False       # our error goes to the config report, not to stderr
    opts.never_capture = True     # yes/no only: no submatch engine needed
    return opts


def _re2(pattern: str, source: str) -> Any:
    try:
        return re2.compile(pattern, _options())
    except re2.error as exc:
        raw = exc.args[0] if exc.args else ""
        msg = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        kind, _, frag = msg.rpartition(": ")
        if frag == "(?P" and "(?P=" in source:     # RE2 names only "(?P" for a (?P=name) reference
            frag = "(?P="
        pos = source.find(frag) if frag else -1
        why = next((w for rx, w in _WHY if re.search(rx, frag)), None)
        if "too large" in msg:
            why = "the pattern is larger than RE2's memory limit allows"
        if why is None:
            raise PatternError(kind or msg, pos if pos >= 0 else None,
                               "fix the pattern (RE2 syntax, " + _README + ")") from None
        raise PatternError(why, pos if pos >= 0 else None) from None


def compile_regex(source: str) -> Regex:
    """The RE2 form of a rule's regex, with Python's Unicode meaning kept; PatternError if none."""
    return Regex(source, _tester(_re2(_translate(source), source), whole=False))


def _translate(p: str) -> str:
    out: list[str] = []
    multiline = re.search(r"\(\?[a-zA-Z-]*m", p) is not None
    boundary: int | None = None
    wordish = False
    cls = -1                      # inside [...]: index from which a ']' closes it
    i, n = 0, len(p)
    while i < n:
        c = p[i]
        if c == "\\" and i + 1 < n:
            d = p[i + 1]
            if d == "Q":          # RE2's \Q...\E literal text: copied, never rewritten
                end = p.find("\\E", i + 2)
                end = n if end < 0 else end + 2
                out.append(p[i:end])
                i = end
                continue
            if d in _HEX and re.fullmatch(f"[0-9a-fA-F]{{{_HEX[d]}}}", p[i + 2:i + 2 + _HEX[d]]):
                out.append("\\x{" + p[i + 2:i + 2 + _HEX[d]] + "}")
                i += 2 + _HEX[d]
                continue
            if cls >= 0 and d in "WS":
                raise PatternError(f"RE2 cannot put \\{d} inside [...]", i,
                                   "write a negated class, e.g. [^\\p{L}\\p{N}_]; " + _README)
            if cls < 0 and d in "bB" and boundary is None:
                boundary = i
            wordish = wordish or d in "wWpP"
            out.append((_IN_CLASS if cls >= 0 else _OUTSIDE).get(d, p[i:i + 2]))
            i += 2
            continue
        wordish = wordish or ord(c) > 127
        if cls >= 0:
            if c == "[" and p.startswith(":", i + 1) and p.find(":]", i + 2) >= 0:
                end = p.find(":]", i + 2) + 2          # [:alpha:] inside a class
                out.append(p[i:end])
                i = end
                continue
            if c == "]" and i > cls:
                cls = -1
        elif c == "[":
            cls = i + 1 + p.startswith("^", i + 1)
        elif c == "$" and not multiline:
            c = r"(?:\n?$)"       # Python's $: the end, or before a newline that ends the text
        out.append(c)
        i += 1
    if boundary is not None and wordish:
        raise PatternError("RE2's \\b and \\B know only ASCII letters and digits, so next to "
                           "Cyrillic or \\w they would not mark a word's edge", boundary,
                           "for whole words use 'contains'; " + _README)
    return "".join(out)


# Globs

def compile_glob(source: str) -> Glob:
    """`fnmatch` semantics (whole value, `*` `?` `[...]` `[!...]`), run by RE2."""
    return Glob(source, _tester(_re2("(?s:" + _glob(source) + ")", source), whole=True))


def _lit(c: str) -> str:
    return c if c.isascii() and c.isalnum() else f"\\x{{{ord(c):x}}}"


def _glob(pat: str) -> str:
    out: list[str] = []
    i, n = 0, len(pat)
    while i < n:
        c = pat[i]
        i += 1
        if c == "*":
            if not out or out[-1] != ".*":
                out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "[":
            j = i + (i < n and pat[i] == "!")
            j += j < n and pat[j] == "]"
            j = pat.find("]", j)
            if j < 0:
                out.append(_lit("["))           # no closing ']': a literal '[', as fnmatch has it
                continue
            out.append(_glob_class(pat[i:j]))
            i = j + 1
        else:
            out.append(_lit(c))
    return "".join(out)


def _glob_class(body: str) -> str:
    """fnmatch's [...]: a leading '!' negates, 'a-z' is a range, a reversed range is empty."""
    negate = body.startswith("!")
    if negate:
        body = body[1:]
    items: list[str] = []
    k = 0
    while k < len(body):
        if k + 2 < len(body) and body[k + 1] == "-":
            if body[k] <= body[k + 2]:
                items.append(f"{_lit(body[k])}-{_lit(body[k + 2])}")
            k += 3
        else:
            items.append(_lit(body[k]))
            k += 1
    if not items:
        return "." if negate else r"[^\x00-\x{10ffff}]"     # [!] any char; [] (all empty) none
    return "[" + ("^" if negate else "") + "".join(items) + "]"
