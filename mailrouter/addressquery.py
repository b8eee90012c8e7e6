"""One question to the address book, as `postmap -q` asks a Postfix table; and all of it.

`describe(book, query)` says what mailrouter does with one envelope recipient:
known or not (and the reply refusing it), its canonical form and +detail, the
moved state (new address, delivered or refused, autoreply), the person it
belongs to, and every final target with its mailbox backend and the alias path
walked to it. `export(book)` is the same for every address the book knows,
canonical, in sorted order (`mailrouter address export`, CSV or JSON).
Pure: no I/O; nothing is refused (an unknown or malformed query is an answer).
"""

from __future__ import annotations

import csv
import io
from typing import Any

from .addressbook.canon import detail_split
from .addressbook.errs import near_address
from .addresses import AddressBook
from .values import spreadsheet_cell
from .yamlsrc import letters_note

__all__ = ["CSV_FIELDS", "describe", "export", "export_csv", "format_text", "meant"]

CSV_FIELDS = ("address", "targets", "person", "moved_to", "moved_delivers", "autoreply", "reply")


def describe(book: AddressBook, query: str) -> dict[str, Any]:
    """What the book does with `query` (an envelope recipient), as a JSON-able dict."""
    res = book.resolve(query)
    known = book.knows(query)
    targets = []
    for t in res.targets:
        box = book.mailboxes.get(t.mailbox)
        targets.append({"mailbox": t.mailbox, "backend": box.kind if box else None,
                        "where": box.where if box else None, "folder": t.folder,
                        "person": t.person, "path": list(t.path)})
    moved = res.moved
    return {
        "query": query, "known": known, "address": res.address if known else None,
        "detail": res.detail,
        "reply": str(res.reply) if res.reply else None,
        "did_you_mean": None if known else meant(book, query, res.address),
        "person": res.person,
        "moved": ({"now": moved.now, "deliver": moved.deliver, "autoreply": moved.autoreply}
                  if moved else None),
        "targets": targets,
    }


def meant(book: AddressBook, query: str, folded: str) -> str | None:
    """The known address an unknown `query` (`folded`: as the book folds it, case and
    domain) was most likely typed for, its +detail kept as written:
    `Invoice+Q@example.com` -> `invoices+Q@example.com`."""
    local, at, domain = folded.rpartition("@")
    if not at or not local:
        return None
    split = detail_split(local, book.options)
    near = near_address(f"{split[0]}@{domain}" if split else folded, book.addresses())
    given = detail_split(query.strip().strip("<>").rpartition("@")[0], book.options)
    if near is None or not split or not given:
        return near
    near_local, _, near_domain = near.rpartition("@")
    return f"{near_local}{book.options.detail_separator}{given[1]}@{near_domain}"


def format_text(d: dict[str, Any]) -> str:
    """The human form of `describe`'s answer, one fact a line."""
    if not d["known"]:
        # 'sаles@' with a Cyrillic а looks like the address meant: the note says which letter
        return f"{d['query']}: unknown: {d['reply']}" + (
            f"; did you mean {d['did_you_mean']!r}?" + letters_note(d["query"].rpartition("@")[0])
            if d.get("did_you_mean") else "")
    head = f"{d['query']}: known as {d['address']}"
    lines = [head + (f" (detail {d['detail']!r})" if d["detail"] else "")]
    if d["person"]:
        lines.append(f"  person: {d['person']}")
    if d["moved"]:
        m = d["moved"]
        state = "delivered there" if m["deliver"] else "refused, naming it"
        lines.append(f"  moved: now {m['now']} ({state}"
                     + (f"; autoreply {m['autoreply']})" if m["autoreply"] else ")"))
    if d["reply"]:
        lines.append(f"  reply: {d['reply']}")
    for t in d["targets"]:
        where = t["mailbox"] + (f"/{t['folder']}" if t["folder"] else "")
        lines.append(f"  -> {where} [{t['backend']}: {t['where']}]"
                     + (f" for {t['person']}" if t["person"] else "")
                     + f"  via {' -> '.join(t['path'])}")
    return "\n".join(lines)


def export(book: AddressBook) -> list[dict[str, Any]]:
    """`describe` for every canonical address the book knows, sorted (without
    `did_you_mean`, which only an unknown address has)."""
    return [{k: v for k, v in describe(book, address).items() if k != "did_you_mean"}
            for address in sorted(book.addresses())]


def export_csv(book: AddressBook) -> str:
    """One CSV row per address; targets as `mailbox[/folder]` joined by spaces. A cell that
    starts like a formula (`+cmd@example.com`, `-ops@`, `=x@`: legal local parts) gets a
    leading `'`, as the registry's and report's CSV do, so a spreadsheet shows the text."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(CSV_FIELDS)
    for d in export(book):
        m = d["moved"] or {}
        w.writerow([spreadsheet_cell(cell) for cell in (d["address"],
                    " ".join(t["mailbox"] + (f"/{t['folder']}" if t["folder"] else "")
                             for t in d["targets"]),
                    d["person"] or "", m.get("now", ""),
                    "" if not m else ("yes" if m["deliver"] else "no"),
                    m.get("autoreply") or "", d["reply"] or "")])
    return out.getvalue()
