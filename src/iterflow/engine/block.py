"""Running loop blocks: one small flow machine per iteration, on the runner's executor.

A flow with loop blocks (:mod:`iterflow.core.block`) is one flat graph. This
module reads it as nested **scopes** and lets the runner drive them all with
one loop and one executor.

Scopes
------
The root scope is the flow without the insides of its blocks: a block is one
node there, like a task. A block's scope is its body: its direct members
(a nested block is again one node) plus the outside tasks the body uses, its
*feeders*, which enter the scope as tasks that already finished.
:func:`compile_blocks` takes the nesting from
:func:`~iterflow.core.block.block_layout` (which also checks it, as
``flow.validate()`` does) once per run and turns each scope into a
:class:`ScopeView`, the read-only graph a
:class:`~iterflow.engine.machine.FlowMachine` needs — the machine itself
knows nothing of blocks. In its parent's view a block node depends on its
feeders, through data edges whose values are their *states* (a block node
``receives_states``), so a feeder that failed or was skipped gates the whole
block by the usual trigger rules, and the body sees exactly the states it
would see outside a block, mapped feeders element-wise included.

Iterations
----------
When the parent's machine says "run the block node", the runner hands the
instruction to :class:`Blocks`, which starts a :class:`BlockRun`. Each
iteration gets a fresh machine over the block's view, told that the feeders
and the placeholders ``it.result`` / ``it.index`` have already finished with
this iteration's values; its instructions go back to the runner as
``(scope, instruction)`` pairs, so body task runs are submitted like any
other and run in parallel where the graph and the executor allow. A
:class:`Scope` names where its task runs live: task run ids are
``<block task run id>/<k>/<slug>`` (``.../<k>/attemptN/<slug>`` when the
iteration is retried: each attempt's task runs are new ones), events carry
``block_index=k``, and body tasks read ``context.block_index``.

When an iteration's machine has nothing left to do the scope queues an
:class:`EndOfIteration`; the runner hands it back to the block, which judges
the iteration like a flow — its terminal tasks and its ``result`` and
``until`` tasks must have succeeded — and then either starts the next
iteration, retries this one from its start with the same carried value
(possibly after a :class:`Pause` job, so a delay never stalls the runner), or
ends: ``Success`` with the last carried value when ``until`` was truthy, a
failed state naming the limit for ``max_loops``, the loop's ``timeout`` or
the retries. The block node's own transitions (``Running``, ``Looped(k)``
with the carried value, ``Retrying``, the final state) are emitted like a
looping task's, which is all the store needs to resume at the first
unfinished iteration. The finished state goes to the parent scope's machine
as the block node's, and the flow goes on.

The inline path
---------------
A job per task run and a machine per iteration cost far more than a small
task, and on the default :class:`~iterflow.executors.LocalExecutor`, which
runs each job on the spot in the runner's thread, they buy nothing. So when
the executor is exactly that one and a body's tasks are all plain (see
:func:`inline_steps`), :class:`_Inline` runs an iteration right here, task
after task in the graph's order, each through the same loop driver a job
would use. It checks only the one case it can decide alone — every upstream
of the next task simply succeeded, so the machine's rules say "run it with
their results" — and at anything else (a skip, a failure) it hands the rest
of the iteration to a machine, given what already ran as finished. Results
and events are those of the machine path; the property tests run both.

Only the current iteration is kept in memory; each finished iteration's
states are dropped but for the flow's result, which shows every body task as
it was in its block's last iteration.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from iterflow.context import _reset as _reset_context
from iterflow.context import _set as _set_context
from iterflow.core.block import CarriedValue, IterationIndex, LoopBlock, block_layout
from iterflow.core.graph import Edge
from iterflow.core.parameter import Parameter
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
)
from iterflow.core.task import Task
from iterflow.core.triggers import all_successful
from iterflow.engine.expand import NOTHING, TaskRunSpec, _drive
from iterflow.engine.machine import FlowMachine, RunTask
from iterflow.engine.tasklog import TaskLogger
from iterflow.errors import LoopLimitError
from iterflow.events import ResumePoint, TaskRunEvent
from iterflow.runids import iteration_prefix, latest_attempt, task_run_id

__all__ = [
    "BlockPlan",
    "BlockRelay",
    "BlockRun",
    "Blocks",
    "EndOfIteration",
    "LoopBlock",
    "Pause",
    "Scope",
    "ScopeView",
    "compile_blocks",
    "pause",
    "task_run_id",
]


# -- the graph of one scope -------------------------------------------------------
class ScopeView:
    """One scope's graph, read like a flow by :class:`FlowMachine` (and by nothing else)."""

    __slots__ = ("_in", "_order", "_out", "constants")

    def __init__(self, order: tuple[Task, ...], edges_in: dict[Task, list[Edge]],
                 constants: dict[Task, dict[str, Any]]) -> None:
        self._order = order
        self._in = edges_in
        self._out: dict[Task, list[Edge]] = {t: [] for t in order}
        for t in order:
            for edge in edges_in[t]:
                self._out[edge.upstream_task].append(edge)
        self.constants = constants

    def sorted_tasks(self) -> tuple[Task, ...]:
        return self._order

    def upstream_edges(self, task: Task) -> list[Edge]:
        return self._in[task]

    def downstream_edges(self, task: Task) -> list[Edge]:
        return self._out[task]


