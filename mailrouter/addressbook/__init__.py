"""The address book: domains, mailboxes, people, teams, aliases, moved addresses.

What it does: builds, from the routing-file sections, an immutable book in which
every address the company takes mail for is resolved in advance to its final
targets (deduplicated, each with the alias path walked); `knows` answers RCPT
and `resolve` gives the per-recipient `Resolution` by dictionary lookup, so its
cost does not depend on the size of the book.

Routing-file language (see rules/company.yaml):

    address_options: {local_part_case: insensitive, detail_separator: "+"}
    domains: [example.com, пример.рф]
    mailboxes: {sales: {maildir: sales}, crm: {lmtp: crm@mail.internal}, out: {smtp: a@b.org}}
    people: {ivanov: {address: p.ivanov@example.com, name: ..., deputy: petrova,
                      away: ["2026-12-28..2027-01-08"], mailbox: sales}}
    teams: {duty: {members: [ivanov, petrova], pick: round-robin, mailbox: finance}}
    aliases: {ADDRESS: TARGET | [TARGET, ...]}
    moved: {old@example.com: {now: new@example.com, deliver: true, autoreply: moved}}

An alias TARGET is another of our addresses, `mailbox:NAME`, `mailbox:NAME/Folder`,
`{mailbox: NAME, folder: F}`, a person key (or `person:KEY`), `team:KEY`, or a list of
these (a group; lists may nest).

Decisions:
- A person without `mailbox:` gets an implicit Maildir mailbox `person:<key>` at
  `people/<key>` under the Maildir root (it appears in `AddressBook.mailboxes`).
- A person key as a target is that person's own mailbox directly; it does not go
  through an alias on the person's address (so "copy my mail to X" cannot loop).
- A team as a target delivers to the team's `mailbox:` when it has one, else one
  copy to each member (person set on each target). Picking one owner is later work.
- An address mapped to itself (alone or inside its group) means "deliver here":
  to the person whose address it is. An alias on a person's address must include
  the address itself, so a person's mail never silently goes elsewhere.
- A moved address with `deliver: true` (the default) resolves through `now`; with
  `deliver: false` it is known (RCPT does not say 5.1.1) but refused with
  551 5.1.6 naming the new address, RFC 5321 section 3.4.
- Case: domains always case-insensitive; local parts too unless
  `address_options: {local_part_case: sensitive}`. `user+detail@` resolves like
  `user@` (after trying the whole local part), the detail kept as given. The split is
  Postfix's recipient_delimiter one: at the first separator, never leaving an empty local
  part (`+x@` is not split), an empty detail allowed (`c+@` is c@ with detail ''), so
  `c++@` is c@ with detail '+' unless c++@ is an address of its own, which always wins.
- An alias target (or a moved `now`) may be such a form of a known address
  (`orders@: bob+orders@example.com`): it goes where that recipient goes (the person
  found, no folder from the detail), the form written shown in the path
  (`graph.add_detail_forms`); one that leads back to its alias (`c@: c+x@`) is a loop.
- IDN domains: A-label and U-label forms are one domain; canonical form is U-label.
  A domain holding an invisible character (U+200B, U+00AD, U+FEFF...), a full-width
  or other compatibility character, a '.' look-alike or an empty label is not mapped
  to ours: RCPT gets 501 5.1.3 naming the character (canon.py), and such a domain
  under `domains:` is refused at load.

Refused at build (ConfigErrors, all at once, each with file:line and a fix):
cycles (the whole cycle, file:line per edge), references to unknown mailboxes,
people, teams or addresses (with "did you mean"), an address defined twice (also
across files, and case/IDN variants), a moved address that is also an alias, an
alias target outside our domains, unknown keys, chains deeper than
`Limits.max_depth` addresses or expanding to more than `Limits.max_width` targets.
Because of that, `resolve` never meets a loop or a limit at run time.

Known limits: quoted local parts are compared as written; IDNA 2003 (stdlib codec).
"""

from __future__ import annotations

from ..values import Target
from .book import AddressBook
from .model import Limits, Mailbox, Moved, Options, Person, Resolution, Team, REPLY_MOVED

__all__ = ["AddressBook", "Limits", "Mailbox", "Moved", "Options", "Person", "Resolution",
           "Team", "Target", "REPLY_MOVED"]
