"""Loop blocks: a loop whose body is a small graph of tasks.

>>> from iterflow import Flow, loop, task
>>> @task
... def step(total, i):
...     return total + i
>>> @task
... def enough(total):
...     return total >= 10
>>> with Flow("sum until ten") as flow:
...     with loop(initial=0, max_loops=100) as it:
...         total = step(it.result, it.index)
...         it.next(result=total, until=enough(total))
...     final = it.final
>>> flow.run(store=None).result[final].result
10

How a block is described
------------------------
Everything stays in the one flow graph, so a flow with blocks is still a flow:
``flow.tasks`` lists every task of every block, slugs are unique flow-wide,
and the flow's own cycle check covers blocks.

Entering ``loop(...)`` adds a :class:`LoopBlock` node to the flow and pushes
the builder on the flow's block stack; the flow then reports every task
created inside the ``with`` (``task_added``, as ``case`` uses it). The
innermost loop on the stack makes the task a *member* of its block and adds
an ordering edge ``member -> block node``. The flat graph therefore reads
"outside inputs -> body -> block node -> whatever uses ``it.final``", a DAG in
which the block node finishes after its body, which is true at run time too.
A nested block's node is a member of the enclosing block.

``it.result`` and ``it.index`` are placeholder tasks, members of the block
(:class:`CarriedValue`, :class:`IterationIndex`), made on first use. They
never run: the engine supplies their values at the start of each iteration.
``it.final`` *is* the block node: its result is the carried value when the
loop ended, so ``report(it.final)`` is an ordinary data edge.

What may use what
-----------------
A body task has one value per iteration; outside its block there is no
current iteration, only the value the loop ended with. So a task may use a
task of its own block, of a block around it, or of the flow, and nothing
else: a task after the block takes ``it.final``. :func:`block_layout` works
out which block each task runs in and checks this rule, once for
:meth:`Flow.validate <iterflow.core.flow.Flow.validate>` (which ``flow.run()``
calls before anything runs) and once for the engine, which needs the same
layout to cut the flow into scopes.

The engine reads this description as nested *scopes*
(:mod:`iterflow.engine.scopes`) — the flow, and inside it each block's body —
and runs one scope per iteration (:mod:`iterflow.engine.blocks`). Nothing here runs anything.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from iterflow.core.flow import Flow, _block_stack
from iterflow.core.memo import graph_changed
from iterflow.core.task import Task
from iterflow.errors import ArgumentError, FlowDefinitionError, OutsideFlowError

__all__ = ["BlockLayout", "CarriedValue", "IterationIndex", "LoopBlock", "block_layout", "loop"]

_UNSET: Any = object()


class LoopBlock(Task):
    """The node standing for a loop block in the flow; ``it.final`` returns it.

    Its final state is the block's: ``Success`` with the last carried value as
    ``result`` and the number of iterations as ``loop_count``, or a failed
    state naming what ended the loop. While the block runs it moves through
    ``Running``, ``Looped`` (one per finished iteration, carrying the value),
    and ``Retrying`` like a looping task, so the store and the progress
    display show iteration k of the block.

    It is built by :class:`loop`, never called: the engine runs its body.
    ``timeout`` here is the budget for the whole loop (see :class:`loop`), not
    a limit per call as on other tasks.
    """

    #: The engine hands the block the *states* of the outside tasks its body
    #: uses, so body tasks see exactly what they would see outside a block.
    receives_states = True

    def __init__(self, builder: loop, **options: Any) -> None:
        super().__init__(**options)
        self.builder = builder
        #: Tasks created directly inside the block (a nested block's node
        #: included, its own members not), in the order they were added.
        self.members: list[Task] = []
        self.initial: Any = None
        self.result_task: Task | None = None
        self.until_task: Task | None = None
        #: The iteration label (``it.next(label=...)``): a task of the block, a text, or None.
        self.label: Task | str | None = None
        self.carried: CarriedValue | None = None
        self.index_task: IterationIndex | None = None
        self.parent: LoopBlock | None = None

    def run(self, initial: Any = None) -> Any:
        raise RuntimeError(
            f"loop block {self.name!r} is run by the engine, one iteration of its body at a "
            f"time; it has no function to call"
        )

    def _add_call(self, args, kwargs, upstream_tasks, flow, mapped: bool) -> Task:
        raise ArgumentError(
            f"it.final of loop block {self.name!r} is a value, not a task to call: pass it "
            f"to a task, e.g. report(it.final)"
        )

    def copy(self, **options: Any) -> Task:
        raise ArgumentError(
            f"loop block {self.name!r} cannot be copied; build another loop(...)"
        )

    def __repr__(self) -> str:
        return f"<LoopBlock: {self.slug or self.name}>"


class _Supplied(Task):
    """A value the engine supplies to each iteration of a block; never run as a job."""

    #: Never run, so never reported: displays leave it out of their task counts.
    supplied_by_engine = True

    def __init__(self, block: LoopBlock, name: str) -> None:
        super().__init__(name=name)
        self.block = block

    def run(self) -> Any:
        raise RuntimeError(
            f"{self.name} is supplied by the engine at the start of each iteration of loop "
            f"block {self.block.name!r}; it is not run"
        )

    def copy(self, **options: Any) -> Task:
        raise ArgumentError(
            f"{self.name} cannot be copied: it belongs to loop block {self.block.name!r}"
        )


class CarriedValue(_Supplied):
    """``it.result``: the value carried into this iteration (``initial`` on iteration 0)."""


class IterationIndex(_Supplied):
    """``it.index``: the iteration number, from 0."""


_S = TypeVar("_S", bound=_Supplied)


class loop:  # noqa: N801 - reads as a statement: `with loop(...) as it:`
    """A loop whose body is the tasks created inside the ``with``.

    A sketch of the shape (its tasks are not defined here, so it is not run; the
    module's docstring has an example that runs):

    >>> with Flow("train") as flow:                               # doctest: +SKIP
    ...     data = load()
    ...     with loop(initial={"model": None, "best": None}, max_loops=200) as it:
    ...         model = train_epoch(data, it.result["model"])
    ...         loss = evaluate(model, data)
    ...         it.next(result=pack(model, loss), until=converged(loss, it.result["best"]))
    ...     report(it.final)

    Each iteration runs the body's tasks once, in dependency order (in
    parallel where the executor allows); tasks outside the block that feed it
    run once and are shared by every iteration. Inside the body:

    - ``it.result``: the carried value — ``initial`` on iteration 0 (a value,
      or a task outside the block), then the ``result`` of the iteration before;
    - ``it.index``: the iteration number, from 0 (also ``context.block_index``);
    - ``it.next(result=task, until=task, label=task_or_text)``: what is
      carried to the next iteration, the task whose truth ends the loop after
      this iteration, and optionally the iteration's label, shown in
      ``iterflow show RUN --iterations`` and the dashboard (a task of the
      block whose value is the label, or a text in which ``{index}`` stands
      for the iteration number).

    After the block, ``it.final`` is the carried value of the last iteration.

    Options (keyword-only):

    - ``max_loops``: iterations 0..max_loops-1 may run; when ``until`` is
      still false after the last one, the block fails naming the limit.
    - ``max_retries`` / ``retry_delay``: an iteration that fails (a task in it
      failed after its own retries) runs again from its start, with the same
      carried value; the budget is per iteration.
    - ``timeout``: seconds for the whole loop, checked each time an iteration
      ends; once spent, the block ends ``TimedOut`` (a ``Failed``). It never
      interrupts a running task: give slow tasks their own ``timeout``.
    - ``name``: the block's name (default ``"loop"``); ``checkpoint`` and
      ``serializer`` apply to the recorded carried values, as on a task.
    """

    def __init__(
        self,
        initial: Any = None,
        *,
        max_loops: int | None = None,
        max_retries: int = 0,
        retry_delay: float | datetime.timedelta | None = None,
        timeout: float | datetime.timedelta | None = None,
        name: str = "loop",
        checkpoint: str | bool | None = None,
        serializer: str | None = None,
        flow: Flow | None = None,
    ) -> None:
        # Task validates and normalises these options (and names the block in errors).
        self.node = LoopBlock(
            self,
            name=name,
            max_loops=max_loops,
            max_retries=max_retries,
            retry_delay=retry_delay,
            timeout=timeout,
            checkpoint=checkpoint,
            serializer=serializer,
        )
        self.node.initial = initial
        self._flow = flow
        self._stack: tuple[Any, ...] = ()
        self._token: Any = None
        self._state = "new"  # -> "open" -> "closed"

    # -- the with-statement -------------------------------------------------------
    def __enter__(self) -> loop:
        if self._state != "new":
            raise FlowDefinitionError(
                f"loop block {self.node.name!r} was already used; each `with loop(...)` "
                f"needs its own loop(...)"
            )
        flow = self._flow or Flow.active()
        if flow is None:
            raise OutsideFlowError(
                "loop() needs a flow: use it inside `with Flow(...):` or pass flow=..."
            )
        self._flow = flow
        stack = _block_stack.get()
        enclosing = [b for b in stack if isinstance(b, loop)]
        if enclosing:
            self.node.parent = enclosing[-1].node
        # Added with the stack as it is, so an enclosing loop makes the node its
        # member and an enclosing case gates it.
        flow.add_task(self.node)
        if isinstance(self.node.initial, Task):
            flow.add_edge(self.node.initial, self.node, key="initial")
        self._stack = (*stack, self)
        self._token = _block_stack.set(self._stack)
        self._state = "open"
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        _block_stack.reset(self._token)
        self._state = "closed"
        if exc_type is None and self.node.until_task is None:
            assert self._flow is not None  # set by __enter__
            raise _never_stops(self.node, self._flow)

    def task_added(self, flow: Flow, task: Task) -> None:
        """Called by the flow for each task created while the block is open."""
        if flow is not self._flow or task is self.node:
            return
        innermost = [b for b in _block_stack.get() if isinstance(b, loop)][-1]
        if innermost is not self:
            return  # a nested block's member: that block claims it
        self.node.members.append(task)
        graph_changed()
        flow.add_edge(task, self.node)

    # -- what the body uses -------------------------------------------------------
    @property
    def result(self) -> Task:
        """The value carried into the current iteration (``initial`` on iteration 0)."""
        node = self.node
        if node.carried is None:
            node.carried = self._supply(CarriedValue, "result")
        return node.carried

    @property
    def index(self) -> Task:
        """The current iteration's number, from 0."""
        node = self.node
        if node.index_task is None:
            node.index_task = self._supply(IterationIndex, "index")
        return node.index_task

    def next(self, result: Any = _UNSET, *, until: Task, label: Task | str | None = None) -> None:
        """Carry ``result`` to the next iteration; stop after one where ``until`` is truthy.

        Both are tasks created inside this block. Without ``result`` the carried
        value stays as it is. ``label`` names each iteration: a task created
        inside the block (its value, as text) or a text, ``{index}`` in it
        standing for the iteration number; cut to 200 characters.
        """
        self._require_open("it.next(...)")
        node = self.node
        if node.until_task is not None:
            raise FlowDefinitionError(
                f"loop block {node.name!r}: it.next(...) was already called; call it once"
            )
        if result is not _UNSET:
            node.result_task = self._own_task(result, "result")
        node.until_task = self._own_task(until, "until")
        if label is not None and not isinstance(label, str):
            label = self._own_task(label, "label")
        node.label = label
        graph_changed()  # the block's layout (and whether it stops) depends on these

    @property
    def final(self) -> LoopBlock:
        """The carried value of the last iteration, for tasks after the block."""
        if self._state != "closed":
            raise FlowDefinitionError(
                f"loop block {self.node.name!r}: it.final is the value once the loop has "
                f"ended, for tasks after the block; inside it, use it.result"
            )
        return self.node

    # -- internals ----------------------------------------------------------------
    def _require_open(self, what: str) -> None:
        if self._state != "open":
            raise FlowDefinitionError(
                f"loop block {self.node.name!r}: {what} is only available inside "
                f"`with loop(...) as it:`"
            )

    def _supply(self, cls: type[_S], what: str) -> _S:
        self._require_open(f"it.{what}")
        assert self._flow is not None  # set by __enter__, which _require_open checked
        placeholder = cls(self.node, name=f"{self.node.slug}.{what}")
        # Made on first use, possibly deep inside a nested block or a case: add it
        # with the block stack as it was inside *this* block, so it belongs here.
        token = _block_stack.set(self._stack)
        try:
            self._flow.add_task(placeholder)
        finally:
            _block_stack.reset(token)
        return placeholder

    def _own_task(self, value: Any, what: str) -> Task:
        node = self.node
        if not isinstance(value, Task):
            raise ArgumentError(
                f"loop block {node.name!r}: it.next({what}=...) takes a task created inside "
                f"the block, got {type(value).__name__} {value!r}"
            )
        if value is node.carried or value is node.index_task:
            return cast(Task, value)
        if value not in node.members:
            raise FlowDefinitionError(
                f"loop block {node.name!r}: it.next({what}=...) got task {value.name!r}, "
                f"which is not created directly inside this block; the {what} must be "
                f"computed by the block's own tasks (a nested block's value is its it.final)"
            )
        return value