@dataclass(frozen=True, slots=True)
class BlockPlan:
    """What running one block needs, worked out once per flow run.

    ``feeders`` pairs each outside task the body uses with the key under
    which its state arrives in the block node's inputs. ``judged`` are the
    tasks whose states decide whether an iteration succeeded.
    """

    node: LoopBlock
    view: ScopeView
    feeders: tuple[tuple[str, Task], ...]
    judged: tuple[Task, ...]
    #: The body as straight-line steps when every task is simple (see :func:`inline_steps`).
    inline: tuple[InlineStep, ...] | None


def compile_blocks(flow: Any) -> tuple[Any, dict[LoopBlock, BlockPlan]]:
    """The root scope's graph and a plan per block; ``(flow, {})`` for a flow without blocks.

    Raises :class:`~iterflow.errors.FlowDefinitionError`, before anything runs, for a block
    without ``it.next(until=...)`` or for a task that uses a value from inside
    a block it is not in: :func:`~iterflow.core.block.block_layout` checks
    both, as it does for ``flow.validate()``. Checked again here because a
    runner may be given a flow nobody validated.
    """
    order = flow.sorted_tasks()
    layout = block_layout(flow, order)
    nodes = layout.blocks
    if not nodes:
        return flow, {}
    owner = layout.owner
    enclosing = layout.enclosing

    feeders: dict[LoopBlock, list[Task]] = {node: [] for node in nodes}
    for t in order:
        for edge in flow.upstream_edges(t):
            up = edge.upstream_task
            for block in enclosing[t]:
                if block is up or block in enclosing[up]:
                    break  # from here outwards the edge stays inside
                if up not in feeders[block]:
                    feeders[block].append(up)

    # The layout allowed every edge, so the scopes need no checks of their own: a
    # feeder is the outside end of an allowed edge into a body, so it runs in the flow
    # or in a block around the one it feeds, where that block's node can see it.
    def view_edges(t: Task) -> list[Edge]:
        if not isinstance(t, LoopBlock):
            return flow.upstream_edges(t)
        edges = [Edge(up, t, key=_feed_key(up)) for up in feeders[t]]
        for edge in flow.upstream_edges(t):
            # Its own members' ordering edges are the block's inside; the rest
            # (``initial``, an edge added by hand) stand as they are.
            if t not in enclosing[edge.upstream_task]:
                edges.append(edge)
        return edges

    def scope_view(scope: LoopBlock | None) -> tuple[ScopeView, list[Task]]:
        members = [t for t in order if owner[t] is scope]
        outside = feeders[scope] if scope is not None else []
        edges_in: dict[Task, list[Edge]] = {t: [] for t in outside}
        for t in members:
            edges_in[t] = view_edges(t)
        view_order = tuple(t for t in order if t in edges_in)
        return ScopeView(view_order, edges_in, flow.constants), members

    root, _ = scope_view(None)
    plans = {}
    for node in nodes:
        view, members = scope_view(node)
        judged = [t for t in members if not view.downstream_edges(t)]
        for t in (node.result_task, node.until_task):
            if t is not None and t not in judged:
                judged.append(t)
        plans[node] = BlockPlan(
            node=node,
            view=view,
            feeders=tuple((_feed_key(t), t) for t in feeders[node]),
            judged=tuple(judged),
            inline=inline_steps(view, members),
        )
    return root, plans


