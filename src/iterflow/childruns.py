"""Running a child flow run for a subflow task run; the runtime's side of subflows.

A :class:`~iterflow.core.subflow.SubflowTask` is an ordinary task whose
function is :func:`run_subflow`. What the child needs from its parent run is
in the task's context under one private key (:data:`ENV_KEY`), put there by
:func:`iterflow.runtime.run_flow` only for flows that call subflows:

- the parent's run store, and its store sink, which the child borrows (one
  writer thread for a parent and all its children);
- the parent's executor: a child of a run on the default executor runs on it,
  in the task run's own thread; on a thread pool each child gets a pool of the
  same size (a child waiting on a job in its parent's pool could deadlock it);
- where the child is started: the parent's run id and the task run's id, map
  index, loop index and loop-block iteration, recorded as the child's link
  (:mod:`iterflow.store.children`) before its first event.

A new child run of a flow that calls no subflows of its own (the usual
child: a map of them, one per loop iteration) is set up by :func:`_run_leaf`,
:func:`iterflow.runtime.run_flow`'s steps for such a run only, with what
depends on the child flow alone worked out once per parent run (:class:`Lent`).

Identity and resuming
    The child's run id is derived from the task run's id
    (:func:`iterflow.runids.subflow_run_id`), so whoever runs the task run
    again finds the child: a retry of the subflow task, or a resumed parent.
    A child that failed, was cancelled or crashed is *resumed* (its finished
    tasks are not rerun, a looping task continues at its last recorded
    iteration); a child that succeeded is not run again, its values are read
    back from the store.

Remote executors
    On Dask the subflow task runs on a worker like any task. The environment
    travels as the store's URL only; the child opens the store there (once per
    process) and runs its tasks in that worker's thread, so a map of children
    never waits for worker slots its own parents hold: no deadlock, however
    many children and workers.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from typing import Any

from iterflow.context import _reset as _reset_context
from iterflow.context import _set as _set_context
from iterflow.context import current as _current_context
from iterflow.core.memo import derived
from iterflow.core.subflow import SubflowTask, reference_values
from iterflow.errors import RunTakenOver, SubflowFailed
from iterflow.runids import subflow_run_id

__all__ = ["ENV_KEY", "SubflowEnv", "run_subflow"]

#: The context key under which a run that calls subflows finds its :class:`SubflowEnv`.
ENV_KEY = "_iterflow_subflows"

# Context keys of the task run that starts a child: the child's tasks have their own.
_TASK_KEYS = frozenset({
    "flow_name", "flow_run_id", "parameters", "task_name", "task_slug", "task_run_id",
    "task_tags", "map_index", "loop_index", "loop_result", "task_loop_count",
    "task_loop_result", "task_run_count", "logger", "block_index", "block_indices",
    "block_run_count", ENV_KEY,
})

_RESUMABLE = frozenset({"Failed", "Cancelled", "Crashed"})


class SubflowEnv:
    """What a parent run lends its children; pickles as the store's URL alone.

    ``fresh``: the parent run is new (not resumed), so a first attempt of a
    subflow task run cannot have a child run yet and need not look for one.
    """

    __slots__ = ("_lent", "cancel", "executor", "fresh", "sink", "slugs", "store",
                 "store_url")

    def __init__(self, store: Any = None, sink: Any = None, executor: Any = None,
                 store_url: str | None = None, fresh: bool = False,
                 slugs: frozenset[str] = frozenset()) -> None:
        self.store = store
        self.slugs = slugs  # the parent flow's task slugs (see _Borrowed)
        self.sink = sink
        self.executor = executor
        self.fresh = fresh
        self.store_url = store_url if store is None else store.url
        self.cancel: Any = None  # the parent runner's cancel event, set by the runtime
        # Per child flow (by id; the Lent keeps the flow, so the id stays its): what a
        # new child run of it is given, the same for every call.
        self._lent: dict[int, Lent] = {}

    def __reduce__(self) -> tuple:
        # To another process (a Dask worker): the store is opened again there by URL.
        return (SubflowEnv, (None, None, None, self.store_url))

    def lend(self, child: Any) -> Lent:
        """What a new run of ``child`` is given: see :class:`Lent`.

        Worked out once per child flow and parent run: a map of children, or a
        child per loop iteration, asks for the same many times.
        """
        lent = self._lent.get(id(child))
        if lent is None:
            lent = self._lent[id(child)] = Lent(self, child)
        return lent

    def open_store(self) -> Any:
        if self.store is not None:
            return self.store
        if self.store_url is None:
            return None
        from iterflow.store.runstore import CheckpointSource

        # One store per URL per process, kept open: many children may run here.
        return CheckpointSource(self.store_url)._store()

    def child_executor(self) -> Any:
        local, threads = _executor_classes()
        parent = self.executor
        if type(parent) is local:
            return parent  # stateless: the child runs in the task run's thread, as it would
        if isinstance(parent, threads):
            return threads(max_workers=parent.max_workers)  # type: ignore[attr-defined]
        return local()


class Lent:
    """What every new run of one child flow is given by one parent run.

    ``sink``: the parent's sink it records through (:func:`borrowed_sink`;
    None: it opens its own, or there is no store); ``source``: its script
    source (``runtime.NO_SOURCE`` when it has none); ``bus``: the event bus
    over ``sink`` (None without one: nothing listens).
    """

    __slots__ = ("bus", "child", "sink", "source")

    def __init__(self, env: SubflowEnv, child: Any) -> None:
        from iterflow.events import EventBus
        from iterflow.runtime import NO_SOURCE, script_source

        self.child = child  # kept: the parent's cache is by id(child)
        self.sink = borrowed_sink(env, child)
        self.source = script_source(child) or NO_SOURCE
        self.bus = EventBus([self.sink]) if self.sink is not None else None


def _subflow_slugs(flow: Any) -> set[str | None]:
    """The slugs of ``flow``'s subflow tasks; once per graph (core.memo): most have none."""
    return derived(flow, "subflow_slugs", lambda: {t.slug for t in flow.tasks_of(SubflowTask)})


