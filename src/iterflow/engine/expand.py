"""The loop driver: one task run, iteration by iteration, to its final state.

:func:`run_task_run` is the job an executor runs. It drives one task run to
its end with a plain ``while`` loop (:func:`drive`): set the context's loop
keys, call the function once (:func:`~iterflow.engine.call.call_once`), turn
the outcome into the next state. ``LOOP`` is caught the moment it is raised
and becomes a ``Looped`` outcome; nothing recurses. Only the last loop result
is kept, so memory does not grow with the number of iterations; the history
streams out as events.

:func:`drive` is also what the inline path of loop blocks
(:mod:`iterflow.engine.inline`) calls for each body task run, with one context
dict for the whole iteration: it is the one place that fills a task run's keys
of ``iterflow.context`` (name, slug, run id, tags, map index; a ``loop_result``
left by the task run before is not ours), so both paths give tasks the same
context.

A retry runs the failed iteration again with the loop result as it was
handed over (by ``LOOP``, or by a resume), even when the failed attempt
changed it in place: while a task can be retried (``max_retries``), the
driver keeps each handed-over value pickled (:func:`keep_for_retry`; not
for immutable values) and gives each retry a fresh copy. Tasks without
retries pay nothing for this. A value that cannot be pickled is handed to the
retry as it is, and so is the value of a task that asks for a retry with
``RETRY`` although it has no ``max_retries``.

This is the engine's hot path. With no state handler and no event sink the
loop makes no state objects for ``Running``/``Looped`` at all; with them, each
transition goes through :class:`~iterflow.engine.transitions.TaskTransitions`.
The runner's usual task run (its own thread, nothing to emit, a plain task:
a chain's every link) takes :func:`run_plain`, which makes that first call
itself and hands anything but a return to :func:`drive`.
A mapped task's children are worked out in :mod:`iterflow.engine.mapping`.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from iterflow.context import _current
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
    plain_success,
)
from iterflow.durable import sleep as durable_sleep
from iterflow.engine.call import (
    FAILED,
    LOOPED,
    RETRY_ASKED,
    RETURNED,
    SKIPPED,
    SUCCEEDED,
    TIMED_OUT,
    Outcome,
    call_once,
    from_exception,
)
from iterflow.engine.mapping import NOTHING
from iterflow.engine.plain_calls import PLAIN_RUN, plain_call
from iterflow.engine.protocols import CancelFlag, CheckpointSource
from iterflow.engine.tasklog import task_logger
from iterflow.engine.transitions import Emit, TaskLane, TaskTransitions, task_lane
from iterflow.errors import LoopLimitError, RunCancelled
from iterflow.naming import LABEL_KEY, clean_text, render_run_name
from iterflow.pickling import dumps

__all__ = ["TaskRunSpec", "drive", "keep_for_retry", "plain_context",
           "record_stop", "run_plain", "run_task_run"]

# Stands for the task run's state where nothing reads it (no handlers, no events).
_UNUSED: Any = None
#: A driver's loop lane before the first Looped asked for it.
_UNASKED: Any = object()


@dataclass(slots=True)
class TaskRunSpec:
    """Everything a job needs to run one task run, anywhere (picklable with cloudpickle)."""

    task: Any
    map_index: int | None
    flow_run_id: str
    task_run_id: str
    inputs: dict[str, Any] = field(default_factory=dict)
    base_context: dict[str, Any] = field(default_factory=dict)
    start_loop_index: int = 0
    loop_result: Any = NOTHING
    serializer: str | None = None
    #: Where a re-scheduled job (a lost Dask worker) can find the last recorded
    #: iteration of this task run: an object with ``last_loop(task_run_id)``, asked
    #: with ``task_run_id`` (which names one task run, inside a loop block too).
    checkpoint_source: CheckpointSource | None = None
    #: Set by the runner to stop the loop before its next iteration (a cancelled
    #: run); an object with ``is_set()``, or None where jobs run in other processes.
    cancel: CancelFlag | None = None
    #: No sink needs the Running that follows a Looped (see EventBus.implied_running).
    implied_running: bool = False


def run_task_run(
    spec: TaskRunSpec,
    emit: Emit | None = None,
    *,
    base_context: dict[str, Any] | None = None,
    inputs: dict[str, Any] | None = None,
    cancel: CancelFlag | None = None,
) -> State:
    """Run one task run — every iteration, retry and timeout — and return its final state.

    ``base_context``, ``inputs`` and ``cancel``, when given, stand for the
    spec's fields of those names. The runner passes them apart from the spec,
    as the values an executor may send once for many jobs (see
    :meth:`iterflow.executors.base.Executor.submit`).
    """
    if base_context is not None:
        spec.base_context = base_context
    if inputs is not None:
        spec.inputs = inputs
    if cancel is not None:
        spec.cancel = cancel
    if spec.task.is_async:  # awaited on an event loop, by the same rules (iterflow.engine.aio)
        from iterflow.engine.aio import run_async_task_run

        return run_async_task_run(spec, emit)
    start, loop_result = spec.start_loop_index, spec.loop_result
    if spec.checkpoint_source is not None:
        found = spec.checkpoint_source.last_loop(spec.task_run_id)
        if found is not None and found[0] > start:
            start, loop_result = found
    ctx = dict(spec.base_context)
    ctx["logger"] = task_logger(ctx, emit)
    # The context variable itself, not iterflow.context's _set/_reset: one call less
    # each way for every task run.
    token = _enter(ctx)
    try:
        return drive(spec, ctx, emit, start, loop_result)
    finally:
        _leave(token)


def plain_context(base_context: dict[str, Any]) -> dict[str, Any]:
    """What :func:`run_plain` copies for each task run of a scope whose context is ``base_context``.

    ``base_context`` with the task run's keys filled in as :func:`drive` fills them,
    in their order (the ones that differ per task run hold None here, for run_plain
    to set): a copy of it has the keys of ``dict(base_context)`` filled key by key,
    in the same order, without the two resizes of a dict growing from the base's few
    keys to twice as many. The caller keeps one per scope; the base must not change.
    """
    ctx = dict(base_context)
    ctx["logger"] = None
    if "loop_result" in ctx:  # as drive: a loop of the task whose context this copies
        del ctx["loop_result"]
        ctx.pop("task_loop_result", None)
    ctx["task_name"] = None
    ctx["task_slug"] = None
    ctx["task_run_id"] = None
    ctx["task_tags"] = None
    ctx["map_index"] = None
    ctx.pop(LABEL_KEY, None)
    ctx["task_run_name"] = None
    ctx["_iterflow_cancel"] = None
    ctx["loop_index"] = 0
    ctx["task_loop_count"] = 1
    ctx["task_run_count"] = 1
    return ctx


def run_plain(task: Any, inputs: dict[str, Any], template: dict[str, Any],
              task_run_id: str, map_index: int | None, cancel: CancelFlag | None,
              emit: Emit | None, lane: TaskLane | None,
              spec: Callable[..., TaskRunSpec], *spec_args: Any) -> State | None:
    """:func:`run_task_run` for the usual task run, made in this thread, in fewer steps.

    For a task run with no job around it (the runner's thread runs it),
    starting afresh and with no checkpoint source (the runner checks these),
    of a plain task: a plain ``@task`` function, or a subflow task (its
    ``run`` is the child run), with no state handler, ``timeout``,
    ``log_stdout`` or ``task_run_name``. None, with nothing done,
    for any other task (asked here, not by a call of its own). Either nothing
    listens (``emit`` None) or the sinks' ``lane`` records its ``Running``
    and ``Success`` (see :func:`~iterflow.engine.transitions.task_lane`).
    ``template`` is :func:`plain_context` of the scope's base context.

    It fills ``iterflow.context`` as :func:`drive` would and calls the function;
    a return is its Success, as drive makes it. Anything else (a signal, an
    error, a cancelled run, a lane that declines) goes to drive, with the
    outcome of that first call: ``spec(*spec_args, True)`` gives the task run's
    :class:`TaskRunSpec` then (for this thread: ``inline``). A chain of N tasks
    makes N of these: no spec, one frame instead of three, no Outcome, a
    Success made without a call of its class
    (:func:`~iterflow.core.state.plain_success`), no state or event for either
    transition.
    """
    call = plain_call(task)
    if call is None:
        return None
    # The keys run_task_run and drive fill, in their order: the template has them all,
    # each task run sets the ones of its own (loop_index and the counts are the same).
    ctx = template.copy()
    ctx["logger"] = task_logger(ctx, emit)
    ctx["task_name"] = name = task.name
    ctx["task_slug"] = task.slug
    ctx["task_run_id"] = task_run_id
    ctx["task_tags"] = task.tags
    ctx["map_index"] = map_index
    ctx["task_run_name"] = name
    ctx["_iterflow_cancel"] = cancel
    token = _enter(ctx)
    try:
        if cancel is not None and cancel.is_set():
            return drive(spec(*spec_args, True), ctx, emit)  # which says Cancelled, as usual
        if lane is not None:
            head = (template["flow_run_id"], task_run_id, task.slug, name, map_index, None)
            if not lane[0](head, 0, lane[2]):  # declined: drive makes the event instead
                return drive(spec(*spec_args, True), ctx, emit)
        try:
            value = call(**inputs)
        except (KeyboardInterrupt, RunCancelled) as stop:
            if emit is not None:  # its Running is recorded: so is how it stopped
                run = spec(*spec_args, True)
                record_stop(TaskTransitions(task, run.flow_run_id, task_run_id, map_index,
                                             task.serializer or run.serializer, emit),
                             Pending(), stop, 0)
            raise
        except Exception as exc:
            # Driven on outside this block: an error of a later iteration raised while
            # this one is being handled would chain it (as __context__, a LOOP and its
            # result in every traceback and pickle of that error).
            first = from_exception(exc)
        else:
            if lane is None or lane[1](head, 0, lane[2], value, ctx.get(LABEL_KEY)):
                return plain_success(value, 1)
            first = Outcome(RETURNED, value)
        return drive(spec(*spec_args, True), ctx, emit, first=first)
    finally:
        _leave(token)


def drive(spec: TaskRunSpec, ctx: dict[str, Any], emit: Emit | None, loop_index: int = 0,
          loop_result: Any = NOTHING, first: Outcome | None = None) -> State:
    """Drive ``spec``'s task run to its end in ``ctx``, the context its task reads.

    ``ctx`` must already be the current context (:mod:`iterflow.context`) and
    hold the run's keys and a ``logger``; this fills in the task run's own. The
    loop starts at ``loop_index`` with ``loop_result`` (a resumed loop).

    ``first``, when given, is what the first call of the first iteration gave,
    made already by :func:`run_plain` in ``ctx`` as filled in here: the driver
    goes on from it, as if it had made that call itself (for a task with no
    state handler, as run_plain's; that iteration's ``Running`` was recorded
    already, by run_plain's lane, when there is anything to emit).
    """
    task = spec.task
    if first is None:  # else run_plain filled the task run's keys, and the call may have
        # labelled its iteration (a label this driver would have left where it was)
        enter_task_run(ctx, spec)
    # A plain @task's run() only calls its function: call that, one frame less per call
    # (not when a subclass or task.copy(run=...) gave the task a run of its own).
    plain_run = type(task).run is PLAIN_RUN and "run" not in task.__dict__
    fn = task.fn if plain_run else task.run
    inputs = spec.inputs
    # Named once per task run, never per iteration (iterflow.naming).
    run_name = (
        render_run_name(task, inputs, ctx["logger"].warning)
        if task.task_run_name is not None else None
    )
    ctx["task_run_name"] = run_name or task.name
    timeout = task.timeout
    stdout = ctx["logger"].info if task.log_stdout else None
    plain = timeout is None and stdout is None
    # The first call made already: its iteration goes the not-plain way once, to take it.
    calls_plain = plain
    plain = plain and first is None
    max_loops = task.max_loops
    max_retries = task.max_retries
    moves = (
        TaskTransitions(task, spec.flow_run_id, spec.task_run_id, spec.map_index,
                        task.serializer or spec.serializer, emit, run_name)
        if task.state_handlers or emit is not None
        else None
    )
    # The sink's lane for this task run's plain Running and Success states: taken as
    # values, with no state or event made for them (see transitions.task_lane).
    run_lane = (
        task_lane(emit, task.slug, moves.serializer)
        if moves is not None and emit is not None and not task.state_handlers and not moves.sync
        else None
    )
    run_head = (*moves.head, run_name) if run_lane is not None else ()  # type: ignore[union-attr]
    # The first iteration's Running, recorded already by run_plain (given ``first``).
    started = first is not None
    # The Running after a Looped: skipped when only sinks that do not need it listen.
    implied = spec.implied_running and not task.state_handlers
    after_looped = False
    # The state before the next transition, for handlers and events; none to keep without.
    state: State = Pending() if moves is not None else _UNUSED
    has_result = loop_result is not NOTHING
    # A retry starts from the loop result as it was handed over, even if the failed
    # attempt changed it in place: kept pickled, only while the task can be retried.
    retries = max_retries > 0
    kept = keep_for_retry(loop_result) if retries and has_result else None
    run_count = 1
    cancel = spec.cancel
    ctx["_iterflow_cancel"] = cancel  # iterflow.sleep stops waiting when it is set
    if first is not None:
        cancel = None  # asked already, before that first call
    lane: Any = _UNASKED  # the sinks' loop lane, once asked
    lane_head: tuple[Any, ...] = ()
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
        if moves is not None and not (after_looped and implied) and not started and (
            run_lane is None or not run_lane[0](run_head, loop_index, run_lane[2])
        ):
            state = moves.move(state, Running(loop_index=loop_index), loop_index)
            if state.is_finished():
                return moves.ended(state, loop_index)
        after_looped = started = False

        try:
            if plain:  # call_once's own first case, without the call to it
                try:
                    value = fn(**inputs)
                except Exception as exc:
                    outcome = from_exception(exc)
                else:
                    if moves is None:  # returned, with nothing to tell: the RETURNED case
                        return Success(result=value, loop_count=loop_index + 1)
                    outcome = Outcome(RETURNED, value)
            elif first is None:
                outcome = call_once(fn, inputs, timeout, stdout)
            else:  # the call run_plain made: from here on, as usual
                outcome, first = first, None
                plain, cancel = calls_plain, spec.cancel
        except (KeyboardInterrupt, RunCancelled) as stop:
            # Interrupted inside the function (Ctrl-C or SIGTERM in this thread): record
            # this task run as Cancelled at this iteration, then let the runner stop.
            if moves is not None:
                record_stop(moves, state, stop, loop_index)
            raise
        kind = outcome.kind

        if kind == LOOPED:
            if max_loops is not None and loop_index + 1 >= max_loops:
                final: State = _loop_limit(spec, task, loop_index)
            else:
                loop_result = outcome.value
                has_result = True
                if moves is not None:
                    label = outcome.label
                    label = ctx.pop(LABEL_KEY, None) if label is None else _loop_label(ctx, label)
                    if lane is _UNASKED:  # asked once, at the first Looped (a property)
                        lane, lane_head = moves.looped_lane, moves.lane_head
                    # A sink's lane takes a plain Looped as values, with no state or
                    # event made for it (see transitions.looped_lane); else the usual way.
                    if lane is None or outcome.message is not None or not lane(
                        lane_head, loop_index, loop_result, label
                    ):
                        looped = Looped(outcome.message, loop_result, loop_index=loop_index)
                        state = moves.move(state, looped, loop_index, label)
                        if state.is_finished():
                            return moves.ended(state, loop_index)
                        if state.is_looped():  # a handler's Looped state is the one used
                            loop_result = state.result
                if retries:
                    kept = keep_for_retry(loop_result)
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
                    # Recorded like iterflow.sleep: a resume waits only what is left of it.
                    durable_sleep(task.retry_delay)
                if kept is not None:
                    loop_result = pickle.loads(kept)
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
            label = outcome.label  # a LOOP past max_loops ends the loop: its label counts
            label = ctx.pop(LABEL_KEY, None) if label is None else _loop_label(ctx, label)
            if kind == RETURNED and run_lane is not None and run_lane[1](
                run_head, loop_index, run_lane[2], final.result, label
            ):
                return final
            state = moves.move(state, final, loop_index, label)
            return moves.ended(state, loop_index)
        return final


#: The context variable's own methods, bound once: ``_current.set(...)`` looks the method
#: up and binds it at each call (Python 3.11 cannot specialize that look-up).
_enter = _current.set
_leave = _current.reset

#: Types whose values cannot change in place: a retry may reuse them as they are.
_IMMUTABLE = frozenset({int, float, complex, bool, str, bytes, type(None)})


def keep_for_retry(value: Any) -> bytes | None:
    """``value`` pickled, so that each retry can start from a fresh copy of it.

    None when there is nothing to keep (an immutable value, NOTHING) or when it
    cannot be pickled: a retry then gets the value itself, as it is.
    """
    if type(value) in _IMMUTABLE or value is NOTHING:
        return None
    try:
        return dumps(value)
    except Exception:
        return None


def record_stop(moves: TaskTransitions, state: State, stop: BaseException,
                 loop_index: int) -> None:
    """Record the task run as Cancelled at ``loop_index``: ``stop`` interrupted its call."""
    why = "cancelled by Ctrl-C" if isinstance(stop, KeyboardInterrupt) else str(stop)
    moves.move(state, Cancelled(why, loop_count=loop_index + 1), loop_index)


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


def enter_task_run(ctx: dict[str, Any], spec: TaskRunSpec) -> None:
    """Fill ``ctx`` with the task run's own keys (``drive`` and ``aio.drive_async``)."""
    task = spec.task
    if "loop_result" in ctx:
        # A flow run started inside a task copies that task's context, and the inline
        # path's context still holds the task run before: that loop is not ours.
        del ctx["loop_result"]
        ctx.pop("task_loop_result", None)
    ctx["task_name"] = task.name
    ctx["task_slug"] = task.slug
    ctx["task_run_id"] = spec.task_run_id
    ctx["task_tags"] = task.tags
    ctx["map_index"] = spec.map_index
    ctx.pop(LABEL_KEY, None)  # a label the task run before left in a shared context


def _loop_label(ctx: dict[str, Any], given: Any) -> str | None:
    """The label ``LOOP(label=given)`` gives its iteration; one set before it is dropped."""
    ctx.pop(LABEL_KEY, None)
    return clean_text(given)
