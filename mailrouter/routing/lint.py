"""Warnings about rules that load fine but cannot do what their author meant.

- shadowed: an earlier rule without `continue` matches every message a later
  rule matches (no `when`, or its conditions are a subset of the later rule's,
  with needle lists that cover the later one's; `rcpt: a@example.com` is within
  `rcpt_domain: example.com`, `contains: 'invoice overdue'` within `contains: invoice`,
  `счета на оплату` within `счет* на оплат*`, `equals`/`starts_with` x within
  `starts_with` a beginning of x, and so for ends), so the later rule never fires;
- unmatchable: a `contains` needle with no letters or digits (contains matches
  whole words), a subject `equals`/`starts_with`/`contains` needle that begins
  with a reply prefix (subjects are matched without Re:, Fwd:, AW:, Отв: ...), a regex on the subject that
  requires a reply prefix (regexes see the decoded subject; the prefix may be
  there, but only when the message is a reply: it warns so the author checks),
  `all` with two different `rcpt` equals, an `attachment_size` lower bound above a `size`
  upper bound in one conjunction (no attachment is larger than its message), a
  `mail_from`/`from_addr` needle written with a name or <> (`Boss <boss@x.com>`: the
  fields hold the bare address), a text needle with a word of Latin and Cyrillic letters
  together (`cчёт` with a Latin c: the keyboard layout switched mid-word);
- two rules with one name (explanations would be ambiguous);
- `copy_to_owner: true` with no `control:` in config.yaml (`control_warnings`: no copy);
- word forms misused: a `*` that ends no word in `contains` (ignored), a stem of
  one or two letters (`с*` matches every word beginning so), a `*` in
  equals/starts_with/ends_with (a literal star there; glob is the wildcard).

Notes (`lint_notes`, shown by `check` but not counted as warnings) point to the
word-forms syntax: a needle list that spells out forms of one word (`[счёт,
счета]` -> `счет*`), and, once per check, a Cyrillic or Czech `contains` word
when no rule uses `*` yet (`contains: договор` does not match «договора»).

Unknown keys are errors, not warnings: RuleSet.build refuses them with a
did-you-mean. Each warning is "file:line: rule NAME: text".
"""

from __future__ import annotations

import re
from typing import Any, Iterator, Sequence

from .conditions import AllOf, AnyOf, Leaf, Node, Not, normalize_needle
from .facts import words_of
from ..yamlsrc import mixed_letters
from .normalize import normalize, strip_reply_prefixes

__all__ = ["control_warnings", "lint_notes", "lint_rules"]

_SET_OPS = ("equals", "contains", "starts_with", "ends_with", "glob")


def _conjuncts(node: Node | None) -> tuple[Node, ...]:
    if node is None:
        return ()
    return node.parts if isinstance(node, AllOf) else (node,)


def _implies(b: Node, a: Node) -> bool:
    """True when b holding guarantees a holds (syntactically; never a false positive)."""
    if isinstance(a, Leaf) and isinstance(b, Leaf):
        if (a.field, a.op, b.field, b.op) == ("rcpt_domain", "equals", "rcpt", "equals"):
            # mail to team@example.com is mail to the domain example.com
            domains = {str(k) for k in a.keys}
            return all(str(k).rpartition("@")[2] in domains for k in b.keys)
        if a.field != b.field:
            return False
        if a.op in _SET_OPS and b.op in _SET_OPS:
            if a.op == b.op and (set(map(str, b.needles)) <= set(map(str, a.needles))
                                 or {str(k) for k in b.keys} <= {str(k) for k in a.keys}):
                return True
            # each of b's needles within one of a's: 'invoice overdue' is 'invoice' too
            return bool(b.keys) and all(any(_key_implies(b.op, bk, a.op, ak) for ak in a.keys)
                                        for bk in b.keys)
        return (a.op == b.op and list(map(str, a.needles)) == list(map(str, b.needles))
                and a.keys == b.keys)
    if isinstance(a, AnyOf):
        return any(_implies(b, p) for p in a.parts)
    if isinstance(b, AnyOf):
        return all(_implies(p, a) for p in b.parts)
    if isinstance(a, AllOf):
        return all(_implies(b, p) for p in a.parts)
    if isinstance(b, AllOf):
        return any(_implies(p, a) for p in b.parts)
    if isinstance(a, Not) and isinstance(b, Not):
        return a.text == b.text
    return False