# What a child run needs from modules that import this one, or that load the store
# (SQLAlchemy): imported on the first child run, not on each (a map of children).
_LAZY: dict[str, Any] = {}


def _executor_classes() -> tuple[type, type]:
    """(LocalExecutor, ThreadExecutor)."""
    found = _LAZY.get("executors")
    if found is None:
        from iterflow.executors.local import LocalExecutor
        from iterflow.executors.threads import ThreadExecutor

        found = _LAZY["executors"] = (LocalExecutor, ThreadExecutor)
    return found


def _parent_link() -> Any:
    """:class:`iterflow.store.children.ParentLink` (the store loads SQLAlchemy)."""
    found = _LAZY.get("ParentLink")
    if found is None:
        from iterflow.store.children import ParentLink

        found = _LAZY["ParentLink"] = ParentLink
    return found


class _Borrowed:
    """The parent's store sink lent to a child run.

    The child's flow-run events are not waited for (``sync=False``: the
    runtime tells a child's runner to send them so), and its end flushes
    nothing: the parent's own later events, and its end, are committed after
    them. Closing it leaves the sink to the parent. ``slugs`` are the tasks of
    the flow whose sink it is: it records their identities (for resume
    safety) by slug, so a child sharing one of them gets a sink of its own
    instead (see :func:`borrowed_sink`).
    """

    __slots__ = ("_sink", "handle", "implied_running", "record_flow", "slugs")

    def __init__(self, sink: Any, slugs: frozenset[str]) -> None:
        self._sink = sink
        self.slugs = slugs
        self.implied_running = getattr(sink, "implied_running", False)
        # The sink's own handle and flow lane: a child run's events and flow-run states
        # reach it with no call between.
        self.handle = sink.handle
        self.record_flow = getattr(sink, "record_flow", None)

    @property
    def taken_over(self) -> Any:
        return getattr(self._sink, "taken_over", None)

    def record_link(self, link: Any) -> None:
        self._sink.record_link(link)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def borrowed_sink(env: SubflowEnv | None, child: Any) -> Any:
    """The sink a new child run of ``env``'s run records through; None: open its own."""
    if env is None or env.sink is None:
        return None
    sink = env.sink
    if isinstance(sink, _Borrowed):  # the parent borrows too: lend what it was lent
        sink, owned = sink._sink, sink.slugs
    else:
        owned = env.slugs
    if any(t.slug in owned for t in child.tasks):
        return None
    return _Borrowed(sink, owned)


