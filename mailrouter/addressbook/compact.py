"""The address book's resolved form, kept compact: a few big objects instead of 100,000s.

What `expand_all` computes for each address (its plan: the address it forwards to, the
final targets of its one terminal edge, or the winner of each dedupe key among its
children's targets) is stored here as bytes and integers, no Python object per address:

- every known address (canonical, UTF-8) in one `bytes`, sorted, with `array('i')` of
  where each starts: address number n is the n-th in sorted order, found by binary search
  (17 steps at 100,000 addresses: a few microseconds per recipient);
- the distinct terminal targets (a mailbox, a person's mailbox, a team member), each
  once, paths relative to the address that names them, as JSON texts in one str;
- for address n, the entries `offsets[n]:offsets[n + 1]` of `srcs` and `idxs` (arrays):
  `srcs[k] == -1`: terminal target number `idxs[k]`; otherwise address `srcs[k]`'s
  targets, all of them in order when `idxs[k] == -1`, else only its target `idxs[k]`.

Why: a dict of 100,000 address strings with a plan each was 35 MB of small objects, made
among the million objects of the loaded YAML; when those died, Python's 1 MiB memory
arenas each kept a few survivors and could not be returned, and the process stayed ~80 MB
above what it held (bench/bench_memory.py). Here a 100,000-alias book is about 5 MB in six
objects. The Targets of an address (with its alias path) are made when it is first
resolved and kept in a per-process cache of at most `CACHE_LIMIT` addresses (emptied when
full), so what a worker adds does not grow with the book either.
"""

from __future__ import annotations

import json
from array import array
from collections.abc import Callable, Iterator, Mapping
from itertools import accumulate
from typing import Any

from ..values import Target

__all__ = ["Expansions", "CACHE_LIMIT"]

CACHE_LIMIT = 20_000     # addresses whose Targets a process keeps made
# one encoder for every terminal target: json.dumps with an option makes one per call (2x)
_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