def _tokens(op: str, key: Any) -> list[str]:
    """The words a `contains` (' w1 w2* ') or `equals` key needs, in order; 'w*' a word form."""
    return str(key).split() if op == "contains" else words_of(str(key)).split()


def _word_within(a: str, b: str) -> bool:
    """Any word b's token matches, a's token matches: the same word, or a stem that begins
    b's word or stem (`счет*` matches every word `счета` or `счета*` does)."""
    if a.endswith("*"):
        return b.rstrip("*").startswith(a[:-1])
    return a == b


def _key_implies(b_op: str, b_key: Any, a_op: str, a_key: Any) -> bool:
    """True when a value that meets `b_op b_key` surely meets `a_op a_key` (one field)."""
    if a_op == "contains" and b_op in ("contains", "equals"):
        need, have = _tokens(a_op, a_key), _tokens(b_op, b_key)
        return bool(need) and any(
            all(_word_within(w, have[i + j]) for j, w in enumerate(need))
            for i in range(len(have) - len(need) + 1))
    if a_op in ("starts_with", "ends_with") and b_op in (a_op, "equals"):
        return str(b_key).startswith(str(a_key)) if a_op == "starts_with" \
            else str(b_key).endswith(str(a_key))
    return a_op == b_op == "equals" and str(a_key) == str(b_key)


def _shadows(earlier: Any, later: Any) -> bool:
    if earlier.cont:
        return False
    if earlier.when is None:
        return True
    if later.when is None:
        return False
    later_parts = _conjuncts(later.when)
    return all(any(_implies(lp, ep) for lp in later_parts) or _implies(later.when, ep)
               for ep in _conjuncts(earlier.when))


def leaves(node: Node | None, under_not: bool = True) -> Iterator[Leaf]:
    """The condition's leaves; without `under_not`, only those a match needs to hold."""
    if isinstance(node, Leaf):
        yield node
    elif isinstance(node, (AllOf, AnyOf)):
        for p in node.parts:
            yield from leaves(p, under_not)
    elif isinstance(node, Not) and under_not:
        yield from leaves(node.part)


def _unmatchable(rule: Any) -> Iterator[str]:
    for leaf in leaves(rule.when):
        for needle in leaf.needles:
            text = str(needle)
            if leaf.op == "contains" and not words_of(normalize(text)).strip():
                yield (f"{leaf.label} contains {text!r} can never match: 'contains' matches whole "
                       "words and this has no letters or digits; use glob or regex")
            if leaf.field == "subject" and leaf.op in ("equals", "starts_with", "contains") \
                    and strip_reply_prefixes(text) != text.strip():   # "срочно " has none
                yield (f"subject {leaf.op} {text!r} can never match"
                       + (" a reply" if leaf.op == "contains" else "")
                       + f": subjects are matched without reply prefixes; write "
                       f"{strip_reply_prefixes(text)!r}")
            yield from _star_misuse(leaf, text)
            if leaf.field in _BARE and leaf.op in ("equals", "starts_with", "ends_with") \
                    and _not_bare(leaf.field, text):
                yield (f"{leaf.field} {leaf.op} {text!r} can never match: {leaf.field} is the "
                       "bare address, without a name or <>; write "
                       + (repr(_bare(text)) if _bare(text) else "'<>' for a bounce's null sender"
                          if leaf.field == "mail_from" else "robot: true for a bounce"))
            if leaf.field not in _ADDRESS_FIELDS and leaf.op in _SET_OPS \
                    and (mixed := mixed_letters(text)) is not None:
                word, odd = mixed
                yield (f"{leaf.label} {leaf.op} {text!r} matches no word written in one "
                       f"alphabet: its word {word!r} mixes Latin and Cyrillic letters ({odd}); "
                       "retype the word with one keyboard layout")
            # on the needle as it is compiled: '[a-Z]' is '[a-z]' once case-folded
            if leaf.op == "glob" and (backwards := _reversed_range(
                    normalize_needle(leaf.field, "glob", (text,))[0])) is not None:
                yield (f"{leaf.label} glob {text!r}: the range '{backwards}' runs backwards, and "
                       "a glob takes it as no character at all; write it low to high "
                       f"('{backwards[2]}-{backwards[0]}')")
            if leaf.op == "glob" and _unclosed_set(text):
                yield (f"{leaf.label} glob {text!r}: a '[' that no ']' closes is a literal '[', "
                       "not a set; close the set ('[abc]'), or write '[[]' for a literal '['")
            if leaf.field == "subject" and leaf.op == "regex" and \
                    text.lstrip("^").lower().startswith(("re:", "re\\:", "fwd", "(re", "(?i)re")):
                yield (f"subject regex {text!r} looks for a reply prefix: regexes see the decoded "
                       "subject, prefixes included, but other operators do not; check this is meant")
    for node in _all_nodes(rule.when):
        if isinstance(node, AllOf):
            # `{rcpt: a@, all: [{rcpt: b@}]}` is one conjunction too: the `all` flattened
            rcpts = [lf for lf in _conjoined(node) if isinstance(lf, Leaf) and lf.field == "rcpt"
                     and lf.op == "equals"]
            if len(rcpts) > 1 and not set.intersection(*(set(lf.keys) for lf in rcpts)):
                yield "requires two different recipients at once and can never match"
                break
    for node in _all_nodes(rule.when):
        if isinstance(node, AllOf) and (why := _bigger_than_message(node)):
            yield why
            break