def _feed_key(task: Task) -> str:
    # Not a Python identifier on purpose: it can never clash with a real argument.
    return f"feed:{task.slug}"


# -- where task runs live ------------------------------------------------------------
class Scope:
    """The root of a run, or one iteration of a block: a machine and the names of its runs.

    ``prefix`` starts the ids of its task runs; ``base_context`` is what its
    task runs see in ``iterflow.context`` before their own keys; ``relay`` is
    what their jobs emit events through; ``run`` is the block run the scope
    is an iteration of (None for the root).
    """

    __slots__ = (
        "base_context",
        "base_relay",
        "block_index",
        "block_indices",
        "machine",
        "prefix",
        "relay",
        "run",
    )

    def __init__(
        self,
        machine: FlowMachine,
        prefix: str,
        base_context: dict[str, Any],
        relay: Callable[[Any], None] | None,
        *,
        block_index: int | None = None,
        block_indices: tuple[int, ...] = (),
        base_relay: Callable[[Any], None] | None = None,
        run: BlockRun | None = None,
    ) -> None:
        self.machine = machine
        self.prefix = prefix
        self.base_context = base_context
        self.relay = relay
        self.base_relay = relay if base_relay is None else base_relay
        self.block_index = block_index
        self.block_indices = block_indices
        self.run = run

    def start(self) -> list[tuple[Scope, Any]]:
        """The machine's first instructions, as ``(scope, instruction)`` pairs."""
        return self._after(self.machine.start())

    def task_run_finished(self, task: Task, map_index: int | None,
                          state: State) -> list[tuple[Scope, Any]]:
        """Tell the machine; its answer as ``(scope, instruction)`` pairs."""
        return self._after(self.machine.task_run_finished(task, map_index, state))

    def _after(self, instructions: list) -> list[tuple[Scope, Any]]:
        out = [(self, i) for i in instructions]
        if self.run is not None and self.machine.done:
            # Queued behind the machine's last instructions, so their events come first.
            out.append((self, EndOfIteration(self.run)))
        return out

    def task_run_id(self, task: Task, map_index: int | None) -> str:
        return task_run_id(self.prefix, task.slug, map_index)


class BlockRelay:
    """Relays a body task's events, stamped with its block iteration (picklable for Dask)."""

    __slots__ = ("block_index", "relay")

    def __init__(self, relay: Callable[[Any], None], block_index: int) -> None:
        self.relay = relay
        self.block_index = block_index

    def __call__(self, event: Any) -> None:
        if isinstance(event, TaskRunEvent):
            event = event._replace(block_index=self.block_index)
        self.relay(event)

    def __reduce__(self) -> tuple:
        return (BlockRelay, (self.relay, self.block_index))


@dataclass(frozen=True, slots=True)
class EndOfIteration:
    """Instruction: the iteration's machine is done; the runner calls :meth:`take`."""

    run: BlockRun

    def take(self) -> list[tuple[Scope, Any]]:
        return self.run.iteration_ended()