# -- which block each task runs in ------------------------------------------------------
@dataclass(frozen=True, slots=True)
class BlockLayout:
    """Where each task of a flow runs: in the flow itself, or inside which loop blocks.

    ``blocks`` are the flow's block nodes in dependency order. ``owner`` maps
    each task to the block it is a direct member of (None: the flow itself);
    ``enclosing`` maps it to every block it runs inside, innermost first. A
    nested block's node is a member of the block around it, so a block's own
    entries name the blocks around it, never itself. For a flow without
    blocks all three are empty: every task runs in the flow.
    """

    blocks: tuple[LoopBlock, ...]
    owner: dict[Task, LoopBlock | None]
    enclosing: dict[Task, tuple[LoopBlock, ...]]


def block_layout(flow: Flow, order: Iterable[Task] | None = None) -> BlockLayout:
    """The flow's :class:`BlockLayout`, checked: the one place the block rules live.

    Raises :class:`~iterflow.errors.FlowDefinitionError` for a block without
    ``it.next(until=...)`` (the ``with`` itself refuses one, unless it ended in
    an error the caller caught), and for a task that uses a task running inside
    a block it is not in, naming both tasks, the flow and the block. ``order`` is the
    flow's tasks in dependency order when the caller has it already (the flow
    must be acyclic); it decides which problem is reported first.
    """
    if not flow.tasks_of(LoopBlock):  # asked of the flow's few tasks that are not plain
        return BlockLayout((), {}, {})
    order = tuple(flow.sorted_tasks() if order is None else order)
    blocks = tuple(t for t in order if isinstance(t, LoopBlock))
    owner: dict[Task, LoopBlock | None] = dict.fromkeys(order)
    for node in blocks:
        if node.until_task is None:
            raise _never_stops(node, flow)
        for member in node.members:
            owner[member] = node
    enclosing: dict[Task, tuple[LoopBlock, ...]] = {}
    for t in order:
        chain: list[LoopBlock] = []
        block = owner[t]
        while block is not None:
            chain.append(block)
            block = owner[block]
        enclosing[t] = tuple(chain)

    # A value is usable where it exists: the upstream runs in the flow, or in a block
    # the user runs inside. The one other edge allowed goes from a task to a block
    # around it: it orders the block's end after the task and carries nothing out.
    for down in order:
        around = enclosing[down]
        for edge in flow.upstream_edges(down):
            up = edge.upstream_task
            home = owner[up]
            if home is None or home in around or down in enclosing[up]:
                continue
            raise FlowDefinitionError(
                f"task {down.slug!r} in flow {flow.name!r} uses {up.slug!r}, which runs "
                f"inside loop block {home.slug!r}; only the block's final value leaves it: "
                f"pass the value through it.next(result=...) and use it.final after the block"
            )
    return BlockLayout(blocks, owner, enclosing)


def _never_stops(node: LoopBlock, flow: Flow) -> FlowDefinitionError:
    return FlowDefinitionError(
        f"loop block {node.name!r} in flow {flow.name!r} never says when to stop: "
        f"call it.next(result=..., until=task) inside the block"
    )
