"""The alias graph: parse alias targets into edges, refuse cycles, precompute expansions.

Every address the book knows becomes a node; an edge either follows another
address (alias chains, moved `now` with deliver: true) or ends in targets
(a mailbox, a person, a team). Cycles are found with Tarjan's algorithm (iterative,
so a 100,000-long chain cannot overflow the stack) and each one is reported once,
as its shortest cycle through its smallest address, with file:line per edge.
Expansions are then computed sinks-first, so each node is expanded once and
`resolve` is a dictionary lookup.
"""

from __future__ import annotations

from collections.abc import Container, Iterator, Mapping
from typing import Any, NamedTuple

from ..values import Target, written_folder_problem
from ..yamlsrc import as_written, where
from .canon import canonical, canonicaliser, detail_split
from .errs import Collector, did_you_mean
from .parse import Parts, define

__all__ = ["Edge", "parse_target", "parse_aliases", "add_moved", "add_detail_forms",
           "check_dangling", "dropped_members"]

PREFIXES = ("mailbox:", "person:", "team:")


class Edge(NamedTuple):
    dest: str | None                 # an address to follow, or None for a terminal edge
    targets: tuple[Target, ...]      # terminal targets, paths relative to the node
    at: Any                          # the loaded value, for file:line
    keys: tuple[str, ...] = ()       # `Target.key` of each of `targets` (for the dedupe)


def _end(targets: tuple[Target, ...], at: Any) -> Edge:
    """A terminal edge, its dedupe keys computed once (targets are shared via _Memo)."""
    return Edge(None, targets, at, tuple(t.key for t in targets))


def _mailbox(c: Collector, p: Parts, name: str, folder: str | None, at: Any,
             folder_at: Any = None) -> list[Edge]:
    if name not in p.mailboxes:
        c.add(f"unknown mailbox {name!r}", at, did_you_mean(name, p.mailboxes, "mailboxes")
              + " (define it under 'mailboxes:')")
        return []
    problem = written_folder_problem(folder) if folder is not None else None
    if problem is not None:
        c.add(f"folder {folder!r} of mailbox {name!r} has {problem}",
              at if folder_at is None else folder_at, "fix the folder name")
        return []
    step = f"mailbox:{name}/{folder}" if folder else f"mailbox:{name}"
    return [_end((Target(name, folder, None, (step,)),), at)]


def person_edge(p: Parts, key: str, at: Any) -> Edge:
    person = p.people[key]
    return _end((Target(person.mailbox, None, key, (f"person:{key}",)),), at)


def _team(c: Collector, p: Parts, key: str, at: Any) -> list[Edge]:
    team = p.teams.get(key)
    if team is None:
        c.add(f"unknown team {key!r}", at, did_you_mean(key, p.teams, "teams")
              + " (define it under 'teams:')")
        return []
    step = f"team:{key}"
    if team.mailbox is not None:
        return [_end((Target(team.mailbox, None, None, (step,)),), at)]
    return [_end(tuple(Target(p.people[m].mailbox, None, m, (step, f"person:{m}"))
                       for m in team.members), at)]


def _bare(c: Collector, p: Parts, word: str, at: Any) -> list[Edge]:
    if word in p.people:
        return [person_edge(p, word, at)]
    for kind, names in (("team", p.teams), ("mailbox", p.mailboxes)):
        if word in names:
            c.add(f"{word!r} is a {kind}, not a person", at, f"write {kind}:{word}")
            return []
    c.add(f"unknown person {word!r}", at, did_you_mean(word, p.people, "people") +
          " (write mailbox:NAME, team:NAME or an address for anything else)")
    return []


def _address(c: Collector, p: Parts, src: str, text: str, at: Any) -> list[Edge]:
    dest = canonical(text, p.options)
    if dest is None:
        c.add(f"{text!r} is not an address", at, "write local@domain")
        return []
    if dest == src:
        return [Edge(src, (), at)]   # "deliver here": resolved by the caller
    domain = dest.partition("@")[2]
    if domain not in p.domains:
        c.add(f"alias target {dest} is not on one of our domains", at,
              f"to forward outside, define a mailbox {{smtp: {dest}}} and write mailbox:NAME")
        return []
    return [Edge(dest, (), at)]


