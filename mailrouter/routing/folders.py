"""Warnings for folders a mailbox's backend cannot reach (`mailrouter check`).

Dovecot 2.3's LMTP offers no SMTPUTF8, so a non-ASCII folder («Финансы») cannot
travel as `user+Folder@`: the copy is stored in the inbox (and logged as
`event=folder_dropped`). An LMTP mailbox with `sieve_folders: true` sends the
folder in an X-Mailrouter-Folder line that deploy/dovecot/mailrouter-folders.sieve
files by, so it can. This module finds, without I/O, every place that would
still lose its folder: an alias target, and a rule that sets only `folder:` on
whatever mailboxes its recipients resolve to. (A rule naming an LMTP mailbox
and a non-ASCII folder is already an error when the rules load.)

A folder with '/' (`Clients/VIP`, a level in mailrouter's own Maildir) on an LMTP
mailbox: Dovecot's Maildir++ layout (deploy/dovecot/mailrouter.conf, docs/install.md)
refuses the name ("Invalid mailbox name", as `user+Clients/VIP@` and as a Sieve
fileinto alike) and stores the copy in the INBOX, answered 250, while the registry
records folder Clients/VIP. Its level separator there is '.': `Clients.VIP`.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..addresses import AddressBook
from .rules import Rule

__all__ = ["folder_warnings"]

SLASH_FIX = ("write the levels with Dovecot's Maildir++ separator '.' ({dotted!r}), or use a "
             "maildir mailbox")

FIX = ("set sieve_folders: true on the mailbox and install deploy/dovecot/mailrouter-folders.sieve "
       "as its sieve_before, use an ASCII folder, or a maildir mailbox")


def _lost(book: AddressBook, mailbox: str, folder: str | None) -> bool:
    box = book.mailboxes.get(mailbox)
    return (folder is not None and not folder.isascii() and box is not None
            and box.kind == "lmtp" and not box.sieve_folders)


def _slash(folder: str, where: str) -> str:
    return (f"{where} goes to the INBOX under Dovecot's Maildir++ layout, which refuses '/' in "
            f"a folder name, while the registry records folder {folder!r}; "
            + SLASH_FIX.format(dotted=folder.replace("/", ".")))


def folder_warnings(book: AddressBook, rules: Sequence[Rule]) -> list[str]:
    """One line per (mailbox, folder) of the address book, and per rule, that would land in
    the inbox instead of its folder: a non-ASCII one on an LMTP mailbox without
    sieve_folders, one holding '/' on any LMTP mailbox (rules: with their file:line)."""
    out: list[str] = []
    seen: set[tuple[str, str | None]] = set()
    lmtp = sorted(n for n, b in book.mailboxes.items() if b.kind == "lmtp")
    plain = [n for n in lmtp if not book.mailboxes[n].sieve_folders]
    # Only those lose a folder: without them, resolving 100,000 aliases would find nothing
    for address in sorted(book.addresses()) if lmtp else ():
        for t in book.resolve(address).targets:
            if (t.mailbox, t.folder) in seen or t.folder is None or t.mailbox not in lmtp:
                continue
            if _lost(book, t.mailbox, t.folder):
                seen.add((t.mailbox, t.folder))
                out.append(f"{address}: folder {t.folder!r} of LMTP mailbox {t.mailbox!r} goes to "
                           f"the inbox (Dovecot's LMTP takes ASCII +detail folders only); {FIX}")
            elif "/" in t.folder:
                seen.add((t.mailbox, t.folder))
                out.append(_slash(t.folder, f"{address}: folder {t.folder!r} of LMTP mailbox "
                                  f"{t.mailbox!r}"))
    for rule in rules:
        folder, box = rule.then.folder, rule.then.mailbox
        if folder is None or not lmtp:
            continue
        at = f"{rule.file}:{rule.line}: rule {rule.name!r}: folder {folder!r}"
        if box is None and not folder.isascii() and plain:
            out.append(f"{at} goes to the inbox for LMTP mailboxes {', '.join(plain)}; {FIX}")
        elif "/" in folder and box is None:
            out.append(_slash(folder, f"{at} (for LMTP mailboxes {', '.join(lmtp)})"))
        elif "/" in folder and box in lmtp:
            out.append(_slash(folder, f"{at} of LMTP mailbox {box!r}"))
    return out
