"""Per-message routing cost with 10, 1,000 and 10,000 rules, and the cost of decoding KOI8-R.

    .venv/bin/python bench/bench_rules.py [--n 2000]

Rules are generated like a real company's grow: most name a recipient (per-address
channels), many look for a word in the subject, a few are catch-all (robots, key
customers). The same mix of sample messages is routed at each size; the figure is
microseconds per (message, recipient), and the ratio to the 10-rule set. The KOI8-R
line is a fresh MessageView per iteration reading subject, From and body text.

Patterns: 1,000 `regex` rules on the subject and 100 on the body, 1,000 `glob`
rules on attachment names (none match, so every one is tried), microseconds per
message; then `(a+)+$` against a subject of n `a` and a `!` (Python's `re` is
exponential in n, RE2 linear; --before-re times the old engine on small n).

Realistic mix (`--only mix`, issue 15): 10 / 1,000 / 10,000 rules where a quarter are
conditions no recipient or word index can skip (subject regexes, From-name globs, body
phrases, a header regex), the rest by recipient and by subject word; CPU time per
(message, recipient) and its ratio to 10 rules, plus the time to load 10,000 such rules
with 100,000 aliases (what `mailrouter check` and a reload do).

Off the loop: the cost per message of deciding on the event loop, through the
daemon's `Offload` pool (pipeline.DECIDE) and through `asyncio.to_thread`, one
message at a time and 20 at once; this sets pipeline.INLINE_BELOW.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mailrouter import yamlsrc
from mailrouter.addresses import AddressBook
from mailrouter.message import MessageView
from mailrouter.routing.rules import RuleSet
from mailrouter.values import REPLY_OK, Action, Decision

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


def mix_yaml(n: int) -> str:
    """n rules of issue 15's mix: per 20 rules 14 by recipient, 1 by subject word, and 5 (a
    quarter) that no recipient or word index skips: 2 subject regexes, a From-name glob, a
    body phrase, a header regex. None matches the samples, so every message meets them all
    (the example rules would decide most samples in their first lines)."""
    lines = ["rules:"]
    order = (15, 0, 17, 1, 18, 2, 19, 3, 14, 4, 16, 5, 6, 7, 8, 9, 10, 11, 12, 13)  # 10 rules: each kind
    for i in range(n):
        kind = order[i % 20]
        head = f"  - {{name: g{i}, when: "
        if kind < 14:
            lines.append(head + f"{{rcpt: box{i}@example.com}}, then: {{folder: F{i}}}}}")
        elif kind == 14:
            lines.append(head + f"{{subject: {{contains: [topic{i}, тема{i}]}}}}, then: {{folder: T{i}}}}}")
        elif kind in (15, 16):
            lines.append(head + f"{{subject: {{regex: 'Заказ N{i} от \\d+|ORD-{i}\\w*'}}}}, "
                         f"then: {{folder: R{i}}}}}")
        elif kind == 17:
            lines.append(head + f"{{from_name: {{glob: '*отдел {i}*'}}}}, then: {{folder: G{i}}}}}")
        elif kind == 18:
            lines.append(head + f"{{body: {{contains: 'оплата по договору {i}'}}}}, "
                         f"then: {{folder: B{i}}}}}")
        else:
            name = ("X-Mailer", "List-Id")[i // 20 % 2]
            lines.append(head + f"{{header: {{{name}: {{regex: '(?i)^\\w+ {i}$|bulk-{i}\\.'}}}}}}, "
                         f"then: {{tags: [h{i}]}}}}")
    return "\n".join(lines) + "\n"


def bench_mix(book: AddressBook, iters: int) -> None:
    """CPU per (message, recipient) at 10 / 1,000 / 10,000 rules of the mix, rounds interleaved."""
    sets = {n: _prepared(book, mix_yaml(n)) for n in (10, 1000, 10000)}
    best: dict[int, float] = {}
    for _ in range(5):                      # the box is shared: each size keeps its best round
        for n, (rs, prepared) in sets.items():
            start = time.process_time()
            for _ in range(iters):
                for raw, rcpt, res, default in prepared:
                    rs.apply(MessageView(raw), "x@outside.example", rcpt, res, default, AT)
            got = (time.process_time() - start) / (iters * len(prepared)) * 1e6
            best[n] = min(best.get(n, got), got)
    for n, us in best.items():
        print(f"mix rules={n:>6}: {us:7.1f} us CPU per message-recipient, decoding included "
              f"(x{us / best[10]:4.2f} of 10 rules)  index {sets[n][0].index.stats()}")


def bench_load(n_rules: int, n_aliases: int) -> None:
    """Seconds to load (parse, check, compile) n_rules of the mix and n_aliases, as check does."""
    import tempfile
    import yaml
    from bench_addresses import sections
    from mailrouter.config import Limits
    from mailrouter.routing.snapshot import load_snapshot
    with tempfile.TemporaryDirectory() as tmp:
        book = sections(n_aliases, n_aliases // 10)
        book["mailboxes"].update({"finance": {"maildir": "f"}, "sales": {"maildir": "s"},
                                  "support": {"maildir": "u"}})
        book["people"].update({k: {"address": f"{k}@example.com"}
                               for k in ("finance-duty", "smirnov", "ivanov")})
        Path(tmp, "a.yaml").write_text(yaml.dump(book, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper),
                                                 allow_unicode=True), encoding="utf-8")
        Path(tmp, "b.yaml").write_text(mix_yaml(n_rules), encoding="utf-8")
        for label, files in (("rules only", ("b",)), ("aliases only", ("a",)), ("both", ("a", "b"))):
            if label == "rules only":
                Path(tmp, "c.yaml").write_text(yaml.dump({k: book[k] for k in ("domains", "mailboxes",
                                                                                "people")}))
                files = ("b", "c")
            t0, c0 = time.perf_counter(), time.process_time()
            snap = load_snapshot(tuple(str(Path(tmp, f + ".yaml")) for f in files), Limits(), "mx.test")
            print(f"load {label:>12} ({len(snap.rules.rules):,} rules, {len(book['aliases']) if 'a' in files else 0:,} "
                  f"aliases): {time.perf_counter() - t0:5.2f} s wall {time.process_time() - c0:5.2f} s CPU")


def _prepared(book: AddressBook, text: str) -> tuple[RuleSet, list[tuple[bytes, str, Any, Decision]]]:
    doc = yamlsrc.loads(text, "bench.yaml")
    rs = RuleSet.build(doc["rules"], book, {})
    cases = [(eml.name, "team@example.com") for eml in sorted(SAMPLES.glob("*.eml"))]
    prepared = []
    for eml, rcpt in cases:
        res = book.resolve(rcpt)
        first = res.targets[0]
        default = Decision(rcpt, Action.DELIVER, REPLY_OK, targets=res.targets, mailbox=first.mailbox,
                           folder=first.folder)
        prepared.append(((SAMPLES / eml).read_bytes(), rcpt, res, default))
    return rs, prepared


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


def bench_patterns(book: AddressBook, iters: int) -> None:
    eml = (SAMPLES / "invoice-koi8r.eml").read_bytes()
    res = book.resolve("sales@example.com")
    default = Decision("sales@example.com", Action.DELIVER, REPLY_OK, targets=res.targets)
    sets = {
        "1000 subject regex": [f"{{subject: {{regex: 'Заказ N{i} от \\d+|ORD-{i}\\w*'}}}}"
                               for i in range(1000)],
        "100 body regex": [f"{{body: {{regex: '(?i)оплат[аы] по счету N{i}|ref{i}$'}}}}"
                           for i in range(100)],
        "1000 attachment glob": [f"{{attachment: {{glob: '*отчет-{i}*.xls?'}}}}" for i in range(1000)],
    }
    for label, conds in sets.items():
        text = "rules:\n" + "".join(f"  - {{name: p{i}, when: {c}, then: {{tags: [t{i}]}}}}\n"
                                    for i, c in enumerate(conds))
        t0 = time.perf_counter()
        rs = RuleSet.build(yamlsrc.loads(text, "bench.yaml")["rules"], book, {})
        build = time.perf_counter() - t0
        view = MessageView(eml)
        rounds = []
        for _ in range(3):                    # CPU time, best of 3: the box is shared
            start = time.process_time()
            for _ in range(iters):
                rs.apply(view, "x@outside.example", "sales@example.com", res, default, AT)
            rounds.append((time.process_time() - start) / iters * 1e6)
        print(f"{label:>22}: {min(rounds):9.1f} us CPU/message (warm view), build {build * 1e3:6.1f} ms")


def bench_pathological(book: AddressBook, before_re: bool, sizes: list[int]) -> None:
    text = "rules:\n  - {name: p, when: {subject: {regex: '(a+)+$'}}, then: {tags: [x]}}\n"
    rs = RuleSet.build(yamlsrc.loads(text, "bench.yaml")["rules"], book, {})
    res = book.resolve("sales@example.com")
    default = Decision("sales@example.com", Action.DELIVER, REPLY_OK, targets=res.targets)
    for n in sizes:
        raw = f"Subject: {'a' * n}!\r\n\r\nx\r\n".encode()
        view = MessageView(raw)
        _ = view.subject
        start = time.perf_counter()
        rs.apply(view, "x@outside.example", "sales@example.com", res, default, AT)
        print(f"(a+)+$ on {n:>9,} x 'a' + '!': rules {(time.perf_counter() - start) * 1e3:10.2f} ms")
    if before_re:
        pat = re.compile("(a+)+$")
        for n in (18, 20, 22, 24):
            start = time.perf_counter()
            pat.search("a" * n + "!")
            print(f"(a+)+$ on {n:>9,} x 'a' + '!': Python re {(time.perf_counter() - start) * 1e3:10.2f} ms")


def bench_offload(iters: int) -> None:
    from mailrouter.config import Limits
    from mailrouter.pipeline import DECIDE, Transaction, view_and_decide
    from mailrouter.routing.snapshot import load_snapshot
    snap = load_snapshot((str(ROOT / "rules" / "*.yaml"),), Limits(), "mx.test")
    raws = [(SAMPLES / f).read_bytes() for f in ("invoice-koi8r.eml", "product-a.eml", "newsletter.eml")]
    txns = [Transaction("smtp", "p", "h", "x@outside.example", ("sales@example.com",), r) for r in raws]

    async def inline(t: Transaction) -> object:
        return view_and_decide(snap, t)

    async def pool(t: Transaction) -> object:
        return await DECIDE.run(view_and_decide, snap, t)

    async def to_thread(t: Transaction) -> object:
        return await asyncio.to_thread(view_and_decide, snap, t)

    async def timed(how: object, width: int) -> tuple[float, float]:
        """(wall, CPU of every thread) microseconds per message, `width` messages at once."""
        wall, cpu = time.perf_counter(), time.process_time()
        for i in range(0, iters, width):
            await asyncio.gather(*(how(txns[(i + k) % len(txns)]) for k in range(width)))  # type: ignore[operator]
        return ((time.perf_counter() - wall) / iters * 1e6, (time.process_time() - cpu) / iters * 1e6)

    async def run() -> None:
        # The box is shared: rounds interleave the three ways and each keeps its best round.
        hows = {"inline": inline, "Offload pool": pool, "asyncio.to_thread": to_thread}
        best: dict[tuple[str, int], tuple[float, float]] = {}
        for _ in range(5):
            for name, how in hows.items():
                for width in (1, 20):
                    got = await timed(how, width)
                    best[name, width] = min(best.get((name, width), got), got)
        for name in hows:
            (w1, c1), (w20, c20) = best[name, 1], best[name, 20]
            print(f"decide {name:>18}: one at a time {w1:6.1f} us wall {c1:6.1f} us CPU; "
                  f"20 at once {w20:6.1f} us wall {c20:6.1f} us CPU  per message")

    asyncio.run(run())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="iterations over the sample set")
    ap.add_argument("--only", choices=("rules", "patterns", "offload", "mix", "load"), help="one section")
    ap.add_argument("--before-re", action="store_true", help="also time (a+)+$ on Python's re")
    ap.add_argument("--sizes", default="20,24,10000,1000000",
                    help="subject lengths for (a+)+$ (keep them small on a Python-re tree)")
    args = ap.parse_args()
    book = AddressBook.load(ROOT / "rules" / "company.yaml")
    if args.only in (None, "mix"):
        bench_mix(book, max(20, args.n // 10))
    if args.only in (None, "load"):
        bench_load(10_000, 100_000)
    if args.only in (None, "patterns"):
        bench_patterns(book, max(20, args.n // 20))
        bench_pathological(book, args.before_re, [int(n) for n in args.sizes.split(",")])
    if args.only in (None, "offload"):
        bench_offload(args.n * 2)
    if args.only not in (None, "rules"):
        return
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
