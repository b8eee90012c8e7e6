"""Warnings for rules keyed on a recipient the address book refuses (`mailrouter check`).

Mail to an address the book does not know is refused at RCPT (550 5.1.1) and never
routed, so a rule requiring `rcpt: suport@example.com` (a typo of support@) or
`rcpt_domain: exmaple.com` loads fine and never matches. Only `equals` needles on our
own domains are checked, and never under `not:` (there such a needle always holds);
a needle on another domain is left alone. So is `resolved_mailbox: salse`, a mailbox the
book does not define: no recipient ever resolves to it.
"""

from __future__ import annotations

from collections.abc import Sequence, Set as AbstractSet

from ..addressbook.canon import canonical_domain
from ..addressbook.errs import Near
from ..addresses import AddressBook
from ..yamlsrc import letters_note
from .lint import leaves
from .normalize import normalize
from .rules import Rule

__all__ = ["recipient_warnings"]

_ADDRESS_FIELDS = ("rcpt", "rcpt_resolved", "rcpt_original")


def recipient_warnings(book: AddressBook, rules: Sequence[Rule], suggest: int | None = None
                       ) -> list[str]:
    """One line per rule needle naming a recipient address or domain the book refuses, with
    the name likely meant; `suggest`: at most that many such look-ups (of mailboxes, of
    addresses), each among at most SCAN_ALL names (None: every one, indexed: 4.3 s for
    100,000 addresses, which `check` spends and the daemon, logging the warnings, does not);
    an address is named as `mailrouter address` names it (addressbook.errs.Near)."""
    out: list[str] = []
    near_box: Near | None = None
    near_address: Near | None = None
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
                    near_box = near_box or Near(names, suggest)
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
                    near_address = near_address or Near(sorted(book.addresses()), suggest,
                                                        addresses=True)
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
