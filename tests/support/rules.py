"""Real routing snapshots from YAML text, for rule tests: one decision path everywhere.

`snapshot(text)` writes the text to a routing file in a fresh temporary directory and
loads it beside the example company's address book (rules/company.yaml) with the
daemon's own `load_snapshot`; `route(snap, eml, rcpt)` asks `Snapshot.decide`, the
function the daemon calls after DATA. There is no stand-in for the decision: loop
detection, the address-book default (owner, path, targets) and the rules are the
daemon's. A file the loader refuses raises ConfigErrors, as `mailrouter check` reports it.
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path

from mailrouter.config import Limits
from mailrouter.message import MessageView
from mailrouter.routing.snapshot import Snapshot, load_snapshot
from mailrouter.values import Decision

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "rules" / "samples"
COMPANY = ROOT / "rules" / "company.yaml"
HOSTNAME = "mx.example.com"
MONDAY_10_MSK = datetime(2027, 1, 11, 7, 0, tzinfo=UTC)

# Removed at interpreter exit (TemporaryDirectory's finaliser); one subdirectory per file.
_TMP = tempfile.TemporaryDirectory(prefix="mailrouter-rules-")


def routing_file(text: str, name: str = "t.yaml") -> Path:
    """Write `text` to a new file called `name` (may contain a directory) and return its path."""
    path = Path(tempfile.mkdtemp(dir=_TMP.name)) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def load(*files: Path | str, book: Path | None = COMPANY) -> Snapshot:
    """The snapshot of these routing files (after the company's address book unless book=None)."""
    names = ([str(book)] if book is not None else []) + [str(f) for f in files]
    return load_snapshot(names, Limits(), HOSTNAME)


def snapshot(text: str, name: str = "t.yaml") -> Snapshot:
    """The snapshot of one routing file with this text, beside the company's address book."""
    return load(routing_file(text, name))


def route(snap: Snapshot, eml: str | bytes, rcpt: str, mail_from: str = "someone@outside.example",
          at: datetime = MONDAY_10_MSK) -> Decision:
    """The daemon's decision for one recipient of a sample (file name in rules/samples) or raw bytes."""
    raw = eml if isinstance(eml, bytes) else (SAMPLES / eml).read_bytes()
    return snap.decide(MessageView(raw), mail_from, [rcpt], at)[0]


def mail(subject: str = "Hello", body: str = "text", **headers: str) -> bytes:
    """A small UTF-8 text/plain message; keyword headers use _ for - (Reply_To=...)."""
    head = {"From": "A <a@outside.example>", "To": "x@example.com", "Subject": subject, **headers}
    lines = [f"{k.replace('_', '-')}: {v}" for k, v in head.items()]
    return ("\r\n".join(lines) + "\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
            + body + "\r\n").encode("utf-8")