@dataclass(frozen=True, slots=True)
class Pause:
    """Instruction: submit :func:`pause` as a job; when it ends, call :meth:`over`.

    An iteration retry's delay runs as a job, not as a sleep in the runner,
    so the rest of the flow goes on meanwhile.
    """

    run: BlockRun
    seconds: float
    key: str

    def over(self) -> list[tuple[Scope, Any]]:
        return self.run.begin_iteration()


def pause(seconds: float) -> None:
    """The job behind :class:`Pause`."""
    time.sleep(seconds)


# -- running blocks ---------------------------------------------------------------------
class Blocks:
    """The loop blocks of one flow run: their plans, their runs, what they leave behind."""

    def __init__(self, flow: Any, plans: dict[LoopBlock, BlockPlan], run_id: str,
                 emit: Callable[[Any], None] | None, resume: ResumePoint | None,
                 executor: Any, *, implied_running: bool = False) -> None:
        from iterflow.executors.local import LocalExecutor

        self.flow = flow
        self.implied_running = implied_running
        self.plans = plans
        self.run_id = run_id
        self.emit = emit
        self.resume = resume
        # Exactly LocalExecutor, not a subclass: one that counts or wraps jobs must see them.
        self.inline = type(executor) is LocalExecutor
        self.executor = executor
        self.active: dict[BlockRun, None] = {}  # insertion-ordered set
        #: Each body task's state in its block's latest iteration, for the flow's result.
        self.last_states: dict[Task, State] = {}

    def start(self, scope: Scope, instr: RunTask) -> list[tuple[Scope, Any]]:
        """The parent machine said "run this block node": begin its first iteration."""
        run = BlockRun(self, scope, self.plans[instr.task], instr)
        self.active[run] = None
        return run.begin_iteration()

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
        inputs = instr.inputs
        self.feeder_states: dict[Task, State] = {t: inputs[key] for key, t in plan.feeders}
        initial = inputs["initial"].result if isinstance(node.initial, Task) else node.initial
        self.index = instr.start_loop_index
        self.carried = initial if instr.loop_result is NOTHING else instr.loop_result
        self.attempt = 1  # attempt at the current iteration, from 1
        self.first = True  # only the first iteration can continue a resumed one
        self.started = time.monotonic()
        self.state: State = Pending()
        self.scope: Scope | None = None
        #: The current iteration's task states so far (for the flow's result on cancel).
        self.current: dict[Task, State] = {}
        self.sync = node.checkpoint == "every"
        self.serializer = node.serializer or blocks.flow.serializer
        self.inline = _Inline(self) if plan.inline is not None and blocks.inline else None

    # -- an iteration -----------------------------------------------------------------
    def begin_iteration(self) -> list[tuple[Scope, Any]]:
        """Start iteration ``index`` (again, after a failure); go on until one needs the runner.

        An iteration run inline finishes right here, so this loops over such
        iterations instead of recursing: a long loop must not grow the stack.
        """
        node = self.node
        while True:
            k = self.index
            # Like the loop driver, make no Running/Looped states when nobody sees them.
            if self.blocks.emit is not None:
                running = self.move(Running(loop_index=k))
                if running.is_finished():  # the event could not be recorded
                    return self._end(running)
            states = dict(self.feeder_states)
            if node.carried is not None:
                states[node.carried] = Success(result=self.carried, loop_count=1)
            if node.index_task is not None:
                states[node.index_task] = Success(result=k, loop_count=1)
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
        done = {(t.slug, None): state for t, state in states.items()}
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
        states = self.scope.machine.states
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
                return [(self.parent, Pause(self, node.retry_delay, key))]
            return _NEXT

        value = self.carried if node.result_task is None else states[node.result_task].result
        try:
            stop = bool(states[node.until_task].result)
        except Exception as exc:
            return self._end(Failed(
                f"{self._where()}: the truth of its until task {node.until_task.slug!r} "
                f"could not be decided: {type(exc).__name__}: {exc}",
                exc,
                loop_count=k + 1,
            ))
        if stop:
            return self._end(Success(result=value, loop_count=k + 1))
        if node.max_loops is not None and k + 1 >= node.max_loops:
            error = LoopLimitError(
                f"loop block {node.name!r} in flow {self.blocks.flow.name!r} reached "
                f"max_loops={node.max_loops} (iterations 0..{node.max_loops - 1}) with its until "
                f"task {node.until_task.slug!r} still false at loop_index {k}; raise max_loops, "
                f"or check the until condition"
            )
            return self._end(Failed(str(error), error, loop_count=k + 1))
        over = self._over_budget()
        if over is not None:
            return self._end(over)
        if self.blocks.emit is not None:
            looped = self.move(Looped(result=value, loop_index=k))
            if looped.is_finished():
                return self._end(looped)
        self.carried = value
        self.index = k + 1
        self.attempt = 1
        return _NEXT

    def _problem(self, states: dict[Task, State]) -> str | None:
        """Why the iteration failed, or None.

        Like a flow, an iteration succeeds when its terminal tasks succeeded
        (or were skipped); its ``result`` and ``until`` tasks must also have a
        value. The message names the tasks that failed on their own, not the
        ones that then did not run because of them.
        """
        node = self.node
        for t in self.plan.judged:  # the usual case first: all well, nothing to build
            if states[t].kind not in _PLAIN:
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
            try:
                emit(self._event(new))
            except Exception as exc:
                new = Failed(str(exc), exc, loop_count=self.index + 1)
                try:
                    emit(self._event(new))
                except Exception:
                    pass
        self.state = new
        return new

    def _event(self, state: State) -> TaskRunEvent:
        # A finished state belongs to the last iteration that ran, as for a task.
        loop_index = max((state.loop_count or 1) - 1, 0) if state.is_finished() else self.index
        return TaskRunEvent(
            self.blocks.run_id,
            self.task_run_id,
            self.node.slug,
            self.node.name,
            None,
            loop_index,
            state,
            self.sync,
            self.serializer,
            self.parent.block_index,
        )

    def _end(self, final: State) -> list[tuple[Scope, Any]]:
        if not self.state.is_finished():
            final = self.move(final)
        self.blocks.last_states.update(self.current)
        self.blocks.active.pop(self, None)
        self.scope = None
        return self.parent.task_run_finished(self.node, None, self.state)


