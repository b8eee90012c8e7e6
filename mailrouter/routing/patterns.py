"""Rule patterns (`regex`, `glob`) compiled to RE2: matching time linear in the text, always.

Python's `re` backtracks: `(a+)+$` against 31 bytes of `aaaa…!` ran for 87 seconds on
the event loop, where no `asyncio.timeout` can interrupt it. RE2 (google-re2) runs
every pattern it accepts in time linear in the text and in bounded memory, and
releases the GIL while it runs.

The dialect is RE2's, written as the rule authors wrote Python's: the patterns both
accept mean the same here. Where the two differ, the pattern is rewritten:
`\\w \\d \\s` (and `\\W \\D \\S`) keep Python's Unicode meaning (RE2's are ASCII-only),
`\\Z` is RE2's `\\z`, `\\uXXXX` is `\\x{XXXX}`, `$` without `(?m)` also matches
before a final newline, as Python's does, and RE2's POSIX classes `[[:alpha:]]`, `[[:alnum:]]`,
`[[:digit:]]`, `[[:upper:]]`, `[[:lower:]]`, `[[:word:]]`, `[[:space:]]`, `[[:punct:]]` (ASCII
there) take the Unicode meaning \\w has.

What it refuses (`PatternError`, with the position and why): what RE2 has no
linear-time form for — backreferences, lookahead and lookbehind, atomic groups,
possessive quantifiers, conditionals — plus `(?x)` verbose mode, `(?#...)` comments,
repeats above 1000, programs above RE2's memory limit (8 MiB), `\\W`/`\\S` inside
`[...]`, and `\\b`/`\\B` in a pattern with non-ASCII letters or `\\w`/`\\p{..}`: RE2's
word boundary knows only ASCII, so there it would silently never match.
RE2 names no offset in a pattern, only a fragment (for an unclosed group the whole
pattern): a regex Python's `re` refuses too gets `re`'s position, and one RE2 alone refuses
the fragment's place, or no position when RE2's fragment cannot tell.

Globs are `fnmatch` globs (`*`, `?`, `[...]`, `[!...]`), translated here to RE2 rather
than through `fnmatch.translate`, whose output (atomic groups, `\\Z`) RE2 cannot take.

Matching is yes/no on str; text goes to RE2 as UTF-8 (lone surrogates passed through,
never an exception).

Many patterns at once (`PatternSet`): the rules index (index.py) puts every rule's
regexes of one field in one RE2 Set and asks it once per message which could match,
instead of one RE2 call (about 3.5 us of fixed cost) per rule. A pattern is checked
when it is loaded (RE2 parses it, with small classes standing in for the Unicode ones:
`probe_form`, about 0.01 ms), but compiled on its own (about
1 ms with Unicode classes) only the first time a rule that could match needs it: a
pattern that might exceed RE2's memory limit (a counted repeat, or a long pattern) is
compiled at load, so that refusal still comes at load. The Set takes a wider form of
each regex (`prefilter`: \\w, \\d, \\s outside negated classes also take any non-ASCII
character), which compiles at a fraction of the cost and matches everything the exact
pattern matches; the exact pattern then decides.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import re2  # type: ignore[import-untyped]

__all__ = ["Glob", "PatternError", "PatternSet", "Regex", "compile_glob", "compile_regex", "literal",
           "probe_form", "utf8", "wide_form"]

_WORD = r"\p{L}\p{N}_"
# Python's \s on str, code point by code point (str.isspace): RE2's \s lacks \v and non-ASCII.
_SPACE = (r"\t\n\x0b\f\r\x1c-\x1f \x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}"
          r"\x{202f}\x{205f}\x{3000}")
_OUTSIDE = {"w": f"[{_WORD}]", "W": f"[^{_WORD}]", "d": r"\p{Nd}", "D": r"\P{Nd}",
            "s": f"[{_SPACE}]", "S": f"[^{_SPACE}]", "Z": r"\z"}
_IN_CLASS = {"w": _WORD, "d": r"\p{Nd}", "D": r"\P{Nd}", "s": _SPACE}
# The prefilter's wider forms (a superset each; see the module docstring). In a negated class
# the exact form stays: widening what a [^...] excludes would narrow what it matches.
_NON_ASCII = r"\x{80}-\x{10ffff}"
_WIDE_OUTSIDE = {**_OUTSIDE, "w": f"[0-9A-Za-z_{_NON_ASCII}]", "W": "[^0-9A-Za-z_]",
                 "d": f"[0-9{_NON_ASCII}]", "D": "[^0-9]", "s": f"[\\t-\\r\\x1c- {_NON_ASCII}]",
                 "S": "[^\\t-\\r\\x1c- ]"}
_WIDE_IN_CLASS = {"w": f"0-9A-Za-z_{_NON_ASCII}", "d": f"0-9{_NON_ASCII}", "D": r"\P{Nd}",
                  "s": f"\\t-\\r\\x1c- {_NON_ASCII}"}
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

# What to write instead, per construct (the hint was "see rules/README.md", whose section
# lists what is refused but not what to write)
_INSTEAD: dict[str, str] = {
    "RE2 has no backreferences": "write the repeated text out, or test each part in its own "
                                 "condition under 'all:'",
    "RE2 has no lookahead or lookbehind": "match the text around in the pattern itself, or put "
                                          "what must not be there in its own condition under "
                                          "'not:' (e.g. all: [{subject: {regex: 'order'}}, "
                                          "{not: {subject: {regex: 'cancelled order'}}}])",
    "RE2 has no atomic groups": "write the group without '?>': RE2 never backtracks, so it "
                                "is as fast",
    "RE2 has no possessive quantifiers": "drop the second '+' (a++ is a+): RE2 never "
                                         "backtracks, so it is as fast",
    "RE2 has no conditionals": "write each branch as a rule or a condition of its own",
    "RE2 has no (?#...) comments": "delete the comment, or move it after a '#' at the end of "
                                   "the YAML line",
}


# RE2's complaints whose fragment is the whole pattern: it says nothing about where.
_WHOLE = frozenset({"missing )", "unexpected )"})


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
    prefilter: str = field(compare=False, repr=False, default="")   # PatternSet form

    def search(self, text: str | bytes) -> bool:
        return self.test(text if isinstance(text, bytes) else utf8(text))


@dataclass(frozen=True, slots=True)
class Glob:
    """A compiled `glob:` needle, matching the whole value."""

    source: str
    test: Callable[[bytes], bool] = field(compare=False, repr=False)
    prefilter: str = field(compare=False, repr=False, default="")   # PatternSet form

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


class _Lazy:
    """The tester of a pattern RE2 has parsed, compiled on its first call (see the module
    docstring). Two threads racing on the first call both compile; either result is good."""

    __slots__ = ("_pattern", "_source", "_whole", "_fn")

    def __init__(self, pattern: str, source: str, whole: bool) -> None:
        self._pattern, self._source, self._whole = pattern, source, whole
        self._fn: Callable[[bytes], bool] | None = None

    def __call__(self, text: bytes) -> bool:
        fn = self._fn
        if fn is None:
            fn = self._fn = _tester(_re2(self._pattern, self._source), self._whole)
        return fn(text)


# A pattern with a counted repeat or this long might exceed RE2's memory limit on its own
# (measured: 400 Unicode classes do, e.g. 400 x \w = 800 characters): compiled at load.
_MAYBE_LARGE = re.compile(r"\{\s*\d|\{\s*,|.{300}", re.DOTALL)


# What the load's parse check reads instead of the Unicode classes the translation writes:
# RE2 parses \p{L} (and builds its case folding under (?i)) in ~0.07 ms, a small script's
# class in a tenth of that. Whether a pattern parses does not depend on which known
# property a \p{..} names (a class is never a range's end, its size never counts in a
# repeat), so the check says what the exact pattern's parse would; the exact pattern is
# parsed and compiled when first used, or at once when the check fails (for RE2's reason).
_PROBE_CLASSES = ((r"\p{L}", r"\p{Ogham}"), (r"\p{N}", r"\p{Runic}"), (r"\p{Nd}", r"\p{Ogham}"),
                  (r"\P{Nd}", r"\P{Ogham}"))


def probe_form(pattern: str) -> str:
    """`pattern` with the Unicode classes of `_translate` written as small ones."""
    for big, small in _PROBE_CLASSES:
        pattern = pattern.replace(big, small)
    return pattern


def _checked(pattern: str, source: str, whole: bool,
             regex: bool = False) -> Callable[[bytes], bool]:
    """A tester for `pattern`, or PatternError now: parsed at load, compiled when first used.
    `regex`: `source` is a rule's regex (Python's dialect), not a glob."""
    probe = re2.Set(re2._Anchor.ANCHOR_BOTH if whole else re2._Anchor.UNANCHORED, _options())
    try:
        probe.Add(probe_form(pattern))
    except re2.error:
        # raises the PatternError that says why
        return _tester(_re2(pattern, source, regex), whole)
    if _MAYBE_LARGE.search(source):
        return _tester(_re2(pattern, source), whole)
    return _Lazy(pattern, source, whole)


def _options() -> Any:
    opts = re2.Options()
    opts.log_errors = False       # our error goes to the config report, not to stderr
    opts.never_capture = True     # yes/no only: no submatch engine needed
    return opts


def _re2(pattern: str, source: str, regex: bool = False) -> Any:
    try:
        return re2.compile(pattern, _options())
    except re2.error as exc:
        raw = exc.args[0] if exc.args else ""
        msg = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        kind, _, frag = msg.rpartition(": ")
        # Where: RE2 gives no offset, only a fragment, and for an unclosed or unopened group
        # the whole pattern ('foo(bar' was "missing ) at position 0"). A regex Python's re
        # refuses too is malformed in its own right, not a construct RE2 lacks (_WHY): RE2's
        # words, re's position. Else the fragment's place when RE2 named a part of the
        # pattern, or no position rather than a wrong one.
        refused, pos = _python_refuses(source) if regex else (False, None)
        if refused:
            raise PatternError(kind or msg, pos,
                               "fix the pattern (RE2 syntax, " + _README + ")") from None
        if frag == "(?P" and "(?P=" in source:     # RE2 names only "(?P" for a (?P=name) reference
            frag = "(?P="
        found = source.find(frag) if frag and kind not in _WHOLE else -1
        pos = found if found >= 0 else None
        why = next((w for rx, w in _WHY if re.search(rx, frag)), None)
        if "too large" in msg:
            why = "the pattern is larger than RE2's memory limit allows"
        if why is None:
            raise PatternError(kind or msg, pos,
                               "fix the pattern (RE2 syntax, " + _README + ")") from None
        raise PatternError(why, pos, f"{_INSTEAD[why]}; {_README}" if why in _INSTEAD
                           else _README) from None


# RE2's extras (rules/README.md) that Python's re refuses at once ('bad escape \\p'), so its
# position would name them and not the pattern's error: written over, for re only, with as
# many characters it takes (a flag group stays a group).
_RE2_ONLY = re.compile(r"\\Q.*?(?:\\E|$)|\\[pP](?:\{[^}]*\}|[A-Za-z])|\\x\{[0-9A-Fa-f]*\}"
                       r"|\\[zC]|\(\?[imsU-]*U[imsU-]*[:)]", re.S)


def _python_refuses(source: str) -> tuple[bool, int | None]:
    """(True, where) when Python's re refuses `source` too, its RE2 extras aside: its
    position, or None when it names none or names a place it was written over."""
    spans: list[tuple[int, int]] = []

    def neutral(m: re.Match[str]) -> str:
        spans.append(m.span())
        text = m.group()
        if text.startswith("(?"):        # (?U) -> (?:), (?U: -> (?:x
            return ("(?:)" if text.endswith(")") else "(?:").ljust(len(text), "x")
        return "x" * len(text)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # FutureWarning: "Possible nested set"
        try:
            re.compile(_RE2_ONLY.sub(neutral, source))
        except re.error as exc:
            inside = exc.pos is not None and any(a <= exc.pos < b for a, b in spans)
            return True, None if inside else exc.pos
        except (RecursionError, OverflowError, ValueError):   # nothing to say where
            return False, None
    return False, None


def compile_regex(source: str) -> Regex:
    """The RE2 form of a rule's regex, with Python's Unicode meaning kept; PatternError if none."""
    return Regex(source, _checked(_translate(source), source, whole=False, regex=True),
                 _translate(source, wide=True))


def literal(text: str) -> str:
    """An RE2 pattern matching exactly `text`."""
    return "".join(_lit(c) for c in text)


def wide_form(python_pattern: str) -> str:
    """The prefilter form of a Python `re` pattern the rules engine made itself (word forms)."""
    return _translate(python_pattern, wide=True)


class PatternSet:
    """Many patterns, one RE2 pass: `hits(text)` lists the indices of those that match.

    `hits` returns None when RE2 could not answer (its DFA ran out of memory, which a Set
    reports as no match at all): a pattern added first that matches every text tells the
    two apart, and None means "any of them might match".
    """

    def __init__(self, patterns: list[str], whole: bool) -> None:
        opts = _options()
        opts.max_mem = 256 << 20          # one program for all: RE2's 8 MiB is per pattern
        self._set = re2.Set(re2._Anchor.ANCHOR_BOTH if whole else re2._Anchor.UNANCHORED, opts)
        self._set.Add("(?s).*")           # index 0: always matches
        for p in patterns:
            self._set.Add(p)
        self._set.Compile()

    def hits(self, text: bytes) -> list[int] | None:
        got: list[int] = self._set.Match(text)
        if 0 not in got:
            return None
        return [i - 1 for i in got if i]


# RE2's [:alpha:] and its kin are ASCII-only: `[[:alpha:]]+` matched no Cyrillic word. They
# get the Unicode meaning \w has here; the others (xdigit, cntrl, blank ...) are ASCII anyway.
_POSIX = {"alpha": r"\p{L}", "alnum": r"\p{L}\p{N}", "digit": r"\p{Nd}", "upper": r"\p{Lu}",
          "lower": r"\p{Ll}", "word": _WORD, "space": _SPACE, "punct": r"!-/:-@\[-`{-~\p{P}"}
_POSIX_NOT = {"alpha": r"\P{L}", "digit": r"\P{Nd}", "upper": r"\P{Lu}", "lower": r"\P{Ll}"}


def _posix(name: str, at: int) -> str | None:
    """The Unicode form of POSIX class `name` (`^alpha` negated) inside [...], if it has one."""
    if not name.startswith("^"):
        return _POSIX.get(name)
    if name[1:] in _POSIX and name[1:] not in _POSIX_NOT:
        raise PatternError(f"RE2 cannot put [:{name}:] inside [...] with its Unicode meaning", at,
                           f"write a negated class, e.g. [^{_POSIX[name[1:]]}]; " + _README)
    return _POSIX_NOT.get(name[1:])


def _translate(p: str, wide: bool = False) -> str:
    """The RE2 form of Python pattern `p`; with `wide`, the prefilter form (module docstring)."""
    outside = _WIDE_OUTSIDE if wide else _OUTSIDE
    out: list[str] = []
    negated = False
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
            table = outside if cls < 0 else _IN_CLASS if negated or not wide else _WIDE_IN_CLASS
            out.append(table.get(d, p[i:i + 2]))
            i += 2
            continue
        wordish = wordish or ord(c) > 127
        if cls >= 0:
            if c == "[" and p.startswith(":", i + 1) and p.find(":]", i + 2) >= 0:
                end = p.find(":]", i + 2) + 2          # [:alpha:] inside a class
                name = p[i + 2:end - 2]
                out.append(_posix(name, i) or p[i:end])
                wordish = wordish or name.lstrip("^") in _POSIX
                i = end
                continue
            if c == "]" and i > cls:
                cls = -1
        elif c == "[":
            negated = p.startswith("^", i + 1)
            cls = i + 1 + negated
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
    pattern = "(?s:" + _glob(source) + ")"
    return Glob(source, _checked(pattern, source, whole=True), pattern)


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
