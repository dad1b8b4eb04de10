"""Subflows: a flow used as a task of another flow.

Calling a :class:`~iterflow.Flow` inside ``with Flow(...)`` (or calling
``flow.as_task()``) adds a :class:`SubflowTask`. Each run of that task is a
*child flow run*: its parameters are the call's inputs, its value is the value
of the child's reference task (a dict by task name when it has several), and a
child that does not succeed fails the task, naming the child run.

Because it is an ordinary task, everything that works for a task works for a
subflow: ``map`` (a child run per element), loop blocks (a child run per
iteration), retries, timeouts, triggers and state handlers. What the child run
needs from the parent run (the store, the executor, the parent's ids) is
found at run time by :mod:`iterflow.runtime`; this module only describes.

Checked while the flow is built, so that a mistake shows where it was made:

- the call's inputs against the child's parameters (unknown or missing ones
  raise :class:`~iterflow.errors.SubflowParameterError`, naming both flows);
- cycles between flows (a flow calling itself, directly or through others)
  raise :class:`~iterflow.errors.CycleError` with the chain of flows.

>>> from iterflow import Flow, Parameter, task
>>> @task
... def double(x):
...     return 2 * x
>>> with Flow("child") as child:
...     d = double(Parameter("x"))
>>> with Flow("parent") as parent:
...     result = child(x=21)
>>> parent.run(store=None).result[result].result
42
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

from iterflow.core.memo import derived
from iterflow.core.task import Task
from iterflow.errors import CycleError, SubflowParameterError

if TYPE_CHECKING:
    from iterflow.core.flow import Flow

__all__ = ["SubflowTask", "check_no_cycle", "reference_values"]


#: :func:`iterflow.runtime.run_subflow`, once a subflow task has run.
_RUN_SUBFLOW: list[Any] = []


class SubflowTask(Task):
    """A task whose run is a run of another flow (``flow``); see the module docstring.

    Options are those of :class:`~iterflow.Task`; the name defaults to the
    child flow's name.

    >>> from iterflow import Flow, Parameter, task
    >>> with Flow("child") as child:
    ...     p = Parameter("x")
    >>> with Flow("parent") as parent:
    ...     value = child.as_task(max_retries=2)(x=1)
    >>> type(value).__name__, value.flow is child
    ('SubflowTask', True)
    """

    def __init__(self, flow: Flow, **options: Any) -> None:
        self.flow = flow
        options.setdefault("name", flow.name)
        super().__init__(**options)

    def run(self, **parameters: Any) -> Any:
        """Run the child flow with ``parameters``; its reference value, or raise ``FAIL``."""
        run = _RUN_SUBFLOW
        if not run:
            # Lazily, like Flow.run: describing a subflow never loads the engine (found
            # once: a map of children calls this once per child).
            from iterflow.runtime import run_subflow

            run.append(run_subflow)
        return run[0](self, parameters)

    def _signature(self) -> inspect.Signature:
        # The child's parameters, by keyword only: a flow takes its inputs by name.
        params = [
            inspect.Parameter(
                p.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=inspect.Parameter.empty if p.required else p.default,
            )
            for p in sorted(self.flow.parameters(), key=lambda p: p.name)
        ]
        return inspect.Signature(params)

    def _call_shape(self) -> Any:
        # Never shared with copies made before a parameter was added to the child flow.
        self.__dict__.pop("_shape", None)
        return super()._call_shape()

    def _bind_arguments(self, args: tuple, kwargs: dict, flow: Flow) -> dict[str, Any]:
        check_parameters(self.flow, flow, args, kwargs)
        return dict(kwargs)

    def _add_call(self, args, kwargs, upstream_tasks, flow, mapped: bool) -> Task:
        from iterflow.core.flow import Flow

        target = flow or Flow.active()
        if target is not None:
            check_no_cycle(target, self.flow)
        return super()._add_call(args, kwargs, upstream_tasks, flow, mapped)

    def __repr__(self) -> str:
        return f"<Subflow: {self.flow.name}>"


def check_parameters(child: Flow, parent: Flow, args: tuple, kwargs: dict) -> None:
    """Refuse a call of ``child`` in ``parent`` whose inputs do not fit its parameters."""
    declared = {p.name: p for p in child.parameters()}
    takes = ", ".join(sorted(declared)) or "no parameters"
    if args:
        raise SubflowParameterError(
            f"flow {parent.name!r} calls flow {child.name!r} with {len(args)} positional "
            f"argument(s); a flow takes its parameters by name ({takes}): call "
            f"{child.name}(name=value, ...)"
        )
    unknown = sorted(set(kwargs) - set(declared))
    if unknown:
        raise SubflowParameterError(
            f"flow {parent.name!r} calls flow {child.name!r} with unknown parameter(s) "
            f"{', '.join(unknown)}; flow {child.name!r} takes: {takes}"
        )
    missing = sorted(n for n, p in declared.items() if p.required and n not in kwargs)
    if missing:
        raise SubflowParameterError(
            f"flow {parent.name!r} calls flow {child.name!r} without its required "
            f"parameter(s) {', '.join(missing)}: pass them, as in "
            f"{child.name}({', '.join(m + '=...' for m in missing)})"
        )


def _calls(flow: Flow) -> list[Flow]:
    """The flows ``flow`` calls directly, in the order their calls were added."""
    seen: dict[int, Flow] = {}
    for t in flow.tasks_of(SubflowTask):
        seen.setdefault(id(t.flow), t.flow)
    return list(seen.values())


def _path(start: Flow, target: Flow) -> list[Flow] | None:
    """A chain of calls from ``start`` to ``target`` (both included), if there is one."""
    stack: list[tuple[Flow, list[Flow]]] = [(start, [start])]
    visited: set[int] = set()
    while stack:
        flow, path = stack.pop()
        if flow is target:
            return path
        if id(flow) in visited:
            continue
        visited.add(id(flow))
        stack.extend((callee, [*path, callee]) for callee in _calls(flow))
    return None


def check_no_cycle(parent: Flow, child: Flow) -> None:
    """Refuse ``parent`` calling ``child`` when ``child`` is, or calls, ``parent``.

    >>> from iterflow import Flow
    >>> with Flow("again") as again:
    ...     again()
    Traceback (most recent call last):
    ...
    iterflow.errors.CycleError: flow 'again' cannot call flow 'again': ...
    """
    path = _path(child, parent)
    if path is None:
        return
    chain = " -> ".join(repr(f.name) for f in (parent, *path))
    raise CycleError(
        f"flow {parent.name!r} cannot call flow {child.name!r}: the calls would go round "
        f"in a circle ({chain}). A flow cannot run itself, directly or through another; "
        f"to repeat work, use a loop (raise LOOP in a task, or `with loop(...)`).",
        path=[f.name for f in (parent, *path)],
    )


def check_subflows(flow: Flow) -> None:
    """For :meth:`Flow.validate`: no cycle through the flow's subflow calls."""
    for callee in _calls(flow):
        check_no_cycle(flow, callee)


