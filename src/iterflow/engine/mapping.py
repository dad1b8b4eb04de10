"""Mapping: a mapped task's children, worked out from its upstream states.

Pure functions of values, used by the :class:`~iterflow.engine.machine.FlowMachine`
when a mapped task becomes ready. :func:`expand_map` zips the mapped arguments
(the shortest decides how many children) and takes an upstream that is itself
mapped element-wise, states included, so one failed child upstream fails only
the matching child here. ``flatten(...)`` arguments are flattened one level
first; a failed upstream child keeps one slot, carrying its failure to the
matching child. A value that cannot be mapped over raises
:class:`~iterflow.errors.MapError`, which the machine turns into the task's
``Failed`` state.

:data:`NOTHING` marks an absent value (a first iteration has no ``loop_result``)
wherever ``None`` is a value like any other.
"""

from __future__ import annotations

from typing import Any, cast

from iterflow.core.state import Mapped, State, Success
from iterflow.errors import MapError

__all__ = ["NOTHING", "MapError", "expand_map"]


class _Nothing:
    """Marks an absent value (a first iteration has no loop_result)."""

    def __repr__(self) -> str:
        return "NOTHING"

    def __reduce__(self) -> str:
        return "NOTHING"


NOTHING: Any = _Nothing()


def expand_map(
    task: Any, edges: list, upstream: dict[Any, State], shared_inputs: dict[str, Any]
) -> list[tuple[dict[str, Any], dict[Any, State]]]:
    """The children of a mapped task: ``[(inputs, upstream_states), ...]``.

    Mapped arguments are zipped (the shortest decides how many children); an
    upstream that is itself mapped is taken element-wise, states included.
    """
    columns = []
    for edge in edges:
        if not edge.mapped:
            continue
        state = upstream[edge.upstream_task]
        if state.is_mapped():
            items = list(state.result)
            item_states: list[State] | None = list(cast(Mapped, state).map_states)
        else:
            items = _as_list(task, edge, state.result)
            item_states = None
        if edge.flattened:
            items, item_states = _flatten(task, edge, items, item_states)
        columns.append((edge, items, item_states))
    count = min(len(items) for _, items, _ in columns) if columns else 0
    wants_states = task.receives_states
    children = []
    for i in range(count):
        inputs = dict(shared_inputs)
        child_upstream = dict(upstream)
        for edge, items, item_states in columns:
            if item_states is not None:
                child_upstream[edge.upstream_task] = item_states[i]
            if edge.key is not None:
                inputs[edge.key] = (
                    (item_states[i] if item_states is not None else Success(result=items[i]))
                    if wants_states
                    else items[i]
                )
        children.append((inputs, child_upstream))
    return children


def _as_list(task: Any, edge: Any, value: Any) -> list:
    if isinstance(value, (str, bytes)):
        # Almost always a mistake: a string would map character by character.
        why = "is a {kind}, which would map by character"
        raise MapError(_not_iterable(task, edge, value, why))
    try:
        return list(value)
    except TypeError:
        why = "is a {kind}, which is not iterable"
        raise MapError(_not_iterable(task, edge, value, why)) from None


def _not_iterable(task: Any, edge: Any, value: Any, why: str) -> str:
    return (
        f"task {task.name!r} maps over argument {edge.key!r}, but the value from "
        f"{edge.upstream_task.slug!r} {why.format(kind=type(value).__name__)}; pass a list, "
        f"or wrap the argument in unmapped(...) to give it whole to every child"
    )


def _flatten(task: Any, edge: Any, items: list,
             item_states: list[State] | None) -> tuple[list, list[State] | None]:
    flat: list = []
    flat_states: list[State] | None = [] if item_states is not None else None
    for j, item in enumerate(items):
        if item_states is not None and flat_states is not None:
            child_state = item_states[j]
            if not child_state.is_successful():
                flat.append(None)  # one slot carrying the failure to the matching child
                flat_states.append(child_state)
                continue
            for sub in _as_list(task, edge, item):
                flat.append(sub)
                flat_states.append(child_state)
        else:
            flat.extend(_as_list(task, edge, item))
    return flat, flat_states