def _bigger_than_message(node: AllOf) -> str | None:
    """`attachment_size: {gt: 10MB}` with `size: {lt: 1MB}` in one conjunction: an attachment
    is part of the message (its decoded size is at most its encoded one), so none is larger
    than the message. The bounds under one field are checked at load (sizes.empty_range)."""
    low: Leaf | None = None          # the attachment_size bound asking the most
    high: Leaf | None = None         # the size bound allowing the least
    for lf in _conjoined(node):
        if not isinstance(lf, Leaf) or lf.op == "exists":
            continue
        n = lf.keys[0]
        if lf.field == "attachment_size" and lf.op in ("gt", "ge", "equals"):
            at_least = n + (lf.op == "gt")
            if low is None or at_least > low.keys[0] + (low.op == "gt"):
                low = lf
        elif lf.field == "size" and lf.op in ("lt", "le", "equals"):
            at_most = n - (lf.op == "lt")
            if high is None or at_most < high.keys[0] - (high.op == "lt"):
                high = lf
    if low is None or high is None:
        return None
    if low.keys[0] + (low.op == "gt") <= high.keys[0] - (high.op == "lt"):
        return None
    return (f"attachment_size {low.op} {low.needles[0]} with size {high.op} {high.needles[0]} "
            "can never match: an attachment is part of the message, so no attachment is larger "
            "than the message; check which bound is meant")


_BARE = ("mail_from", "from_addr")      # an address as given, nothing around it
_ADDRESS_FIELDS = ("mail_from", "from_addr", "rcpt", "rcpt_domain", "rcpt_resolved",
                   "rcpt_original", "resolved_mailbox")


def _not_bare(field: str, text: str) -> bool:
    """A needle of an address field with a name, <> or spaces (`Boss <boss@x.com>`, as a
    mail client shows it): the field never holds one. `<>` alone is mail_from's null sender."""
    if field == "mail_from" and text.strip() == "<>":
        return False
    return any(c in text for c in "<>") or (" " in text.strip() and '"' not in text)


def _bare(text: str) -> str:
    inside = re.search(r"<([^<>]*)>?", text)
    got = inside.group(1) if inside else next((w for w in text.split() if "@" in w), text)
    return got.strip("<> ")


def _conjoined(node: AllOf) -> Iterator[Node]:
    """The parts of an `all`, those of an `all` inside it in its place."""
    for part in node.parts:
        if isinstance(part, AllOf):
            yield from _conjoined(part)
        else:
            yield part


_STARRED = re.compile(r"\w+\*")


def _star_misuse(leaf: Leaf, text: str) -> Iterator[str]:
    if "*" not in text:
        return
    if leaf.op == "contains":
        rest = _STARRED.sub("", text)
        if "*" in rest:
            yield (f"{leaf.label} contains {text!r}: a * works only at the end of a word "
                   "(word forms: 'договор*'); this one is ignored; use glob or regex")
        for stem in (m[:-1] for m in _STARRED.findall(normalize(text))):
            if len(stem) < 3:
                yield (f"{leaf.label} contains {text!r}: '{stem}*' matches every word beginning "
                       f"with '{stem}'; give more of the word")
    elif leaf.op in ("equals", "starts_with", "ends_with"):
        yield (f"{leaf.label} {leaf.op} {text!r}: '*' is a word-form marker only in contains; "
               "here it is a literal star; use glob for a wildcard")