def run_subflow(task: Any, parameters: dict[str, Any]) -> Any:
    """Run (or resume) the child flow run of the current subflow task run; return its value.

    Raises :class:`~iterflow.errors.SubflowFailed` naming the child run when
    the child does not succeed.
    """
    ctx = _current_context()  # read only: the child's context is a filtered copy (below)
    child_flow = task.flow
    env: SubflowEnv | None = ctx.get(ENV_KEY)
    task_run_id = ctx.get("task_run_id")
    parent_run_id = ctx.get("flow_run_id")
    if task_run_id is None or parent_run_id is None:
        # Called outside a flow run (task.run(...) by hand): an unlinked run of its own.
        state = child_flow.run(parameters=parameters, store=None)
        return _value_or_raise(child_flow, state, None)
    child_id = subflow_run_id(task_run_id)
    store = env.open_store() if env is not None else None
    resume = None
    if store is not None:
        link = _parent_link()(
            run_id=child_id, parent_run_id=parent_run_id, parent_task_run_id=task_run_id,
            task_slug=ctx.get("task_slug"), map_index=ctx.get("map_index"),
            loop_index=ctx.get("loop_index"), block_index=ctx.get("block_index"),
        )
        if env is not None and env.fresh and env.sink is not None and (
            ctx.get("task_run_count", 1) == 1
        ):
            # A new parent's first attempt at this task run: no child run exists yet.
            # Its link goes with the parent's next batch, ahead of the child's rows.
            env.sink.record_link(link)
        else:
            from iterflow.store.children import find_run, record_parent

            if env is not None and env.sink is not None:
                env.sink.flush()  # what this process recorded of the child, readable
            found = _wait_if_ours(find_run(child_id, store=store), env, store)
            record_parent(store, link)
            if found is not None and found.state in ("Success", "Skipped"):
                return _stored_value(child_flow, store, child_id)
            if found is not None and found.state in _RESUMABLE:
                resume = child_id
    # The child stops at its next iteration when the parent is cancelled, and when this
    # task run times out (the engine abandons the task's thread, the child must not go on).
    cancel = _Either(env.cancel if env is not None else None)
    timer = None
    if task.timeout is not None:
        timer = threading.Timer(task.timeout, cancel.set)
        timer.daemon = True
        timer.start()
    # The child starts from the parent's user keys; the task run's own are not its.
    lent = env.lend(child_flow) if env is not None else None
    child_ctx = {k: v for k, v in ctx.items() if k not in _TASK_KEYS}
    token = _set_context(child_ctx)
    try:
        if lent is not None and resume is None and (store is None or lent.sink is not None) and (
            not _subflow_slugs(child_flow)  # a leaf: no environment for subflows to make
        ):
            state = _run_leaf(child_flow, lent, parameters,
                              env.child_executor(),  # type: ignore[union-attr]
                              store, child_id, child_ctx, cancel)
        else:  # a resumed child opens a sink of its own (and looks for its source)
            state = _runtime().run_flow(
                child_flow,
                parameters=None if resume else parameters,
                executor=env.child_executor() if env is not None else None,
                store=store,
                resume=resume,
                run_id=None if resume else child_id,
                borrowed_sink=None if resume or lent is None else lent.sink,
                cancel=cancel,
                source=None if resume or lent is None else lent.source,
            )
    finally:
        _reset_context(token)
        if timer is not None:
            timer.cancel()
    return _value_or_raise(child_flow, state, child_id, recorded=store is not None)


def _run_leaf(flow: Any, lent: Lent, parameters: dict[str, Any], executor: Any, store: Any,
              run_id: str, context: dict[str, Any], cancel: Any) -> Any:
    """:func:`iterflow.runtime.run_flow` for a new child run of a flow that calls no subflows.

    What ``run_flow`` does for such a run, with what depends on the child flow
    alone worked out once per parent run (``lent``: its sink's bus, its
    source): nothing to claim, resume or close, no store to open, no signal
    handler (its parent's cancel flag stops it), no environment for subflows.
    ``context`` is the child's (the current one, a fresh dict).
    """
    runtime = _runtime()
    if runtime._running_loop() is not None:  # run_flow moves such a run to a worker thread
        return runtime.run_flow(flow, parameters=parameters, executor=executor, store=store,
                                run_id=run_id, borrowed_sink=lent.sink, cancel=cancel,
                                source=lent.source)
    # Once per graph (core.memo), as run_flow: a flow changed since is checked again.
    derived(flow, "validated", lambda: flow.validate() or True)
    values = runtime.resolve_parameters(flow, parameters)
    bus = lent.bus
    runner = runtime.FlowRunner(
        flow, executor, bus=bus, parameters=values, context=context, run_id=run_id,
        cache=runtime.default_cache,
        source=None if lent.source is runtime.NO_SOURCE else lent.source, cancel=cancel,
    )
    runner.sync_flow_events = False  # its parent's later events and end cover it
    try:
        with executor.start():
            state = runner.run()
        if bus is not None:
            bus.close()  # a borrowed sink's close leaves it to the parent
    except BaseException as exc:
        if bus is not None:
            with contextlib.suppress(Exception):
                bus.close()
            taken_over = lent.sink.taken_over
            if taken_over is not None and not isinstance(exc, RunTakenOver):
                raise RunTakenOver(str(taken_over)) from exc
        raise
    if state.is_failed():
        runtime._call_failure_hooks(flow, state)
    return state


