"""Loop blocks as scopes: the pure graph work, done once per flow run.

A flow with loop blocks (:mod:`iterflow.core.block`) is one flat graph. This
module reads it as nested **scopes**, so that the runner can drive them all
with one loop and one executor; running the iterations is
:mod:`iterflow.engine.blocks`' job, and running a simple body without jobs
:mod:`iterflow.engine.inline`'s.

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
knows nothing of blocks — and each block into a :class:`BlockPlan`. In its
parent's view a block node depends on its feeders, through data edges whose
values are their *states* (a block node ``receives_states``), so a feeder that
failed or was skipped gates the whole block by the usual trigger rules, and
the body sees exactly the states it would see outside a block, mapped feeders
element-wise included. A plan also says whether the body is simple enough to
run inline (:func:`inline_steps`).

Where task runs live
--------------------
A :class:`Scope` is the root of a run or one iteration of a block: a machine
and the names of its task runs. Task run ids are ``<block task run id>/<k>/<slug>``
(``.../<k>/attemptN/<slug>`` when the iteration is retried: each attempt's
task runs are new ones; :mod:`iterflow.runids` builds and reads them), events
carry ``block_index=k`` (:class:`BlockRelay` stamps them), and body tasks read
``context.block_index``.

Instructions
------------
A scope passes its machine's instructions to the runner as ``(scope,
instruction)`` pairs. Those for the blocks are plain data, all
:class:`BlockInstruction`, which the runner hands to
:meth:`~iterflow.engine.blocks.Blocks.act` in one branch, without looking
inside: :class:`StartBlock` (the machine's ``RunTask`` of a block node),
:class:`EndOfIteration` (an iteration's machine is done) and :class:`Pause`
(retry the iteration after a delay, which the runner waits out as a job, so
that a delay never stalls the rest of the flow).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from iterflow.core.block import CarriedValue, IterationIndex, LoopBlock, block_layout
from iterflow.core.graph import Edge
from iterflow.core.memo import derived
from iterflow.core.parameter import Parameter
from iterflow.core.state import State
from iterflow.core.task import Task
from iterflow.core.triggers import all_successful
from iterflow.engine.machine import FlowMachine, RunTask
from iterflow.engine.transitions import TaskLane, task_lane
from iterflow.events import TaskRunEvent
from iterflow.runids import task_run_id

if TYPE_CHECKING:  # only named here: running blocks is blocks.py's job
    from iterflow.engine.blocks import BlockRun

__all__ = [
    "BlockInstruction",
    "BlockPlan",
    "BlockRelay",
    "EndOfIteration",
    "InlineStep",
    "Pause",
    "Scope",
    "ScopeView",
    "StartBlock",
    "compile_blocks",
    "inline_steps",
]


# -- the graph of one scope -------------------------------------------------------
class ScopeView:
    """One scope's graph, read like a flow by :class:`FlowMachine` (and by nothing else)."""

    # Weakly referenceable: the machine remembers each view's layout (core.memo), and a
    # block's view starts a machine per iteration.
    __slots__ = ("__weakref__", "_in", "_order", "_out", "constants")

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

    def edge_lists(self) -> tuple[dict[Task, list[Edge]], dict[Task, list[Edge]]]:
        return self._in, self._out


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
    layout = derived(flow, "block_layout", lambda: block_layout(flow, order))
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
    is an iteration of (None for the root); ``has_blocks`` says whether the
    flow has blocks at all, so the machine's ``RunTask`` of a block node must
    become a :class:`StartBlock`.
    """

    __slots__ = (
        "bare",
        "base_context",
        "base_relay",
        "block_index",
        "block_indices",
        "has_blocks",
        "machine",
        "plain_context",
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
        has_blocks: bool = True,
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
        self.has_blocks = has_blocks
        self.block_index = block_index
        self.block_indices = block_indices
        self.run = run
        # Its machine's instructions go out as they are: no block node to turn into a
        # StartBlock, no iteration to end (the runner reads this for a chain's every link).
        self.bare = not has_blocks and run is None
        # What run_plain copies per task run (expand.plain_context), made at the first.
        self.plain_context: dict[str, Any] | None = None

    def start(self) -> list[tuple[Scope, Any]]:
        """The machine's first instructions, as ``(scope, instruction)`` pairs."""
        return self._after(self.machine.start())

    def task_run_finished(self, task: Task, map_index: int | None,
                          state: State) -> list[tuple[Scope, Any]]:
        """Tell the machine; its answer as ``(scope, instruction)`` pairs."""
        instructions = self.machine.task_run_finished(task, map_index, state)
        if not self.bare:
            return self._after(instructions)
        # _after's plain case, once per task run; one instruction (a chain's next link)
        # is paired without a comprehension.
        if len(instructions) == 1:
            return [(self, instructions[0])]
        return [(self, i) for i in instructions]

    def _after(self, instructions: list) -> list[tuple[Scope, Any]]:
        if self.has_blocks:
            out: list[tuple[Scope, Any]] = [
                (self, StartBlock(i) if type(i) is RunTask and isinstance(i.task, LoopBlock)
                 else i)
                for i in instructions
            ]
        else:
            out = [(self, i) for i in instructions]
        if self.run is not None and self.machine.done:
            # Queued behind the machine's last instructions, so their events come first.
            out.append((self, EndOfIteration(self.run)))
        return out

    def task_run_id(self, task: Task, map_index: int | None) -> str:
        # Every task in a flow has its slug (no cast(): a call per task on the hot path).
        return task_run_id(self.prefix, task.slug, map_index)  # type: ignore[arg-type]


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

    def task_lane(self, slug: str, serializer: str | None) -> TaskLane | None:
        """The lane of the sink behind this relay, its records stamped with this iteration."""
        lane = task_lane(self.relay, slug, serializer)
        return None if lane is None else (lane[0], lane[1], self.block_index)

    def __reduce__(self) -> tuple:
        return (BlockRelay, (self.relay, self.block_index))



# -- the blocks' instructions: plain data, routed by the runner to Blocks.act ---------
class BlockInstruction:
    """An instruction for the loop blocks; the runner hands it to ``Blocks.act``.

    ``delay`` seconds, when not 0, are waited out first as a job keyed ``key``.
    """

    __slots__ = ()
    delay: float = 0.0
    key: str = ""


@dataclass(frozen=True, slots=True)
class StartBlock(BlockInstruction):
    """The parent scope's machine said "run this block node": begin its first iteration."""

    instr: RunTask


@dataclass(frozen=True, slots=True)
class EndOfIteration(BlockInstruction):
    """The iteration's machine is done: judge the iteration, then go on, retry or end."""

    run: BlockRun


@dataclass(frozen=True, slots=True)
class Pause(BlockInstruction):
    """Retry the current iteration of ``run`` after ``delay`` seconds.

    The runner waits out the delay as a job, not as a sleep of its own, so
    the rest of the flow goes on meanwhile.
    """

    run: BlockRun
    delay: float
    key: str


# -- the inline path's plan ----------------------------------------------------------
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