def _unclosed_set(glob: str) -> bool:
    """A '[' of a glob that opens no set (patterns._glob's scan: '[!]...]' and '[]...]' hold
    their first ']'), taken literally as fnmatch does: mostly a ']' left out."""
    i, n = 0, len(glob)
    while i < n:
        if glob[i] == "[":
            j = i + 1 + (i + 1 < n and glob[i + 1] == "!")
            j += j < n and glob[j] == "]"
            j = glob.find("]", j)
            if j < 0:
                return True
            i = j
        i += 1
    return False


def _reversed_range(glob: str) -> str | None:
    """The first range of a glob set written high to low (`[9-0]`, `[я-а]`), which fnmatch
    (and so the rules) takes as no character at all: a set of it alone matches nothing."""
    i, n = 0, len(glob)
    while i < n:
        if glob[i] == "[":
            start = i + 1 + (i + 1 < n and glob[i + 1] == "!")
            j = start + (start < n and glob[start] == "]")
            j = glob.find("]", j)
            if j < 0:
                return None
            body = glob[start:j]
            k = 0
            while k < len(body):
                if k + 2 < len(body) and body[k + 1] == "-":
                    if body[k] > body[k + 2]:
                        return body[k:k + 3]
                    k += 3
                else:
                    k += 1
            i = j
        i += 1
    return None


def _all_nodes(node: Node | None) -> Iterator[Node]:
    if node is None:
        return
    yield node
    if isinstance(node, (AllOf, AnyOf)):
        for p in node.parts:
            yield from _all_nodes(p)
    elif isinstance(node, Not):
        yield from _all_nodes(node.part)


def lint_rules(rules: Sequence[Any]) -> list[str]:
    """Every warning for a compiled rule list, in rule order."""
    out: list[str] = []
    seen: dict[str, Any] = {}
    shadowing = _Shadowing(rules)
    for i, rule in enumerate(rules):
        at = f"{rule.file}:{rule.line}: rule {rule.name!r}"
        if rule.name in seen:
            first = seen[rule.name]
            # a copied rule left with its name: the registry, the metrics and a rule
            # test's `expect: {rule: ...}` could not tell the two apart; say what to do
            out.append(f"{at}: the name is also used at {first.file}:{first.line}; "
                       "explanations, the registry, the metrics and rule tests' 'rule:' "
                       "could not tell the two apart: give this rule a name of its own")
        seen.setdefault(rule.name, rule)
        earlier = shadowing.first_over(i)
        if earlier is not None:
            out.append(f"{at}: never matches: rule {earlier.name!r} ({earlier.file}:"
                       f"{earlier.line}) matches every message it matches and stops; "
                       "move it above or add 'continue: true' to the earlier rule")
        out.extend(f"{at}: {w}" for w in _unmatchable(rule))
    return out


def control_warnings(rules: Sequence[Any], control: bool) -> list[str]:
    """`copy_to_owner: true` without `control:` in config.yaml: the daemon makes the copy only
    under execution control, so the owner silently got none."""
    if control:
        return []
    return [f"{r.file}:{r.line}: rule {r.name!r}: copy_to_owner: true does nothing: config.yaml "
            "has no 'control:' section, and only execution control makes the owner's copy; add "
            "control: (README, Execution control) or remove copy_to_owner"
            for r in rules if r.then.copy_to_owner]


# The shadow search. Trying every earlier rule against every later one took 115 s for
# 10,000 rules. A rule can only be shadowed by an earlier one whose every conjunct its own
# condition implies, and `_implies(b, a)` needs b to hold a leaf with a's field, operator and
# a needle (or key) in common, or the same `not`: `_need(a)` names those signatures,
# `_offers(b)` the ones b holds. Each earlier rule is filed under the signatures of its most
# selective conjunct; a later rule tries only the rules filed under what it offers (and the
# ones no signature can rule out), in rule order, with `_shadows` deciding as before. A key
# implied by another operator's (`contains: invoice` by `contains: 'invoice overdue'`) is
# filed under its rarest word, stem, beginning or end (_parts_needed), which every key that
# implies it offers (_offer_parts).

