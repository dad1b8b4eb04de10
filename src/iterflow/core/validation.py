"""Checking a flow's graph before it runs: :meth:`iterflow.Flow.validate`'s work.

Edges within the flow, no cycle, each task's inputs against its function, task
run names against the inputs, subflow calls, and loop blocks' layout — each a
clear error naming the task and the flow.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING

from iterflow.errors import ArgumentError, CycleError, FlowDefinitionError
from iterflow.naming import check_run_name

if TYPE_CHECKING:
    from iterflow.core.flow import Flow
    from iterflow.core.task import Task

__all__ = ["check_inputs", "validate_flow"]


def validate_flow(flow: Flow) -> None:
    """Raise the first problem :meth:`iterflow.Flow.validate` describes, if any."""
    tasks = flow._tasks
    for edge in flow._edges:
        if edge.upstream_task in tasks and edge.downstream_task in tasks:
            continue  # the usual case, asked without a tuple made per edge
        for t in (edge.upstream_task, edge.downstream_task):
            if t not in tasks:
                raise FlowDefinitionError(
                    f"flow {flow.name!r}: edge {edge} refers to task {t.name!r}, which is "
                    f"not in the flow; add it with flow.add_task(...), or build edges "
                    f"with flow.add_edge(...), which adds both ends"
                )
    try:
        order = flow.sorted_tasks()
    except CycleError as exc:
        raise CycleError(f"flow {flow.name!r}: {exc}") from None
    upstream, constants = flow._upstream, flow.constants
    for t in flow._tasks:
        # check_inputs' first question, asked here with no set built and no call for the
        # usual task copy (one input, from an edge, whose name a copy of its function took
        # already): a fresh flow is validated when it first runs, a question per copy.
        shape, edges = t._shape, upstream[t]
        if (
            shape is None or len(edges) != 1 or t in constants
            or edges[0].key not in shape.single  # as {key} (or no names) in shape.fitting
        ):
            check_inputs(flow, t)
        if t.task_run_name is not None:
            check_run_name(t, flow.name)
    from iterflow.core.subflow import check_subflows

    check_subflows(flow)
    # Imported here: core.block builds on core.flow. The engine checks blocks
    # with the same function, so a flow valid here is one the engine can lay out.
    from iterflow.core.block import block_layout
    from iterflow.core.memo import derived

    # Kept (core.memo) for the engine, which lays out the same blocks when the flow runs.
    derived(flow, "block_layout", lambda: block_layout(flow, order))


def check_inputs(flow: Flow, task: Task) -> None:
    """Raise :class:`ArgumentError` when ``task``'s inputs do not suit its function."""
    # A loop rather than a set comprehension (a call of its own): once per task copy,
    # and a fresh flow is validated when it first runs.
    keys: set[str] = set()
    for e in flow._upstream[task]:
        if e.key is not None:
            keys.add(e.key)
    constants = flow.constants.get(task)
    if constants:
        keys.update(constants)
    shape = task._call_shape()
    error = shape.misfit(frozenset(keys))
    if error is not None:
        params = [
            p for p in shape.signature.parameters.values()
            if p.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
        ]
        raise ArgumentError(
            f"Task {task.name!r} in flow {flow.name!r} has inputs {sorted(keys)} its "
            f"function cannot take: {error}. It accepts: {', '.join(p.name for p in params)}; "
            f"give it inputs by those names (or let the function take **kwargs)."
        )
