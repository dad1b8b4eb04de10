"""Edges, and the graph algorithms a flow needs: order and cycle detection.

Kept apart from :mod:`iterflow.core.flow` so that the flow class stays a
description with a small API, and these algorithms can be tested on their own.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from iterflow.errors import CycleError

__all__ = ["DownstreamView", "Edge", "find_path", "topological_order"]

#: A graph node: anything hashable (the flow passes tasks).
Node = TypeVar("Node", bound=Hashable)


@dataclass(frozen=True, eq=False)
class Edge:
    """``upstream`` must finish before ``downstream`` starts.

    With a ``key`` the edge also carries data: the upstream's result becomes
    the downstream's argument ``key``. ``mapped`` makes the downstream map over
    it; ``flattened`` flattens it one level first.
    """

    upstream_task: Any
    downstream_task: Any
    key: str | None = None
    mapped: bool = False
    flattened: bool = False

    def __repr__(self) -> str:
        key = f" [{self.key}{', mapped' if self.mapped else ''}]" if self.key else ""
        return f"<Edge {self.upstream_task.name} -> {self.downstream_task.name}{key}>"


def find_path(
    start: Node, goal: Node, children: Mapping[Node, Iterable[Node]]
) -> list[Node] | None:
    """A path from ``start`` to ``goal`` following ``children``, or None.

    Iterative depth-first search, so deep graphs do not hit the recursion limit.
    """
    if start == goal:
        return [start]
    parent: dict[Node, Node] = {start: start}
    stack = [start]
    while stack:
        node = stack.pop()
        for child in children.get(node, ()):
            if child in parent:
                continue
            parent[child] = node
            if child == goal:
                path = [child]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                return path[::-1]
            stack.append(child)
    return None


def topological_order(
    nodes: Iterable[Node], children: Mapping[Node, Iterable[Node]]
) -> list[Node]:
    """Nodes in dependency order; ties keep the order of ``nodes`` (stable, deterministic)."""
    nodes = list(nodes)
    position = {node: i for i, node in enumerate(nodes)}
    # Usually every edge already points forward (a flow's tasks are added after their
    # upstreams): then ``nodes`` is the answer, the one the heap below would give.
    if all(position[child] > i for i, node in enumerate(nodes) for child in children.get(node, ())):
        return nodes
    indegree = dict.fromkeys(nodes, 0)
    for node in nodes:
        for child in children.get(node, ()):
            indegree[child] += 1
    import heapq

    ready = [position[n] for n in nodes if indegree[n] == 0]
    heapq.heapify(ready)
    order: list[Node] = []
    while ready:
        node = nodes[heapq.heappop(ready)]
        order.append(node)
        for child in children.get(node, ()):
            indegree[child] -= 1
            if indegree[child] == 0:
                heapq.heappush(ready, position[child])
    if len(order) != len(nodes):
        # Flow.add_edge refuses an edge that closes a cycle, so this is a safety net for
        # a graph changed behind the flow's back.
        stuck = [n for n in nodes if indegree[n] > 0]
        raise CycleError(
            f"the graph has a cycle: {len(stuck)} node(s) wait on one another, e.g. "
            f"{stuck[0]!r}; build it with Flow.add_edge or set_dependencies, which refuse "
            f"an edge that closes a cycle"
        )
    return order


class DownstreamView(Mapping[Any, list[Any]]):
    """A read-only view of each task's downstream tasks, from its outgoing edges.

    What :func:`find_path` walks for the cycle check, without copying the graph.
    """

    def __init__(self, downstream: Mapping[Any, list[Edge]]) -> None:
        self._downstream = downstream

    def __getitem__(self, task: Any) -> list[Any]:
        return [e.downstream_task for e in self._downstream[task]]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._downstream)

    def __len__(self) -> int:
        return len(self._downstream)
