"""Per-message routing cost with 10, 1,000 and 10,000 rules, and the cost of decoding KOI8-R.

    .venv/bin/python bench/bench_rules.py [--n 2000]

Rules are generated like a real company's grow: most name a recipient (per-address
channels), many look for a word in the subject, a few are catch-all (robots, key
customers). The same mix of sample messages is routed at each size; the figure is
microseconds per (message, recipient), and the ratio to the 10-rule set. The KOI8-R
line is a fresh MessageView per iteration reading subject, From and body text.
"""

from __future__ import annotations

import argparse
import time
from datetime import datetime, timezone
from pathlib import Path

from mailrouter import yamlsrc
from mailrouter.addresses import AddressBook
from mailrouter.message import MessageView
from mailrouter.routing.decision import REPLY_OK, Action, Decision
from mailrouter.routing.rules import RuleSet

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "rules" / "samples"
AT = datetime(2027, 1, 11, 7, 0, tzinfo=timezone.utc)
BASE = (ROOT / "rules" / "routing.yaml").read_text(encoding="utf-8").split("\ntests:")[0]


def rules_yaml(n: int) -> str:
    """The example rules, then generated rules up to n: 70% by recipient, 25% by word, 5% other."""
    lines = [BASE]
    for i in range(max(0, n - 7)):
        kind = i % 20
        if kind < 14:
            lines.append(f"  - {{name: g{i}, when: {{rcpt: box{i}@example.com}}, then: {{folder: F{i}}}}}")
        elif kind < 19:
            lines.append(f"  - {{name: g{i}, when: {{subject: {{contains: [topic{i}, тема{i}]}}}}, "
                         f"then: {{folder: T{i}}}}}")
        else:
            lines.append(f"  - {{name: g{i}, when: {{header: {{X-Tag{i}: {{exists: true}}}}}}, "
                         f"then: {{tags: [x{i}]}}}}")
    return "\n".join(lines) + "\n"


def bench_rules(book: AddressBook, n: int, iters: int, warm: bool = False) -> float:
    doc = yamlsrc.loads(rules_yaml(n), "bench.yaml")
    rs = RuleSet.build(doc["rules"], book, doc["calendars"])
    cases = [("invoice-koi8r.eml", "invoices@example.com"), ("product-a.eml", "product-a@example.com"),
             ("sales-inquiry.eml", "sales@example.com"), ("key-customer.eml", "support@example.com"),
             ("newsletter.eml", "support@example.com"), ("faktura-cz.eml", "team@example.com")]
    prepared = []
    for eml, rcpt in cases:
        res = book.resolve(rcpt)
        first = res.targets[0]
        default = Decision(rcpt, Action.DELIVER, REPLY_OK, targets=res.targets, mailbox=first.mailbox,
                           folder=first.folder)
        prepared.append(((SAMPLES / eml).read_bytes(), rcpt, res, default))
    views = {raw: MessageView(raw) for raw, _, _, _ in prepared}
    start = time.perf_counter()
    for _ in range(iters):
        for raw, rcpt, res, default in prepared:
            # cold: a fresh view, decoding is part of the cost; warm: the rules engine alone
            view = views[raw] if warm else MessageView(raw)
            rs.apply(view, "x@outside.example", rcpt, res, default, AT)
    return (time.perf_counter() - start) / (iters * len(prepared)) * 1e6


def bench_koi8r(iters: int) -> float:
    raw = (SAMPLES / "invoice-koi8r.eml").read_bytes()
    start = time.perf_counter()
    for _ in range(iters):
        v = MessageView(raw)
        _ = (v.subject, v.from_name, v.body_text)
    return (time.perf_counter() - start) / iters * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="iterations over the sample set")
    args = ap.parse_args()
    book = AddressBook.load(ROOT / "rules" / "company.yaml")
    base = warm_base = 0.0
    for n in (10, 1000, 10000):
        us = bench_rules(book, n, args.n)
        warm = bench_rules(book, n, args.n, warm=True)
        base, warm_base = base or us, warm_base or warm
        print(f"rules={n:>6}  with decoding {us:7.1f} us (x{us / base:4.2f})   "
              f"rules engine alone {warm:6.1f} us (x{warm / warm_base:4.2f})  per message-recipient")
    print(f"KOI8-R decode (subject, From, body): {bench_koi8r(args.n * 5):8.1f} us/message")


if __name__ == "__main__":
    main()
