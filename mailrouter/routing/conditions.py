"""Rule conditions: parsed from YAML once, compiled, then tested against Facts.

A condition is a mapping. Each key is a field (`subject: {contains: счёт}`),
`header` (`header: {List-Id: {exists: true}}`) or a combinator (`any: [...]`,
`all: [...]`, `not: {...}`); several keys in one mapping must all hold. A field
takes an operator mapping, or a shorthand: a string or list means `equals` on
address fields and `contains` on text fields, a number means `equals`.

Text operators compare the normalised form (NFKC, case-folded, ё->е, Latin
accents folded except in address fields, № a sign, subjects without Re:/Fwd:
prefixes) with a needle normalised the same way; `contains` matches whole words
in order, `glob` the whole value. A `contains` word ending
in `*` matches every word it begins (word forms: `договор*` matches договор,
договора, договоров; `faktur*` faktura, faktury, fakturu). `regex` searches the
decoded text as written. `regex` and `glob` run on RE2 (patterns.py): linear
time, and a pattern RE2 cannot take is refused at load with its position and
why. A field with several values (To names and addresses,
attachment names) matches when any value does.

Every test returns the explanation of the match ("subject contains 'счет'
(value: 'Счёт №5')") or None. Parse errors are collected, never raised one by one.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
from dataclasses import dataclass
from dataclasses import field as dc_field
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import ConfigError
from ..yamlsrc import as_written, letters_note, where
from .facts import ADDR_FIELDS, FIELD_COST, NUM_FIELDS, TEXT_FIELDS, Facts, words_of
from .normalize import normalize, normalize_address
from .patterns import PatternError, compile_glob, compile_regex, utf8
from .sizes import check_needle, empty_range, parse_size

__all__ = ["Node", "Leaf", "AllOf", "AnyOf", "Not", "parse_condition", "did_you_mean", "FIELDS",
           "TEXT_OPS", "NUM_OPS", "Gate", "gate_of", "parse_size", "WordForms", "contains_key"]

MAX_DEPTH = 32          # any/all/not levels in one rule's condition
TEXT_OPS = ("equals", "contains", "starts_with", "ends_with", "glob", "regex", "exists")
NUM_OPS = ("equals", "gt", "ge", "lt", "le", "exists")
COMBINATORS = ("any", "all", "not")
SPECIAL = ("header", "robot", "business_hours")
FIELDS = TEXT_FIELDS + NUM_FIELDS + SPECIAL


# Names people bring from other filters (Sieve, procmail, Exchange rules, SQL), which
# difflib would "correct" into another field or operator: 'sender' is not 'header', and
# 'not_contains' must not become 'contains'.
FIELD_SYNONYMS = {"sender": "mail_from", "envelope_from": "mail_from", "return_path": "mail_from",
                  "recipient": "rcpt", "envelope_to": "rcpt", "to_addr": "to", "to_address": "to",
                  "cc_addr": "cc", "from_address": "from_addr", "from_email": "from_addr",
                  "has_attachment": "attachment_count", "attachments": "attachment",
                  "filename": "attachment", "content_type": "attachment_type"}
OP_SYNONYMS = {"is": "equals", "eq": "equals", "==": "equals", "in": "equals",
               "match": "regex", "matches": "regex", "re": "regex", "regexp": "regex",
               "like": "glob", "wildcard": "glob", "startswith": "starts_with",
               "endswith": "ends_with", "has": "contains", "includes": "contains",
               "gte": "ge", ">=": "ge", "lte": "le", "<=": "le", ">": "gt", "<": "lt",
               "greater_than": "gt", "less_than": "lt", "more_than": "gt"}


def suggest_op(op: str, ops: tuple[str, ...], field: str) -> str:
    """The hint for an unknown operator: a negation is `not:`, a synonym its name here."""
    low = op.lower()
    base = re.sub(r"^(?:not|does_?not|doesnt|no)[_-]|[_-]not$", "", low)
    if base != low:
        inner = OP_SYNONYMS.get(base, base)
        inner = f"{{{inner if inner in ops else ops[1]}: ...}}"
        if field.startswith("header:"):
            inner = f"{{{field[7:]}: {inner}}}"
        return f"to negate, wrap the condition: not: {{{field.partition(':')[0]}: {inner}}}"
    same = OP_SYNONYMS.get(low)
    if same in ops:
        return f"did you mean '{same}'?" + (" (a list of values means any of them)"
                                            if low == "in" else "")
    return did_you_mean(op, ops).replace("known keys", "known operators")


def did_you_mean(word: str, known: tuple[str, ...] | list[str],
                 synonyms: Mapping[str, str] | None = None) -> str:
    """The hint for an unknown `word`: its name here when `synonyms` has it (another
    filter's word: difflib would pick a wrong one), else the closest known one."""
    same = synonyms.get(word.lower()) if synonyms else None
    if same is not None:
        return f"did you mean '{same}'?"
    close = difflib.get_close_matches(word, list(known), n=1)
    return (f"did you mean '{close[0]}'?" if close else "known keys: " + ", ".join(known)) \
        + letters_note(word)


# RFC 5322 section 2.2: a field name is printable ASCII but ':' and space
_FIELD_NAME = re.compile(r"[!-9;-~]+")


class Node:
    def test(self, facts: Facts) -> str | None:
        raise NotImplementedError


@dataclass(frozen=True, slots=True, eq=False)
class Leaf(Node):
    """One field, one operator, one or more needles (any needle may match)."""

    field: str                       # "subject", "header:list-id", "robot", ...
    op: str
    needles: tuple[Any, ...]         # as written, for explanations and lint
    keys: tuple[Any, ...]            # compiled: normalised strings, word forms, patterns, numbers
    check: Callable[[Facts, "Leaf"], str | None]
    path: str = ""
    line: int = 0

    def test(self, facts: Facts) -> str | None:
        return self.check(facts, self)

    @property
    def label(self) -> str:
        return self.field.replace("header:", "header ")


@dataclass(frozen=True, slots=True, eq=False)
class AllOf(Node):
    parts: tuple[Node, ...]

    def test(self, facts: Facts) -> str | None:
        whys = []
        for p in self.parts:
            why = p.test(facts)
            if why is None:
                return None
            whys.append(why)
        return " and ".join(whys)


@dataclass(frozen=True, slots=True, eq=False)
class AnyOf(Node):
    parts: tuple[Node, ...]

    def test(self, facts: Facts) -> str | None:
        for p in self.parts:
            why = p.test(facts)
            if why is not None:
                return why
        return None


@dataclass(frozen=True, slots=True, eq=False)
class Not(Node):
    part: Node
    text: str

    def test(self, facts: Facts) -> str | None:
        return None if self.part.test(facts) is not None else f"not ({self.text})"


# Checks: one function per operator family. They return the explanation or None.

SHOWN = 160    # characters of a matched value an explanation quotes


def _shown(value: Any) -> str:
    """The value as an explanation quotes it: a body can be megabytes, and the explanation
    is logged, shown by explain and stored with every decision in the registry."""
    if isinstance(value, str) and len(value) > SHOWN:
        return f"{value[:SHOWN]!r}… ({len(value)} characters)"
    return repr(value)


def _why(leaf: Leaf, needle: Any, value: Any) -> str:
    return f"{leaf.label} {leaf.op} {needle!r} (value: {_shown(value)})"


def _why_at(facts: Facts, leaf: Leaf, needle: Any, i: int) -> str:
    """_why for value i of the field, quoted from its head when it was read only in pieces."""
    head = facts.head(leaf.field)
    if head is None:
        return _why(leaf, needle, facts.raw(leaf.field)[i])
    text, length = head
    shown = f"{text[:SHOWN]!r}… ({length} characters)" if length > SHOWN else repr(text)
    return f"{leaf.label} {leaf.op} {needle!r} (value: {shown})"


def _check_text(facts: Facts, leaf: Leaf) -> str | None:
    op, keys = leaf.op, leaf.keys
    if op == "contains":      # the word form alone: a body is never held whole for it
        for i, words in enumerate(facts.words_utf8(leaf.field)):
            for needle, key in zip(leaf.needles, keys):
                if utf8(key) in words if type(key) is str else key.found_in_utf8(words):
                    return _why_at(facts, leaf, needle, i)
        return None
    raws, norms = facts.raw(leaf.field), facts.norm(leaf.field)
    for i, value in enumerate(norms):
        for needle, key in zip(leaf.needles, keys):
            if ((op == "equals" and value == key)
                    or (op == "starts_with" and value.startswith(key))
                    or (op == "ends_with" and value.endswith(key))
                    or (op == "glob" and key.match(value))):
                return _why(leaf, needle, raws[i])
    return None


def _check_regex(facts: Facts, leaf: Leaf) -> str | None:
    for value, text in zip(facts.raw(leaf.field), facts.utf8(leaf.field)):
        for needle, key in zip(leaf.needles, leaf.keys):
            if key.search(text):
                return _why(leaf, needle, value)
    return None


def _check_exists(facts: Facts, leaf: Leaf) -> str | None:
    values = facts.raw(leaf.field)
    if bool(values) != leaf.keys[0]:
        return None
    return f"{leaf.label} exists" + (f" (value: {_shown(values[0])})" if values else ": false")


_CMP: dict[str, Callable[[Any, Any], bool]] = {
    "equals": lambda a, b: a == b, "gt": lambda a, b: a > b, "ge": lambda a, b: a >= b,
    "lt": lambda a, b: a < b, "le": lambda a, b: a <= b}


def _check_num(facts: Facts, leaf: Leaf) -> str | None:
    cmp = _CMP[leaf.op]
    for value in facts.raw(leaf.field):
        if cmp(value, leaf.keys[0]):
            return _why(leaf, leaf.needles[0], value)
    return None


def _check_robot(facts: Facts, leaf: Leaf) -> str | None:
    flag, reason = facts.robot()
    if flag != leaf.keys[0]:
        return None
    return f"robot is {str(flag).lower()}" + (f" ({reason})" if reason else "")


def _check_hours(facts: Facts, leaf: Leaf) -> str | None:
    cal = facts.calendars[leaf.keys[0]]
    if not cal.is_business_time(facts.at):
        return None
    return f"business_hours {leaf.keys[0]!r} (at: {cal.local(facts.at).isoformat()})"


class _Parser:
    """Turns one rule's `when:` into a Node, collecting every error it finds."""

    def __init__(self, errors: list[ConfigError], calendars: Mapping[str, Any], rule: str) -> None:
        self.errors, self.calendars, self.rule = errors, calendars, rule
        self.depth = 0          # conditions open around the one being parsed

    def error(self, msg: str, node: Any, parent: Any = None, hint: str = "") -> None:
        path, line, col = where(node, parent)
        self.errors.append(ConfigError(f"rule {self.rule!r}: {msg}", path, line, col, hint))

    def condition(self, spec: Any, parent: Any = None) -> Node | None:
        if isinstance(spec, list) and spec:
            # `when:` with '- ' items under it: every one, or one of them? Said, not guessed
            self.error("a condition must be a mapping, not a list", spec, parent,
                       "for every one of these write all: [...] (or the keys in one mapping), "
                       "for one of them any: [...]")
            return None
        if not isinstance(spec, Mapping) or not spec:
            self.error("a condition must be a non-empty mapping", spec, parent,
                       "write e.g. {subject: {contains: invoice}}")
            return None
        if self.depth >= MAX_DEPTH:
            # 400 nested not: took `check` down with RecursionError; deep enough to load,
            # a rule would have failed every message it was tried on
            self.error(f"conditions nest deeper than {MAX_DEPTH} levels", spec, parent,
                       "flatten them: any: and all: take lists, not: {not: X} is X")
            return None
        self.depth += 1
        parts: list[Node] = []
        try:
            for key, value in spec.items():
                node = self.one(str(key), value, key)
                if node is not None:
                    parts.append(node)
        finally:
            self.depth -= 1
        if len(parts) != len(spec):
            return None
        return parts[0] if len(parts) == 1 else AllOf(tuple(parts))

    def one(self, key: str, value: Any, at: Any) -> Node | None:
        if key in ("any", "all"):
            if not isinstance(value, list) or not value:
                # `any: {subject: a, body: b}` was told only "takes a non-empty list"
                one = "one of them holds" if key == "any" else "all of them hold"
                self.error(f"'{key}' takes a non-empty list of conditions", value, at,
                           f"write each condition as a '- ' item under '{key}:', e.g. {key}: "
                           f"[{{subject: invoice}}, {{attachment: {{glob: '*.pdf'}}}}] "
                           f"({one})")
                return None
            parts = [self.condition(v, at) for v in value]
            if any(p is None for p in parts):
                return None
            good = tuple(p for p in parts if p is not None)
            return AnyOf(good) if key == "any" else AllOf(good)
        if key == "not":
            if isinstance(value, list):
                self.error("'not' takes one condition, not a list", value, at,
                           "write not: {any: [...]} for none of several, "
                           "not: {all: [...]} for not all of them")
                return None
            part = self.condition(value, at)
            return Not(part, _describe(value)) if part is not None else None
        if key == "header":
            return self.headers(value, at)
        if key == "robot":
            if not isinstance(value, bool):
                self.error("'robot' takes true or false", value, at,
                           hint="write robot: true (lists, bounces, auto-replies) or robot: false")
                return None
            return Leaf("robot", "is", (value,), (value,), _check_robot, *where(at)[:2])
        if key == "business_hours":
            if not isinstance(value, str):
                # `business_hours: true` read "unknown calendar True; known keys: msk"
                known = ", ".join(self.calendars) or "none defined under 'calendars:'"
                self.error(f"'business_hours' takes the name of a calendar, not {value!r}",
                           value, at, f"write e.g. business_hours: msk (known calendars: {known})")
                return None
            if value not in self.calendars:
                self.error(f"unknown calendar {value!r}", value, at,
                           did_you_mean(value, list(self.calendars)).replace(
                               "known keys", "known calendars") if self.calendars
                           else "define it under 'calendars:'")
                return None
            return Leaf("business_hours", "in", (str(value),), (str(value),), _check_hours,
                        *where(at)[:2])
        if key in ("continue", "then", "name"):
            self.error(f"'{key}' is a key of the rule, not a condition", at, None,
                       f"move it out of when:, beside it ('{key}:' at the indentation of 'when:')")
            return None
        if key not in FIELDS:
            self.error(f"unknown condition '{key}'", at, None,
                       did_you_mean(key.lower(), FIELDS + COMBINATORS, FIELD_SYNONYMS))
            return None
        return self.field(key, value, at)

    def headers(self, value: Any, at: Any) -> Node | None:
        if not isinstance(value, Mapping) or not value:
            self.error("'header' takes a mapping of header names to operators", value, at,
                       "write e.g. header: {List-Id: {exists: true}}")
            return None
        for name in value:
            if not _FIELD_NAME.fullmatch(str(name)):
                # 'Subject:' or 'List Id' is no header's name: the condition never held
                fixed = re.sub(r"\s+", "-", str(name).strip().rstrip(":").strip()) or "List-Id"
                self.error(f"{str(name)!r} is not a header name", name, at,
                           f"write the name without ':' or spaces, e.g. header: {{{fixed}: ...}}")
                return None
        parts = [self.field(f"header:{str(name).lower()}", v, name) for name, v in value.items()]
        good = tuple(p for p in parts if p is not None)
        if len(good) != len(parts):
            return None
        return good[0] if len(good) == 1 else AllOf(good)

    def field(self, field: str, value: Any, at: Any) -> Node | None:
        numeric = field in NUM_FIELDS
        shorthand = not isinstance(value, Mapping)
        if shorthand:
            value = {"equals" if numeric or field in ADDR_FIELDS else "contains": value}
        ops = NUM_OPS if numeric else TEXT_OPS
        parts: list[Node] = []
        for op, needle in value.items():
            if op not in ops:
                self.error(f"unknown operator '{op}' for '{field.replace('header:', '')}'", op, at,
                           suggest_op(str(op), ops, field))
                continue
            # a shorthand's operator was never written: errors and the leaf point at the field
            leaf = self.leaf(field, str(op), needle, at if shorthand else op)
            if leaf is not None:
                parts.append(leaf)
        if len(parts) != len(value):
            return None
        bounds = [p for p in parts if numeric and isinstance(p, Leaf) and p.op != "exists"]
        if empty_range({p.op: p.keys[0] for p in bounds}):
            # taken at load, the rule never matched: {gt: 10MB, lt: 1MB} was meant the other way
            self.empty(field, bounds, at)
            return None
        return parts[0] if len(parts) == 1 else AllOf(tuple(parts))

    def empty(self, field: str, leaves: list[Leaf], at: Any) -> None:
        shown = f"'{field}: {{" + ", ".join(f"{p.op}: {p.needles[0]}" for p in leaves) + "}'"
        if len(leaves) == 1:        # lt: 0 (a negative needle is refused before)
            self.error(f"{shown} holds for no message: {field} is never below 0", at, None,
                       "write equals: 0 for none at all" if field != "size" else
                       "remove the condition")
            return
        self.error(f"{shown} holds for no message: no {field} is all of these at once "
                   "(every operator under one field must hold)", at, None,
                   "swap the bounds if they are the wrong way round; for either one, write "
                   f"any: [{{{field}: {{lt: ...}}}}, {{{field}: {{gt: ...}}}}]")

    def leaf(self, field: str, op: str, needle: Any, at: Any) -> Leaf | None:
        pos = where(at)[:2]
        if op == "exists":
            if not isinstance(needle, bool):
                self.error("'exists' takes true or false", needle, at,
                           hint="write exists: true (the field is there) or exists: false")
                return None
            return Leaf(field, op, (needle,), (needle,), _check_exists, *pos)
        if field in NUM_FIELDS:
            n, msg, hint = check_needle(field, op, needle)
            if n is None:
                self.error(msg, needle, at, hint)
                return None
            return Leaf(field, op, (needle,), (n,), _check_num, *pos)
        # a number is its text as written: YAML 1.1 reads 00123 as 83 and 10:30 as 630
        needles = tuple(as_written(n) for n in (needle if isinstance(needle, list) else [needle]))
        if not needles or any(isinstance(n, (Mapping, list)) or n is None for n in needles):
            self.error(f"'{op}' takes a string or a list of strings", needle, at)
            return None
        stamp = next((n for n in needles if isinstance(n, dt.datetime)), None)
        if stamp is None:       # a day is its text: 2027-01-11 is the only way YAML reads one
            needles = tuple(str(n) if isinstance(n, dt.date) else n for n in needles)
        else:
            # the loader keeps no text for a date and time: its str() is another spelling
            self.error(f"'{op}' takes text, but YAML read this value as a date and time "
                       f"({stamp.isoformat()})", needle, at,
                       "put the text in quotes as written: '2027-01-11T10:00:00'")
            return None
        flag = next((n for n in needles if isinstance(n, bool)), None)
        if flag is not None:
            # YAML 1.1 reads NO, yes, on, off, y, n as booleans: `header: {X-Country: NO}`
            # looked for the text 'false' and never matched
            self.error(f"'{op}' takes text, but YAML read this value as {str(flag).lower()} "
                       "(no, yes, on, off, y, n are booleans to YAML)", needle, at,
                       "put the text in quotes as written: 'NO', 'yes', 'on'")
            return None
        if op == "regex":
            return self.regex(field, needles, at, pos)
        norm = normalize_needle(field, op, needles)
        if op == "glob":
            globs = [self.pattern(compile_glob, n, raw, at) for n, raw in zip(norm, needles)]
            if any(g is None for g in globs):
                return None
            keys: tuple[Any, ...] = tuple(globs)
        elif op == "contains":
            keys = tuple(contains_key(n) for n in norm)
        else:
            keys = norm
        return Leaf(field, op, needles, keys, _check_text, *pos)

    def regex(self, field: str, needles: tuple[Any, ...], at: Any, pos: Any) -> Leaf | None:
        compiled = [self.pattern(compile_regex, str(n), n, at) for n in needles]
        if any(c is None for c in compiled):
            return None
        return Leaf(field, "regex", needles, tuple(compiled), _check_regex, *pos)

    def pattern(self, compile_: Callable[[str], Any], text: str, needle: Any, at: Any) -> Any:
        """The RE2 form of one regex or glob needle, or None with the refusal recorded."""
        try:
            return compile_(text)
        except PatternError as exc:
            path, line, col = where(needle, at)
            kind = "regex" if compile_ is compile_regex else "glob"
            self.errors.append(ConfigError(f"rule {self.rule!r}: bad {kind} {str(needle)!r}: {exc}",
                                           path, line, col, exc.hint))
            return None


@dataclass(frozen=True, slots=True)
class WordForms:
    """A `contains` needle with a word-form word (`договор*`): each starred word matches
    any word it begins, the other words themselves, all whole and in order."""

    text: str                      # ' договор* оплат ', as the plain form, stars kept
    pattern: re.Pattern[str]       # searched in the ' word word ' form of the value
    wire: re.Pattern[bytes] = dc_field(compare=False, default=re.compile(b"(?!)"))  # its UTF-8

    def __str__(self) -> str:
        return self.text

    def found_in(self, words: str) -> bool:
        return self.pattern.search(words) is not None

    def found_in_utf8(self, words: bytes | bytearray) -> bool:
        """found_in on the UTF-8 word form: there every character but the spaces is a word
        character, so `\\w*` is `[^ ]*`."""
        return self.wire.search(words) is not None


_STARRED = re.compile(r"\w+\*?")


def contains_key(needle: str) -> str | WordForms:
    """The compiled form of a normalised `contains` needle: ' w1 w2 ', or WordForms when a
    word ends with `*`. A `*` that ends no word is dropped (lint warns about it)."""
    toks = _STARRED.findall(needle)
    if not any(t.endswith("*") for t in toks):
        return words_of(needle)
    body = " ".join(re.escape(t[:-1]) + r"\w*" if t.endswith("*") else re.escape(t) for t in toks)
    wire = b" ".join(utf8(re.escape(t[:-1])) + rb"[^ ]*" if t.endswith("*") else utf8(re.escape(t))
                     for t in toks)
    return WordForms(" " + " ".join(toks) + " ", re.compile(" " + body + " "),
                     re.compile(b" " + wire + b" "))


def normalize_needle(field: str, op: str, needles: tuple[Any, ...]) -> tuple[str, ...]:
    """Needles get the same normal form as the values they are compared with (a subject
    needle keeps a leading "Re:", as it always has: only the values lose theirs)."""
    fn = normalize_address if field in ADDR_FIELDS else normalize
    return tuple(fn(str(n)) for n in needles)


def _describe(spec: Any) -> str:
    if isinstance(spec, Mapping):
        return ", ".join(f"{k}: {_describe(v)}" for k, v in spec.items())
    if isinstance(spec, list):
        return "[" + ", ".join(_describe(v) for v in spec) + "]"
    return str(spec)


def parse_condition(spec: Any, errors: list[ConfigError], calendars: Mapping[str, Any],
                    rule: str, parent: Any = None) -> Node | None:
    return _Parser(errors, calendars, rule).condition(spec, parent)


# Pre-filter

# (field, kind, key): one way a rule's condition can come to hold. kind is "word" (key is a
# normalised word of the field), "prefix" (a word of the field begins with key), "phrase"
# (key is a `contains` key of several words, ' w1 w2 ' or WordForms), "regex" or "glob" (key
# is the Regex or Glob of a needle, on the field's raw or normalised values).
Gate = tuple[tuple[str, str, Any], ...]
_KIND_COST = {"word": 0, "prefix": 0, "phrase": 1, "glob": 1, "regex": 2}


def gate_of(node: Node) -> Gate | None:
    """The ways `node` can hold: it holds only when one of them does; None when unknown.

    Sound by construction: `equals` needles and `contains` needles of one word give their
    first word, `contains` needles of several words the phrase, `regex` and `glob` needles
    themselves; `all` takes its cheapest gated part, `any` the union of its branches when
    every branch is gated; `not` and every other operator give none.
    """
    if isinstance(node, Leaf):
        if node.field not in FIELD_COST and not node.field.startswith("header:"):
            return None
        if node.op in ("regex", "glob"):
            return tuple((node.field, node.op, key) for key in node.keys)
        if node.op not in ("contains", "equals"):
            return None
        ways = []
        for key in node.keys:
            # a contains word ending in * stays so: the index looks it up as a prefix
            toks = (str(key) if node.op == "contains" else words_of(key)).split()
            if not toks:
                return None
            first = toks[0]
            if node.op == "contains" and len(toks) > 1:
                ways.append((node.field, "phrase", key))
            else:
                ways.append((node.field, "prefix", first[:-1]) if first.endswith("*")
                            else (node.field, "word", first))
        return tuple(ways)
    if isinstance(node, AllOf):
        gates = [g for g in (gate_of(p) for p in node.parts) if g is not None]
        return min(gates, default=None, key=lambda g: (
            max(FIELD_COST.get(f, 3) for f, _, _ in g), max(_KIND_COST[k] for _, k, _ in g), len(g)))
    if isinstance(node, AnyOf):
        branches = [gate_of(p) for p in node.parts]
        if any(g is None for g in branches):
            return None
        return tuple(way for g in branches if g is not None for way in g)
    return None
