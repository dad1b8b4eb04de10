"""The composition root: ``flow.run()`` lands here.

This module alone wires a flow run together: it checks the flow and its
parameters, picks the executor, opens the run store and the progress display
as event sinks, builds a :class:`~iterflow.engine.runner.FlowRunner`, and
cleans up. Nothing below it knows about the store or the terminal; nothing
above it knows how a run is driven.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

from iterflow.childruns import ENV_KEY, env_for, run_subflow
from iterflow.core.state import State
from iterflow.engine.cache import MemoryCache
from iterflow.engine.runner import FlowRunner, RunCancelled
from iterflow.errors import ParameterError
from iterflow.events import EventBus

__all__ = ["default_cache", "resolve_parameters", "run_flow", "run_subflow"]

#: Final values cached in this process (``cache_for``), shared by every run.
default_cache = MemoryCache()

_DEFAULT = "default"


def resolve_parameters(flow: Any, given: dict[str, Any] | None) -> dict[str, Any]:
    """Every parameter's value for a run, or :class:`ParameterError` naming what is wrong."""
    given = dict(given or {})
    declared = {p.name: p for p in flow.parameters()}
    unknown = sorted(set(given) - set(declared))
    if unknown:
        valid = ", ".join(sorted(declared)) or "none"
        raise ParameterError(
            f"flow {flow.name!r} got unknown parameter(s) {', '.join(unknown)}; "
            f"its parameters are: {valid}"
        )
    missing = sorted(n for n, p in declared.items() if p.required and n not in given)
    if missing:
        raise ParameterError(
            f"flow {flow.name!r} needs parameter(s) {', '.join(missing)}: pass them with "
            f"flow.run(parameters={{{', '.join(repr(m) + ': ...' for m in missing)}}})"
        )
    return {n: given.get(n, p.default) for n, p in declared.items()}


def _resumed_parameters(flow: Any, given: dict[str, Any] | None, point: Any) -> dict[str, Any]:
    """A resumed run keeps its parameters: refuse values that differ from them.

    Finished Parameter tasks load their values from the store, so the context
    must hold the same ones. A parameter the original run did not have (the
    flow gained it since) may be given.
    """
    original = point.parameters
    given = given or {}
    changed = []
    for name, value in given.items():
        if name not in original:
            continue
        try:
            same = bool(original[name] == value)
        except Exception:  # a value that cannot be compared (an array, say)
            same = original[name] is value
        if not same:
            changed.append(name)
    if changed:
        raise ParameterError(
            f"flow {flow.name!r}: run {point.run_id} resumes with the parameters it started "
            f"with; {', '.join(map(repr, sorted(changed)))} differ from them. Leave parameters "
            f"out to resume, or start a new run to use other values."
        )
    return {**given, **original}


def run_flow(
    flow: Any,
    parameters: dict[str, Any] | None = None,
    executor: Any = None,
    store: Any = _DEFAULT,
    context: dict[str, Any] | None = None,
    resume: str | None = None,
    progress: bool = False,
    run_id: str | None = None,
    source: str | None = None,
    sinks: list[Any] | None = None,
    store_sink: Any = None,
    cancel: Any = None,
) -> State:
    """Run ``flow`` (see :meth:`iterflow.Flow.run` for the arguments).

    ``store_sink``: a sink already writing to ``store`` to record through;
    ``cancel``: an event that, once set, stops the run's loops at their next
    iteration (a child run borrows both from its parent: :mod:`iterflow.childruns`).
    """
    flow.validate()
    from iterflow import context as user_context

    run_store = _open_store(store, resume)
    claimed = None
    try:
        resume_point = None
        if resume is not None:
            if run_store is None:
                raise ParameterError(
                    f"flow {flow.name!r}: resume={resume!r} needs a run store; "
                    f"do not pass store=None"
                )
            # Check and take over the run in one transaction: two processes never drive one run.
            claimed = run_store.check_resumable(resume, claim=True)
            resume_point = run_store.resume_point(resume)
            parameters = _resumed_parameters(flow, parameters, resume_point)
        values = resolve_parameters(flow, parameters)

        if executor is None:
            executor = flow.executor
        if executor is None:
            from iterflow.executors.local import LocalExecutor

            executor = LocalExecutor()

        all_sinks = list(sinks or [])
        if run_store is not None:
            store_sink = store_sink or run_store.sink()
            all_sinks.append(store_sink)
        if progress:
            from iterflow.progress import ProgressDisplay

            all_sinks.append(ProgressDisplay.for_flow(flow))
        bus = EventBus(all_sinks)
        run_context = {**user_context.to_dict(), **(context or {})}
        # Subflow tasks find the store, its sink and the executor here (None: no subflows).
        env = env_for(flow, run_store, store_sink, executor, resumed=resume)
        if env is not None:
            run_context[ENV_KEY] = env
        else:  # a run started inside a task of another run does not inherit its env
            run_context.pop(ENV_KEY, None)
        runner = FlowRunner(
            flow,
            executor,
            bus=bus,
            parameters=values,
            context=run_context,
            run_id=run_id,
            resume=resume_point,
            cache=default_cache,
            # Only a job that can be re-scheduled elsewhere (a lost Dask worker) needs to look
            # up where its loop got to; in-process jobs never restart on their own.
            checkpoint_source=(
                run_store.checkpoint_source()
                if run_store is not None and getattr(executor, "remote", False)
                else None
            ),
            source=source,
        )
        if cancel is not None:
            runner._cancel = cancel  # the parent's: its Ctrl-C stops the child's loops too
        if env is not None:
            env.cancel = runner._cancel
    except BaseException:
        # The run never started: leave the store as it was, and close what we opened.
        with contextlib.suppress(Exception):
            if store_sink is not None:
                store_sink.close()
        with contextlib.suppress(Exception):
            if claimed is not None:
                run_store.release(claimed)
        if run_store is not None and run_store is not store:
            with contextlib.suppress(Exception):
                run_store.close()
        raise
    try:
        try:
            # A child run (given its parent's cancel event) is inside the parent's handler.
            with _sigterm_cancels() if cancel is None else contextlib.nullcontext():
                state = runner.run()
        finally:
            if env is not None:
                env.close()  # the child links still waiting, before the store closes
        bus.close()
    except BaseException:
        # The run's own exception matters more than a store that also failed to close.
        with contextlib.suppress(Exception):
            bus.close()
        raise
    finally:
        if run_store is not None and run_store is not store:
            with contextlib.suppress(Exception):
                run_store.close()
    return state


@contextlib.contextmanager
def _sigterm_cancels() -> Iterator[None]:
    """Turn SIGTERM into :class:`RunCancelled` while the run is driven from the main thread.

    The runner records a cancelled run as ``Cancelled`` (resumable) rather than
    dying mid-write; signal handlers can only be installed from the main thread.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def cancel(signum: int, frame: Any) -> None:
        raise RunCancelled("cancelled by SIGTERM")

    previous = signal.signal(signal.SIGTERM, cancel)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _open_store(store: Any, resume: str | None) -> Any:
    """The run store for this run, or None when recording is off."""
    if store is None:
        return None
    from iterflow.store import RunStore, open_store
    if isinstance(store, RunStore):
        return store
    if store == _DEFAULT:
        return open_store(os.environ.get("ITERFLOW_STORE_URL"))
    return open_store(store)
