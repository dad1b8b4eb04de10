"""The inline path: a simple loop block body, run task after task in the runner's thread.

A job per task run and a machine per iteration cost far more than a small
task, and on an executor that runs each job on the spot in the runner's
thread anyway (``executor.runs_inline``: the default
:class:`~iterflow.executors.LocalExecutor`) they buy nothing. So when a body's
tasks are all plain (:func:`~iterflow.engine.scopes.inline_steps` decides that
once per run), :class:`InlineIteration` runs an iteration right here, task
after task in the graph's order, each through the loop driver a job would use
(:func:`~iterflow.engine.expand.drive`, which also fills the task run's keys
of the context), so each task run's own loop, retries, signals, state
handlers and events are those of any task. A plain task (a function with no
state handler, timeout or the like: :func:`~iterflow.engine.plain_calls.plain_function`)
is first called right here, as :func:`~iterflow.engine.expand.run_plain`
calls a chain's link: a return is its ``Success``, its ``Running`` and
``Success`` go to the store sink's task lane as values when that sink is the
only one; anything else goes on in drive from that call's outcome.

It checks only the one case it can decide alone — every upstream of the next
task simply succeeded, so the machine's rules say "run it with their results"
— and at anything else (a skip, a failure) it stops, and the block run hands
the rest of the iteration to a machine, given what already ran as finished.
Results and events are those of the machine path; the property tests run
both. What is saved is the machine, the job and the per-job context set-up:
the context is one dict for the block run, made current once per iteration.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from iterflow.context import _reset as _reset_context
from iterflow.context import _set as _set_context
from iterflow.core.state import Failed, Kind, Pending, State, plain_success
from iterflow.core.task import Task
from iterflow.engine.call import RETURNED, Outcome, from_exception
from iterflow.engine.expand import TaskRunSpec, drive, enter_task_run, record_stop
from iterflow.engine.plain_calls import plain_function
from iterflow.engine.scopes import BlockRelay
from iterflow.engine.tasklog import TaskLogger
from iterflow.engine.transitions import TaskTransitions, task_lane, task_run_event
from iterflow.errors import RunCancelled
from iterflow.naming import LABEL_KEY

if TYPE_CHECKING:
    from iterflow.engine.blocks import BlockRun

__all__ = ["SIMPLY_SUCCEEDED", "InlineIteration"]

#: Upstream states after which the machine's rule is "run it with their results".
SIMPLY_SUCCEEDED = frozenset({Kind.SUCCESS, Kind.CACHED})


class InlineIteration:
    """Runs a simple body's iterations of one block run; see the module docstring."""

    def __init__(self, run: BlockRun) -> None:
        blocks = run.blocks
        parent = run.parent
        self.block_run = run
        base_relay = parent.base_relay
        self.relay = BlockRelay(base_relay, 0) if base_relay is not None else None
        self.ctx: dict[str, Any] = dict(parent.base_context)
        self.ctx["logger"] = TaskLogger(self.ctx, self.relay)
        # Everything a step needs, looked up once per block run rather than per task run.
        steps = run.plan.inline or ()
        self.steps = [
            (
                step.task, cast(str, step.task.slug), step.upstream, step.keyed, step.constants,
                TaskRunSpec(
                    task=step.task,
                    map_index=None,
                    inputs={},
                    flow_run_id=blocks.run_id,
                    task_run_id="",
                    base_context=parent.base_context,
                    serializer=blocks.flow.serializer,
                    implied_running=blocks.implied_running,
                ),
                self._plain_step(step.task, blocks.flow.serializer),
            )
            for step in steps
        ]

    def _plain_step(self, task: Task, flow_serializer: str | None) -> tuple | None:
        """``(function, started, succeeded)`` for a task :meth:`_run_plain` may run, else None.

        ``started`` and ``succeeded`` are the sink's task lane (see
        :func:`~iterflow.engine.transitions.task_lane`), both None when nothing
        listens. A task whose events some sink wants as events takes :func:`drive`.
        """
        fn = plain_function(task)
        if fn is None or self.relay is None:
            return None if fn is None else (fn, None, None)
        lane = task_lane(self.relay, cast(str, task.slug), task.serializer or flow_serializer)
        return None if lane is None else (fn, lane[0], lane[1])

    def run(self, k: int, states: dict[Task, State]) -> bool:
        """Run iteration ``k`` into ``states``; False when it stops at a task to judge."""
        run = self.block_run
        ctx = self.ctx
        ctx["block_index"] = k
        ctx["block_indices"] = (*run.parent.block_indices, k)
        ctx["block_run_count"] = run.attempt
        relay = self.relay
        if relay is not None:
            relay.block_index = k
        prefix = run.prefix() + "/"
        plain = SIMPLY_SUCCEEDED
        token = _set_context(ctx)
        try:
            for task, slug, upstream, keyed, constants, spec, step in self.steps:
                for up in upstream:
                    if states[up].kind not in plain:
                        return False
                inputs = dict(constants)
                for key, up in keyed:
                    inputs[key] = states[up].result
                spec.inputs = inputs
                spec.task_run_id = prefix + slug
                try:
                    states[task] = (
                        drive(spec, ctx, relay) if step is None
                        else self._run_plain(spec, step, k)
                    )
                except Exception as exc:  # what the runner makes of a job that crashed
                    states[task] = self._crashed(task, spec, exc)
            return True
        finally:
            _reset_context(token)

    def _run_plain(self, spec: TaskRunSpec, step: tuple, k: int) -> State:
        """:func:`drive` for a plain task (see :meth:`_plain_step`), in fewer steps.

        As :func:`~iterflow.engine.expand.run_plain` does for a chain's link:
        the context filled as drive fills it, the function called, a return
        made its ``Success`` and its ``Running`` and ``Success`` handed to the
        sink's lane as values (stamped with block index ``k``), no state, event
        or transitions object made. Anything else — a signal, an error, a lane
        that declines — goes on in drive, from the outcome of that call.
        """
        fn, started, succeeded = step
        task = spec.task
        task_run_id = spec.task_run_id
        ctx = self.ctx
        # The keys drive sets before the first call: enter_task_run's, then its own.
        enter_task_run(ctx, spec)
        ctx["task_run_name"] = name = task.name
        ctx["_iterflow_cancel"] = spec.cancel
        ctx["loop_index"] = 0
        ctx["task_loop_count"] = 1
        ctx["task_run_count"] = 1
        if started is not None:
            head = (spec.flow_run_id, task_run_id, task.slug, name, None, None)
            if not started(head, 0, k):  # declined: drive makes the event instead
                return drive(spec, ctx, self.relay)
        try:
            value = fn(**spec.inputs)
        except (KeyboardInterrupt, RunCancelled) as stop:
            if started is not None:  # its Running is recorded: so is how it stopped
                record_stop(TaskTransitions(task, spec.flow_run_id, task_run_id, None,
                                            task.serializer or spec.serializer, self.relay),
                            Pending(), stop, 0)
            raise
        except Exception as exc:
            first = from_exception(exc)
        else:
            if started is None or succeeded(head, 0, k, value, ctx.get(LABEL_KEY)):
                return plain_success(value, 1)
            first = Outcome(RETURNED, value)
        return drive(spec, ctx, self.relay, first=first)

    def _crashed(self, task: Task, spec: TaskRunSpec, exc: Exception) -> State:
        blocks = self.block_run.blocks
        failed = Failed(
            f"task {task.name!r} in flow {blocks.flow.name!r} did not finish on "
            f"{blocks.executor_name}: {type(exc).__name__}: {exc}",
            exc,
            loop_count=0,
        )
        if blocks.emit is not None:
            blocks.emit(task_run_event(
                blocks.run_id, spec.task_run_id, cast(str, task.slug), task.name, None, 0, failed,
                False, task.serializer or blocks.flow.serializer, self.block_run.index,
            ))
        return failed
