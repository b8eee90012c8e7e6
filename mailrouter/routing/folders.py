"""Warnings for folders a mailbox's backend cannot reach (`mailrouter check`).

Dovecot 2.3's LMTP offers no SMTPUTF8, so a non-ASCII folder («Финансы») cannot
travel as `user+Folder@`: the copy is stored in the inbox (and logged as
`event=folder_dropped`). An LMTP mailbox with `sieve_folders: true` sends the
folder in an X-Mailrouter-Folder line that deploy/dovecot/mailrouter-folders.sieve
files by, so it can. This module finds, without I/O, every place that would
still lose its folder: an alias target, and a rule that sets only `folder:` on
whatever mailboxes its recipients resolve to. (A rule naming an LMTP mailbox
and a non-ASCII folder is already an error when the rules load.)
"""

from __future__ import annotations

from collections.abc import Sequence

from ..addresses import AddressBook
from .rules import Rule

__all__ = ["folder_warnings"]

FIX = ("set sieve_folders: true on the mailbox and install deploy/dovecot/mailrouter-folders.sieve "
       "as its sieve_before, use an ASCII folder, or a maildir mailbox")


def _lost(book: AddressBook, mailbox: str, folder: str | None) -> bool:
    box = book.mailboxes.get(mailbox)
    return (folder is not None and not folder.isascii() and box is not None
            and box.kind == "lmtp" and not box.sieve_folders)


def folder_warnings(book: AddressBook, rules: Sequence[Rule]) -> list[str]:
    """One line per (mailbox, folder) of the address book, and per rule, that would land in
    the inbox instead of its folder."""
    out: list[str] = []
    seen: set[tuple[str, str | None]] = set()
    plain = sorted(n for n, b in book.mailboxes.items() if b.kind == "lmtp" and not b.sieve_folders)
    # Only those lose a folder: without them, resolving 100,000 aliases would find nothing
    for address in sorted(book.addresses()) if plain else ():
        for t in book.resolve(address).targets:
            if (t.mailbox, t.folder) not in seen and _lost(book, t.mailbox, t.folder):
                seen.add((t.mailbox, t.folder))
                out.append(f"{address}: folder {t.folder!r} of LMTP mailbox {t.mailbox!r} goes to "
                           f"the inbox (Dovecot's LMTP takes ASCII +detail folders only); {FIX}")
    for rule in rules:
        folder = rule.then.folder
        if rule.then.mailbox is None and folder is not None and not folder.isascii() and plain:
            out.append(f"{rule.file}:{rule.line}: rule {rule.name!r}: folder {folder!r} goes to "
                       f"the inbox for LMTP mailboxes {', '.join(plain)}; {FIX}")
    return out