_NEXT: Any = object()  # _judge: begin the next iteration (or the retry) now

_PLAIN = frozenset({Kind.SUCCESS, Kind.CACHED})


@dataclass(frozen=True, slots=True)
class InlineStep:
    """One task of a body simple enough to run inline: whom it waits for, what it gets."""

    task: Task
    upstream: tuple[Task, ...]
    keyed: tuple[tuple[str, Task], ...]
    constants: dict[str, Any]


def inline_steps(view: ScopeView, members: list[Task]) -> tuple[InlineStep, ...] | None:
    """The body as straight-line steps, or None when a task needs the machine's judgement.

    A task qualifies when the machine's rule for it, given upstreams that all
    simply succeeded, is "run it with their results": a plain task (no map,
    no nested block, no parameter, no cache, not given states) with the
    default trigger, and no ``timeout`` (why: beside the check). Whether its upstreams
    did simply succeed is checked at run time, task by task.
    """
    steps = []
    for t in view.sorted_tasks():
        if t not in members or isinstance(t, (CarriedValue, IterationIndex)):
            continue
        edges = view.upstream_edges(t)
        if (
            isinstance(t, (LoopBlock, Parameter))
            or t.receives_states
            or t.cache_for is not None
            # A timed-out call goes on in a thread of its own, reading the context:
            # the inline path's one context dict would already name the next task.
            or t.timeout is not None
            or t.is_async  # awaited on the run's event loop, not called here
            or t.trigger is not all_successful
            or any(e.mapped or e.flattened for e in edges)
        ):
            return None
        steps.append(InlineStep(
            task=t,
            upstream=tuple(dict.fromkeys(e.upstream_task for e in edges)),
            keyed=tuple((e.key, e.upstream_task) for e in edges if e.key is not None),
            constants=dict(view.constants.get(t, {})),
        ))
    return tuple(steps)


