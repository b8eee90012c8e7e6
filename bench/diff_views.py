"""Dump every MessageView value and every decision for a set of messages, to diff two trees.

    # once: the messages the tests build (any tree's tests; only the bytes are kept)
    PYTHONPATH=$PWD python bench/diff_views.py --harvest /tmp/dv-msgs
    # then the same dump from each tree, and a diff
    PYTHONPATH=../main python bench/diff_views.py --extra /tmp/dv-msgs > /tmp/old.jsonl
    PYTHONPATH=$PWD python bench/diff_views.py --extra /tmp/dv-msgs > /tmp/new.jsonl
    cmp /tmp/old.jsonl /tmp/new.jsonl && echo identical

The mailrouter imported is the one on PYTHONPATH; the messages and rules come from this
script's tree (tests/corpus/, every other tests/**/*.eml, rules/*.yaml), each as stored and
with its line ends made LF (the walk on the raw bytes takes CRLF only, the stdlib the rest),
plus --extra DIR (files harvested from the tests, or Maildir copies). For each message: every
property and method of a view read on a fresh view each, then on one view in the order
listed and in the reverse order (a value must not depend on what was read before it);
`explain`'s JSON (as `mailrouter explain --json`) for the To/Cc recipients and for
sales@example.com, with the From sender and with <>; and what the daemon records
(`view_and_decide`, the message record, the log line's fields).
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

TREE = Path(__file__).resolve().parents[1]
AT = datetime(2026, 3, 4, 10, 30, tzinfo=timezone.utc)
NAMES = ("subject", "from", "to", "cc", "received", "delivered-to", "x-mailrouter-loop",
         "list-id", "content-type", "message-id", "x-missing", "auto-submitted", "precedence")
HARVEST_TESTS = ("tests/test_message.py", "tests/test_message_lazy.py", "tests/test_hostile.py",
                 "tests/test_rules.py", "tests/test_loops.py", "tests/test_facts_words.py",
                 "tests/test_autoreply_message.py", "tests/test_autoreply_suppress.py",
                 "tests/test_rule_operators.py", "tests/test_memory_message.py",
                 "tests/test_ruletests.py", "tests/test_intake_data.py")


def _readers() -> list[tuple[str, Callable[[Any], Any]]]:
    out: list[tuple[str, Callable[[Any], Any]]] = [
        (p, (lambda v, p=p: getattr(v, p))) for p in (
            "size", "content_hash", "header_block", "subject", "message_id", "from_name",
            "from_addr", "to", "cc", "received_count", "delivered_to", "robot", "body_text",
            "body_charset", "attachments", "header_defects", "defects", "charset_notes")]
    out += [("raw_headers()", lambda v: v.raw_headers()),
            ("body_head(40)", lambda v: v.body_head(40)),
            ("body_lines()", lambda v: list(v.body_lines())),
            ("body_pieces()", lambda v: "".join(v.body_pieces()))]
    out += [(f"headers({n})", (lambda v, n=n: v.headers(n))) for n in NAMES]
    out += [(f"header({n})", (lambda v, n=n: v.header(n))) for n in NAMES]
    return out


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


def _read(view: Any, get: Callable[[Any], Any]) -> Any:
    try:
        return _plain(get(view))
    except Exception as exc:  # noqa: BLE001 (a raise is a value to compare too)
        return f"raised {type(exc).__name__}: {exc}"


def dump(raw: bytes, snap: Any) -> dict[str, Any]:
    from mailrouter.explain import explain
    from mailrouter.message import MessageView
    from mailrouter.pipeline import Pipeline, message_fields, view_and_decide
    from mailrouter.values import REPLY_DELIVERED, Transaction

    readers = _readers()
    out: dict[str, Any] = {"fresh": {n: _read(MessageView(raw), g) for n, g in readers}}
    for label, order in (("forward", readers), ("reverse", readers[::-1])):
        view = MessageView(raw)
        out[label] = {n: _read(view, g) for n, g in order}
    reports = {}
    for rcpts in ([], ["sales@example.com"]):
        for sender in (None, "<>"):
            try:
                report = explain(snap, raw, rcpts, sender, AT)
            except Exception as exc:  # noqa: BLE001
                report = {"raised": f"{type(exc).__name__}: {exc}"}
            reports[f"{','.join(rcpts) or 'To/Cc'} from {sender}"] = json.loads(
                json.dumps(report, ensure_ascii=False, default=str))
    out["explain"] = reports
    txn = Transaction("smtp", "192.0.2.1", "client.example", "sender@example.net",
                      ("sales@example.com", "nobody@example.com"), raw)
    try:
        view, decisions = view_and_decide(snap, txn, AT)
        replies = [d.reply if d.reply is not None else REPLY_DELIVERED for d in decisions]
        out["daemon"] = {
            "decisions": _plain([d.as_dict() for d in decisions]),
            "record": _plain(Pipeline._message_record(txn, view, snap, "k", replies, AT)),
            "log": _plain(message_fields("Q", txn, view, decisions, replies)),
        }
    except Exception as exc:  # noqa: BLE001
        out["daemon"] = f"raised {type(exc).__name__}: {exc}"
    return out


def messages(extra: list[str]) -> list[tuple[str, bytes]]:
    files = sorted(TREE.glob("tests/corpus/*.eml")) + sorted(
        p for p in TREE.glob("tests/**/*.eml") if "corpus" not in p.parts)
    for d in extra:
        files += sorted(p for p in Path(d).rglob("*") if p.is_file())
    out: list[tuple[str, bytes]] = []
    for p in files:
        raw = p.read_bytes()
        name = str(p.relative_to(TREE)) if p.is_relative_to(TREE) else p.name
        out.append((name, raw))
        lf = raw.replace(b"\r\n", b"\n")
        if lf != raw:
            out.append((name + " (LF)", lf))
    return out


def harvest(into: str) -> None:
    """Every raw message the listed tests hand to a MessageView, one file each."""
    import pytest

    from mailrouter import message

    where = Path(into)
    where.mkdir(parents=True, exist_ok=True)
    seen: set[bytes] = set()
    init = message.MessageView.__init__

    def keep(self: Any, raw: bytes) -> None:
        data = bytes(raw)
        if data not in seen and len(data) < 4 * 1024 * 1024:
            seen.add(data)
            (where / f"{len(seen):05d}.eml").write_bytes(data)
        init(self, raw)

    message.MessageView.__init__ = keep  # type: ignore[method-assign]
    pytest.main(["-q", "-p", "no:cacheprovider", "-x", "-n0", *[str(TREE / t) for t in HARVEST_TESTS]]
                if _has_xdist() else ["-q", "-p", "no:cacheprovider", "-x",
                                      *[str(TREE / t) for t in HARVEST_TESTS]])
    print(f"{len(seen)} messages in {where}", file=sys.stderr)


def _has_xdist() -> bool:
    try:
        import xdist  # noqa: F401
    except ImportError:
        return False
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--extra", action="append", default=[], help="also every file under DIR")
    ap.add_argument("--harvest", metavar="DIR", help="write the tests' messages to DIR and stop")
    args = ap.parse_args()
    if args.harvest:
        harvest(args.harvest)
        return
    from mailrouter.config import Limits
    from mailrouter.routing.snapshot import load_snapshot

    snap = load_snapshot(sorted(glob.glob(str(TREE / "rules" / "*.yaml"))), Limits(),
                         "mx.example.test")
    import mailrouter
    print(f"mailrouter from {Path(mailrouter.__file__).parent}", file=sys.stderr)
    count = 0
    for name, raw in messages(args.extra):
        print(json.dumps({"message": name, **dump(raw, snap)}, ensure_ascii=False, sort_keys=True))
        count += 1
    print(f"{count} messages", file=sys.stderr)


if __name__ == "__main__":
    main()
