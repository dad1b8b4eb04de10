"""Flows: a named graph of tasks, built by calling tasks or imperatively.

A :class:`Flow` is a description. It knows its tasks, edges and constants,
keeps them acyclic (an edge that would close a cycle is refused at once with
the cycle's path), and hands itself to :mod:`iterflow.runtime` to run.

>>> from iterflow import Flow, task
>>> @task
... def inc(x):
...     return x + 1
>>> with Flow("count") as flow:
...     a = inc(1)
...     b = inc(a)
>>> [t.slug for t in flow.sorted_tasks()]
['inc', 'inc-2']
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from iterflow.core.flow_graph import FlowGraph
from iterflow.core.graph import DownstreamView, Edge, find_path
from iterflow.core.memo import graph_changed
from iterflow.core.task import FunctionTask, Task, flatten, unmapped
from iterflow.errors import (
    ArgumentError,
    CycleError,
    FlowDefinitionError,
    OptionError,
    ParameterError,
)

if TYPE_CHECKING:
    from iterflow.core.state import State

__all__ = ["Flow"]

_active_flow: ContextVar[Flow | None] = ContextVar("iterflow_active_flow", default=None)
# Blocks (``case``, ``loop``) that want to know which tasks are created inside them.
_block_stack: ContextVar[tuple[Any, ...]] = ContextVar("iterflow_block_stack", default=())


class Flow(FlowGraph):
    """A named graph of tasks.

    Options: ``executor`` (the default for :meth:`run`), ``state_handlers``
    (callables ``(flow, old_state, new_state) -> state``), ``serializer``
    (``"pickle"`` or ``"json"``: the default for the flow's stored results),
    ``on_failure`` (callables ``hook(flow, state)`` called when a run ends
    failed), and for :meth:`serve`: ``schedules``, ``catchup``, ``overlap``,
    ``on_crash``, ``misfire_grace``, ``max_catchup``, ``max_active_runs``
    (see :mod:`iterflow.schedules` and docs/schedules.md).
    """

    def __init__(
        self,
        name: str,
        *,
        executor: Any = None,
        state_handlers: Iterable[Callable] | None = None,
        serializer: str | None = None,
        schedules: Iterable[Any] | None = None,
        catchup: str = "latest",
        overlap: str = "skip",
        on_crash: str = "resume",
        on_failure: Iterable[Callable] | None = None,
        misfire_grace: Any = None,
        max_catchup: int = 5,
        max_active_runs: int | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise OptionError(
                f"a flow needs a non-empty name, got {name!r}: Flow(\"my flow\")"
            )
        self.name = name
        self.executor = executor
        self.state_handlers = list(state_handlers or [])
        self.serializer = serializer
        from iterflow.schedules.options import check_options  # descriptions only, no server

        options = check_options(
            name, schedules=schedules, catchup=catchup, overlap=overlap, on_crash=on_crash,
            on_failure=on_failure, misfire_grace=misfire_grace, max_catchup=max_catchup,
            max_active_runs=max_active_runs,
        )
        self.schedules: list[Any] = options["schedules"]
        self.catchup: str = options["catchup"]
        self.overlap: str = options["overlap"]
        self.on_crash: str = options["on_crash"]
        self.on_failure: list[Callable] = options["on_failure"]
        self.misfire_grace: float | None = options["misfire_grace"]
        self.max_catchup: int = options["max_catchup"]
        self.max_active_runs: int | None = options["max_active_runs"]
        self._tasks: dict[Task, None] = {}  # insertion-ordered set
        self._others: dict[Task, None] = {}  # those not of type FunctionTask (tasks_of)
        self._edges: dict[Edge, None] = {}
        self._upstream: dict[Task, list[Edge]] = {}
        self._downstream: dict[Task, list[Edge]] = {}
        self._slugs: dict[str, Task] = {}
        self._slug_numbers: dict[str, int] = {}  # name -> last number in its slugs
        self.constants: dict[Task, dict[str, Any]] = {}
        # sorted_tasks(), kept until a task or an edge is added: validating, laying out
        # blocks and starting the machine each ask for it, and a big flow is sorted once.
        self._order: tuple[Task, ...] | None = None
        self._reference: tuple[Task, ...] | None = None  # set_reference_tasks(); else terminal

    # -- the active flow ------------------------------------------------------
    @staticmethod
    def active() -> Flow | None:
        """The flow of the innermost ``with Flow(...)`` block in this context, if any."""
        return _active_flow.get()

    def __enter__(self) -> Flow:
        self._tokens = getattr(self, "_tokens", [])
        self._tokens.append(_active_flow.set(self))
        return self

    def __exit__(self, *exc: Any) -> None:
        _active_flow.reset(self._tokens.pop())
        if self.schedules and exc[0] is None:
            # The parameters are known now: refuse a schedule whose runs could not start.
            from iterflow.schedules.options import check_parameters

            check_parameters(self)

    # -- tasks and edges ------------------------------------------------------
    @property
    def tasks(self) -> set[Task]:
        """The flow's tasks."""
        return set(self._tasks)

    @property
    def edges(self) -> set[Edge]:
        """The flow's edges."""
        return set(self._edges)

    def add_task(self, task: Task) -> Task:
        """Add ``task`` (as is, not a copy) and give it a slug unique in this flow."""
        if not isinstance(task, Task):
            raise ArgumentError(
                f"flow {self.name!r}: add_task() needs a Task, got {type(task).__name__} {task!r}"
            )
        if task in self._tasks:
            return task
        from iterflow.core.parameter import Parameter

        if isinstance(task, Parameter):
            existing = self._slugs.get(task.name)
            if existing is not None and existing is not task:
                raise ParameterError(
                    f"flow {self.name!r} already has a parameter or task named {task.name!r}; "
                    f"parameter names must be unique: rename one of them"
                )
            slug = task.name
        else:
            slug = task.name
            # Start after the last number given to this name: slugs are never freed, and
            # counting from 1 each time made building a flow quadratic in its size.
            n = self._slug_numbers.get(task.name, 1)
            while slug in self._slugs:
                n += 1
                slug = f"{task.name}-{n}"
            self._slug_numbers[task.name] = n
        if task.slug is not None and not isinstance(task, Parameter):
            # Already in another flow: a task belongs to one flow; calling it makes a copy.
            raise FlowDefinitionError(
                f"task {task.name!r} already belongs to another flow; call it inside "
                f"`with Flow({self.name!r}):` to add a copy instead"
            )
        task.slug = slug
        self._slugs[slug] = task
        self._order = None
        graph_changed()
        self._tasks[task] = None
        if type(task) is not FunctionTask:
            self._others[task] = None
        self._upstream[task] = []
        self._downstream[task] = []
        for block in _block_stack.get():
            block.task_added(self, task)
        return task

    def add_edge(
        self,
        upstream_task: Task,
        downstream_task: Task,
        key: str | None = None,
        mapped: bool = False,
        flattened: bool = False,
    ) -> Edge:
        """Add an edge, refusing at once one that would close a cycle.

        >>> from iterflow import Flow, task
        >>> one, inc = task(lambda: 1, name="one"), task(lambda x: x + 1, name="inc")
        >>> flow = Flow("by hand")
        >>> a, b = one.copy(), inc.copy()
        >>> flow.add_edge(a, b, key="x")
        <Edge one -> inc [x]>
        >>> flow.add_edge(b, a)
        Traceback (most recent call last):
        ...
        iterflow.errors.CycleError: flow 'by hand': the edge inc -> one would close a cycle: ...
        """
        for t in (upstream_task, downstream_task):
            self.add_task(t)
        if key is not None:
            for edge in self._upstream[downstream_task]:
                if edge.key == key:
                    raise FlowDefinitionError(
                        f"task {downstream_task.name!r} in flow {self.name!r} already has an "
                        f"input {key!r} (from {edge.upstream_task.name!r}); an input takes one "
                        f"upstream: give the other one another key, or add it as an ordering "
                        f"edge (no key, upstream_tasks=[...])"
                    )
        # Read children on demand: copying the whole graph per edge made building quadratic.
        path = find_path(downstream_task, upstream_task, DownstreamView(self._downstream))
        if path is not None:
            names = [t.slug or t.name for t in (*path, downstream_task)]  # add_task set slugs
            raise CycleError(
                f"flow {self.name!r}: the edge {upstream_task.slug} -> {downstream_task.slug} "
                f"would close a cycle: {' -> '.join(names)}. A flow is acyclic; to repeat "
                f"work, raise LOOP inside a task instead.",
                path=names,
            )
        edge = Edge(upstream_task, downstream_task, key=key, mapped=mapped, flattened=flattened)
        self._order = None
        graph_changed()
        self._edges[edge] = None
        self._upstream[downstream_task].append(edge)
        self._downstream[upstream_task].append(edge)
        return edge

    def set_dependencies(
        self,
        task: Task,
        upstream_tasks: Iterable[Any] | None = None,
        downstream_tasks: Iterable[Task] | None = None,
        keyword_tasks: dict[str, Any] | None = None,
        mapped: bool = False,
    ) -> None:
        """Wire ``task``: ordering edges, data edges (tasks) and constants (other values).

        With ``mapped=True`` every keyword argument is mapped over, except those
        wrapped in :class:`unmapped`; constant iterables become constant tasks.
        """
        self.add_task(task)
        for up in upstream_tasks or ():
            self.add_edge(self._as_task(up), task)
        for down in downstream_tasks or ():
            self.add_edge(task, down)
        for key, value in (keyword_tasks or {}).items():
            is_mapped = mapped
            flattened = False
            if isinstance(value, unmapped):
                is_mapped, value = False, value.value
            if isinstance(value, flatten):
                if not mapped:
                    raise FlowDefinitionError(
                        f"task {task.name!r} in flow {self.name!r}: flatten() only makes "
                        f"sense for an argument of task.map(...); call {task.name}.map(...) "
                        f"to map over the flattened items, or pass the list of lists as is"
                    )
                flattened, value = True, value.value
            if isinstance(value, Task):
                self.add_edge(value, task, key=key, mapped=is_mapped, flattened=flattened)
            elif is_mapped:
                from iterflow.core.helpers import Constant

                self.add_edge(
                    Constant(value, name=f"{task.name}.{key}"), task, key=key, mapped=True,
                    flattened=flattened,
                )
            else:
                self.constants.setdefault(task, {})[key] = value
                graph_changed()

    def _as_task(self, value: Any) -> Task:
        if isinstance(value, Task):
            return value
        raise ArgumentError(
            f"flow {self.name!r}: upstream_tasks takes tasks, got {type(value).__name__} {value!r}"
        )

    # -- calling a flow from another (see iterflow.core.subflow) ---------------
    def as_task(self, **options: Any) -> Task:
        """This flow as a task: call it inside another flow for a child flow run.

        ``options`` are :class:`~iterflow.Task` options (``max_retries``,
        ``timeout``, ``trigger``, ``name``, ...).

        >>> from iterflow import Flow, Parameter
        >>> with Flow("inner") as inner:
        ...     x = Parameter("x")
        >>> with Flow("outer") as outer:
        ...     runs = inner.as_task(max_retries=1).map(x=[1, 2, 3])
        """
        from iterflow.core.subflow import SubflowTask

        return SubflowTask(self, **options)

    def __call__(self, *args: Any, **parameters: Any) -> Task:
        """Inside ``with Flow(...)``: add a run of this flow as a task, with these parameters.

        Same as ``self.as_task()(**parameters)``; ``upstream_tasks=`` and
        ``flow=`` work as for any task call.
        """
        return self.as_task()(*args, **parameters)

    def map(self, *args: Any, **parameters: Any) -> Task:
        """Inside ``with Flow(...)``: a child run of this flow per element of the inputs."""
        return self.as_task().map(*args, **parameters)

    def validate(self) -> None:
        """Check the graph: edges within the flow, no cycle, arguments, loop blocks.

        Every task's inputs must suit its function; every loop block must say
        when to stop, and no task may use a task inside a block it is not in
        (after a block, a task takes ``it.final``). Raises
        :class:`~iterflow.errors.FlowDefinitionError` (a ``ValueError``), or
        :class:`~iterflow.errors.ArgumentError` (a ``TypeError``) for a task whose
        inputs its function cannot accept, naming the task.
        ``flow.run()`` calls it before anything runs.
        """
        from iterflow.core.validation import validate_flow

        validate_flow(self)

    # -- running --------------------------------------------------------------
    def run(
        self,
        parameters: dict[str, Any] | None = None,
        executor: Any = None,
        store: Any = "default",
        context: dict[str, Any] | None = None,
        *,
        resume: str | None = None,
        progress: bool = False,
        run_id: str | None = None,
        source: str | None = None,
        max_concurrency: int | None = None,
        from_iteration: int | None = None,
        task: str | None = None,
    ) -> State:
        """Run the flow and return its final state.

        ``state.result`` maps each task to its final task state. ``executor``
        overrides the flow's default; ``store=None`` turns recording off (the
        default records to ``ITERFLOW_STORE_URL`` or the embedded SQLite file);
        ``resume=run_id`` continues a failed, cancelled or crashed run.
        ``max_concurrency`` bounds how many ``async def`` task runs are awaited
        at once (default 100).

        Called inside a running event loop (Jupyter, an async app), the run goes
        on a worker thread and this call waits for it, which holds that loop up
        meanwhile: ``await flow.run_async(...)`` does not.

        ``run_id=ID`` names a new run, and is idempotent: a finished run of
        that id returns its recorded result, a failed one resumes.
        ``resume=run_id, from_iteration=K, task=NAME`` rewinds a loop to
        iteration K and reruns what is downstream (docs/durable.md).

        >>> from iterflow import Flow, Parameter, task
        >>> @task
        ... def total(n):
        ...     return sum(range(n))
        >>> with Flow("sum") as flow:
        ...     t = total(Parameter("n"))
        >>> state = flow.run(parameters={"n": 10}, store=None)
        >>> state.is_successful(), state.result[t].result
        (True, 45)
        """
        from iterflow import runtime  # lazy: building a flow never loads the engine

        return runtime.run_flow(
            self,
            parameters=parameters,
            executor=executor,
            store=store,
            context=context,
            resume=resume,
            progress=progress,
            run_id=run_id,
            source=source,
            max_concurrency=max_concurrency,
            from_iteration=from_iteration,
            task=task,
        )

    async def run_async(
        self,
        parameters: dict[str, Any] | None = None,
        executor: Any = None,
        store: Any = "default",
        context: dict[str, Any] | None = None,
        *,
        resume: str | None = None,
        progress: bool = False,
        run_id: str | None = None,
        max_concurrency: int | None = None,
    ) -> State:
        """Run the flow from async code: ``state = await flow.run_async(...)``.

        The same arguments and result as :meth:`run`. The runner works on a
        worker thread; the flow's ``async def`` tasks are awaited on the
        caller's own event loop, so they may use a client the caller made, and
        the loop stays free for the caller's other tasks while the run goes on.
        Cancelling the awaiting task cancels the run (recorded ``Cancelled``).

        >>> state = await flow.run_async(store=None)   # doctest: +SKIP
        """
        from iterflow import runtime

        return await runtime.run_flow_async(
            self,
            parameters=parameters,
            executor=executor,
            store=store,
            context=context,
            resume=resume,
            progress=progress,
            run_id=run_id,
            max_concurrency=max_concurrency,
        )

    def serve(self, **options: Any) -> None:
        """Run the flow on its schedules until stopped (Ctrl-C, SIGTERM).

        Options as for :func:`iterflow.schedules.server.serve` (``store``,
        ``drain``, ...).

        >>> flow.serve()   # doctest: +SKIP
        """
        from iterflow.schedules import serve  # lazy, as run() reaches the runtime

        serve(self, **options)

    def visualize(self, filename: Any = None, format: str = "svg",
                  flow_state: Any = None) -> str:
        """The flow's graph as SVG text, written to ``filename`` too when given.

        Loops show as self-edges labelled with their counts and loop blocks as
        frames with a back-edge; with ``flow_state`` (what :meth:`run` returned)
        tasks are coloured by state and mapped tasks show their width. The
        dashboard draws the same picture; no system binary is needed.

        >>> svg = flow.visualize("flow.svg")                # doctest: +SKIP
        """
        if format != "svg":
            raise OptionError(
                f"flow.visualize() draws SVG only, got format={format!r}: use format=\"svg\""
            )
        from iterflow.ui.pictures import flow_svg  # lazy: the renderer, as run() reaches runtime

        svg = flow_svg(self, flow_state)
        if filename is not None:
            with open(filename, "w", encoding="utf-8") as fh:
                fh.write(svg)
        return svg

    def _repr_svg_(self) -> str:
        """Notebooks display a flow as its graph."""
        from iterflow.ui.pictures import flow_svg

        return flow_svg(self, standalone=False)

    def __repr__(self) -> str:
        return f"<Flow {self.name!r}: {len(self._tasks)} tasks>"
