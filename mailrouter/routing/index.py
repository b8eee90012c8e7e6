"""Which rules are worth testing for one message: routing cost that does not grow with rules.

Rules are bucketed when they are compiled:

- by recipient: a rule whose `when` requires `rcpt: {equals: ...}` (or `rcpt_domain`,
  or `rcpt: {ends_with: "@domain"}`) lives only in the buckets of those addresses
  or domains;
- by literal word: any other rule whose condition can only hold when a field
  contains one of a few words (`subject: {contains: [счёт, invoice]}`) lives in a
  word -> rules table of that field (a word-form needle, `договор*`, in a prefix
  table beside it: a message word is looked up by each of its prefixes);
- everything else is in the catch-all list.

`candidates()` yields the rules in rule-file order (merging the buckets by
position with a heap), and opens a word table only when the next candidate would
come after that table's first rule: a body is decoded only when a rule that reads
it could still decide the outcome. Each candidate is then tested in full, so the
index only skips rules that cannot match; it never decides anything itself.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any, Iterator, Sequence

from .conditions import AllOf, Leaf, Node, gate_of
from .facts import Facts

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
class _Gate:
    field: str
    first: int                                   # position of its first rule
    words: dict[str, list[int]] = dc_field(default_factory=lambda: defaultdict(list))
    prefixes: dict[str, list[int]] = dc_field(default_factory=lambda: defaultdict(list))


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
            g = gates.setdefault(gate[0], _Gate(gate[0], pos))
            for word in gate[1]:
                if word.endswith("*"):
                    g.prefixes[word[:-1]].append(pos)
                else:
                    g.words[word].append(pos)
        self.gates = sorted(gates.values(), key=lambda g: g.first)
        self.by_addr, self.by_domain = dict(self.by_addr), dict(self.by_domain)
        self.by_resolved = dict(self.by_resolved)

    def stats(self) -> dict[str, int]:
        gated = {p for g in self.gates for table in (g.words, g.prefixes)
                 for lst in table.values() for p in lst}
        return {"rules": len(self.rules), "always": len(self.always), "word_gated": len(gated),
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
        words = facts.tokens(gate.field)
        table = gate.words
        small, big = (words, table) if len(words) <= len(table) else (table.keys(), words)
        for w in small:
            if w in big:
                for pos in table[w]:
                    heapq.heappush(heap, pos)
        prefixes = gate.prefixes
        if prefixes:
            shortest = min(map(len, prefixes))
            longest = max(map(len, prefixes))
            for w in words:
                for end in range(shortest, min(len(w), longest) + 1):
                    for pos in prefixes.get(w[:end], ()):
                        heapq.heappush(heap, pos)
