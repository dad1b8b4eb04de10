"""The flow's brain: a pure state machine, events in, instructions out.

:class:`FlowMachine` knows the graph and the final state of every task run so
far. Tell it that a task run finished (:meth:`FlowMachine.task_run_finished`)
and it answers with instructions: :class:`RunTask` for task runs that became
ready, :class:`Finished` for task runs it decided itself without running them
(skipped, trigger failed, a mapped parent whose children are all done, a task
already finished in the run being resumed). It does no I/O, starts no thread,
and never calls a task — the runner (:mod:`iterflow.engine.runner`) does that —
so every scheduling rule can be tested with plain values.

The rules, in the order they apply when a task's upstreams have all finished:

1. A task finished in the run being resumed keeps that state.
2. With ``skip_on_upstream_skip`` (the default), a skipped upstream skips it.
3. Its trigger sees ``{upstream_task: state}``; not met gives ``TriggerFailed``
   naming the upstream states that failed it.
4. Otherwise it runs, with each data edge's upstream result as an argument.

A mapped task applies 2 and 3 once to its unmapped upstreams, then again per child
with that child's element-wise upstream states, so one failed child of an
upstream map fails only the matching child downstream. Its parent state is
``Mapped`` once every child finished. The children themselves are
worked out by :func:`~iterflow.engine.mapping.expand_map`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from iterflow.core.graph import Edge
from iterflow.core.memo import derived
from iterflow.core.state import (
    Failed,
    Kind,
    Mapped,
    Skipped,
    State,
    Success,
    TriggerFailed,
    check_transition,
)
from iterflow.core.task import Task
from iterflow.core.triggers import all_successful, describe_upstream, offending_states
from iterflow.engine.mapping import NOTHING, expand_map
from iterflow.errors import MapError

__all__ = ["NOTHING", "Finished", "FlowMachine", "RunTask", "check_transition"]


@dataclass(slots=True)
class RunTask:
    """Run ``task`` (child ``map_index`` of a mapped task, or None) with ``inputs``.

    ``start_loop_index``/``loop_result`` say where its loop starts (a resumed
    run continues an unfinished loop). Read-only by convention: not a frozen
    dataclass, whose ``__init__`` costs a chain a fifth of a microsecond per task.
    """

    task: Task
    map_index: int | None
    inputs: dict[str, Any]
    start_loop_index: int = 0
    loop_result: Any = NOTHING


@dataclass(frozen=True, slots=True)
class Finished:
    """The machine decided this task run's final state without running it."""

    task: Task
    map_index: int | None
    state: State
    resumed: bool = False


