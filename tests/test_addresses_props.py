"""Property tests: random alias graphs either build, with every expansion finite,
duplicate-free and equal to what the input reaches, or are refused with a cycle
that really is a cycle of the input."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from mailrouter.addresses import AddressBook
from mailrouter.errors import ConfigErrors
from mailrouter.yamlsrc import loads

MAILBOXES = ("m0", "m1", "m2")
LOOP = re.compile(r"alias loop of (\d+): (\S+)((?: -> \S+ \(\S+\))+)")


@st.composite
def graphs(draw: st.DrawFn) -> dict[str, list[str]]:
    n = draw(st.integers(1, 8))
    names = [f"a{i}@example.com" for i in range(n)]
    graph: dict[str, list[str]] = {}
    for name in names:
        pool = [x for x in names if x != name] + [f"mailbox:{m}" for m in MAILBOXES]
        graph[name] = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=4))
    return graph


def to_yaml(graph: dict[str, list[str]]) -> str:
    boxes = "".join(f"  {m}: {{maildir: {m}}}\n" for m in MAILBOXES)
    aliases = "".join(f"  {k}: [{', '.join(v)}]\n" for k, v in graph.items())
    return f"domains: [example.com]\nmailboxes:\n{boxes}aliases:\n{aliases}"


def reach(graph: dict[str, list[str]], start: str) -> set[str]:
    """Mailboxes reachable from start (reference walk, independent of the code under test)."""
    seen, todo, out = {start}, [start], set()
    while todo:
        for t in graph[todo.pop()]:
            if t.startswith("mailbox:"):
                out.add(t[8:])
            elif t not in seen:
                seen.add(t)
                todo.append(t)
    return out


def has_cycle(graph: dict[str, list[str]]) -> bool:
    return any(a in reach_addresses(graph, b) for a in graph for b in graph[a] if b in graph)


def reach_addresses(graph: dict[str, list[str]], start: str) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        for t in graph[todo.pop()]:
            if t in graph and t not in seen:
                seen.add(t)
                todo.append(t)
    return seen


@settings(max_examples=300, deadline=None)
@given(graphs())
def test_random_alias_graphs(graph: dict[str, list[str]]) -> None:
    """Build succeeds exactly for acyclic graphs; refusals name real cycles."""
    try:
        book = AddressBook.build(loads(to_yaml(graph), "g.yaml"))
    except ConfigErrors as exc:
        assert has_cycle(graph)
        for error in exc.errors:
            m = LOOP.search(error.message)
            assert m, error.message
            hops = [m.group(2)] + re.findall(r" -> (\S+) \(", m.group(3))
            assert hops[0] == hops[-1] and len(hops) - 1 == int(m.group(1))
            assert len(set(hops[:-1])) == len(hops) - 1          # a simple cycle
            for a, b in zip(hops, hops[1:]):
                assert b in graph[a], f"{a} -> {b} is not an edge of the input"
        return
    assert not has_cycle(graph)
    for name in graph:
        targets = book.resolve(name).targets
        assert len({t.key for t in targets}) == len(targets)
        assert {t.key for t in targets} == reach(graph, name)
        for t in targets:
            hops = [h for h in t.path if "@" in h]
            assert hops[0] == name and t.path[-1] == f"mailbox:{t.mailbox}"
            assert all(b in graph[a] for a, b in zip(hops, hops[1:]))


@settings(max_examples=300, deadline=None)
@given(graphs())
def test_depth_first_order_is_tarjans_on_acyclic_graphs(graph: dict[str, list[str]]) -> None:
    """The fast order the expansion uses is the order Tarjan's components give (so the
    budget error names the same address), and it gives up on exactly the cyclic graphs."""
    from mailrouter.addressbook.expand import acyclic_order, strongly_connected
    from mailrouter.addressbook.graph import Edge
    nodes = {src: [Edge(d if "@" in d else None, (), None) for d in dests]
             for src, dests in graph.items()}
    order = acyclic_order(nodes)
    assert (order is None) == has_cycle(graph)
    if order is not None:
        assert [[n] for n in order] == list(strongly_connected(nodes))


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=" \t<>@.+aB\u00e9xn-\u0441\u00df\u3000", max_size=14),
       st.sampled_from(("insensitive", "sensitive")))
def test_canonicaliser_is_canonical(text: str, case: str) -> None:
    """The build's fast canonical form agrees with `canonical` on any text: spaces,
    brackets, several @, IDN and empty parts included."""
    from mailrouter.addressbook.canon import canonical, canonicaliser
    from mailrouter.addressbook.model import Options
    options = Options(local_part_case=case)
    assert canonicaliser(options)(text) == canonical(text, options)
