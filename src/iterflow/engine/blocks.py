"""Running loop blocks: one small flow machine per iteration, on the runner's executor.

The graph work is done before anything runs (:mod:`iterflow.engine.scopes`:
a :class:`~iterflow.engine.scopes.BlockPlan` per block, a
:class:`~iterflow.engine.scopes.Scope` per iteration). This module runs the
iterations. The runner knows only one thing of it: every
:class:`~iterflow.engine.scopes.BlockInstruction` goes to :meth:`Blocks.act`,
whose answer goes back on the runner's list of things to do.

Iterations
----------
When the parent's machine says "run the block node" (a
:class:`~iterflow.engine.scopes.StartBlock`), :class:`Blocks` starts a
:class:`BlockRun`. Each iteration gets a fresh machine over the block's view,
told that the feeders and the placeholders ``it.result`` / ``it.index`` have
already finished with this iteration's values; its instructions go back to
the runner as ``(scope, instruction)`` pairs, so body task runs are submitted
like any other and run in parallel where the graph and the executor allow.

When an iteration's machine has nothing left to do the scope queues an
:class:`~iterflow.engine.scopes.EndOfIteration`; the block then judges the
iteration like a flow — its terminal tasks and its ``result`` and ``until``
tasks must have succeeded — and either starts the next iteration, retries
this one from its start with the same carried value (after a
:class:`~iterflow.engine.scopes.Pause` when it has a ``retry_delay``), or
ends: ``Success`` with the last carried value when ``until`` was truthy, a
failed state naming the limit for ``max_loops``, the loop's ``timeout`` or
the retries. The block node's own transitions (``Running``, ``Looped(k)``
with the carried value, ``Retrying``, the final state) are emitted like a
looping task's (:func:`~iterflow.engine.transitions.emit_or_fail`), which is
all the store needs to resume at the first unfinished iteration. As a loop's:
a plain ``Looped`` goes to the sinks' looped lane as values where they offer
one (:func:`~iterflow.engine.transitions.looped_lane`; not inside another
block), and the ``Running`` after a ``Looped`` is made only for sinks that
need it (``EventBus.implied_running``). The finished
state goes to the parent scope's machine as the block node's, and the flow
goes on.

"The same carried value" means the value as it was handed over, even when
the failed attempt changed it in place: a block with ``max_retries`` keeps
each iteration's carried value pickled
(:func:`~iterflow.engine.expand.keep_for_retry`) and starts each retry from
a fresh copy, as a retried task does.

When the executor runs jobs inline anyway (``executor.runs_inline``) and a
body is simple, an iteration runs without a machine or jobs
(:mod:`iterflow.engine.inline`); at anything it cannot decide alone it hands
the rest of the iteration to a machine here.

Only the current iteration is kept in memory; each finished iteration's
states are dropped but for the flow's result, which shows every body task as
it was in its block's last iteration.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Callable
from typing import Any, cast

from iterflow.core.block import LoopBlock
from iterflow.core.state import (
    Cancelled,
    Failed,
    Kind,
    Looped,
    Pending,
    Retrying,
    Running,
    Skipped,
    State,
    Success,
    TimedOut,
    TriggerFailed,
    plain_success,
)
from iterflow.core.task import Task
from iterflow.engine.expand import keep_for_retry
from iterflow.engine.inline import SIMPLY_SUCCEEDED, InlineIteration
from iterflow.engine.machine import FlowMachine, RunTask
from iterflow.engine.mapping import NOTHING
from iterflow.engine.scopes import (
    BlockInstruction,
    BlockPlan,
    BlockRelay,
    EndOfIteration,
    Pause,
    Scope,
    StartBlock,
)
from iterflow.engine.transitions import emit_or_fail, looped_lane, task_run_event
from iterflow.errors import LoopLimitError
from iterflow.events import ResumePoint, TaskRunEvent
from iterflow.naming import clean_text
from iterflow.runids import iteration_prefix, latest_attempt

__all__ = ["BlockRun", "Blocks"]


class Blocks:
    """The loop blocks of one flow run: their plans, their runs, what they leave behind."""

    def __init__(self, flow: Any, plans: dict[LoopBlock, BlockPlan], run_id: str,
                 emit: Callable[[Any], None] | None, resume: ResumePoint | None, *,
                 inline: bool = False, executor_name: str = "the executor",
                 implied_running: bool = False) -> None:
        self.flow = flow
        self.implied_running = implied_running
        self.plans = plans
        self.run_id = run_id
        self.emit = emit
        self.resume = resume
        #: Simple bodies may run without jobs: the executor would run them on the spot anyway.
        self.inline = inline
        #: How messages name the executor (a job that crashed).
        self.executor_name = executor_name
        self.active: dict[BlockRun, None] = {}  # insertion-ordered set
        #: Each body task's state in its block's latest iteration, for the flow's result.
        self.last_states: dict[Task, State] = {}

    def act(self, scope: Scope, instr: BlockInstruction) -> list[tuple[Scope, Any]]:
        """Act on one of the blocks' instructions; the instructions that follow.

        A :class:`~iterflow.engine.scopes.Pause` comes here once its delay has passed.
        """
        if isinstance(instr, StartBlock):  # the parent machine said "run this block node"
            run = BlockRun(self, scope, self.plans[cast(LoopBlock, instr.instr.task)], instr.instr)
            self.active[run] = None
            return run.begin_iteration()
        if isinstance(instr, EndOfIteration):
            return instr.run.iteration_ended()
        if isinstance(instr, Pause):
            return instr.run.begin_iteration()
        raise TypeError(f"not an instruction for loop blocks: {instr!r}")

    def resumed_iteration(self, prefix: str) -> tuple[int, Any] | None:
        """``(attempt, what it has)`` for the latest recorded attempt at iteration ``prefix``.

        A retried iteration's attempts have their own ids (``.../attemptN``); a
        resumed run continues the latest one, keeping what finished well in it,
        as a resumed flow keeps its finished tasks.
        """
        if self.resume is None:
            return None
        iterations = self.resume.iterations
        found = latest_attempt(iterations, prefix)
        return None if found is None else (found[0], iterations[found[1]])

    def cancel(self, why: str) -> None:
        """Ctrl-C or SIGTERM: every running block ends ``Cancelled``, innermost first."""
        for run in reversed(list(self.active)):
            self.last_states.update(run.current)
            run.move(Cancelled(why, loop_count=run.index + 1))
        self.active.clear()

    def results(self, root_states: dict[Task, State]) -> dict[Task, State]:
        """The flow's result: every task, body tasks as in their block's last iteration.

        A body task whose block never ran an iteration (skipped, its trigger
        failed, cancelled first) gets a state saying so.
        """
        states = {**self.last_states, **root_states}
        for node in reversed(list(self.plans)):  # outer blocks first: they come later in order
            block_state = states.get(node)
            for t in node.members:
                if t not in states:
                    states[t] = _not_run(node, block_state)
        return states


def _not_run(node: LoopBlock, block_state: State | None) -> State:
    why = f"its loop block {node.slug!r} ran no iteration"
    if block_state is None:
        return Cancelled(why, loop_count=0)
    why += f" (the block is {block_state.name})"
    if block_state.is_skipped():
        return Skipped(why, loop_count=0)
    if block_state.is_cancelled():
        return Cancelled(why, loop_count=0)
    return TriggerFailed(why, loop_count=0)

class BlockRun:
    """One run of a loop block, iteration after iteration; see the module docstring."""

    def __init__(self, blocks: Blocks, parent: Scope, plan: BlockPlan, instr: RunTask) -> None:
        node = plan.node
        self.blocks = blocks
        self.parent = parent
        self.plan = plan
        self.node = node
        self.task_run_id = parent.task_run_id(node, None)
        self.slug = cast(str, node.slug)
        until = node.until_task
        assert until is not None  # block_layout refuses a block without one before it runs
        self.until: Task = until
        inputs = instr.inputs
        self.feeder_states: dict[Task, State] = {t: inputs[key] for key, t in plan.feeders}
        initial = inputs["initial"].result if isinstance(node.initial, Task) else node.initial
        self.index = instr.start_loop_index
        self.carried = initial if instr.loop_result is NOTHING else instr.loop_result
        self.attempt = 1  # attempt at the current iteration, from 1
        # A retried iteration starts from the carried value as it was handed over, even
        # if the failed attempt changed it in place: kept pickled when there are retries.
        self.retries = node.max_retries > 0
        self.kept: bytes | None = None
        self.first = True  # only the first iteration can continue a resumed one
        self.started = time.monotonic()
        self.state: State = Pending()
        self.scope: Scope | None = None
        #: The current iteration's task states so far (for the flow's result on cancel).
        self.current: dict[Task, State] = {}
        self.sync = node.checkpoint == "every"
        self.serializer = node.serializer or blocks.flow.serializer
        #: The label of the iteration being judged (it.next(label=...)), for its events.
        self.label: str | None = None
        self.inline = InlineIteration(self) if plan.inline is not None and blocks.inline else None
        # The sinks' lane for the block node's plain Looped states (see _looped), and the
        # Running after each Looped, made only for sinks that need it (as a loop's).
        self.looped_lane = self._looped_lane()
        self.lane_head = (blocks.run_id, self.task_run_id, self.slug, node.name, None, None)
        self.after_looped = False

    def _looped_lane(self) -> Any:
        """The sinks' lane for this block node's plain ``Looped`` states, or None.

        As a looping task's (:func:`~iterflow.engine.transitions.looped_lane`):
        none for a block whose iterations are committed one by one, nor for a
        block inside another block (a lane's record carries no block index).
        """
        emit = self.blocks.emit
        if emit is None or self.sync or self.parent.block_index is not None:
            return None
        return looped_lane(emit, self.slug, self.serializer)

    # -- an iteration -----------------------------------------------------------------
    def begin_iteration(self) -> list[tuple[Scope, Any]]:
        """Start iteration ``index`` (again, after a failure); go on until one needs the runner.

        An iteration run inline finishes right here, so this loops over such
        iterations instead of recursing: a long loop must not grow the stack.
        """
        node = self.node
        while True:
            k = self.index
            if self.retries:
                if self.attempt == 1:
                    self.kept = keep_for_retry(self.carried)
                elif self.kept is not None:
                    self.carried = pickle.loads(self.kept)
            # Like the loop driver, make no Running/Looped states when nobody sees them,
            # nor the Running after a Looped when no sink needs it (implied by the Looped).
            if self.blocks.emit is not None and not (
                self.after_looped and self.blocks.implied_running
            ):
                running = self.move(Running(loop_index=k))
                if running.is_finished():  # the event could not be recorded
                    return self._end(running)
            self.after_looped = False
            states = dict(self.feeder_states)
            # (plain_success: Success(result=..., loop_count=1) without calling the class)
            if node.carried is not None:
                states[node.carried] = plain_success(self.carried, 1)
            if node.index_task is not None:
                states[node.index_task] = plain_success(k, 1)
            self.current = states
            resumed = None
            if self.first:
                self.first = False
                found = self.blocks.resumed_iteration(iteration_prefix(self.task_run_id, k))
                if found is not None:
                    self.attempt, resumed = found
            if self.inline is not None and resumed is None and self.inline.run(k, states):
                after = self._judge(states)
                if after is _NEXT:
                    continue
                return after
            # Otherwise the machine runs the iteration, or the rest of it when a task's
            # upstream did not simply succeed inline; what ran inline counts as finished.
            return self._start_scope(k, states, resumed)

    def _start_scope(self, k: int, states: dict[Task, State], resumed: Any) -> list:
        """Hand iteration ``k`` to a machine, ``states`` (and what a resumed run has) done."""
        done: dict[Any, State] = {(t.slug, None): state for t, state in states.items()}
        loops = None
        if resumed is not None:
            done.update(resumed.finished)
            loops = resumed.loops
        parent = self.parent
        base_relay = parent.base_relay
        indices = (*parent.block_indices, k)
        machine = FlowMachine(self.plan.view, resume_finished=done, resume_loops=loops)
        self.current = machine.states
        self.scope = Scope(
            machine,
            self.prefix(),
            {
                **parent.base_context,
                "block_index": k,
                "block_indices": indices,
                "block_run_count": self.attempt,
            },
            BlockRelay(base_relay, k) if base_relay is not None else None,
            block_index=k,
            block_indices=indices,
            base_relay=base_relay,
            run=self,
        )
        return self.scope.start()

    def prefix(self) -> str:
        """Where the current attempt's task run ids start: ``<block id>/<k>[/attemptN]``.

        A retried iteration runs its tasks again as new task runs, so each
        attempt has ids of its own and every task run's history stays legal.
        """
        return iteration_prefix(self.task_run_id, self.index, self.attempt)

    def iteration_ended(self) -> list[tuple[Scope, Any]]:
        """The iteration's machine is done: judge it, then go on, retry or end."""
        scope = self.scope
        assert scope is not None  # an iteration run by a machine ends here, once
        states = scope.machine.states
        self.scope = None
        after = self._judge(states)
        return self.begin_iteration() if after is _NEXT else after

    def _judge(self, states: dict[Task, State]) -> Any:
        """Judge a finished iteration: ``_NEXT`` to begin the next (or a retry) now,
        else the instructions that end the block or pause before a retry."""
        node = self.node
        k = self.index
        problem = self._problem(states)
        if problem is not None:
            if self.attempt > node.max_retries:
                tries = f" after {self.attempt} attempts" if self.attempt > 1 else ""
                return self._end(
                    Failed(f"{self._where()} failed{tries}: {problem}", loop_count=k + 1)
                )
            over = self._over_budget()
            if over is not None:
                return self._end(over)
            retrying = self.move(Retrying(
                f"{problem}; retry {self.attempt} of iteration {k}",
                loop_index=k,
                run_count=self.attempt,
            ))
            if retrying.is_finished():
                return self._end(retrying)
            self.attempt += 1
            if node.retry_delay:
                key = f"{self.task_run_id}/{k}/pause/{self.attempt}"
                return [(self.parent, Pause(self, float(node.retry_delay), key))]
            return _NEXT

        value = self.carried if node.result_task is None else states[node.result_task].result
        try:
            stop = bool(states[self.until].result)
        except Exception as exc:
            return self._end(Failed(
                f"{self._where()}: the truth of its until task {self.until.slug!r} "
                f"could not be decided: {type(exc).__name__}: {exc}",
                exc,
                loop_count=k + 1,
            ))
        self.label = self._label(states, k)
        if stop:
            return self._end(Success(result=value, loop_count=k + 1))
        if node.max_loops is not None and k + 1 >= node.max_loops:
            error = LoopLimitError(
                f"loop block {node.name!r} in flow {self.blocks.flow.name!r} reached "
                f"max_loops={node.max_loops} (iterations 0..{node.max_loops - 1}) with its until "
                f"task {self.until.slug!r} still false at loop_index {k}; raise max_loops, "
                f"or check the until condition"
            )
            return self._end(Failed(str(error), error, loop_count=k + 1))
        over = self._over_budget()
        if over is not None:
            return self._end(over)
        if self.blocks.emit is not None:
            lane = self.looped_lane
            # A sink's lane takes a plain Looped as values, with no state or event made
            # for it; else the usual way. (The block node's state stays the Running.)
            if lane is None or not lane(self.lane_head, k, value, self.label):
                looped = self.move(Looped(result=value, loop_index=k))
                if looped.is_finished():
                    return self._end(looped)
            self.after_looped = True
        self.label = None
        self.carried = value
        self.index = k + 1
        self.attempt = 1
        return _NEXT

    def _label(self, states: dict[Task, State], k: int) -> str | None:
        """The label of iteration ``k`` (``it.next(label=...)``), or None."""
        label = self.node.label
        if label is None:
            return None
        if isinstance(label, str):
            try:
                return clean_text(label.format(index=k))
            except (ValueError, KeyError, IndexError, AttributeError):
                return clean_text(label)  # braces that are not {index}: the text as it is
        state = states.get(label)
        return clean_text(state.result) if state is not None and state.is_successful() else None

    def _problem(self, states: dict[Task, State]) -> str | None:
        """Why the iteration failed, or None.

        Like a flow, an iteration succeeds when its terminal tasks succeeded
        (or were skipped); its ``result`` and ``until`` tasks must also have a
        value. The message names the tasks that failed on their own, not the
        ones that then did not run because of them.
        """
        node = self.node
        for t in self.plan.judged:  # the usual case first: all well, nothing to build
            if states[t].kind not in SIMPLY_SUCCEEDED:
                break
        else:
            return None
        bad = [t for t in self.plan.judged if not states[t].is_successful()]
        skipped = [
            f"its {what} task {t.slug} was skipped, so it has no value"
            for what, t in (("result", node.result_task), ("until", node.until_task))
            if t is not None and states[t].kind is Kind.SKIPPED
        ]
        if not bad and not skipped:
            return None
        causes = [
            t for t in node.members
            if states[t].is_failed() and states[t].kind is not Kind.TRIGGER_FAILED
        ] or bad
        described = []
        for t in causes:
            state = states[t]
            why = f" ({state.message})" if state.message else ""
            described.append(f"{t.slug} is {state.name}{why}")
        return "; ".join(described + skipped)

    def _over_budget(self) -> State | None:
        node = self.node
        if node.timeout is None:
            return None
        spent = time.monotonic() - self.started
        if spent < node.timeout:
            return None
        return TimedOut(
            f"{self._where()} ran out of its timeout={node.timeout:g} s for the whole loop "
            f"({spent:.3g} s spent); the loop's timeout is checked as each iteration ends",
            loop_count=self.index + 1,
        )

    def _where(self) -> str:
        return (
            f"loop block {self.node.name!r} in flow {self.blocks.flow.name!r}, "
            f"iteration {self.index}"
        )

    # -- the block node's own states ----------------------------------------------------
    def move(self, new: State) -> State:
        """Make ``new`` the block node's state and emit it; return the state used.

        A sink that cannot record the state (an unserializable carried value)
        fails the block with its message, as it fails a looping task.
        """
        emit = self.blocks.emit
        if emit is not None:
            new = emit_or_fail(emit, self._event, new, self.index)
        self.state = new
        return new

    def _event(self, state: State, loop_index: int) -> TaskRunEvent:
        if state.is_finished():  # it belongs to the last iteration that ran, as for a task
            loop_index = max((state.loop_count or 1) - 1, 0)
        # Only the state that ends an iteration carries its label (a Looped, the final one).
        label = self.label if state.is_looped() or state.is_finished() else None
        return task_run_event(
            self.blocks.run_id, self.task_run_id, self.slug, self.node.name, None,
            loop_index, state, self.sync, self.serializer, self.parent.block_index, label,
        )

    def _end(self, final: State) -> list[tuple[Scope, Any]]:
        if not self.state.is_finished():
            final = self.move(final)
        self.blocks.last_states.update(self.current)
        self.blocks.active.pop(self, None)
        self.scope = None
        return self.parent.task_run_finished(self.node, None, self.state)


_NEXT: Any = object()  # _judge: begin the next iteration (or the retry) now