def _string_target(c: Collector, p: Parts, src: str, text: str, at: Any) -> list[Edge]:
    if text.startswith("mailbox:"):
        name, _, folder = text[8:].partition("/")
        return _mailbox(c, p, name, folder or None, at)
    if text.startswith("person:"):
        return _bare(c, p, text[7:], at)
    if text.startswith("team:"):
        return _team(c, p, text[5:], at)
    if "@" in text:
        return _address(c, p, src, text, at)
    if ":" in text:
        prefix = text.partition(":")[0] + ":"
        c.add(f"unknown target kind {prefix!r} in {text!r}", at,
              did_you_mean(prefix, PREFIXES, "kinds"))
        return []
    return _bare(c, p, text, at)


def parse_target(c: Collector, p: Parts, src: str, value: Any) -> list[Edge]:
    """The edges of one alias value: a string, {mailbox:, folder:} or a list (a group)."""
    if isinstance(value, str) and value.strip():          # the common case first
        return _string_target(c, p, src, value.strip(), value)
    if isinstance(value, list):
        if not value:
            c.add(f"alias {src} is an empty group", value, "list at least one target")
        return [e for item in value for e in parse_target(c, p, src, item)]
    if isinstance(value, Mapping):
        return _mapping_target(c, p, src, value)
    c.add(f"alias {src}: target {value!r} is not an address, mailbox or person", value,
          "write an address, mailbox:NAME, team:NAME, a person key, or a list of these",
          c.entry)      # a null or a number in a group has no position of its own
    return []


def _mapping_target(c: Collector, p: Parts, src: str, value: Mapping[Any, Any]) -> list[Edge]:
    c.unknown_keys(value, ("mailbox", "folder"), f"the target of alias {src}")
    if "mailbox" not in value:
        c.add(f"alias {src}: a mapping target needs mailbox:", value,
              "write {mailbox: NAME, folder: FOLDER}")
        return []
    folder = as_written(value.get("folder"))        # folder: 00123 is '00123', not '83'
    if isinstance(folder, bool):
        # `folder: No` was no folder at all (False is falsy), `folder: yes` the folder 'True'
        c.add(f"alias {src}: folder takes text, but YAML read this value as "
              f"{str(folder).lower()} (no, yes, on, off, y, n are booleans to YAML)", value,
              "put the folder in quotes as written: folder: 'No'")
        return []
    return _mailbox(c, p, str(value["mailbox"]), str(folder) if folder else None,
                    value["mailbox"], folder)


_new_edge = tuple.__new__


class _Memo:
    """`parse_target`, fast for the usual alias values: strings and lists of strings.

    An address target is canonicalised and checked inline (`_address` only when it has
    something to say). Other string targets (`mailbox:NAME`, a person key, `team:KEY`)
    recur across thousands of aliases: each text parsed without error is kept, with its
    targets and their dedupe keys, and later occurrences reuse them. A text whose parse
    reported an error is never kept, so each of its occurrences reports its own."""

    __slots__ = ("c", "p", "canon", "domains", "seen", "ours")

    def __init__(self, c: Collector, p: Parts) -> None:
        self.c, self.p, self.domains = c, p, p.domains
        self.canon = canonicaliser(p.options)
        self.seen: dict[str, tuple[tuple[Target, ...], tuple[str, ...]]] = {}
        # address text -> its canonical form, on one of our domains (alias keys and targets
        # put here as met): an alias named as a target after its definition, or named by
        # many groups, is canonicalised once
        self.ours: dict[str, str] = {}

    def edges(self, src: str, value: Any) -> list[Edge]:
        """The edges of one alias value, as `parse_target(c, p, src, value)` gives them
        once duplicate targets are dropped (which `expand_all` does)."""
        if isinstance(value, list) and value:
            return self._group(src, value)
        return self._one(src, value)

    def _group(self, src: str, group: list[Any]) -> list[Edge]:
        """A group's edges, nested lists flattened, each list object once. A nested list
        may be a YAML alias of another (`[*staff, *staff]`), the same object again: its
        edges are already there, and repeating them changes no expansion (the first path
        to a target wins). Walking it again would make a 600-byte file of 9 lists of 9
        aliases a group of 9**9 members (issue 9); walked once, it is 81 steps."""
        out: list[Edge] = []
        one = self._one
        walked = {id(group)}
        todo = [iter(group)]
        while todo:
            for item in todo[-1]:
                if isinstance(item, list) and item:
                    if id(item) not in walked:
                        walked.add(id(item))
                        todo.append(iter(item))
                        break
                    continue
                out += one(src, item)
            else:
                todo.pop()
        return out

    def _one(self, src: str, value: Any) -> list[Edge]:
        if not isinstance(value, str) or not (text := value.strip()):
            return parse_target(self.c, self.p, src, value)
        if "@" in text and not text.startswith(PREFIXES):
            dest = self.ours.get(text)
            if dest is None:
                dest = self.canon(text)
                if dest is None or dest.partition("@")[2] not in self.domains:
                    return _address(self.c, self.p, src, text, value)
                self.ours[text] = dest
            if dest != src:
                return [_new_edge(Edge, (dest, (), value, ()))]
            return _address(self.c, self.p, src, text, value)
        hit = self.seen.get(text)
        if hit is not None:
            return [_new_edge(Edge, (None, hit[0], value, hit[1]))]
        errors = len(self.c.errors)
        edges = _string_target(self.c, self.p, src, text, value)
        if len(edges) == 1 and len(self.c.errors) == errors and edges[0].dest is None:
            self.seen[text] = (edges[0].targets, edges[0].keys)
        return edges