_ANY = ("any",)          # offered by a condition that implies everything (an empty any:)


Sig = tuple[Any, ...]


def _offers(node: Node, into: set[Sig], wanted: set[Sig]) -> set[Sig]:
    """The signatures `node` holds; of the parts of its keys (_offer_parts), the `wanted` ones."""
    if isinstance(node, Leaf):
        if node.op in _SET_OPS:
            into.update((node.field, node.op, "n", str(n)) for n in node.needles)
            into.update((node.field, node.op, "k", str(k)) for k in node.keys)
            if (node.field, node.op) == ("rcpt", "equals"):     # see _implies
                into.update(("rcpt_domain", "equals", "k", str(k).rpartition("@")[2])
                            for k in node.keys)
            if not node.needles or not node.keys:       # an empty set is within any set
                into.add((node.field, node.op, "*"))
            for key in node.keys:                       # see _key_implies
                into.update(p for p in _offer_parts(node.field, node.op, key) if p in wanted)
        else:
            into.add((node.field, node.op, "=", tuple(map(str, node.needles))))
    elif isinstance(node, (AllOf, AnyOf)):
        if isinstance(node, AnyOf) and not node.parts:
            into.add(_ANY)
        for p in node.parts:
            _offers(p, into, wanted)
    elif isinstance(node, Not):
        into.add(("not", node.text))
        _offers(node.part, into, wanted)
    return into


def _offer_parts(field: str, op: str, key: Any) -> Iterator[Sig]:
    """What a key offers to the keys it may imply of other operators: its words and their
    beginnings (for `contains`), its own beginnings and ends (for starts_with, ends_with).
    Many; only those some rule needs (_parts_needed) are kept."""
    if op in ("contains", "equals"):
        for word in _tokens(op, key):
            stem = word.rstrip("*")
            if stem == word:
                yield field, "word", word
            yield from ((field, "stem", stem[:n]) for n in range(1, len(stem) + 1))
    if op in ("starts_with", "equals"):
        yield from ((field, "starts", str(key)[:n]) for n in range(len(str(key)) + 1))
    if op in ("ends_with", "equals"):
        yield from ((field, "ends", str(key)[n:]) for n in range(len(str(key)) + 1))


def _parts_needed(field: str, op: str, key: Any) -> list[Sig]:
    """The parts a key that implies `op key` offers every one of (_offer_parts): for a
    `contains` key each of its words (a stem for a word form), else its beginning or end."""
    if op == "contains":
        return [(field, "stem", w[:-1]) if w.endswith("*") else (field, "word", w)
                for w in _tokens(op, key)]
    if op in ("starts_with", "ends_with"):
        return [(field, "starts" if op == "starts_with" else "ends", str(key))]
    return []


def _need(node: Node, common: dict[Sig, int]) -> set[Sig] | None:
    """Signatures one of which any condition implying `node` offers; None: no such bound.
    Of a key's parts the least `common` is enough: 'invoice' may be in every rule."""
    if isinstance(node, Leaf):
        if node.op in _SET_OPS:
            parts = (_parts_needed(node.field, node.op, k) for k in node.keys)
            return ({(node.field, node.op, "n", str(n)) for n in node.needles}
                    | {(node.field, node.op, "k", str(k)) for k in node.keys}
                    | {(node.field, node.op, "*")}
                    | {min(p, key=lambda s: common.get(s, 0)) for p in parts if p})
        return {(node.field, node.op, "=", tuple(map(str, node.needles)))}
    if isinstance(node, AnyOf):
        out: set[tuple[Any, ...]] = set()
        for p in node.parts:
            need = _need(p, common)
            if need is None:
                return None
            out |= need
        return out
    if isinstance(node, AllOf):
        return _need(node.parts[0], common) if node.parts else None
    if isinstance(node, Not):
        return {("not", node.text)}
    return set()                  # a node _implies never holds


