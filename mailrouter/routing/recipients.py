"""Warnings for rules keyed on a recipient the address book refuses (`mailrouter check`).

Mail to an address the book does not know is refused at RCPT (550 5.1.1) and never
routed, so a rule requiring `rcpt: suport@example.com` (a typo of support@) or
`rcpt_domain: exmaple.com` loads fine and never matches. Only `equals` needles on our
own domains are checked, and never under `not:` (there such a needle always holds);
a needle on another domain is left alone. So is `resolved_mailbox: salse`, a mailbox the
book does not define: no recipient ever resolves to it.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence, Set as AbstractSet

from ..addressbook.canon import canonical_domain
from ..addresses import AddressBook
from ..yamlsrc import letters_note
from .lint import leaves
from .normalize import normalize
from .rules import Rule

__all__ = ["recipient_warnings"]

_ADDRESS_FIELDS = ("rcpt", "rcpt_resolved", "rcpt_original")


# Up to this many names, a did-you-mean is difflib's over all of them; beyond, over those
# within one deletion of the needle either way (_Near): difflib against 11,000 addresses for
# each of 7,000 unknown `rcpt:` needles (bench_start's files) took minutes, which the daemon
# now spends at each start and reload, when it logs the warnings (Snapshot.warnings).
SCAN_ALL = 2000


class _Near:
    """The known name likeliest meant for a needle, as difflib.get_close_matches(n=1) finds
    it (its ratio, its cutoff), but among few candidates when the names are many: those
    equal to the needle with one character deleted from either (a typo: a letter left out,
    added, changed or two swapped)."""

    def __init__(self, names: Sequence[str], budget: int | None = None) -> None:
        self.names = names
        self.budget = budget
        self.index: dict[str, list[str]] | None = None
        if budget is None and len(names) > SCAN_ALL:
            self.index = {}
            for name in names:
                for key in _deletions(name):
                    self.index.setdefault(key, []).append(name)

    def __call__(self, needle: str) -> list[str]:
        if self.budget is not None:         # a few look-ups among few names, or none
            if self.budget <= 0 or len(self.names) > SCAN_ALL:
                return []
            self.budget -= 1
        if self.index is None:
            return difflib.get_close_matches(needle, self.names, n=1)
        found = {name for key in _deletions(needle) for name in self.index.get(key, ())}
        return difflib.get_close_matches(needle, sorted(found), n=1)


def _deletions(word: str) -> set[str]:
    return {word, *(word[:i] + word[i + 1:] for i in range(len(word)))}


def recipient_warnings(book: AddressBook, rules: Sequence[Rule], suggest: int | None = None
                       ) -> list[str]:
    """One line per rule needle naming a recipient address or domain the book refuses, with
    the name likely meant; `suggest`: at most that many such look-ups (of mailboxes, of
    addresses), each among at most SCAN_ALL names (None: every one, indexed: 4.3 s for
    100,000 addresses, which `check` spends and the daemon, logging the warnings, does not)."""
    out: list[str] = []
    near_box: _Near | None = None
    near_address: _Near | None = None
    names: list[str] = []
    boxes: set[str] | None = None        # the mailboxes' names normalised, once (not per needle)
    for rule in rules:
        at = f"{rule.file}:{rule.line}: rule {rule.name!r}"
        for leaf in leaves(rule.when, under_not=False):
            if leaf.op != "equals":
                continue
            for needle in map(str, leaf.needles):
                if leaf.field == "resolved_mailbox" and boxes is None:
                    names = sorted(book.mailboxes)
                    boxes = {normalize(name) for name in names}
                if leaf.field == "resolved_mailbox" and not _is_mailbox(boxes or set(), needle):
                    near_box = near_box or _Near(names, suggest)
                    near = near_box(needle)
                    out.append(f"{at}: resolved_mailbox {needle!r} is no mailbox of the address "
                               "book: no recipient resolves to it, the condition never holds"
                               + (f"; did you mean '{near[0]}'?" + letters_note(needle) if near else
                                  "; known mailboxes: " + ", ".join(names[:8])
                                  + (", ..." if len(names) > 8 else "")))
                elif leaf.field == "rcpt_domain" and canonical_domain(needle) not in book.domains:
                    out.append(f"{at}: rcpt_domain {needle!r} is not one of our domains "
                               f"(domains: {', '.join(sorted(book.domains))}): mail to it is "
                               "refused at RCPT and never reaches the rules")
                elif (leaf.field in _ADDRESS_FIELDS and "@" in needle
                      and canonical_domain(needle.rpartition("@")[2]) in book.domains
                      and not book.knows(needle)):
                    near_address = near_address or _Near(sorted(book.addresses()), suggest)
                    near = near_address(needle.lower())
                    out.append(f"{at}: {leaf.field} {needle!r} is not an address of the address "
                               "book: mail to it is refused at RCPT and never reaches the rules"
                               + (f"; did you mean '{near[0]}'?" + letters_note(needle.rpartition("@")[0])
                                  if near else ""))
    return out


def _is_mailbox(boxes: AbstractSet[str], needle: str) -> bool:
    """The needle names a mailbox (`boxes`: their names normalised): compared as the rule
    compares it (normalised text)."""
    return normalize(needle) in boxes
