"""A flow's graph as read: edges, neighbours, roots and ends, order, reference tasks.

:class:`FlowGraph` is mixed into :class:`~iterflow.core.flow.Flow`, which
builds the graph (``add_task``, ``add_edge``) and keeps it in the attributes
declared below; these methods only read it, but for
:meth:`~FlowGraph.set_reference_tasks`, which chooses among its tasks.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, TypeVar

from iterflow.core.graph import Edge, topological_order
from iterflow.core.memo import graph_changed
from iterflow.core.task import FunctionTask, Task
from iterflow.errors import FlowDefinitionError

if TYPE_CHECKING:
    from iterflow.core.parameter import Parameter

__all__ = ["FlowGraph"]

T = TypeVar("T", bound=Task)


class FlowGraph:
    """The graph-reading methods of a :class:`~iterflow.core.flow.Flow`."""

    # Set by Flow.__init__ and kept by Flow.add_task / add_edge.
    name: str
    _tasks: dict[Task, None]
    # The tasks that are not plain ``@task`` calls (of another type than FunctionTask),
    # in the order they were added: see tasks_of.
    _others: dict[Task, None]
    _edges: dict[Edge, None]
    _upstream: dict[Task, list[Edge]]
    _downstream: dict[Task, list[Edge]]
    _order: tuple[Task, ...] | None
    _reference: tuple[Task, ...] | None

    def upstream_edges(self, task: Task) -> list[Edge]:
        """Edges into ``task``."""
        return list(self._upstream.get(task, ()))

    def downstream_edges(self, task: Task) -> list[Edge]:
        """Edges out of ``task``."""
        return list(self._downstream.get(task, ()))

    def edge_lists(self) -> tuple[dict[Task, list[Edge]], dict[Task, list[Edge]]]:
        """Every task's edges in and out, as the flow keeps them: read them, never change them.

        For the engine, which lays out a graph once per run: :meth:`upstream_edges`
        and :meth:`downstream_edges` copy a list per call.
        """
        return self._upstream, self._downstream

    def upstream_tasks(self, task: Task) -> set[Task]:
        """Tasks ``task`` waits for."""
        return {e.upstream_task for e in self._upstream.get(task, ())}

    def downstream_tasks(self, task: Task) -> set[Task]:
        """Tasks waiting for ``task``."""
        return {e.downstream_task for e in self._downstream.get(task, ())}

    def root_tasks(self) -> set[Task]:
        """Tasks with no upstream."""
        return {t for t in self._tasks if not self._upstream[t]}

    def terminal_tasks(self) -> set[Task]:
        """Tasks with no downstream."""
        return {t for t in self._tasks if not self._downstream[t]}

    def set_reference_tasks(self, tasks: Iterable[Task] | Task) -> None:
        """Decide the flow's state, and its value as a subflow, by these tasks.

        By default the terminal tasks do. The flow succeeds when every
        reference task succeeded or was skipped; called as a subflow it gives
        the reference task's value (a dict by task name when there are several).

        >>> from iterflow import Flow, task
        >>> @task
        ... def one():
        ...     return 1
        >>> with Flow("refs") as flow:
        ...     a = one()
        ...     b = one(upstream_tasks=[a])
        >>> flow.set_reference_tasks([a])
        >>> flow.reference_tasks() == {a}
        True
        """
        tasks = (tasks,) if isinstance(tasks, Task) else tuple(tasks)
        for t in tasks:
            if t not in self._tasks:
                raise FlowDefinitionError(
                    f"flow {self.name!r}: reference task {getattr(t, 'name', t)!r} is not in "
                    f"the flow; pass tasks returned by calls inside `with Flow({self.name!r}):`"
                )
        self._reference = tasks or None
        graph_changed()

    def reference_tasks(self) -> set[Task]:
        """The tasks that decide the flow's state: those given to :meth:`set_reference_tasks`,
        else the terminal tasks."""
        if self._reference is not None:
            return set(self._reference)
        return self.terminal_tasks()

    # -- in order ---------------------------------------------------------------
    def sorted_tasks(self) -> tuple[Task, ...]:
        """Every task in dependency order (ties in the order the tasks were added)."""
        if self._order is None:
            order = tuple(self._tasks)
            # Usually every edge points forward (tasks are added after their upstreams):
            # then the order they were added in is the answer, the one topological_order
            # would give, found with no graph built for it (a run of a fresh flow sorts it).
            position = dict(zip(order, range(len(order))))
            for e in self._edges:
                if position[e.downstream_task] <= position[e.upstream_task]:
                    children = {
                        t: [e.downstream_task for e in es] for t, es in self._downstream.items()
                    }
                    order = tuple(topological_order(self._tasks, children))
                    break
            self._order = order
        return self._order

    def parameters(self) -> set[Parameter]:
        """The flow's :class:`~iterflow.Parameter` tasks."""
        from iterflow.core.parameter import Parameter

        return set(self.tasks_of(Parameter))

    def tasks_of(self, kind: type[T]) -> list[T]:
        """The flow's tasks that are instances of ``kind``, in the order they were added.

        Looked for among the tasks that are not plain ``@task`` calls, which the flow
        keeps apart as they are added (unless ``kind`` takes plain ones too): a run
        asks for a flow's parameters, subflow calls and loop blocks, and a big flow
        of plain tasks has few others, or none.
        """
        pool = self._tasks if issubclass(FunctionTask, kind) else self._others
        return [t for t in pool if isinstance(t, kind)]

    def get_tasks(self, name: str | None = None, slug: str | None = None) -> list[Task]:
        """Tasks with this name and/or slug, in the order they were added."""
        if name is None and slug is None:
            return list(self._tasks)
        return [
            t for t in self._tasks
            if (name is None or t.name == name) and (slug is None or t.slug == slug)
        ]