class Expansions:
    """Every known address and its final targets; immutable but for the cache of made Targets."""

    __slots__ = ("_blob", "_starts", "_terms", "_term_starts", "_offsets", "_srcs", "_idxs",
                 "_made", "_make")

    def __init__(self, plans: Mapping[str, Any],
                 make: Callable[[str, str | None, str | None, tuple[str, ...]], Target]) -> None:
        """`plans`: address -> Plan as `expand.expand_all` returns them (children first)."""
        order = sorted(plans)          # code point order: the order of the UTF-8 bytes too
        ids: dict[str, int] = {name: n for n, name in enumerate(order)}
        blob = "".join(order).encode("utf-8", "surrogatepass")
        sizes: Any = map(len, order)   # ASCII (the usual book): a name's bytes are its characters
        if len(blob) != sum(map(len, order)):
            sizes = [len(name.encode("utf-8", "surrogatepass")) for name in order]
        self._blob = blob
        self._starts = array("i", accumulate(sizes, initial=0))
        terms: list[Target] = []
        term_ids: dict[Target, int] = {}
        shared: dict[int, list[int]] = {}   # id of a terminal tuple (shared by many) -> terms

        def terms_of(found: tuple[Target, ...]) -> list[int]:
            """The term numbers of a tuple of terminal targets; the tuples are shared by the
            aliases naming the same target (graph._Memo), so each is looked at once."""
            got = shared.get(id(found))
            if got is None:
                got = shared[id(found)] = []
                for t in found:
                    n = term_ids.get(t)
                    if n is None:
                        n = term_ids[t] = len(terms)
                        terms.append(t)
                    got.append(n)
            return got

        # the entries of each address in sorted order, straight into two flat lists
        srcs: list[int] = []
        idxs: list[int] = []
        offsets = [0]
        add_src, add_idx, end = srcs.append, idxs.append, offsets.append
        minus: dict[int, list[int]] = {}    # n -> [-1] * n
        for name in order:
            plan = plans[name]
            if type(plan) is str:
                add_src(ids[plan])
                add_idx(-1)
            elif type(plan) is tuple:
                got = terms_of(plan)
                fill = minus.get(len(got))
                if fill is None:
                    fill = minus[len(got)] = [-1] * len(got)
                srcs += fill
                idxs += got
            else:
                for src, i in plan:
                    if type(src) is str:
                        add_src(ids[src])
                        add_idx(i)
                    else:
                        add_src(-1)
                        add_idx((shared.get(id(src)) or terms_of(src))[i])
            end(len(srcs))
        self._offsets = array("i", offsets)
        self._srcs = array("i", srcs)
        self._idxs = array("i", idxs)
        del srcs, idxs, offsets
        # as JSON texts in one str: 10,000 Targets made among the build's short-lived objects
        # (the paths' tuples and strings too) pinned an arena each (see above)
        encode = _json
        texts = [encode([t.mailbox, t.folder, t.person, *t.path]) for t in terms]
        self._terms = "".join(texts)
        self._term_starts = array("i", accumulate((len(t) for t in texts), initial=0))
        del texts
        self._made: dict[int, tuple[Target, ...]] = {}
        self._make = make

    def __getstate__(self) -> tuple[Any, ...]:
        """Pickled without the cache of made Targets and without `make` (a closure): an
        unpickled one makes them with `Target` until `use` gives it another maker
        (AddressBook does)."""
        return (self._blob, self._starts, self._terms, self._term_starts, self._offsets,
                self._srcs, self._idxs)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        (self._blob, self._starts, self._terms, self._term_starts, self._offsets,
         self._srcs, self._idxs) = state
        self._made = {}
        self._make = Target

    def use(self, make: Callable[[str, str | None, str | None, tuple[str, ...]], Target]) -> None:
        """Make the Targets with `make` (after unpickling)."""
        self._make = make

    def __len__(self) -> int:
        return len(self._starts) - 1

    def find(self, address: str) -> int:
        """The number of a known address, -1 for an unknown one."""
        key = address.encode("utf-8", "surrogatepass")
        blob, starts = self._blob, self._starts
        lo, hi = 0, len(starts) - 1
        while lo < hi:
            mid = (lo + hi) // 2
            if blob[starts[mid]:starts[mid + 1]] < key:
                lo = mid + 1
            else:
                hi = mid
        if lo < len(starts) - 1 and blob[starts[lo]:starts[lo + 1]] == key:
            return lo
        return -1

    def __contains__(self, address: object) -> bool:
        return isinstance(address, str) and self.find(address) >= 0

    def name(self, n: int) -> str:
        return self._blob[self._starts[n]:self._starts[n + 1]].decode("utf-8", "surrogatepass")

    def __iter__(self) -> Iterator[str]:
        """Every address, in sorted order."""
        return (self.name(n) for n in range(len(self)))

    def _term(self, n: int) -> list[Any]:
        """[mailbox, folder, person, *path] of terminal target n."""
        found: list[Any] = json.loads(self._terms[self._term_starts[n]:self._term_starts[n + 1]])
        return found

    def targets(self, address: str) -> tuple[Target, ...]:
        """The final Targets of a known address, each path starting at the address.

        Made from its entries once its children's are made; iterative, the chains below
        an address being at most `Limits.max_depth` long."""
        node = self.find(address)
        if node < 0:
            raise KeyError(address)
        made = self._made
        hit = made.get(node)
        if hit is not None:
            return hit
        if len(made) >= CACHE_LIMIT:
            made.clear()
        offsets, srcs, idxs, term = self._offsets, self._srcs, self._idxs, self._term
        make = self._make
        todo = [node]
        while todo:
            top = todo[-1]
            if top in made:
                todo.pop()
                continue
            lo, hi = offsets[top], offsets[top + 1]
            missing = [s for s in srcs[lo:hi] if s >= 0 and s not in made]
            if missing:
                todo += missing
                continue
            name = address if top == node else self.name(top)
            out: list[Target] = []
            for k in range(lo, hi):
                src, i = srcs[k], idxs[k]
                if src < 0:
                    mailbox, folder, person, *path = term(i)
                    out.append(make(mailbox, folder, person, (name, *path)))
                    continue
                below = made[src] if i < 0 else (made[src][i],)
                out += [make(t.mailbox, t.folder, t.person, (name, *t.path)) for t in below]
            made[top] = tuple(out)
            todo.pop()
        return made[node]