class _Shadowing:
    """Which earlier rule, if any, shadows rule i (`first_over`), asked for i in order."""

    def __init__(self, rules: Sequence[Any]) -> None:
        self.rules = rules
        wanted = {part for r in rules for lf in leaves(r.when) if lf.op in _SET_OPS
                  for k in lf.keys for part in _parts_needed(lf.field, lf.op, k)}
        self.offers = [_offers(r.when, set(), wanted) if r.when is not None else set()
                       for r in rules]
        self.common: dict[tuple[Any, ...], int] = {}
        for offer in self.offers:
            for sig in offer:
                self.common[sig] = self.common.get(sig, 0) + 1
        self.filed: dict[tuple[Any, ...], list[int]] = {}
        self.unbounded: list[int] = []       # earlier rules no signature rules out
        self.done = 0

    def first_over(self, i: int) -> Any | None:
        assert i == self.done, "asked in rule order"
        rule = self.rules[i]
        if _ANY in self.offers[i]:
            tried: set[int] = set(range(i))
        else:                           # (no `when`: only the unbounded can shadow it)
            tried = set(self.unbounded)
            for sig in self.offers[i]:
                tried.update(self.filed.get(sig, ()))
        found = next((self.rules[j] for j in sorted(tried)
                      if _shadows(self.rules[j], rule)), None)
        self._file(i)
        return found

    def _file(self, i: int) -> None:
        self.done = i + 1
        rule = self.rules[i]
        if rule.cont:
            return                      # never shadows
        needs = [_need(c, self.common) for c in _conjuncts(rule.when)]
        bounded = [n for n in needs if n is not None]     # None: implied by anything
        if not bounded:
            self.unbounded.append(i)
            return
        best = min(bounded, key=lambda n: sum(self.common.get(s, 0) for s in n))
        for sig in best:
            self.filed.setdefault(sig, []).append(i)


# Notes: where the word-forms syntax would help.

_CYRILLIC_OR_CZECH = re.compile(r"[\u0400-\u04ffáčďéěíňóřšťúůýž]", re.IGNORECASE)
_FORMS_NOTE = "see 'Word forms' in rules/README.md"


def _forms(words: list[str]) -> list[tuple[str, list[str]]]:
    """(stem, words) for each set of one-word needles that look like forms of one word: a
    shared beginning of 4+ letters with endings of at most 3 (счет, счета; faktura, fakturu)."""
    groups: list[tuple[str, list[str]]] = []
    taken: set[str] = set()
    for i, a in enumerate(words):
        if a in taken:
            continue
        group = [a] + [b for b in words[i + 1:] if b not in taken and _stem(a, b)]
        if len(group) > 1:
            taken.update(group)
            groups.append((min((_stem(a, b) for b in group[1:]), key=len), group))
    return groups


def _stem(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    ok = a != b and n >= 4 and len(a) - n <= 3 and len(b) - n <= 3
    return a[:n] if ok else ""


def lint_notes(rules: Sequence[Any]) -> list[str]:
    """Hints towards word forms (`договор*`), in rule order; the general one at most once."""
    out: list[str] = []
    first: tuple[Any, Leaf, str] | None = None
    starred = False
    for rule in rules:
        at = f"{rule.file}:{rule.line}: rule {rule.name!r}"
        for leaf in leaves(rule.when):
            if leaf.op != "contains":
                continue
            texts = [str(n) for n in leaf.needles]
            starred = starred or any("*" in t for t in texts)
            single = [normalize(t) for t in texts if "*" not in t and normalize(t).isalpha()]
            groups = _forms(list(dict.fromkeys(single)))
            if groups:
                listed = "; ".join(f"{', '.join(g)} -> {stem}*" for stem, g in groups)
                out.append(f"{at}: {leaf.label} contains forms of one word ({listed}): "
                           f"a word ending in * matches all its forms; {_FORMS_NOTE}")
            if first is None:
                word = next((t for t in texts if "*" not in t and _CYRILLIC_OR_CZECH.search(t)),
                            None)
                if word is not None:
                    first = (rule, leaf, word)
    if first is not None and not starred and not out:
        rule, leaf, word = first
        last = normalize(word).split()[-1]
        out.append(f"{rule.file}:{rule.line}: rule {rule.name!r}: {leaf.label} contains "
                   f"{word!r} matches the whole word only, not its other forms; to match "
                   f"them, end the word with *: {last + '*'!r}; {_FORMS_NOTE} "
                   "(this note is shown once)")
    return out
