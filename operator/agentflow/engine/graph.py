"""Small pure functions over directed graphs given as ``{node: [successor, ...]}``.

Validation uses them on DAG dependencies (edges from a step to the steps it
depends on) and on state-machine transitions (edges from a state to its
targets). Edges to nodes that are not keys of the mapping are ignored, so
unknown references (reported separately) never crash the graph checks.
Results are deterministic: they follow the order of the mapping and of each
successor list.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

Graph = Mapping[str, Sequence[str]]


def find_cycles(graph: Graph) -> list[list[str]]:
    """One cycle per back edge found by a depth-first search, each as ``[a, b, ..., a]``.

    Every graph with a cycle gives at least one; a graph without gives none.
    A cycle is reported once however many nodes it is entered from, starting
    at its node that comes first in the mapping. Self-loops count as cycles.
    """
    order = {node: i for i, node in enumerate(graph)}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = finished
    cycles: list[list[str]] = []
    seen: set[tuple[str, ...]] = set()
    for root in graph:
        if root in state:
            continue
        # Iterative DFS: (node, index of the next successor to visit).
        path: list[str] = [root]
        stack: list[tuple[str, int]] = [(root, 0)]
        state[root] = 1
        while stack:
            node, i = stack[-1]
            successors = graph[node]
            if i >= len(successors):
                stack.pop()
                path.pop()
                state[node] = 2
                continue
            stack[-1] = (node, i + 1)
            nxt = successors[i]
            if nxt not in graph:
                continue
            mark = state.get(nxt)
            if mark == 1:
                loop = path[path.index(nxt) :]
                start = min(range(len(loop)), key=lambda k: order[loop[k]])
                rotated = tuple(loop[start:] + loop[:start])
                if rotated not in seen:
                    seen.add(rotated)
                    cycles.append([*rotated, rotated[0]])
            elif mark is None:
                state[nxt] = 1
                path.append(nxt)
                stack.append((nxt, 0))
    return cycles


def reachable(graph: Graph, starts: Iterable[str]) -> set[str]:
    """Every node reachable from the start nodes, the start nodes included (when in the graph)."""
    seen: set[str] = set()
    todo = [s for s in starts if s in graph]
    while todo:
        node = todo.pop()
        if node in seen:
            continue
        seen.add(node)
        todo.extend(n for n in graph[node] if n in graph and n not in seen)
    return seen


def reverse(graph: Graph) -> dict[str, list[str]]:
    """The same graph with every edge turned around."""
    out: dict[str, list[str]] = {node: [] for node in graph}
    for node, successors in graph.items():
        for nxt in successors:
            if nxt in out and node not in out[nxt]:
                out[nxt].append(node)
    return out


def can_reach(graph: Graph, targets: Iterable[str]) -> set[str]:
    """Every node from which at least one of the targets is reachable (the targets included)."""
    return reachable(reverse(graph), targets)


def format_cycle(cycle: Sequence[str]) -> str:
    """``a -> b -> a``."""
    return " -> ".join(cycle)
