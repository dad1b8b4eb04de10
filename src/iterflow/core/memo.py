"""What is derived from a flow's graph, kept until some flow's graph changes.

Running a flow validates it, lays out its loop blocks, computes its tasks'
identities and describes its shape: work that depends on the graph alone.
A subflow runs its child flow once per call (a map of 200 children, a child
per loop iteration), and doing all that for every child run cost more than
the child's task. :func:`derived` keeps each value per flow object until the
next change to *any* flow's graph (a task or an edge added, reference tasks
set: :func:`graph_changed`). Any flow rather than this one because a flow's
validity depends on the flows it calls (a cycle through a child flow), and
graphs are built before runs, not during them, so the counter rarely moves.

Values are shared between runs: callers treat them as read-only.

>>> from iterflow import Flow, task
>>> with Flow("f") as f:
...     t = task(lambda: 1, name="one")()
>>> derived(f, "n", lambda: len(f.tasks)), derived(f, "n", lambda: -1)
(1, 1)
>>> graph_changed(); derived(f, "n", lambda: -1)
-1
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["derived", "graph_changed"]

T = TypeVar("T")

# The number of graph changes so far, in a list so that bumping it needs no `global`.
_edits = [0]
# id(flow) -> (a weak reference to the flow, the edit count its values were derived
# at, {key: value}). By id, with the reference to tell a new object that took a dead
# one's id: a WeakKeyDictionary made a weak reference on every look-up, most of a
# look-up's cost (a child run makes several). A flow that goes away takes its entry
# with it; never pickled with the flow.
_memo: dict[int, tuple[weakref.ref, int, dict[str, Any]]] = {}


def graph_changed() -> None:
    """Forget every derived value: some flow's graph changed."""
    _edits[0] += 1


def derived(flow: Any, key: str, make: Callable[[], T]) -> T:
    """``make()``, or the value it gave for ``flow`` and ``key`` since the last change.

    An exception from ``make`` is not kept: the next call tries again. A
    ``flow`` that cannot be referenced weakly raises ``TypeError``.
    """
    entry = _memo.get(id(flow))
    if entry is None or entry[1] != _edits[0] or entry[0]() is not flow:
        entry = _entry(flow)
    values = entry[2]
    try:
        return values[key]  # type: ignore[no-any-return]
    except KeyError:
        value = values[key] = make()
        return value


def _entry(flow: Any) -> tuple[weakref.ref, int, dict[str, Any]]:
    """A new, empty entry for ``flow`` at the current edit count."""
    ident = id(flow)

    def forget(ref: weakref.ref) -> None:
        # Only this entry: the id may belong to another object by now.
        if _memo.get(ident, (None,))[0] is ref:
            del _memo[ident]

    entry = _memo[ident] = (weakref.ref(flow, forget), _edits[0], {})
    return entry