def _runtime() -> Any:
    """:mod:`iterflow.runtime` (which imports this module)."""
    found = _LAZY.get("runtime")
    if found is None:
        from iterflow import runtime

        found = _LAZY["runtime"] = runtime
    return found


class _Either:
    """A child run's cancel flag: set when its own is, or when its parent's is."""

    __slots__ = ("_own", "_parent")

    def __init__(self, parent: threading.Event | None) -> None:
        self._parent = parent
        # A flag, not an Event: nobody waits on it (iterflow.sleep polls is_set), and
        # an Event (a lock and a condition) per child run cost its start.
        self._own = False

    def is_set(self) -> bool:
        return self._own or (self._parent is not None and self._parent.is_set())

    def set(self) -> None:
        self._own = True


#: Seconds a retry waits for this process's earlier attempt at a child (timed out) to stop.
ABANDONED_GRACE = 30.0


def _wait_if_ours(found: Any, env: SubflowEnv | None, store: Any) -> Any:
    """A child run this process still drives (an attempt that timed out): wait for its end.

    Its loops were told to stop; its current task may take a moment to finish.
    """
    from iterflow.store.children import find_run
    from iterflow.store.liveness import HOST

    deadline = time.monotonic() + ABANDONED_GRACE
    while (
        found is not None and found.state in ("Running", "Pending")
        and found.pid == os.getpid() and found.host == HOST
    ):
        if time.monotonic() > deadline:
            raise SubflowFailed(
                f"child run {found.run_id} of flow {found.flow_name!r} is still running in "
                f"this process (an earlier attempt that timed out); it was asked to stop at "
                f"its next iteration. Give the subflow task a longer timeout or retry_delay.",
                run_id=found.run_id,
            )
        time.sleep(0.05)
        if env is not None and env.sink is not None:
            env.sink.flush()
        found = find_run(found.run_id, store=store)
    return found


def _value_or_raise(flow: Any, state: Any, run_id: str | None, recorded: bool = False) -> Any:
    if not state.is_successful():
        where = f"child run {run_id} of flow {flow.name!r}" if run_id else f"flow {flow.name!r}"
        see = f" (see `iterflow show {run_id}`)" if recorded else ""
        raise SubflowFailed(
            f"{where} ended {state.name}: {state.message}{_first_failure(state)}{see}",
            run_id=run_id,
        )
    return reference_values(flow, state.result or {})


def _first_failure(state: Any) -> str:
    """What the first task that failed on its own said (not one failed by its upstreams)."""
    results = state.result or {}
    for t, task_state in results.items():
        if task_state.is_failed() and task_state.name != "TriggerFailed":
            return f"; {t.slug}: {task_state.message}"
    return ""


def _stored_value(flow: Any, store: Any, run_id: str) -> Any:
    """The value of a child run that already succeeded, read back rather than run again."""
    point = store.resume_point(run_id)
    results = {}
    for t in flow.sorted_tasks():
        state = point.finished.get((t.slug, None))
        if state is not None:
            results[t] = state
    return reference_values(flow, results)


def env_for(flow: Any, store: Any, sink: Any, executor: Any,
            resumed: str | None) -> SubflowEnv | None:
    """The environment for a run of ``flow``, when it calls subflows (else None).

    ``resumed``: the id of the run being resumed, if it is one.
    """
    slugs = _subflow_slugs(flow)
    if not slugs:
        return None
    if resumed is not None and store is not None:
        from iterflow.store.children import repair_links

        # Links are written in batches: a crash may have lost the last ones.
        repair_links(store, resumed, {s for s in slugs if s is not None})
    return SubflowEnv(store=store, sink=sink, executor=executor, fresh=resumed is None,
                      slugs=frozenset(t.slug for t in flow.tasks if t.slug is not None))
