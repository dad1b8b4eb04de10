"""Unrolling: a task run's loop, iteration by iteration, and a map into children.

:func:`run_task_run` is the job an executor runs. It drives one task run to
its end with a plain ``while`` loop: set the context's loop keys, call the
function once (:func:`~iterflow.engine.call.call_once`), turn the outcome
into the next state. ``LOOP`` is caught the moment it is raised and becomes
a ``Looped`` outcome; nothing recurses. Only the last loop result is kept, so
memory does not grow with the number of iterations; the history streams out
as events.

This is the engine's hot path. With no state handler and no event sink the
loop makes no state objects for ``Running``/``Looped`` at all; with them, each
transition goes through :class:`_Transitions`.

:func:`expand_map` computes a mapped task's children: their inputs and their
element-wise upstream states.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field
from typing import Any

from iterflow.context import _reset as _reset_context
from iterflow.context import _set as _set_context
from iterflow.core.state import (
    Cancelled,
    Failed,
    Looped,
    Pending,
    Retrying,
    Running,
    Skipped,
    State,
    Success,
    TimedOut,
    check_transition,
)
from iterflow.engine.call import (
    FAILED,
    LOOPED,
    RETRY_ASKED,
    RETURNED,
    SKIPPED,
    SUCCEEDED,
    TIMED_OUT,
    call_once,
)
from iterflow.engine.tasklog import TaskLogger
from iterflow.errors import InvalidTransition, IterflowError, LoopLimitError, RunCancelled
from iterflow.events import TaskRunEvent

__all__ = ["NOTHING", "MapError", "TaskRunSpec", "expand_map", "run_task_run"]


class _Nothing:
    """Marks an absent value (a first iteration has no loop_result)."""

    def __repr__(self) -> str:
        return "NOTHING"

    def __reduce__(self) -> str:
        return "NOTHING"


NOTHING: Any = _Nothing()
# Stands for the task run's state where nothing reads it (no handlers, no events).
_UNUSED: Any = None


class MapError(IterflowError):
    """A mapped argument cannot be mapped over (not iterable)."""


@dataclass(slots=True)
class TaskRunSpec:
    """Everything a job needs to run one task run, anywhere (picklable with cloudpickle)."""

    task: Any
    map_index: int | None
    inputs: dict[str, Any]
    flow_run_id: str
    task_run_id: str
    base_context: dict[str, Any] = field(default_factory=dict)
    start_loop_index: int = 0
    loop_result: Any = NOTHING
    serializer: str | None = None
    #: Where a re-scheduled job (a lost Dask worker) can find the last recorded
    #: iteration of this task run: an object with ``last_loop(task_run_id)``, asked
    #: with ``task_run_id`` (which names one task run, inside a loop block too).
    checkpoint_source: Any = None
    #: Set by the runner to stop the loop before its next iteration (a cancelled
    #: run); an object with ``is_set()``, or None where jobs run in other processes.
    cancel: Any = None
    #: No sink needs the Running that follows a Looped (see EventBus.implied_running).
    implied_running: bool = False


def run_task_run(spec: TaskRunSpec, emit: Any = None) -> State:
    """Run one task run — every iteration, retry and timeout — and return its final state."""
    task = spec.task
    if task.is_async:  # awaited on an event loop, by the same rules (iterflow.engine.aio)
        from iterflow.engine.aio import run_async_task_run

        return run_async_task_run(spec, emit)
    ctx, start, loop_result = _task_context(spec, emit)
    token = _set_context(ctx)
    try:
        return _drive(spec, task, ctx, emit, start, loop_result)
    finally:
        _reset_context(token)


def _task_context(spec: TaskRunSpec, emit: Any) -> tuple[dict, int, Any]:
    """A task run's context, and the iteration and loop result its loop starts at."""
    task = spec.task
    start, loop_result = spec.start_loop_index, spec.loop_result
    if spec.checkpoint_source is not None:
        found = spec.checkpoint_source.last_loop(spec.task_run_id)
        if found is not None and found[0] > start:
            start, loop_result = found
    ctx = dict(spec.base_context)
    # A flow run started inside a task copies that task's context; its loop is not ours.
    ctx.pop("loop_result", None)
    ctx.pop("task_loop_result", None)
    ctx["task_name"] = task.name
    ctx["task_slug"] = task.slug
    ctx["task_run_id"] = spec.task_run_id
    ctx["task_tags"] = task.tags
    ctx["map_index"] = spec.map_index
    ctx["logger"] = TaskLogger(ctx, emit)
    return ctx, start, loop_result


