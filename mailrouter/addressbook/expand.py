"""Cycle refusal and expansion of the alias graph, both linear in its size.

Tarjan's strongly connected components, iteratively (no recursion limit), give
the cycles and, as a by-product, a sinks-first order in which each address is
expanded exactly once from its children's expansions. An address whose
expansion is refused (in a cycle, too deep, too wide) makes everything that
reaches it refused too, but only the first place is reported.
"""

from __future__ import annotations

from collections import deque

from ..routing.decision import Target
from .errs import Collector, at_line
from .graph import Edge
from .model import Limits

__all__ = ["strongly_connected", "report_cycle", "expand_all"]

Graph = dict[str, list[Edge]]


def strongly_connected(nodes: Graph) -> list[list[str]]:
    """Tarjan's SCCs over address edges, sinks first; iterative."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    for root in nodes:
        if root in index:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            edges = nodes[node]
            while i < len(edges):
                dest = edges[i].dest
                i += 1
                if dest is None or dest not in nodes or dest == node:
                    continue
                if dest not in index:
                    work.append((node, i))
                    work.append((dest, 0))
                    break
                if dest in on_stack:
                    low[node] = min(low[node], index[dest])
            else:
                if low[node] == index[node]:
                    comp: list[str] = []
                    while True:
                        top = stack.pop()
                        on_stack.discard(top)
                        comp.append(top)
                        if top == node:
                            break
                    out.append(comp)
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
    return out


def report_cycle(c: Collector, nodes: Graph, comp: list[str]) -> None:
    """One error per cycle: its shortest loop through its smallest address, edge by edge."""
    members = set(comp)
    start = min(comp)
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


def _expand_one(node: str, edges: list[Edge], done: dict[str, tuple[Target, ...]],
                ) -> tuple[Target, ...] | None:
    seen: dict[str, Target] = {}
    for edge in edges:
        if edge.dest is None:
            children = edge.targets
        elif edge.dest in done:
            children = done[edge.dest]
        else:
            return None
        for t in children:
            if t.key not in seen:
                seen[t.key] = Target(t.mailbox, t.folder, t.person, (node, *t.path))
    return tuple(seen.values())


def _depth(node: str, edges: list[Edge], depth: dict[str, int]) -> int:
    return 1 + max((depth.get(e.dest, 0) for e in edges if e.dest is not None), default=0)


def expand_all(c: Collector, nodes: Graph, limits: Limits) -> dict[str, tuple[Target, ...]]:
    """Every address -> its final targets (deduplicated, with paths); errors collected."""
    done: dict[str, tuple[Target, ...]] = {}
    depth: dict[str, int] = {}
    for comp in strongly_connected(nodes):
        if len(comp) > 1:
            report_cycle(c, nodes, comp)
            continue
        node = comp[0]
        edges = nodes[node]
        targets = _expand_one(node, edges, done)
        if targets is None:
            continue                       # reaches something already refused
        depth[node] = _depth(node, edges, depth)
        at = next((e.at for e in edges if e.at is not None), None)
        if not targets and edges:
            c.add(f"alias {node} delivers nowhere: it ends at a moved address with "
                  "deliver: false", at, "point it at the new address instead")
            continue
        if depth[node] == limits.max_depth + 1:
            c.add(f"alias chain from {node} is {depth[node]} addresses deep "
                  f"(limit {limits.max_depth}): {' -> '.join(targets[0].path[:-1])}", at,
                  "shorten the chain: point the first alias straight at the final target")
        elif len(targets) > limits.max_width and all(
                len(done.get(e.dest, ())) <= limits.max_width for e in edges if e.dest):
            c.add(f"alias {node} expands to {len(targets)} targets "
                  f"(limit {limits.max_width})", at,
                  "split the group, or deliver it to one shared mailbox")
        if depth[node] > limits.max_depth or len(targets) > limits.max_width:
            continue
        done[node] = targets
    return done
