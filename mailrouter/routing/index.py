"""Which rules are worth testing for one message: routing cost that does not grow with rules.

Rules are bucketed when they are compiled:

- by recipient: a rule whose `when` requires `rcpt: {equals: ...}` (or `rcpt_domain`,
  or `rcpt: {ends_with: "@domain"}`) lives only in the buckets of those addresses
  or domains;
- by message field: any other rule whose condition can only hold when a field
  contains one of a few words (`subject: {contains: [счёт, invoice]}`) lives in a
  word -> rules table of that field (a word-form needle, `договор*`, in a prefix
  table beside it: a message word is looked up by each of its prefixes); one that
  can only hold when a field matches one of its `regex` or `glob` needles lives in
  that field's pattern set: all regexes of one field in one RE2 Set, all globs in
  another (patterns.PatternSet), asked once per message which of them could match.
  A rule whose `any` branches name several fields lives in each of them;
- everything else is in the catch-all list.

`candidates()` yields the rules in rule-file order (merging the buckets by
position with a heap), and opens a field's tables only when the next candidate
would come after that field's first rule: a body is decoded only when a rule that
reads it could still decide the outcome. Each candidate is then tested in full, so
the index only skips rules that cannot match; it never decides anything itself.
So the cost per message grows with the rules that could match it, not with all
rules (bench/bench_rules.py).
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any, Iterator, Sequence

from .conditions import AllOf, Leaf, Node, gate_of
from .facts import Facts
from .patterns import PatternSet, literal, utf8, wide_form

__all__ = ["RuleIndex", "rcpt_keys"]


def rcpt_keys(node: Node | None) -> tuple[str, frozenset[str]] | None:
    """('addr'|'resolved'|'domain', keys) when the condition requires the recipient to be one of keys."""
    parts = node.parts if isinstance(node, AllOf) else (node,)
    best = None
    for p in parts:
        if not isinstance(p, Leaf):
            continue
        if p.field == "rcpt" and p.op == "equals":
            return "addr", frozenset(p.keys)
        if p.field == "rcpt_resolved" and p.op == "equals":
            best = "resolved", frozenset(p.keys)
        if p.field == "rcpt_domain" and p.op == "equals" and best is None:
            best = "domain", frozenset(p.keys)
        if p.field == "rcpt" and p.op == "ends_with" and all(k.startswith("@") for k in p.keys) \
                and best is None:
            best = "domain", frozenset(k[1:] for k in p.keys)
    return best


@dataclass
class _Patterns:
    """The regexes (or globs) of one field: one PatternSet, each pattern -> its rules."""

    sources: dict[str, list[int]] = dc_field(default_factory=lambda: defaultdict(list))
    compiled: PatternSet | None = None
    positions: list[list[int]] = dc_field(default_factory=list)
    every: list[int] = dc_field(default_factory=list)    # pushed when the Set cannot answer

    def build(self, whole: bool) -> None:
        self.positions = list(self.sources.values())
        self.every = sorted({p for ps in self.positions for p in ps})
        try:
            self.compiled = PatternSet(list(self.sources), whole)
        except Exception:  # noqa: BLE001 (re2.error: too large for one Set; every rule is tried)
            self.compiled = None

    def hits(self, values: tuple[bytes, ...]) -> Iterator[int]:
        for value in values:
            got = self.compiled.hits(value) if self.compiled is not None else None
            if got is None:
                yield from self.every
                return
            for i in got:
                yield from self.positions[i]


@dataclass
class _Gate:
    field: str
    first: int                                   # position of its first rule
    words: dict[str, list[int]] = dc_field(default_factory=lambda: defaultdict(list))
    prefixes: dict[str, list[int]] = dc_field(default_factory=lambda: defaultdict(list))
    phrases: _Patterns = dc_field(default_factory=_Patterns)   # on the ' w1 w2 ' word forms
    regexes: _Patterns = dc_field(default_factory=_Patterns)   # on the raw values
    globs: _Patterns = dc_field(default_factory=_Patterns)     # on the normalised values


class RuleIndex:
    """Buckets of rule positions; see the module docstring."""

    def __init__(self, rules: Sequence[Any]) -> None:
        self.rules = list(rules)
        self.by_addr: dict[str, list[int]] = defaultdict(list)
        self.by_domain: dict[str, list[int]] = defaultdict(list)
        self.by_resolved: dict[str, list[int]] = defaultdict(list)
        self.always: list[int] = []
        gates: dict[str, _Gate] = {}
        for pos, rule in enumerate(self.rules):
            keys = rcpt_keys(rule.when)
            if keys is not None:
                table = {"addr": self.by_addr, "resolved": self.by_resolved}.get(keys[0], self.by_domain)
                for k in keys[1]:
                    table[k].append(pos)
                continue
            gate = gate_of(rule.when) if rule.when is not None else None
            if gate is None:
                self.always.append(pos)
                continue
            for fld, kind, key in gate:
                g = gates.setdefault(fld, _Gate(fld, pos))
                lookup = g.words if kind == "word" else g.prefixes if kind == "prefix" else None
                if lookup is not None:
                    lookup[key].append(pos)
                elif kind == "phrase":
                    form = literal(key) if isinstance(key, str) else wide_form(key.pattern.pattern)
                    g.phrases.sources[form].append(pos)
                else:
                    (g.regexes if kind == "regex" else g.globs).sources[key.prefilter].append(pos)
        self.gates = sorted(gates.values(), key=lambda g: g.first)
        for g in self.gates:
            for pats, whole in ((g.phrases, False), (g.regexes, False), (g.globs, True)):
                if pats.sources:
                    pats.build(whole)
        self.by_addr, self.by_domain = dict(self.by_addr), dict(self.by_domain)
        self.by_resolved = dict(self.by_resolved)

    def stats(self) -> dict[str, int]:
        words = {p for g in self.gates for table in (g.words, g.prefixes)
                 for lst in table.values() for p in lst}
        patterns = {p for g in self.gates for p in g.phrases.every + g.regexes.every + g.globs.every}
        gated = words | patterns
        return {"rules": len(self.rules), "always": len(self.always), "word_gated": len(words),
                "pattern_gated": len(patterns - words),
                "by_recipient": len(self.rules) - len(self.always) - len(gated)}

    def candidates(self, facts: Facts) -> Iterator[Any]:
        rcpt = facts.norm("rcpt")[0] if facts.rcpt else ""
        heap: list[int] = []
        heap.extend(self.by_addr.get(rcpt, ()))
        heap.extend(self.by_domain.get(rcpt.rpartition("@")[2], ()))
        if self.by_resolved:
            for address in facts.norm("rcpt_resolved"):
                heap.extend(self.by_resolved.get(address, ()))
        heap.extend(self.always)
        heapq.heapify(heap)
        pending = list(self.gates)       # sorted by first position
        last = -1
        while True:
            nxt = heap[0] if heap else len(self.rules)
            while pending and pending[0].first <= nxt:
                self._open(pending.pop(0), facts, heap)
                nxt = heap[0] if heap else len(self.rules)
            if not heap:
                return
            pos = heapq.heappop(heap)
            if pos == last:
                continue                   # one rule reached through two words
            last = pos
            yield self.rules[pos]

    @staticmethod
    def _open(gate: _Gate, facts: Facts, heap: list[int]) -> None:
        table, prefixes = gate.words, gate.prefixes
        words = facts.tokens(gate.field) if table or prefixes else frozenset()
        small, big = (words, table) if len(words) <= len(table) else (table.keys(), words)
        for w in small:
            if w in big:
                for pos in table[w]:
                    heapq.heappush(heap, pos)
        if prefixes:
            shortest = min(map(len, prefixes))
            longest = max(map(len, prefixes))
            for w in words:
                for end in range(shortest, min(len(w), longest) + 1):
                    for pos in prefixes.get(w[:end], ()):
                        heapq.heappush(heap, pos)
        if gate.phrases.positions:
            for pos in gate.phrases.hits(facts.words_utf8(gate.field)):
                heapq.heappush(heap, pos)
        if gate.regexes.positions:
            for pos in gate.regexes.hits(facts.utf8(gate.field)):
                heapq.heappush(heap, pos)
        if gate.globs.positions:
            for pos in gate.globs.hits(tuple(utf8(v) for v in facts.norm(gate.field))):
                heapq.heappush(heap, pos)