class FlowMachine:
    """Decides which task runs are ready and what to do with each; see module docstring."""

    def __init__(
        self,
        flow: Any,
        resume_finished: dict[tuple[str, int | None], State] | None = None,
        resume_loops: dict[tuple[str, int | None], tuple[int, Any]] | None = None,
        settle: Callable[[Task, State], State] | None = None,
        judged: frozenset[Task] | None = None,
    ) -> None:
        self.flow = flow
        # The tasks that decide the flow's state (flow.set_reference_tasks); None: terminal.
        self.judged = judged
        # Given a task and a state decided here (skipped, trigger failed, mapped), return
        # the state to use: the runner passes the task's state handlers through it. The
        # machine itself stays free of user code.
        self.settle = settle
        # The graph's layout, laid out once per flow (a chain of N tasks has N of them,
        # and a flow is usually run more than once): shared, read-only, but ``remaining``,
        # which each machine counts down in its own copy.
        (self.order, self.edges_in, self.downstream, remaining, self._maps,
         self._terminal) = _layout(flow)
        self.remaining: dict[Task, int] = dict(remaining)
        self.constants = flow.constants
        self.states: dict[Task, State] = {}
        self.resume_finished = resume_finished or {}
        self.resume_loops = resume_loops or {}
        self._children: dict[Task, list[State | None]] = {}
        self._children_left: dict[Task, int] = {}
        self._ready: deque[Task] = deque()

    # -- inputs from the runner -------------------------------------------------
    def start(self) -> list[RunTask | Finished]:
        """Instructions for the tasks with no upstream."""
        self._ready.extend(t for t in self.order if self.remaining[t] == 0)
        return self._drain([])

    def task_run_finished(self, task: Task, map_index: int | None, state: State) -> list:
        """A task run the runner started has finished with ``state``."""
        out: list[RunTask | Finished] = []
        if map_index is None:
            # _finish written out: this runs once per task run.
            self.states[task] = state
            ready = self._ready
            remaining = self.remaining
            for down in self.downstream[task]:
                left = remaining[down] = remaining[down] - 1
                if left == 0:
                    ready.append(down)
        else:
            self._child_finished(task, map_index, state, out)
        # Nothing ready (a map's child but its last): no call to make.
        return self._drain(out) if self._ready else out

    @property
    def done(self) -> bool:
        """Every task has a final state."""
        return len(self.states) == len(self.order)

    def unfinished(self) -> list[Task]:
        """Tasks without a final state yet, in order."""
        return [t for t in self.order if t not in self.states]

    # -- internals ------------------------------------------------------------
    def _drain(self, out: list) -> list:
        # A worklist, not recursion: a long chain of skips must not hit the recursion limit.
        ready, states, maps, resumed = self._ready, self.states, self._maps, self.resume_finished
        while ready:
            task = ready.popleft()
            if (
                task.trigger is all_successful and task not in maps
                # Asked only when resuming (or in a block's iteration, whose machine is
                # given the states around it): a new run has nothing recorded.
                and (not resumed or resumed.get((task.slug, None)) is None)  # type: ignore[arg-type]
            ):
                # The usual case, in one pass over the edges, with no upstream mapping built
                # and no call: every upstream Success or Cached lets it run (as _gate would
                # say), with its inputs as _inputs would make them. Else _on_ready decides.
                constants = self.constants.get(task)
                inputs = dict(constants) if constants else {}
                wants_states = task.receives_states
                for e in self.edges_in[task]:
                    state = states[e.upstream_task]
                    if state.kind not in _PLAIN_SUCCESS:
                        break
                    if e.key is not None:
                        inputs[e.key] = state if wants_states else state.result
                else:
                    out.append(
                        RunTask(task, None, inputs) if not self.resume_loops
                        else self._run(task, None, inputs)
                    )
                    continue
            self._on_ready(task, out)
        return out

    def _finish(self, task: Task, state: State) -> None:
        self.states[task] = state
        for down in self.downstream[task]:
            self.remaining[down] -= 1
            if self.remaining[down] == 0:
                self._ready.append(down)

    def _decide(self, task: Task, state: State, out: list, resumed: bool = False) -> None:
        if not resumed and task.state_handlers and self.settle is not None:
            state = self.settle(task, state)
        out.append(Finished(task, None, state, resumed))
        self._finish(task, state)

    def _child_finished(self, task: Task, map_index: int, state: State, out: list) -> None:
        self._children[task][map_index] = state
        self._children_left[task] -= 1
        if self._children_left[task] == 0:
            children = self._children.pop(task)
            del self._children_left[task]
            self._decide(task, Mapped(map_states=cast(list[State], children)), out)

    def _on_ready(self, task: Task, out: list) -> None:
        # Every task in a flow has its slug (no cast(): a call per task on the hot path).
        slug: str = task.slug  # type: ignore[assignment]
        # Asked only when resuming: a new run has nothing recorded (and a chain's every
        # link would pay for the look-up).
        previous = self.resume_finished.get((slug, None)) if self.resume_finished else None
        if previous is not None:
            self._decide(task, previous, out, resumed=True)
            return
        edges = self.edges_in[task]
        states = self.states
        upstream = {e.upstream_task: states[e.upstream_task] for e in edges}
        if task not in self._maps:
            verdict = self._gate(task, upstream)
            if verdict is not None:
                self._decide(task, verdict, out)
                return
            out.append(self._run(task, None, self._inputs(task, edges, upstream)))
            return
        # A mapped task: gate on what is shared, then expand into children.
        mapped = [e for e in edges if e.mapped]
        per_child = {e.upstream_task for e in mapped if upstream[e.upstream_task].is_mapped()}
        shared = {t: s for t, s in upstream.items() if t not in per_child}
        verdict = self._gate(task, shared)
        if verdict is not None:
            self._decide(task, verdict, out)
            return
        try:
            shared_inputs = self._inputs(task, edges, upstream, mapped=False)
            children = expand_map(task, edges, upstream, shared_inputs)
        except MapError as exc:
            self._decide(task, Failed(str(exc), result=exc, loop_count=0), out)
            return
        if not children:
            self._decide(task, Mapped(map_states=[]), out)
            return
        self._children[task] = [None] * len(children)
        self._children_left[task] = len(children)
        for index, (inputs, child_upstream) in enumerate(children):
            previous = self.resume_finished.get((slug, index))
            if previous is not None:
                out.append(Finished(task, index, previous, True))
                self._child_finished(task, index, previous, out)
                continue
            verdict = self._gate(task, child_upstream)
            if verdict is not None:
                if task.state_handlers and self.settle is not None:
                    verdict = self.settle(task, verdict)
                out.append(Finished(task, index, verdict))
                self._child_finished(task, index, verdict, out)
                continue
            out.append(self._run(task, index, inputs))

    def _run(self, task: Task, map_index: int | None, inputs: dict[str, Any]) -> RunTask:
        start = (
            self.resume_loops.get((cast(str, task.slug), map_index)) if self.resume_loops
            else None
        )
        if start is None:
            return RunTask(task, map_index, inputs)
        return RunTask(task, map_index, inputs, start[0], start[1])

    def _inputs(self, task: Task, edges, upstream: dict, mapped: bool = True) -> dict[str, Any]:
        inputs = dict(self.constants.get(task, ()))
        wants_states = task.receives_states
        for e in edges:
            if e.key is None or (e.mapped and not mapped):
                continue
            state = upstream[e.upstream_task]
            inputs[e.key] = state if wants_states else state.result
        return inputs

    def _gate(self, task: Task, upstream: dict[Task, State]) -> State | None:
        trigger = task.trigger
        # The usual case, decided without building anything: the default trigger and
        # every upstream Success or Cached (no skip to pass on, nothing to judge).
        if trigger is all_successful:
            for s in upstream.values():
                if s.kind not in _PLAIN_SUCCESS:
                    break
            else:
                return None
        if task.skip_on_upstream_skip:
            skipped = [str(t.slug) for t, s in upstream.items() if s.is_skipped()]
            if skipped:
                return Skipped(f"upstream task skipped: {', '.join(skipped)}", loop_count=0)
        try:
            met = trigger(upstream)
        except Exception as exc:
            return TriggerFailed(
                f"task {task.name!r}: its trigger {_name(trigger)} raised "
                f"{type(exc).__name__}: {exc}",
                result=exc,
                loop_count=0,
            )
        if met:
            return None
        bad = offending_states(trigger, upstream)
        described = describe_upstream(bad)
        return TriggerFailed(
            f"trigger {_name(trigger)} of task {task.name!r} was not met by upstream "
            f"states ({described})",
            loop_count=0,
        )

    def flow_state(self) -> State:
        """The flow's state once :attr:`done`.

        Success when every terminal task (or every reference task, when the flow
        names them) succeeded or was skipped, else Failed.
        """
        judged = self.judged
        what = "terminal" if judged is None else "reference"
        terminal = (
            self._terminal if judged is None else [t for t in self.order if t in judged])
        bad = [t for t in terminal if not self.states[t].is_successful()]
        if bad:
            names = ", ".join(f"{t.slug} ({self.states[t].name})" for t in bad)
            return Failed(f"some {what} tasks did not succeed: {names}")
        return Success(f"all {what} tasks succeeded")