class _Inline:
    """Runs a simple body's iteration in the runner's own thread, task after task.

    Used when the executor is a plain :class:`~iterflow.executors.LocalExecutor`,
    which would run every job right there anyway, in an order the machine
    picks from the same graph: so the results and events are the same, and
    what is saved is the machine, the job and the per-job context set-up —
    most of a task run's cost when the tasks are small. Each task run still
    goes through the loop driver (:func:`iterflow.engine.expand._drive`), so
    its own loop, retries, signals, state handlers and events are those of
    any task.
    The context is one dict for the block run, set once per iteration.
    """

    def __init__(self, run: BlockRun) -> None:
        blocks = run.blocks
        parent = run.parent
        self.run_ = run
        base_relay = parent.base_relay
        self.relay = BlockRelay(base_relay, 0) if base_relay is not None else None
        self.ctx: dict[str, Any] = dict(parent.base_context)
        self.ctx["logger"] = TaskLogger(self.ctx, self.relay)
        self.ctx["map_index"] = None
        # Everything a step needs, looked up once per block run rather than per task run.
        self.steps = [
            (
                step.task, step.task.name, step.task.slug, step.task.tags, step.upstream,
                step.keyed, step.constants,
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
            )
            for step in run.plan.inline
        ]

    def _crashed(self, task: Task, spec: TaskRunSpec, exc: Exception) -> State:
        blocks = self.run_.blocks
        failed = Failed(
            f"task {task.name!r} in flow {blocks.flow.name!r} did not finish on "
            f"{blocks.executor!r}: {type(exc).__name__}: {exc}",
            exc,
            loop_count=0,
        )
        if blocks.emit is not None:
            blocks.emit(TaskRunEvent(
                blocks.run_id, spec.task_run_id, task.slug, task.name, None, 0, failed, False,
                task.serializer or blocks.flow.serializer, self.run_.index,
            ))
        return failed

    def run(self, k: int, states: dict[Task, State]) -> bool:
        """Run iteration ``k`` into ``states``; False when it stops at a task to judge."""
        run = self.run_
        ctx = self.ctx
        ctx["block_index"] = k
        ctx["block_indices"] = (*run.parent.block_indices, k)
        ctx["block_run_count"] = run.attempt
        relay = self.relay
        if relay is not None:
            relay.block_index = k
        prefix = run.prefix() + "/"
        plain = _PLAIN
        token = _set_context(ctx)
        try:
            for task, name, slug, tags, upstream, keyed, constants, spec in self.steps:
                for up in upstream:
                    if states[up].kind not in plain:
                        return False
                inputs = dict(constants)
                for key, up in keyed:
                    inputs[key] = states[up].result
                spec.inputs = inputs
                spec.task_run_id = task_run_id = prefix + slug
                ctx["task_name"] = name
                ctx["task_slug"] = slug
                ctx["task_run_id"] = task_run_id
                ctx["task_tags"] = tags
                if "loop_result" in ctx:  # the driver sets it once a task loops: not ours
                    del ctx["loop_result"]
                    ctx.pop("task_loop_result", None)
                try:
                    states[task] = _drive(spec, task, ctx, relay, 0, NOTHING)
                except Exception as exc:  # what the runner makes of a job that crashed
                    states[task] = self._crashed(task, spec, exc)
            return True
        finally:
            _reset_context(token)