def _self_edge(c: Collector, p: Parts, src: str, edge: Edge, group: bool = False) -> Edge | None:
    key = p.by_address.get(src)
    if key is None:
        if group:
            # a group listing itself: the fix is to take it out of its own list, not to make
            # a person of a list address (which the single-target message below advises)
            c.add(f"group {src} lists itself, but no person has this address", edge.at,
                  f"remove {src} from its own list (its other targets each get one copy), "
                  f"or add a person with address: {src} to keep a copy here")
            return None
        c.add(f"alias {src} maps to itself, but no person has this address", edge.at,
              f"to deliver here, add a person with address: {src}, "
              "or point the alias at mailbox:NAME")
        return None
    return person_edge(p, key, edge.at)


def _alias_node(c: Collector, p: Parts, src: str, key: Any, parsed: list[Edge]) -> list[Edge]:
    """The edges of an alias that maps to itself or is a person's address."""
    edges: list[Edge] = []
    has_self = False
    for edge in parsed:
        if edge.dest == src:
            has_self = True
            fixed = _self_edge(c, p, src, edge, len(parsed) > 1)
            if fixed is not None:
                edges.append(fixed)
        else:
            edges.append(edge)
    if src in p.by_address and not has_self:
        c.add(f"alias {src} is the address of person {p.by_address[src]!r} "
              "but does not deliver to them", key,
              f"add {src} itself to the list to keep the person's copy, "
              "or remove the person's address")
    return edges


def _mappings(section: Any) -> Iterator[Mapping[Any, Any]]:
    """The mappings of a section, in the order `entries` walks them."""
    if isinstance(section, Mapping):
        yield section
    elif isinstance(section, list):
        for part in section:
            yield from _mappings(part)


def parse_aliases(c: Collector, p: Parts, section: Any) -> dict[str, list[Edge]]:
    """Every known address -> its edges; person addresses and moved ones included."""
    nodes: dict[str, list[Edge]] = {}
    memo = _Memo(c, p)
    by_address, defined, domains = p.by_address, p.defined, p.domains
    edges_of, canon, ours = memo.edges, memo.canon, memo.ours
    for box in _mappings(section):
        for key, value in box.items():
            src = canon(key if isinstance(key, str) else str(key))
            if src is None:
                if str(key).startswith("@") and "@" not in str(key)[1:]:
                    # Postfix's catch-all form: say there is none, not only "local@domain"
                    c.add(f"alias {str(key)!r} is a catch-all, which the address book does not "
                          "have: it takes only the addresses it lists, and refuses any other "
                          "with 550 5.1.1 at RCPT", key, "list each address that should take "
                          "mail (local@domain)", box)
                    continue
                c.add(f"alias {str(key)!r} is not an address", key, "write local@domain", box)
                continue
            if src not in by_address:
                if src not in defined and src.partition("@")[2] in domains:
                    defined[src] = ("an alias", key)          # `define`, its usual case inline
                    ours[key] = src
                elif not define(c, p, src, "an alias", key):
                    continue
            if value is None:     # `a@example.com:` and nothing: no position of its own
                c.add(f"alias {src} has no target", key, "write an address, mailbox:NAME, "
                      "team:NAME, a person key, or a list of these after the colon", box)
                nodes[src] = []
                continue
            c.entry = key
            edges = edges_of(src, value)
            if src in by_address:
                edges = _alias_node(c, p, src, key, edges)
            else:
                for edge in edges:
                    if edge[0] == src:
                        edges = _alias_node(c, p, src, key, edges)
                        break
            nodes[src] = edges
    c.entry = None
    for address, person in p.by_address.items():
        nodes.setdefault(address, [person_edge(p, person, None)])
    return nodes