def _drive(spec: TaskRunSpec, task: Any, ctx: dict, emit: Any, loop_index: int,
           loop_result: Any) -> State:
    fn = task.run
    inputs = spec.inputs
    timeout = task.timeout
    stdout = ctx["logger"].info if task.log_stdout else None
    max_loops = task.max_loops
    max_retries = task.max_retries
    moves = _Transitions(spec, task, emit) if (task.state_handlers or emit is not None) else None
    # The Running after a Looped: skipped when only sinks that do not need it listen.
    implied = spec.implied_running and not task.state_handlers
    after_looped = False
    # The state before the next transition, for handlers and events; none to keep without.
    state: State = Pending() if moves is not None else _UNUSED
    has_result = loop_result is not NOTHING
    run_count = 1
    cancel = spec.cancel
    while True:
        if cancel is not None and cancel.is_set():
            # The run was cancelled: stop before this iteration, recorded and resumable.
            stopped = Cancelled("cancelled before this iteration started", loop_count=loop_index)
            if moves is None:
                return stopped
            return moves.ended(moves.move(state, stopped, loop_index), loop_index)
        ctx["loop_index"] = loop_index
        ctx["task_loop_count"] = loop_index + 1
        ctx["task_run_count"] = run_count
        if has_result:
            ctx["loop_result"] = ctx["task_loop_result"] = loop_result
        if moves is not None and not (after_looped and implied):
            state = moves.move(state, Running(loop_index=loop_index), loop_index)
            if state.is_finished():
                return moves.ended(state, loop_index)
        after_looped = False

        try:
            outcome = call_once(fn, inputs, timeout, stdout)
        except (KeyboardInterrupt, RunCancelled) as stop:
            # Interrupted inside the function (Ctrl-C or SIGTERM in this thread): record
            # this task run as Cancelled at this iteration, then let the runner stop.
            if moves is not None:
                why = "cancelled by Ctrl-C" if isinstance(stop, KeyboardInterrupt) else str(stop)
                moves.move(state, Cancelled(why, loop_count=loop_index + 1), loop_index)
            raise
        kind = outcome.kind

        if kind == LOOPED:
            if max_loops is not None and loop_index + 1 >= max_loops:
                final: State = _loop_limit(spec, task, loop_index)
            else:
                loop_result = outcome.value
                has_result = True
                if moves is not None:
                    looped = Looped(outcome.message, loop_result, loop_index=loop_index)
                    state = moves.move(state, looped, loop_index)
                    if state.is_finished():
                        return moves.ended(state, loop_index)
                    if state.is_looped():  # a handler's Looped state is the one used
                        loop_result = state.result
                loop_index += 1
                run_count = 1
                after_looped = True
                continue
        elif kind == RETURNED:
            final = Success(result=outcome.value, loop_count=loop_index + 1)
        elif kind == SUCCEEDED:
            final = Success(outcome.message, outcome.value, loop_count=loop_index + 1)
        elif kind == SKIPPED:
            final = Skipped(outcome.message, loop_count=loop_index + 1)
        elif kind == FAILED:
            final = Failed(
                outcome.message or f"task {task.name!r} raised FAIL", loop_count=loop_index + 1
            )
        else:  # ERRORED, TIMED_OUT, RETRY_ASKED
            if kind == RETRY_ASKED or run_count <= max_retries:
                if moves is not None:
                    note = outcome.message or "RETRY requested"
                    retrying = Retrying(
                        f"{note}; retry {run_count} of iteration {loop_index}",
                        loop_index=loop_index,
                        run_count=run_count,
                    )
                    state = moves.move(state, retrying, loop_index)
                    if state.is_finished():
                        return moves.ended(state, loop_index)
                if task.retry_delay:
                    time.sleep(task.retry_delay)
                run_count += 1
                continue
            cls = TimedOut if kind == TIMED_OUT else Failed
            where = _where(spec, task, loop_index)
            final = cls(
                f"{where} failed: {outcome.message}",
                outcome.value,
                loop_count=loop_index + 1,
                traceback=outcome.traceback,
            )
        if moves is not None:
            state = moves.move(state, final, loop_index)
            return moves.ended(state, loop_index)
        return final


