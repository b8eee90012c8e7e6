"""Cycle refusal and expansion of the alias graph, both linear in its size.

A depth-first walk gives a sinks-first order in which each address is expanded
exactly once from its children's expansions; only when it meets a cycle does Tarjan's
strongly connected components (iterative: no recursion limit) run, to report each
cycle once and order the rest the same way. An address whose
expansion is refused (in a cycle, too deep, too wide) makes everything that
reaches it refused too, but only the first place is reported; a chain too deep is
reported at its start (the address furthest above that place), with the whole chain.

Refused as well: a book whose expansion as a whole takes more than
`EXPANSION_BUDGET` steps (a step is one target of a child merged into a group;
each group costs at most its edges times max_width). Groups of groups of big
groups would otherwise make a file of a few megabytes cost minutes at every
load and reload. The 100k-alias benchmark book takes 160,000 steps; 5,000,000
take about 0.3 s (issue 9, measured on the 2-core development machine).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from ..values import Target
from .errs import Collector, at_line
from .graph import Edge
from .model import Limits

__all__ = ["strongly_connected", "acyclic_order", "report_cycle", "expand_all", "materialize", "make_target", "Plan",
           "EXPANSION_BUDGET"]

EXPANSION_BUDGET = 5_000_000      # targets merged into groups, the whole book together

Graph = dict[str, list[Edge]]


def strongly_connected(nodes: Graph) -> Iterator[list[str]]:
    """Tarjan's SCCs over address edges, sinks first, each as soon as it is found; iterative.

    A finished node's index is set past every real one, which stands in for the
    `on_stack` test (it can no longer lower anyone's `low`); names are bound locally:
    this runs once per build over every address (100,000s)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    done = len(nodes) + 1
    counter = 0
    push, pop = stack.append, stack.pop
    for root in nodes:
        if root in index:
            continue
        index[root] = low[root] = counter
        counter += 1
        push(root)
        work = [(root, iter(nodes[root]))]
        while work:
            node, edges = work[-1]
            for edge in edges:
                dest = edge[0]
                if dest is None or dest == node or dest not in nodes:
                    continue
                seen = index.get(dest)
                if seen is None:
                    index[dest] = low[dest] = counter
                    counter += 1
                    push(dest)
                    work.append((dest, iter(nodes[dest])))
                    break
                if seen < low[node]:
                    low[node] = seen
            else:
                work.pop()
                mine = low[node]
                if mine == index[node]:
                    if stack[-1] == node:
                        pop()
                        index[node] = done
                        yield [node]
                    else:
                        comp: list[str] = []
                        while True:
                            top = pop()
                            index[top] = done
                            comp.append(top)
                            if top == node:
                                break
                        yield comp
                if work:
                    parent = work[-1][0]
                    if mine < low[parent]:
                        low[parent] = mine


def acyclic_order(nodes: Graph) -> list[str] | None:
    """The addresses in the order `strongly_connected` yields them when the graph has no
    cycle (each its own component, finished depth-first, children first); None at the first
    cycle, which `strongly_connected` then finds and reports. A plain depth-first walk with
    an on-path mark: the usual (acyclic) book skips Tarjan's index and low-link bookkeeping."""
    order: list[str] = []
    state: dict[str, bool] = {}          # True while on the path, False once finished
    finish = order.append
    for root in nodes:
        if root in state:
            continue
        state[root] = True
        work = [(root, iter(nodes[root]))]
        while work:
            node, edges = work[-1]
            for edge in edges:
                dest = edge[0]
                if dest is None or dest == node:
                    continue
                on_path = state.get(dest)
                if on_path is None:
                    if dest not in nodes:
                        continue
                    state[dest] = True
                    work.append((dest, iter(nodes[dest])))
                    break
                if on_path:
                    return None
            else:
                work.pop()
                state[node] = False
                finish(node)
    return order


def report_cycle(c: Collector, nodes: Graph, comp: list[str],
                 forms: frozenset[str] = frozenset()) -> None:
    """One error per cycle: its shortest loop through its smallest address, edge by edge.
    Not from a +detail form (`forms`): `c@: c+x@` starts at c@, the alias the admin wrote,
    not at c+x@ ('+' sorts before '@'), which no one defined."""
    members = set(comp)
    start = min(comp, key=lambda a: (a in forms, a))
    prev: dict[str, tuple[str, Edge]] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for edge in nodes[node]:
            dest = edge.dest
            if dest in members and dest not in prev and dest is not None:
                prev[dest] = (node, edge)
                queue.append(dest)
        if start in prev:
            break
    chain: list[tuple[str, Edge]] = []
    node = start
    while True:
        parent, edge = prev[node]
        chain.append((node, edge))
        node = parent
        if node == start:
            break
    chain.reverse()
    text = start + "".join(f" -> {dest} ({at_line(edge.at)})" for dest, edge in chain)
    c.add(f"alias loop of {len(chain)}: {text}", chain[0][1].at,
          "break the loop: point one of these at a mailbox, a person or a team")


def _target_maker() -> Callable[[str, str | None, str | None, tuple[str, ...]], Target]:
    """`Target(mailbox, folder, person, path)` at about half the cost, for the 100,000s
    of targets a big book expands to: the frozen dataclass's generated `__init__` sets
    its four slots through `object.__setattr__`, this sets them through the slot
    descriptors directly. Used only while Target is exactly that (four slot fields, no
    `__post_init__`, equal to the real constructor's result); otherwise `Target` itself."""
    names = ("mailbox", "folder", "person", "path")
    try:
        fields = tuple(Target.__dataclass_fields__)
        set_mailbox, set_folder, set_person, set_path = (
            Target.__dict__[n].__set__ for n in names)
    except (AttributeError, KeyError, TypeError):
        return Target
    if fields != names or hasattr(Target, "__post_init__"):
        return Target
    new = object.__new__

    def make(mailbox: str, folder: str | None, person: str | None,
             path: tuple[str, ...]) -> Target:
        t = new(Target)
        set_mailbox(t, mailbox)
        set_folder(t, folder)
        set_person(t, person)
        set_path(t, path)
        return t

    sample = ("m", "f", "p", ("a@b", "mailbox:m/f"))
    return make if make(*sample) == Target(*sample) else Target


make_target = _target_maker()


# What `expand_all` keeps per address instead of its Targets (made on first use by
# `materialize`): the address it forwards to alone (str: its targets, this address
# in front of each path), the final targets of its one edge to a mailbox, person or
# team (tuple), or for several edges the winner of each dedupe key in order (list of
# (source, index): target `index` of that address's, or of that edge's, targets).
Plan = str | tuple[Target, ...] | list[tuple[Any, int]]


def expand_all(c: Collector, nodes: Graph, limits: Limits,
               forms: frozenset[str] = frozenset()) -> dict[str, Plan]:
    """Every address -> the plan of its final targets (deduplicated, with paths); errors
    collected. `materialize` turns a plan into Targets, once per address, when asked.

    Sinks first, each address once: its dedupe keys are its children's (already final and
    deduplicated) merged in edge order, the first path to a key winning. An address with
    one edge (most of them) needs no merge. Making the Targets here too, 100,000s of them
    for a big book, took a quarter of the build; a recipient resolved later pays ~1 us."""
    done: dict[str, Plan] = {}
    keys: dict[str, tuple[str, ...]] = {}
    depth: dict[str, int] = {}
    # Refused through a child: address -> (the refused address it reaches, hops to it, the
    # child on the way). A chain too deep is reported at its start, not where it crosses.
    behind: dict[str, tuple[str, int, str]] = {}
    too_deep: dict[str, list[Edge]] = {}
    max_depth, max_width = limits.max_depth, limits.max_width
    budget = EXPANSION_BUDGET
    order = acyclic_order(nodes)
    comps: Iterator[list[str]] | Iterator[str] = (
        strongly_connected(nodes) if order is None else iter(order))
    for comp in comps:
        if type(comp) is list:
            if len(comp) > 1:
                report_cycle(c, nodes, comp, forms)
                continue
            comp = comp[0]
        node: str = comp    # type: ignore[assignment]
        edges = nodes[node]
        deep = 0
        plan: Plan
        if len(edges) == 1 and (edges[0][0] is not None or len(edges[0][1]) == 1):
            dest, plan, _, found_keys = edges[0]
            if dest is not None:
                found_keys = keys.get(dest)   # type: ignore[assignment]
                if found_keys is None:
                    _blame(behind, node, dest)   # reaches something already refused
                    continue
                plan = dest
                deep = depth[dest]
        else:
            merged: dict[str, tuple[Any, int]] = {}
            for dest, found, _, found_keys in edges:
                src: Any = found
                if dest is not None:
                    found_keys = keys.get(dest)   # type: ignore[assignment]
                    if found_keys is None:
                        _blame(behind, node, dest)
                        break
                    src = dest
                    if depth[dest] > deep:
                        deep = depth[dest]
                budget -= len(found_keys)
                for i, key in enumerate(found_keys):
                    if key not in merged:
                        merged[key] = (src, i)
            else:
                plan, found_keys = list(merged.values()), tuple(merged)
            if found_keys is None:
                continue                 # reaches something already refused
            if budget < 0:
                c.add(f"the aliases expand to more than {EXPANSION_BUDGET} targets in all, "
                      f"counting each group once for every group that lists it; passed at "
                      f"{node}", _first_at(edges),
                      "deliver big groups to one shared mailbox, or list fewer groups in groups")
                return done
        depth[node] = deep = deep + 1
        width = len(found_keys)
        if not width and edges:
            c.add(f"alias {node} delivers nowhere: it ends at a moved address with "
                  "deliver: false", _first_at(edges), "point it at the new address instead")
            continue
        if deep == max_depth + 1:
            too_deep[node] = edges
        elif width > max_width and all(
                len(keys.get(e.dest, ())) <= max_width for e in edges if e.dest):
            c.add(f"alias {node} expands to {width} targets "
                  f"(limit {max_width})", _first_at(edges),
                  "split the group, or deliver it to one shared mailbox")
        if deep > max_depth or width > max_width:
            continue
        done[node] = plan
        keys[node] = found_keys
    led: dict[str, list[tuple[int, str]]] = {}      # too deep -> (hops, address) above it
    for a, (first, hops, _) in behind.items():
        if first in too_deep:
            led.setdefault(first, []).append((hops, a))
    for node, edges in too_deep.items():
        _report_deep(c, nodes, depth, behind, node, edges, max_depth, led.get(node, []))
    return done


def _blame(behind: dict[str, tuple[str, int, str]], node: str, dest: str) -> None:
    """`node` is refused because `dest` is: remember the first refused place it reaches."""
    first, hops, _ = behind.get(dest, (dest, 0, ""))
    behind[node] = (first, hops + 1, dest)


SHOWN_CHAIN = 40     # addresses of a chain an error lists; a longer one is cut in the middle
SHOWN_OVER = 8       # addresses over the depth limit a fix names; more are counted


def _report_deep(c: Collector, nodes: Graph, depth: dict[str, int],
                 behind: dict[str, tuple[str, int, str]], node: str, edges: list[Edge],
                 max_depth: int, above: list[tuple[int, str]]) -> None:
    """One error for the chain that crosses `max_depth` at `node`: at the start the admin
    wrote (the address furthest above `node`), with the whole chain down to its end."""
    hops, start = min(above, key=lambda h: (-h[0], h[1]), default=(0, node))
    chain = [start]
    while chain[-1] != node:
        chain.append(behind[chain[-1]][2])
    while True:                         # below node: the deepest way down
        below = [e.dest for e in nodes[chain[-1]] if e.dest is not None and e.dest in depth]
        if not below:
            break
        chain.append(max(below, key=lambda d: depth[d]))
    shown = chain if len(chain) <= SHOWN_CHAIN else (
        chain[:SHOWN_CHAIN // 2] + [f"({len(chain) - SHOWN_CHAIN} more)"]
        + chain[-SHOWN_CHAIN // 2:])
    where = (f"; it passes the limit at {node} ({at_line(_first_at(edges))})"
             if start != node else "")
    others = len(above) - hops
    also = (f"; {others} other address(es) lead into it and are refused with it"
            if others > 0 else "")
    # every address from the start down to `node` starts a chain over the limit: pointing
    # only the start at the final target left the next one refused at the next check, one
    # round per address
    over = chain[:chain.index(node) + 1]
    names = over if len(over) <= SHOWN_OVER else (
        over[:SHOWN_OVER - 1] + [f"({len(over) - SHOWN_OVER} more)", over[-1]])
    which = (f"point {start}" if len(over) == 1
             else f"point each of {', '.join(names)} (each starts a chain over the limit)")
    c.add(f"alias chain from {start} is {len(chain)} addresses deep "
          f"(limit {max_depth}): {' -> '.join(shown)}{where}{also}",
          _first_at(nodes[start]) if start != node else _first_at(edges),
          f"shorten the chain: {which} straight at the final target "
          "(the limit is limits.max_alias_depth in config.yaml)")


def materialize(plans: dict[str, Plan], made: dict[str, tuple[Target, ...]],
                node: str) -> tuple[Target, ...]:
    """The Targets of `node` from its plan, kept in `made` with those of every address
    they were made from; iterative, the chains below it being at most max_depth long."""
    hit = made.get(node)
    if hit is not None:
        return hit
    make = make_target
    todo = [node]
    while todo:
        top = todo[-1]
        if top in made:
            todo.pop()
            continue
        plan = plans[top]
        below: Any
        if type(plan) is str:
            below = made.get(plan)
            if below is None:
                todo.append(plan)
                continue
        elif type(plan) is list:
            missing = [src for src, _ in plan if type(src) is str and src not in made]
            if missing:
                todo += missing
                continue
            below = tuple([(made[src] if type(src) is str else src)[i] for src, i in plan])
        else:
            below = plan
        made[top] = tuple([make(t.mailbox, t.folder, t.person, (top, *t.path)) for t in below])
        todo.pop()
    return made[node]


def _first_at(edges: list[Edge]) -> Any:
    return next((e.at for e in edges if e.at is not None), None)
