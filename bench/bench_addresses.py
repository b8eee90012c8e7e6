"""Address book at scale: build+check time and per-message resolve time.

Builds books of 1k, 10k and 100k aliases (100k with 10,000 people), prints the
time to build and check each, and the mean time of `knows` + `resolve` over a
fixed mix of recipients (chains, groups, people, subaddresses, unknown), which
must not grow with the size of the book. Then the real path, what `mailrouter
check` does: the same book written to a YAML file, `yamlsrc.load` and
`AddressBook.build` timed apart. Run by hand:

    .venv/bin/python bench/bench_addresses.py

Figures at 100k aliases / 10k people (2-core machine shared with other benchmarks,
so +-25% from run to run): build+check from dicts 3.3-3.9 s before the build work
of issue 4 "Scale", 2.15-2.5 s after; resolve 4-5 us/rcpt at every size. From YAML:
load 6.8-8.3 s here (libyaml plus Python construction of LocStr/LocMap, with the
cyclic GC enabled and this process already holding the dict book; about 4.5 s in a
fresh process, 2.4 s of it with the GC off) + build+check 2.7-3.1 s.
Then (same machine, busier: runs of the old and new code interleaved): yamlsrc builds
straight from libyaml's events, not PyYAML's node tree: load 2.2-3.1 s -> 0.9-1.6 s;
the book keeps plans and makes each address's Targets on its first resolve: build+check
from dicts 2.45-2.6 s -> 1.4-2.0 s, from YAML 2.5-2.8 s -> 1.6-2.5 s. Total from YAML
4.8-6.2 s -> 2.5-4.1 s (2.5-2.9 s in the quieter runs). resolve unchanged, 3-5 us/rcpt
at every size once an address has been resolved; its first resolve makes its Targets
(and those of the addresses below it), about 6-12 us more, once per process.
"""

from __future__ import annotations

import random
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from mailrouter.addresses import AddressBook
from mailrouter.yamlsrc import load

MAILBOXES = 50


def sections(n_aliases: int, n_people: int) -> dict[str, Any]:
    """A synthetic book: people, direct aliases, chains of 3, groups of 5."""
    rnd = random.Random(1)
    people = {f"p{i}": {"address": f"person{i}@example.com"} for i in range(n_people)}
    aliases: dict[str, Any] = {}
    for i in range(n_aliases):
        kind = i % 4
        if kind == 0 or i < 10:
            aliases[f"a{i}@example.com"] = f"mailbox:m{i % MAILBOXES}"
        elif kind == 1:
            aliases[f"a{i}@example.com"] = f"a{i - 1}@example.com"      # chain via kind 0
        elif kind == 2:
            aliases[f"a{i}@example.com"] = f"a{i - 1}@example.com"      # chain of 3
        else:
            aliases[f"a{i}@example.com"] = [f"p{rnd.randrange(n_people)}" for _ in range(4)] + [
                f"a{rnd.randrange(i)}@example.com"]
    return {"domains": ["example.com"],
            "mailboxes": {f"m{i}": {"maildir": f"m{i}"} for i in range(MAILBOXES)},
            "people": people, "aliases": aliases}


def probe(book: AddressBook, n_aliases: int, rounds: int = 200_000) -> float:
    """Mean seconds per recipient for knows() + resolve() over a fixed mix."""
    rcpts = [f"a{n_aliases - 1}@example.com", f"A{n_aliases // 2 + 3}@Example.COM",
             "person7@example.com", f"a{n_aliases - 2}+tag@example.com",
             "nobody@example.com", "x@other.org"]
    start = time.perf_counter()
    for i in range(rounds):
        r = rcpts[i % len(rcpts)]
        if book.knows(r):
            book.resolve(r)
    return (time.perf_counter() - start) / rounds


def from_file(data: dict[str, Any], directory: Path) -> tuple[float, float]:
    """The real path (what `mailrouter check` does): the book written to a YAML file,
    then `yamlsrc.load` (positions on every value) and `AddressBook.build` timed apart."""
    path = directory / "book.yaml"
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    path.write_text(yaml.dump(data, Dumper=dumper, allow_unicode=True, sort_keys=False),
                    encoding="utf-8")
    start = time.perf_counter()
    doc = load(path)
    loaded = time.perf_counter() - start
    start = time.perf_counter()
    AddressBook.build(doc)
    return loaded, time.perf_counter() - start


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for n_aliases, n_people in ((1_000, 100), (10_000, 1_000), (100_000, 10_000)):
            data = sections(n_aliases, n_people)
            start = time.perf_counter()
            book = AddressBook.build(data)
            built = time.perf_counter() - start
            per = probe(book, n_aliases)
            loaded, checked = from_file(data, Path(tmp))
            print(f"aliases={n_aliases:>7} people={n_people:>6} build+check={built:6.2f}s "
                  f"resolve={per * 1e6:6.2f}us/rcpt | from YAML: load={loaded:5.2f}s "
                  f"build+check={checked:5.2f}s total={loaded + checked:5.2f}s")


if __name__ == "__main__":
    main()