def add_moved(c: Collector, p: Parts, nodes: dict[str, list[Edge]]) -> None:
    """Moved addresses that still deliver follow their `now` address (which may carry a
    +detail of a known address: `add_detail_forms` follows it)."""
    if not p.moved:
        return
    for old, moved in p.moved.items():
        if not moved.deliver:
            nodes[old] = []
    # Every moved address that delivers is known before any is checked: old1@ -> old2@ ->
    # sales@ (old2@ moved too) was refused with "old2@ is not a known address" when old1@
    # came first in the file and taken when it came second.
    known = nodes.keys() | {old for old, moved in p.moved.items() if moved.deliver}
    for old, moved in p.moved.items():
        if not moved.deliver:
            continue
        if moved.now not in known and _detail_base(p, known, moved.now) is None:
            at = p.moved_at[old]
            if moved.now.rpartition("@")[2] not in p.domains:
                # "define someone@gmail.com (an alias ...)": an alias of another domain is
                # refused too; the way out is a mailbox that hands the mail on
                c.add(f"moved address {old} delivers to {moved.now}, which is not on one of our "
                      "domains", at, "set deliver: false (the sender is told the new address), "
                      f"or make {old} an alias of a mailbox {{smtp: {moved.now}}} instead")
            else:
                c.add(f"moved address {old} delivers to {moved.now}, which is not a known "
                      "address", at, f"define {moved.now} (an alias or a person's address), "
                      "or set deliver: false")
        else:
            nodes[old] = [Edge(moved.now, (), p.moved_at[old])]


def dropped_members(p: Parts, nodes: Mapping[str, list[Edge]]
                    ) -> tuple[tuple[str, str, str, int], ...]:
    """(group, member, file, line) of each group member that is a moved address with
    `deliver: false`: the group delivers nothing to it, and said nothing (`mailrouter
    check` warns, Snapshot.warnings). Of a book that builds: an alias whose every target is
    such an address is an error ("delivers nowhere"). No line in a load without positions."""
    gone = {old for old, moved in p.moved.items() if not moved.deliver}
    if not gone:
        return ()
    return tuple((src, edge.dest, *where(edge.at)[:2]) for src, edges in nodes.items()
                 for edge in edges if edge.dest in gone)


def _detail_base(p: Parts, nodes: Container[str], address: str) -> str | None:
    """The known address `address` (canonical, not itself known) is a +detail form of, as
    `AddressBook.resolve` reads an envelope recipient: `bob+sales@` is `bob@` (split at the
    first separator, never leaving an empty local part); None when it is none."""
    local, _, domain = address.rpartition("@")
    split = detail_split(local, p.options)
    if split is None:
        return None
    base = f"{split[0]}@{domain}"
    return base if base in nodes else None


def add_detail_forms(p: Parts, nodes: dict[str, list[Edge]]) -> frozenset[str]:
    """An alias target (or a moved address's `now`) that is not an address of its own but a
    +detail form of one (`orders@: bob+sales@example.com`, bob@ a person) goes where mail to
    it goes at RCPT: to bob@, the person found. Each such form becomes a node forwarding to
    its base, so the alias path shows it as written (orders@ -> bob+sales@ -> bob@ -> person:bob)
    and a form that leads back to its alias is refused as a loop (`c@: c+x@`), as Postfix's
    recipient_delimiter reads it. Returned: the forms added; `resolve` does not answer them
    as addresses of their own (RCPT bob+sales@ is still bob@ with detail 'sales').
    Whole addresses win: c++@ defined beside c@ is c++@, never c@ with detail '+'.
    Before, such a target was refused as an unknown address though RCPT took it."""
    forms: dict[str, list[Edge]] = {}
    for edges in nodes.values():
        for edge in edges:
            dest = edge.dest
            if dest is None or dest in nodes or dest in forms:
                continue
            base = _detail_base(p, nodes, dest)
            if base is not None:
                forms[dest] = [Edge(base, (), edge.at)]
    nodes.update(forms)
    return frozenset(forms)


def check_dangling(c: Collector, nodes: dict[str, list[Edge]],
                   moved: Container[str] = ()) -> None:
    """An edge to an address that is no node. A `moved` address is one whose `now:` was
    refused (`add_moved` said why): "define old@ under aliases:" would only add "defined
    twice" to that error."""
    for src, edges in nodes.items():
        for edge in edges:
            if edge.dest is not None and edge.dest not in nodes and edge.dest not in moved:
                near = [n for n in nodes if n[:1] == edge.dest[:1]
                        and n.endswith(edge.dest.partition("@")[2])]
                close = did_you_mean(edge.dest, near, "addresses", listing=False)
                c.add(f"alias {src} points to unknown address {edge.dest}", edge.at,
                      close + (" or " if close else "") + f"define {edge.dest} under aliases:")