#: A graph's layout as the machine reads it: tasks in order, each task's edges in and
#: distinct downstream tasks, how many distinct upstreams each waits for, the
#: tasks with a mapped input, and the terminal tasks (none downstream) in order.
Layout = tuple[
    tuple[Task, ...], dict[Task, list[Edge]], dict[Task, list[Task]], dict[Task, int], set[Task],
    tuple[Task, ...],
]


def _layout(flow: Any) -> Layout:
    """``flow``'s :data:`Layout`, kept until its graph changes (:mod:`iterflow.core.memo`).

    A flow (or a loop block's view, once per iteration) is laid out once, not once
    per machine; an object that cannot be remembered weakly is laid out each time.
    """
    try:
        return derived(flow, "machine_layout", lambda: _lay_out(flow))
    except TypeError:  # not weakly referenceable (a stand-in for a flow, in a test)
        return _lay_out(flow)


def _lay_out(flow: Any) -> Layout:
    order: tuple[Task, ...] = flow.sorted_tasks()
    edge_lists = getattr(flow, "edge_lists", None)
    if edge_lists is not None:  # a Flow, a ScopeView: their own lists, read, never copied
        ins, outs = edge_lists()
        upstream_edges, downstream_edges = ins.__getitem__, outs.__getitem__
    else:
        upstream_edges, downstream_edges = flow.upstream_edges, flow.downstream_edges
    edges_in: dict[Task, list[Edge]] = {}
    downstream: dict[Task, list[Task]] = {}
    remaining: dict[Task, int] = {}
    # Tasks with a mapped input, found once: most tasks have none, and _on_ready
    # need not look through their edges for one each time.
    maps: set[Task] = set()
    for t in order:
        edges = edges_in[t] = upstream_edges(t)
        n = len(edges)
        remaining[t] = n if n < 2 else len({e.upstream_task for e in edges})
        for e in edges:
            if e.mapped:
                maps.add(t)
                break
        out = downstream_edges(t)
        # One edge out (a chain's every link) needs no de-duplication.
        downstream[t] = (
            [out[0].downstream_task] if len(out) == 1
            else list(dict.fromkeys([e.downstream_task for e in out]))
        )
    return order, edges_in, downstream, remaining, maps, tuple(
        t for t in order if not downstream[t])


#: Upstream kinds that let the default trigger run a task with no more questions.
_PLAIN_SUCCESS = frozenset({Kind.SUCCESS, Kind.CACHED})


def _name(fn: Any) -> str:
    return getattr(fn, "__name__", None) or repr(fn)