def reference_values(flow: Flow, results: dict[Any, Any]) -> Any:
    """The value a child run gives its parent: its reference task's, or a dict by name.

    ``results`` maps the child's tasks to their final states. With several
    reference tasks the dict is keyed by task name (the slug where two share
    a name).
    """
    # Once per graph (core.memo): a map of children asks for the same flow's each time.
    refs = derived(flow, "reference_order", lambda: tuple(
        t for t in flow.sorted_tasks() if t in flow.reference_tasks()))
    if len(refs) == 1:
        state = results.get(refs[0])
        return None if state is None else state.result
    names = [t.name for t in refs]
    out: dict[str, Any] = {}
    for t in refs:
        key = t.name if names.count(t.name) == 1 else (t.slug or t.name)
        state = results.get(t)
        out[key] = None if state is None else state.result
    return out


def judged_tasks(flow: Flow) -> frozenset[Task] | None:
    """The flow-level tasks whose states decide the flow's state; None: the terminal ones.

    A reference task inside a loop block is judged by the outermost block
    around it: the flow's own scope sees the block, not its body.
    """
    chosen = flow._reference
    if chosen is None:
        return None
    from iterflow.core.block import block_layout

    enclosing = block_layout(flow).enclosing
    return frozenset(enclosing[t][-1] if enclosing.get(t) else t for t in chosen)
