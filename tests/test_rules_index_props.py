"""The rules index never changes a decision: on random rule sets and random messages, the
rules it offers (routing/index.py: word tables, one RE2 Set of regexes and one of globs per
field) include every rule whose condition holds, in rule-file order, and `apply` decides
as testing every rule in order does."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mailrouter.message import MessageView
from mailrouter.values import REPLY_OK, Action, Decision
from mailrouter.routing.facts import Facts
from mailrouter.routing.rules import _decide
from tests.support.rules import MONDAY_10_MSK, mail, snapshot

RCPT = "sales@example.com"
# Few letters, so that needles and texts meet often; Cyrillic, digits, a non-ASCII digit
# and space, and ASCII punctuation exercise the Unicode classes and their Set prefilter.
LETTERS = "abxсчётЁ1٣ _-.N№\u00a0"
WORDS = ["счёт", "счета", "invoice", "ab", "xa", "N1", "№٣", "b-a"]
REGEXES = [r"\w+", r"^\w+$", r"\d", r"\d+$", r"\s", r"\S+\s\S+", r"[\w-]+", r"[^\d\s]", r"\W",
           r"\D+$", r"(?i)СЧЁТ", r"a\Z", r"x$", r"^a", r"N\d", r"[a-c]\w*", r"\bab\b", r"a.b",
           r"(?s)a.b", r"счет|ab", r"^$", r"\w{2}", r"[[:alpha:]]x"]
GLOBS = ["*", "a*", "*b", "*с*", "?", "??*", "[!a]*", "*[0-9]*", "счет*", "*.*", "[a-c]?*"]
FIELDS = ["subject", "from_name", "body", "header:x-mailer"]

text = st.text(alphabet=LETTERS, max_size=12)


@st.composite
def leaf(draw: Any) -> dict[str, Any]:
    field = draw(st.sampled_from(FIELDS))
    op = draw(st.sampled_from(["regex", "glob", "contains", "equals", "starts_with"]))
    pool = {"regex": REGEXES, "glob": GLOBS}.get(op, WORDS + ["счет* a", "inv*"])
    needles = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=3))
    cond: dict[str, Any] = {op: needles}
    if field.startswith("header:"):
        return {"header": {"X-Mailer": cond}}
    return {field: cond}


condition = st.recursive(
    leaf(), lambda inner: st.one_of(
        st.lists(inner, min_size=1, max_size=3).map(lambda xs: {"any": xs}),
        st.lists(inner, min_size=1, max_size=3).map(lambda xs: {"all": xs}),
        inner.map(lambda x: {"not": x})),
    max_leaves=4)


def _rules_yaml(conds: list[dict[str, Any]], conts: list[bool]) -> str:
    rules = [{"name": f"r{i}", "when": c, "then": {"tags": [f"t{i}"]}, "continue": k}
             for i, (c, k) in enumerate(zip(conds, conts))]
    return "rules: " + json.dumps(rules, ensure_ascii=False) + "\n"    # JSON is YAML


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conds=st.lists(condition, min_size=1, max_size=8), data=st.data(),
       subject=text, name=text, body=text, mailer=text)
def test_index_offers_every_rule_that_matches(conds: list[dict[str, Any]], data: Any,
                                              subject: str, name: str, body: str,
                                              mailer: str) -> None:
    """Indexed and unindexed evaluation agree on random rules and messages."""
    conts = data.draw(st.lists(st.booleans(), min_size=len(conds), max_size=len(conds)))
    snap = snapshot(_rules_yaml(conds, conts))
    headers = {"From": f"{name.strip() or 'x'} <a@outside.example>"}
    if mailer.strip():
        headers["X_Mailer"] = mailer
    raw = mail(subject.strip() or "s", body, **headers)
    res = snap.book.resolve(RCPT)
    rs = snap.rules

    def facts() -> Facts:
        return Facts(MessageView(raw), "x@outside.example", RCPT, res, MONDAY_10_MSK, {})

    every = [r.name for r in rs.rules if r.when is not None and r.when.test(facts()) is not None]
    f = facts()
    offered = [r.name for r in rs.index.candidates(f)]
    assert offered == sorted(offered, key=lambda n: int(n[1:]))
    assert [n for n in offered if n in every] == every

    default = Decision(RCPT, Action.DELIVER, REPLY_OK, targets=res.targets)
    matched = []
    for rule in rs.rules:                    # the unindexed engine: every rule, in order
        why = rule.when.test(facts()) if rule.when is not None else "always"
        if why is not None:
            matched.append((rule, why))
            if not rule.cont:
                break
    want = _decide(default, matched, MONDAY_10_MSK, rs.calendars) if matched else default
    assert rs.apply(MessageView(raw), "x@outside.example", RCPT, res, default, MONDAY_10_MSK) == want


_PREFILTER = None


@settings(max_examples=300, deadline=None)
@given(value=st.text(alphabet=LETTERS + "Aa\t\n\x0b", max_size=10))
def test_regex_prefilter_takes_every_text_its_pattern_takes(value: str) -> None:
    """The wide form each regex has in its field's RE2 Set matches every text the exact
    pattern matches (Unicode \\w \\d \\s kept wide outside negated classes)."""
    from mailrouter.routing.patterns import PatternSet, compile_regex, utf8
    global _PREFILTER
    compiled = [compile_regex(p) for p in REGEXES]
    if _PREFILTER is None:
        _PREFILTER = PatternSet([c.prefilter for c in compiled], whole=False)
    hits = _PREFILTER.hits(utf8(value))
    assert hits is not None
    assert {i for i, c in enumerate(compiled) if c.search(value)} <= set(hits)


def test_regex_prefilter_on_the_texts_that_tell_classes_apart() -> None:
    """Fixed cases for the prefilter: Cyrillic words, Arabic-Indic digits, no-break spaces."""
    from mailrouter.routing.patterns import PatternSet, compile_regex, utf8
    for pattern, value in [(r"^\w+$", "счёт"), (r"^\d+$", "٣٣"), (r"a\sb", "a\u00a0b"),
                           (r"^[\w-]+$", "ящик-1"), (r"^\S+$", "№٣"), (r"^\W$", "\u00a0")]:
        compiled = compile_regex(pattern)
        assert compiled.search(value), pattern
        assert PatternSet([compiled.prefilter], whole=False).hits(utf8(value)) == [0], pattern


# Pieces of patterns around the places where the translation writes Unicode classes: next
# to a range's '-', in and out of [...], negated, repeated, under (?i).
PIECES = [r"\w", r"\d", r"\s", r"\D", r"\W", r"\S", "-", "[", "]", "^", "a", "z", "!", "0", "(",
          ")", "|", "*", "+", "?", "{2}", "{3,}", "(?i)", r"\p{L}", r"\pN", "\\", "_", "[:alpha:]",
          r"\Q", r"\E", "{", "}", "$", "ё", r"\x{10ffff}"]


@settings(max_examples=600, deadline=None)
@given(parts=st.lists(st.sampled_from(PIECES), max_size=8))
@example(parts=["[", "!", "-", r"\w", "]"])
@example(parts=["[", "!", "-", r"\d", "]"])
@example(parts=["[", r"\w", "-", "z", "]"])
@example(parts=["[", r"\s", "-", "!", "]"])
@example(parts=["(?i)", "[", "^", r"\d", "-", "z", "]"])
def test_a_regex_that_loads_compiles_when_first_used(parts: list[str]) -> None:
    """The load checks a regex with small classes in place of the Unicode ones (probe_form);
    it refuses exactly the patterns whose exact RE2 form does not parse, so a rule that
    loaded never fails when its pattern is first used."""
    import re2  # type: ignore[import-untyped]
    from mailrouter.routing.patterns import PatternError, _options, _translate, compile_regex

    source = "".join(parts)
    try:
        exact = _translate(source)
    except PatternError:
        return
    try:
        re2.compile(exact, _options())
        parses = True
    except re2.error:
        parses = False
    try:
        compiled = compile_regex(source)
    except PatternError:
        assert not parses, source
        return
    assert parses, source
    compiled.search("a ё 0")    # compiles the exact pattern: must not raise
