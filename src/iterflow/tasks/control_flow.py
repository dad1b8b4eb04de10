"""Branching: ``ifelse``, ``switch``, ``case`` and ``merge``.

A branch is chosen at run time by a small condition task that either passes
or raises ``SKIP``. Every task on a branch not taken depends on that condition
task, so it is ``Skipped``, and the skip propagates downstream (unless a task
sets ``skip_on_upstream_skip=False``). ``merge`` joins branches: its result is
that of the first branch that was not skipped.

>>> from iterflow import Flow, case, merge, task
>>> with Flow("branch") as flow:                        # doctest: +SKIP
...     kind = classify(x)
...     with case(kind, "small"):
...         a = handle_small(x)
...     with case(kind, "large"):
...         b = handle_large(x)
...     result = merge(a, b)
"""

from __future__ import annotations

from typing import Any

from iterflow.core.flow import Flow, _block_stack
from iterflow.core.task import Task
from iterflow.core.triggers import all_successful
from iterflow.signals import SKIP

__all__ = ["CompareValue", "Merge", "case", "ifelse", "merge", "switch"]


class CompareValue(Task):
    """Passes when the condition equals ``value`` (or, with ``truthy``, has its truth)."""

    def __init__(self, value: Any, truthy: bool = False, **options: Any) -> None:
        self.value = value
        self.truthy = truthy
        options.setdefault("name", f"case({value!r})")
        super().__init__(**options)

    def run(self, condition: Any) -> bool:
        matches = bool(condition) is self.value if self.truthy else condition == self.value
        if not matches:
            raise SKIP(f"condition {condition!r} does not match {self.value!r}")
        return True


class Merge(Task):
    """The result of the first upstream branch that was not skipped.

    It receives its upstream *states* (not values), so it can tell a skipped
    branch from one that returned ``None``.
    """

    receives_states = True

    def __init__(self, **options: Any) -> None:
        options.setdefault("name", "merge")
        options.setdefault("skip_on_upstream_skip", False)
        options.setdefault("trigger", all_successful)
        super().__init__(**options)

    def run(self, **branches: Any) -> Any:
        for key in sorted(branches, key=lambda k: int(k.rsplit("_", 1)[1])):
            state = branches[key]
            if not state.is_skipped():
                return state.result
        raise SKIP("every branch was skipped")


def _flow(flow: Flow | None, what: str) -> Flow:
    flow = flow or Flow.active()
    if flow is None:
        raise RuntimeError(f"{what}() must be used inside `with Flow(...):` or given flow=")
    return flow


def ifelse(condition: Task, true_task: Task, false_task: Task, flow: Flow | None = None) -> None:
    """Run ``true_task`` when ``condition``'s result is truthy, else ``false_task``.

    The task not chosen, and everything downstream of it, is ``Skipped``.
    """
    flow = _flow(flow, "ifelse")
    for value, branch in ((True, true_task), (False, false_task)):
        gate = CompareValue(value, truthy=True, name=f"ifelse({value})")(condition, flow=flow)
        flow.add_edge(gate, branch)


def switch(condition: Task, cases: dict[Any, Task], flow: Flow | None = None) -> None:
    """Run the task in ``cases`` whose key equals ``condition``'s result; skip the others."""
    flow = _flow(flow, "switch")
    for value, branch in cases.items():
        gate = CompareValue(value)(condition, flow=flow)
        flow.add_edge(gate, branch)


def merge(*tasks: Task, flow: Flow | None = None) -> Task:
    """A task whose result is that of the first of ``tasks`` that was not skipped."""
    flow = _flow(flow, "merge")
    if not tasks:
        raise ValueError("merge() needs at least one task")
    return Merge()(**{f"branch_{i}": t for i, t in enumerate(tasks, 1)}, flow=flow)


class case:  # noqa: N801 - reads as a statement: `with case(cond, value):`
    """Tasks created inside the block run only when ``condition``'s result equals ``value``.

    >>> with case(kind, "large"):    # doctest: +SKIP
    ...     big = handle_large(x)
    """

    def __init__(self, condition: Task, value: Any, flow: Flow | None = None) -> None:
        self.condition = condition
        self.value = value
        self._flow = flow
        self._gate: Task | None = None
        self._token = None

    def __enter__(self) -> case:
        flow = _flow(self._flow, "case")
        self._gate = CompareValue(self.value)(self.condition, flow=flow)
        self._token = _block_stack.set((*_block_stack.get(), self))
        return self

    def __exit__(self, *exc: Any) -> None:
        _block_stack.reset(self._token)

    def task_added(self, flow: Flow, task: Task) -> None:
        """Called by the flow for each task created inside the block."""
        if task is not self._gate:
            flow.add_edge(self._gate, task)
