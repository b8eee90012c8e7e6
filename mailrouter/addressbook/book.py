"""AddressBook: the checked, precomputed address book, and resolution of one recipient."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ..values import REPLY_MOVED, REPLY_REFUSED_ADDRESS, REPLY_UNKNOWN, Reply
from ..yamlsrc import load, no_gc
from .canon import (canonical_domain, detail_split, domain_problem, fold_index, local_form,
                    unquote_local)
from .errs import Collector, at_line
from .compact import Expansions
from .expand import expand_all, make_target
from .graph import add_detail_forms, add_moved, check_dangling, dropped_members, parse_aliases
from .model import Limits, Mailbox, Moved, Options, Person, Resolution, Team
from .parse import SECTIONS, _parse_moved, parse_parts
from .records import mailbox_map, people_map, text_map

__all__ = ["AddressBook"]


def _fold(c: Collector, defined: Mapping[str, tuple[str, Any]]) -> dict[str, str]:
    """canon.fold_index of the book's addresses; two that one Unicode case fold makes one
    address (`strasse@`, `straße@`) are an error: Postfix's tables, which fold so, take both
    spellings for the one they list first, and RCPT `STRASSE@` could be either."""
    index, clashes = fold_index(defined)
    for first, second in clashes:
        form = f"{second.rpartition('@')[0].casefold()}@{second.rpartition('@')[2]}"
        what, at = defined[second]
        c.add(f"address {second} ({what}) and {first} ({at_line(defined[first][1])}) are one "
              f"address: Unicode case folding, which Postfix's tables and RCPT use, makes "
              f"both {form}", at, "keep one of them: it takes mail for every spelling")
    return index


def _unknown_reply(address: str) -> Reply:
    """550 5.1.1; or 501 5.1.3 naming what is wrong with the domain when it is not a domain
    name as written (an invisible or full-width character, `example.com..`: canon.py), as a
    careful MTA answers instead of guessing which of its domains was meant."""
    local, at, domain = address.strip().strip("<>").rpartition("@")
    problem = domain_problem(domain) if at and local and domain else None
    if problem is None:
        return REPLY_UNKNOWN
    return REPLY_REFUSED_ADDRESS.with_text(f"Bad recipient address syntax: {problem}")


class AddressBook:
    """Immutable after build; `knows` and `resolve` are dictionary lookups."""

    __slots__ = ("domains", "mailboxes", "people", "teams", "moved", "options", "limits",
                 "_expansions", "_by_address", "_detail_forms", "_folded", "made_of", "dropped")

    def __init__(self, domains: frozenset[str], mailboxes: Mapping[str, Mailbox],
                 people: Mapping[str, Person], teams: Mapping[str, Team],
                 moved: Mapping[str, Moved], options: Options, limits: Limits,
                 expansions: Expansions, by_address: Mapping[str, str],
                 detail_forms: frozenset[str] = frozenset(),
                 folded: Mapping[str, str] | None = None,
                 dropped: tuple[tuple[str, str, str, int], ...] = ()) -> None:
        self.domains = domains
        # people and mailboxes (a person's own among them) in a few big objects (records.py)
        self.mailboxes: Mapping[str, Mailbox] = mailbox_map(mailboxes)
        self.people: Mapping[str, Person] = people_map(people)
        self.teams = MappingProxyType(dict(teams))
        self.moved = MappingProxyType(dict(moved))
        self.options, self.limits = options, limits
        self._expansions = expansions       # every address and its targets (compact.py)
        self._by_address = text_map(by_address)
        # alias targets written with a +detail (graph.add_detail_forms): nodes of the alias
        # graph, not addresses of their own (RCPT bob+sales@ is bob@ with detail 'sales')
        self._detail_forms = detail_forms
        # case folding (canon.fold_index): `strasse@` -> `straße@`, for the few keys whose
        # Unicode case fold is not their own form; Postfix's tables fold the same way
        self._folded: Mapping[str, str] = dict(folded or {})
        # the hash of what it was built of, when its builder knows it (routing.snapshot's
        # load_book): a reload of files whose book sections did not change keeps the book
        self.made_of: str | None = None
        # (group, member, file, line): members a group drops, moved with deliver: false
        # (graph.dropped_members; `mailrouter check` warns)
        self.dropped = dropped

    def __getstate__(self) -> tuple[Any, ...]:
        """A book pickles (without its caches): daemon.run_workers has it built in a child
        process and sent back, so that the supervisor's heap, which the workers share, holds
        the book's few objects packed together instead of each pinning one of the arenas of
        the load's million short-lived objects."""
        return (self.domains, self.mailboxes, self.people, dict(self.teams), dict(self.moved),
                self.options, self.limits, self._expansions, self._by_address,
                self._detail_forms, self._folded, self.made_of, self.dropped)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        (self.domains, self.mailboxes, self.people, teams, moved, self.options, self.limits,
         self._expansions, self._by_address, self._detail_forms, self._folded,
         self.made_of, self.dropped) = state
        self.teams, self.moved = MappingProxyType(teams), MappingProxyType(moved)
        self._expansions.use(make_target)

    @classmethod
    def build(cls, sections: Mapping[str, Any], limits: Limits = Limits(),
              fail_fast: bool = False) -> AddressBook:
        """Check and precompute; raises ConfigErrors naming every problem found (with
        `fail_fast`, the first one, at once: for a load that will be done again)."""
        with no_gc():   # ~10 objects per alias, no cycles (bench_addresses: 1.7x)
            return cls._build(sections, limits, fail_fast)

    @classmethod
    def _build(cls, sections: Mapping[str, Any], limits: Limits, fail_fast: bool) -> AddressBook:
        c = Collector(fail_fast)
        p = parse_parts(c, sections)
        nodes = parse_aliases(c, p, sections.get("aliases"))
        _parse_moved(c, sections.get("moved"), p)
        add_moved(c, p, nodes)
        forms = add_detail_forms(p, nodes)
        check_dangling(c, nodes, p.moved)
        folded = _fold(c, p.defined) if p.options.fold_local else {}
        plans = expand_all(c, nodes, limits, forms) if not c.errors else {}
        c.raise_if_any()
        dropped = dropped_members(p, nodes)
        del nodes                   # the edges hold the loaded values (file:line): errors only
        return cls(frozenset(p.domains), p.mailboxes, p.people, p.teams, p.moved, p.options,
                   limits, Expansions(plans, make_target), p.by_address, forms, folded,
                   dropped)

    @classmethod
    def load(cls, *paths: str | Path, limits: Limits = Limits()) -> AddressBook:
        """Build from routing files; each file's sections are kept apart for the checks."""
        merged: dict[str, list[Any]] = {}
        for path in paths:
            doc = load(path) or {}
            for name in SECTIONS:
                if name in doc:
                    merged.setdefault(name, []).append(doc[name])
        return cls.build(merged, limits)

    # Resolution: a lookup of the whole local part first (an alias may contain the
    # separator, as c++@ does), then of the part before the detail separator.

    def _lookup(self, address: str) -> tuple[str, str, str | None] | None:
        a = address.strip()
        if a.startswith("<") and a.endswith(">"):
            a = a[1:-1]
        local, at, domain = a.rpartition("@")
        if not at and a.lower() == "postmaster":
            # RFC 5321 4.5.1: <Postmaster> with no domain must be accepted; it is the
            # postmaster of the first domain (in sorted order) that has one.
            return next((found for d in sorted(self.domains)
                         if (found := self._lookup(f"postmaster@{d}")) is not None), None)
        if not at or not local:
            return None
        # "sales+Clients VIP"@ is sales@ with a detail: a quoted local part means its
        # content (RFC 5321 4.1.2), backslash escapes undone, in the one form the book's
        # keys have (canon.local_form: "a b"@ stays quoted, "info"@ is info@)
        local = local_form(unquote_local(local))
        domain = canonical_domain(domain)
        if domain not in self.domains:
            return None
        fold = self.options.fold_local
        whole = f"{local.lower() if fold else local}@{domain}"
        known = self._expansions
        if whole in known and whole not in self._detail_forms:
            return whole, whole, None
        if fold and (key := self._casefolded(local, domain)) is not None:
            return key, key, None
        split = detail_split(local, self.options)
        if split is None:
            return None
        base = f"{split[0].lower() if fold else split[0]}@{domain}"
        if base in known:
            return base, base, split[1]
        if fold and (key := self._casefolded(split[0], domain)) is not None:
            return key, key, split[1]
        return None

    def _casefolded(self, local: str, domain: str) -> str | None:
        """The key `local@domain` is under Unicode case folding, as Postfix's tables fold
        (canon.py, "Case"), when its `str.lower` form is none: `STRASSE@` is `straße@`,
        `ſales@` is `sales@`. An ASCII local part folds as `lower` does: only a key of the
        fold index can still be it (`finance@` is `ﬁnance@`)."""
        if local.isascii():
            return self._folded.get(f"{local.lower()}@{domain}") if self._folded else None
        form = f"{local.casefold()}@{domain}"
        if form in self._expansions and form not in self._detail_forms:
            return form
        return self._folded.get(form)

    def key_of(self, address: str) -> str | None:
        """The canonical address `address` is, as an envelope recipient (detail dropped
        when it is not an address of its own); None when it is none of ours. `loops.py`
        asks it of the addresses in a message's trace headers."""
        found = self._lookup(address)
        return None if found is None else found[0]

    def knows(self, address: str) -> bool:
        """Is this an address we take mail for (RCPT time)? Moved-and-refused ones too."""
        return self._lookup(address) is not None

    def resolve(self, address: str) -> Resolution:
        """The final targets of one envelope recipient, or the reply refusing it."""
        found = self._lookup(address)
        if found is None:
            return Resolution(address, self._best_effort(address), None, (),
                              reply=_unknown_reply(address))
        key, canon, detail = found
        moved = self.moved.get(key)
        reply = None
        if moved is not None and not moved.deliver:
            reply = REPLY_MOVED.with_text(f"Recipient has moved; please try <{moved.now}>")
        return Resolution(address, canon, detail, self._expansions.targets(key), moved, reply,
                          self._by_address.get(key))

    def _best_effort(self, address: str) -> str:
        local, _, domain = address.strip().strip("<>").rpartition("@")
        if not local:
            return address
        return f"{local.lower() if self.options.fold_local else local}@{canonical_domain(domain)}"

    def without_postmaster(self) -> list[str]:
        """Our domains where RCPT TO:<postmaster@DOMAIN> is refused, sorted. RFC 5321 4.5.1:
        every domain we take mail for MUST take it for postmaster (`mailrouter check` warns);
        a bare <postmaster> is the first domain's that has one (`_lookup`)."""
        return [d for d in sorted(self.domains) if self.resolve(f"postmaster@{d}").reply]

    def addresses(self) -> frozenset[str]:
        """Every address known, canonical (for `mailrouter check` listings and tests)."""
        return frozenset(self._expansions).difference(self._detail_forms)