def _where(spec: TaskRunSpec, task: Any, loop_index: int) -> str:
    flow = spec.base_context.get("flow_name")
    mapped = f" (map_index {spec.map_index})" if spec.map_index is not None else ""
    return f"task {task.name!r}{mapped} in flow {flow!r}, iteration {loop_index},"


def _loop_limit(spec: TaskRunSpec, task: Any, loop_index: int) -> Failed:
    mapped = f" (map_index {spec.map_index})" if spec.map_index is not None else ""
    error = LoopLimitError(
        f"task {task.name!r}{mapped} in flow {spec.base_context.get('flow_name')!r} raised LOOP "
        f"at loop_index {loop_index}, but max_loops={task.max_loops} allows iterations "
        f"0..{task.max_loops - 1}; raise max_loops, or return normally to end the loop"
    )
    return Failed(str(error), error, loop_count=loop_index + 1)


class _Transitions:
    """The slow path of a transition: state handlers, checks and events."""

    __slots__ = ("emit", "handlers", "head", "history", "serializer", "spec", "sync", "task")

    def __init__(self, spec: TaskRunSpec, task: Any, emit: Any) -> None:
        self.spec = spec
        self.task = task
        self.emit = emit
        self.handlers = task.state_handlers
        self.history: collections.deque[State] = collections.deque(maxlen=6)
        self.sync = task.checkpoint == "every"
        self.serializer = task.serializer or spec.serializer
        # What every event of this task run shares, in TaskRunEvent's field order.
        self.head = (spec.flow_run_id, spec.task_run_id, task.slug, task.name, spec.map_index)

    def move(self, old: State, new: State, loop_index: int) -> State:
        if self.handlers:
            new = self._handle(old, new, loop_index)
        if self.emit is not None:
            try:
                self.emit(self._event(new, loop_index))
            except Exception as exc:
                # Recording failed (an unserializable loop result, a full disk): fail the
                # task run rather than go on unrecorded, and try to record that.
                new = Failed(str(exc), exc, loop_count=loop_index + 1)
                try:
                    self.emit(self._event(new, loop_index))
                except Exception:
                    pass
        return new

    def _handle(self, old: State, new: State, loop_index: int) -> State:
        task = self.task
        for handler in self.handlers:
            try:
                returned = handler(task, old, new)
                if returned is not None:
                    check_transition(old, returned, task.name, list(self.history))
                    new = returned
            except InvalidTransition as exc:
                message = f"state handler {_name(handler)}: {exc}"
                new = Failed(message, exc, loop_count=loop_index + 1)
            except Exception as exc:
                new = Failed(
                    f"state handler {_name(handler)} of task {task.name!r} raised "
                    f"{type(exc).__name__}: {exc}",
                    exc,
                    loop_count=loop_index + 1,
                )
        self.history.append(old)
        if new.loop_count is None and new.is_finished():
            new.loop_count = loop_index + 1  # before it is emitted, so sinks see it too
        return new

    def ended(self, state: State, loop_index: int) -> State:
        if state.loop_count is None:
            state.loop_count = loop_index + 1
        return state

    def _event(self, state: State, loop_index: int) -> TaskRunEvent:
        # tuple.__new__ skips the named tuple's argument handling: one event per
        # iteration. The fields: head, loop_index, state, sync, serializer, block_index.
        return _make_event(
            TaskRunEvent, (*self.head, loop_index, state, self.sync, self.serializer, None)
        )


_make_event = tuple.__new__
# _Transitions._event lays the fields out by hand; keep it in step with the record.
assert TaskRunEvent._fields == (
    "flow_run_id", "task_run_id", "task_slug", "task_name", "map_index", "loop_index", "state",
    "sync", "serializer", "block_index",
), "TaskRunEvent changed: update _Transitions._event"


def _name(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)


# -- mapping --------------------------------------------------------------------
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
            item_states: list[State] | None = list(state.map_states)
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


def _flatten(task, edge, items, item_states):
    flat: list = []
    flat_states: list[State] | None = [] if item_states is not None else None
    for j, item in enumerate(items):
        child_state = item_states[j] if item_states is not None else None
        if child_state is not None and not child_state.is_successful():
            flat.append(None)  # one slot carrying the failure to the matching child
            flat_states.append(child_state)
            continue
        for sub in _as_list(task, edge, item):
            flat.append(sub)
            if flat_states is not None:
                flat_states.append(child_state)
    return flat, flat_states
