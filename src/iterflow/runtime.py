"""The composition root: ``flow.run()`` lands here.

This module alone wires a flow run together: it checks the flow and its
parameters, picks the executor, opens the run store and the progress display
as event sinks, builds a :class:`~iterflow.engine.runner.FlowRunner`, and
cleans up. Nothing below it knows about the store or the terminal; nothing
above it knows how a run is driven.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

from iterflow.childruns import ENV_KEY, env_for, run_subflow
from iterflow.core.fingerprint import task_identities
from iterflow.core.memo import derived
from iterflow.core.state import State
from iterflow.durable import SLEEPS_KEY
from iterflow.engine.cache import MemoryCache
from iterflow.engine.runner import FlowRunner, RunCancelled
from iterflow.errors import OptionError, ParameterError, RunTakenOver
from iterflow.events import EventBus
from iterflow.run_signals import ctrl_c_raises, sigterm_cancels

__all__ = ["default_cache", "resolve_parameters", "run_flow", "run_subflow", "script_source"]

#: ``run_flow(source=NO_SOURCE)``: the run has no source, do not look for one
#: (a child run: its parent run looked once for all its children).
NO_SOURCE: Any = object()

#: Final values cached in this process (``cache_for``), shared by every run.
default_cache = MemoryCache()

_DEFAULT = "default"


def resolve_parameters(flow: Any, given: dict[str, Any] | None) -> dict[str, Any]:
    """Every parameter's value for a run, or :class:`ParameterError` naming what is wrong."""
    given = dict(given or {})
    # Once per graph (core.memo): a subflow's child flow resolves them once per call.
    declared: dict[str, Any] = derived(
        flow, "parameters", lambda: {p.name: p for p in flow.parameters()})
    if given.keys() == declared.keys():  # each one given (a subflow call's case)
        return {n: given[n] for n in declared}
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
    max_concurrency: int | None = None,
    event_loop: Any = None,
    on_runner: Any = None,
    trigger: dict[str, Any] | None = None,
    force: bool = False,
    borrowed_sink: Any = None,
    cancel: Any = None,
    from_iteration: int | None = None,
    task: str | None = None,
) -> State:
    """Run ``flow`` (see :meth:`iterflow.Flow.run` for the arguments).

    ``event_loop``: where async tasks are awaited (``flow.run_async`` passes the
    caller's); None gives the run a loop of its own. ``on_runner(runner)`` is
    called before the run starts, for a caller in another thread that may
    need :meth:`FlowRunner.stop`.

    ``trigger`` says what started the run, for the store (``{"kind":
    "schedule", "schedule": name, "scheduled": epoch seconds}``); a resume is
    recorded as one. A run that ends failed calls the flow's ``on_failure``
    hooks with its final state.

    ``force=True`` resumes a run that looks alive (``iterflow resume --force``):
    its process, if it goes on, finds the run taken over and stops.

    ``borrowed_sink``: a sink already writing to ``store`` to record through;
    ``cancel``: an event that, once set, stops the run's loops at their next
    iteration (a child run borrows both from its parent: :mod:`iterflow.childruns`).
    ``from_iteration=K`` (with ``resume``) rewinds a loop to iteration K, the
    looping task named ``task`` (needed when several loop): see
    :mod:`iterflow.store.rewind`. The run may have finished; not be alive.
    """
    # Once per graph: a subflow's child flow runs once per call (see core.memo).
    derived(flow, "validated", lambda: flow.validate() or True)
    _check_max_concurrency(flow, max_concurrency)
    if event_loop is None and _running_loop() is not None:
        # Inside a running event loop (Jupyter, an async app): the run's own loop and
        # its blocking waits cannot share this thread, so the run goes on a worker.
        return _on_worker_thread(
            flow, parameters=parameters, executor=executor, store=store, context=context,
            resume=resume, progress=progress, run_id=run_id, source=source, sinks=sinks,
            max_concurrency=max_concurrency, trigger=trigger, force=force,
            from_iteration=from_iteration, task=task,
        )
    from iterflow import context as user_context

    if (from_iteration is not None or task is not None) and resume is None:
        raise ParameterError(
            f"flow {flow.name!r}: from_iteration and task rewind a recorded run; pass the "
            f"run with resume=RUN_ID"
        )
    run_store = _open_store(store, resume)
    rewind = None
    claimed = store_sink = owner = None
    fresh: tuple[str, str] | None = None  # a new run id this process recorded: (id, owner)
    forget: dict[str, list[str]] = {}
    started = contextlib.ExitStack()
    try:
        resume_point = None
        # Each task's identity, recorded with its task runs: a resume reuses a result
        # only where the task is still the same call (core.fingerprint).
        # (A child run recording through its parent's sink records none: that sink
        # knows its parent's tasks alone, see iterflow.childruns.borrowed_sink.)
        identities = task_identities(flow) if run_store is not None and (
            borrowed_sink is None or resume is not None
        ) else None
        if resume is None and run_id is not None and run_store is not None and (
            borrowed_sink is None
        ):
            # An id chosen by the caller is idempotent: see iterflow.store.idempotent.
            # (A child run recording through its parent's sink is not claimed here: its
            # parent decided already whether it is new, and the sink's owner is the parent's.)
            from iterflow.store.idempotent import FINISHED_WELL, claim_run_id, recorded_result

            owner = uuid.uuid4().hex
            existing = claim_run_id(run_store, run_id, flow.name, owner)
            if existing is None:
                fresh = (run_id, owner)
            elif existing.state in FINISHED_WELL:
                state = recorded_result(run_store, flow, existing)
                if run_store is not store:
                    _put_away(run_store)
                return state
            else:
                resume = run_id  # the rules of resume apply, refusals included
        if resume is not None:
            if run_store is None:
                raise ParameterError(
                    f"flow {flow.name!r}: resume={resume!r} needs a run store; "
                    f"do not pass store=None"
                )
            # Check and take over the run in one transaction: two processes never drive
            # one run. The owner token is the sink's: it writes only while the run is ours.
            owner = uuid.uuid4().hex
            claimed = run_store.check_resumable(
                resume, claim=True, flow_name=flow.name, owner=owner, force=force,
                finished_ok=from_iteration is not None,
            )
            changed = run_store.changed_tasks(resume, identities)
            resume_point = run_store.resume_point(resume, identities=identities)
            if changed:
                forget[resume_point.run_id] = changed
                logging.getLogger("iterflow").warning(
                    "flow %r changed since run %s ran: tasks %s are not the calls they were "
                    "and run again (their recorded results are not reused)",
                    flow.name, resume_point.run_id, ", ".join(changed),
                )
            parameters = _resumed_parameters(flow, parameters, resume_point)
            if from_iteration is not None:
                from iterflow.store.rewind import plan_rewind

                rewind = plan_rewind(run_store, resume_point, flow, from_iteration, task)
            from iterflow.store.sleeps import recorded_sleeps

            # iterflow.sleep calls the run recorded: the same call waits only what is left.
            sleeps = recorded_sleeps(run_store, resume_point.run_id)
            if sleeps:
                context = {**(context or {}), SLEEPS_KEY: sleeps}
        values = resolve_parameters(flow, parameters)
        if run_store is not None and (trigger is not None or resume is not None):
            from iterflow.store import record_trigger

            if resume is None and run_id is None:
                run_id = uuid.uuid4().hex  # the trigger row needs the run's id now
            triggered = resume if resume is not None else run_id
            assert triggered is not None
            record_trigger(triggered, **(trigger or {"kind": "resume"}), store=run_store)

        if executor is None:
            executor = flow.executor
        if executor is None:
            from iterflow.executors.local import LocalExecutor

            executor = LocalExecutor()
        # Connect before anything is recorded: a cluster that cannot be reached leaves
        # no run behind (nor a resumed run changed). The runner starts it again, nested.
        started.enter_context(executor.start())

        all_sinks = list(sinks or [])
        if run_store is not None:
            from iterflow.store.writer import OPENING_BATCH

            store_sink = borrowed_sink or run_store.sink(
                owner=owner, identities=identities, forget=forget,
                # A short run's records go in one transaction, with its end (see writer).
                opening_batch=OPENING_BATCH,
                # checkpoint=False: states and previews only (a resume reruns these).
                previews_only=frozenset(t.slug for t in flow.tasks if t.checkpoint is False),
            )
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
        checkpoints = (
            run_store.checkpoint_source()
            if run_store is not None and getattr(executor, "remote", False)
            else None
        )
        if rewind is not None:
            from iterflow.store.rewind import RewoundCheckpoints, record_rewind

            assert resume_point is not None
            before_id = record_rewind(run_store, resume_point.run_id, rewind)
            if checkpoints is not None:  # never continue from a superseded iteration
                checkpoints = RewoundCheckpoints(checkpoints, before_id)
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
            checkpoint_source=checkpoints,
            source=None if source is NO_SOURCE else (
                source if source is not None else script_source(flow)),
            max_concurrency=max_concurrency,
            event_loop=event_loop,
            cancel=cancel,  # the parent's: its Ctrl-C stops the child's loops too
        )
        if borrowed_sink is not None:
            runner.sync_flow_events = False  # its parent's later events and end cover it
        if env is not None:
            env.cancel = runner._cancel
    except BaseException:
        # The run never started: leave the store as it was, and close what we opened.
        with contextlib.suppress(Exception):
            started.close()
        with contextlib.suppress(Exception):
            if store_sink is not None:
                store_sink.close()
        with contextlib.suppress(Exception):
            if claimed is not None:
                run_store.release(claimed)
        with contextlib.suppress(Exception):
            if fresh is not None:
                from iterflow.store.idempotent import release_run_id

                release_run_id(run_store, *fresh)
        if run_store is not None and run_store is not store:
            with contextlib.suppress(Exception):
                run_store.close()
        raise
    ended_well = False
    try:
        if on_runner is not None:
            on_runner(runner)
        # A child run (given its parent's cancel event) is inside the parent's handler.
        with started, sigterm_cancels() if cancel is None else contextlib.nullcontext(), \
                _cancel_requests_stop(runner, run_store if cancel is None else None):
            state = runner.run()
        bus.close()  # its children's links too: they are queued in its sink
        ended_well = True
    except BaseException as exc:
        # The run's own exception matters more than a store that also failed to close.
        with contextlib.suppress(Exception):
            bus.close()
        taken_over = store_sink.taken_over if store_sink is not None else None
        if taken_over is not None and not isinstance(exc, RunTakenOver):
            # Whatever stopped the run here (a task failing to record, the flow's end),
            # the reason is that another process drives it now: say that.
            raise RunTakenOver(str(taken_over)) from exc
        raise
    finally:
        if run_store is not None and run_store is not store:
            with contextlib.suppress(Exception):
                if ended_well:
                    _put_away(run_store)
                else:
                    run_store.close()
    if state.is_failed():
        _call_failure_hooks(flow, state)
    return state


def script_source(flow: Any) -> str | None:
    """``/abs/FILE.py:variable`` for a flow run by ``python FILE.py``, else None.

    Recorded with the run (as ``iterflow run`` records its file), so that
    ``iterflow resume RUN`` can load the flow again: the script's module-level
    variable holding this very flow.
    """
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if not path:
        return None
    for name, value in list(vars(main).items()):
        if value is flow and name.isidentifier() and not name.startswith("_"):
            return f"{Path(path).resolve()}:{name}"
    return None


def _call_failure_hooks(flow: Any, state: State) -> None:
    """Call each ``on_failure`` hook with the final state; one that raises is logged."""
    for hook in getattr(flow, "on_failure", ()):
        try:
            hook(flow, state)
        except Exception:
            # A notification that fails must not turn into the run's failure.
            logging.getLogger("iterflow.runtime").exception(
                "on_failure hook %r of flow %r raised", hook, flow.name
            )


class _Handle:
    """The runner of a run going on in another thread, to stop it (even before it starts)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.runner: Any = None
        self.why: str | None = None

    def started(self, runner: Any) -> None:
        with self.lock:
            self.runner, why = runner, self.why
        if why is not None:
            runner.stop(why)

    def stop(self, why: str) -> None:
        with self.lock:
            self.why, runner = why, self.runner
        if runner is not None:
            runner.stop(why)


async def run_flow_async(flow: Any, **kwargs: Any) -> State:
    """``await``-able :func:`run_flow`: the runner on a worker thread, async tasks on
    the caller's loop (see :meth:`iterflow.Flow.run_async`)."""
    import asyncio

    loop = asyncio.get_running_loop()
    handle = _Handle()
    ctx = contextvars.copy_context()
    done = loop.run_in_executor(
        None, lambda: ctx.run(run_flow, flow, event_loop=loop, on_runner=handle.started, **kwargs)
    )
    try:
        return await asyncio.shield(done)
    except asyncio.CancelledError:
        # The caller gave up on the run: stop it, and let it record itself Cancelled
        # (its async tasks are on this loop) before passing the cancellation on.
        handle.stop("cancelled")
        with contextlib.suppress(BaseException):
            await done
        raise


def _running_loop() -> Any:
    """The event loop running in this thread, if any (asyncio is not imported for this)."""
    asyncio = sys.modules.get("asyncio")
    if asyncio is None:
        return None
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _on_worker_thread(flow: Any, **kwargs: Any) -> State:
    """:func:`run_flow` on a new thread, in a copy of this context; wait for it.

    Ctrl-C (or SIGTERM, from the main thread) while waiting stops the run as it
    would in this thread: recorded ``Cancelled``, then re-raised here.
    """
    ctx = contextvars.copy_context()
    box: dict[str, Any] = {}
    handle = _Handle()
    # Waited on rather than Thread.join(): on Python 3.11 a join interrupted by a
    # signal handler's exception marks a thread that is still running as stopped,
    # so the second join returned at once, this process went on to exit, and its
    # exit closed the store under the run before it recorded itself Cancelled.
    done = threading.Event()

    def target() -> None:
        try:
            box["value"] = ctx.run(run_flow, flow, on_runner=handle.started, **kwargs)
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc
        finally:
            done.set()

    thread = threading.Thread(target=target, name="iterflow-run", daemon=True)
    thread.start()
    try:
        with sigterm_cancels(), ctrl_c_raises():
            done.wait()
    except (KeyboardInterrupt, RunCancelled) as stop:
        handle.stop("cancelled by Ctrl-C" if isinstance(stop, KeyboardInterrupt) else str(stop))
        done.wait()  # the run records itself Cancelled; a second Ctrl-C stops waiting
        raise
    if "error" in box:
        raise box["error"]
    return box["value"]


def _check_max_concurrency(flow: Any, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise OptionError(
            f"flow {flow.name!r}: max_concurrency must be an int >= 1 (how many async tasks "
            f"are awaited at once), got {value!r}"
        )


def _cancel_requests_stop(runner: Any, run_store: Any) -> Any:
    """While the run goes on, ``iterflow cancel RUN`` (read by the store's heartbeat) stops it.

    Only a run of its own (not a child run, ``run_store`` None): child runs
    share their parent's cancel flag, so they stop with it.
    """
    if run_store is None:
        return contextlib.nullcontext()
    from iterflow.store.cancel_watch import watch

    return watch(runner.run_id, runner.stop)


def _open_store(store: Any, resume: str | None) -> Any:
    """The run store for this run, or None when recording is off.

    Given a URL (or the default store), the store an earlier run in this process
    opened on the same file, if it still fits (see :mod:`iterflow.store.kept_stores`).
    """
    if store is None:
        return None
    # An open store (each child run's) is one of a module loaded already: no import.
    loaded = sys.modules.get("iterflow.store.runstore")
    if loaded is not None and isinstance(store, loaded.RunStore):
        return store
    from iterflow.store import RunStore, open_store
    if isinstance(store, RunStore):
        return store
    from iterflow.store.kept_stores import take
    from iterflow.store.runstore import default_url

    url = default_url() if store == _DEFAULT else store
    kept = take(url) if isinstance(url, str) else None
    return kept if kept is not None else open_store(url)


def _put_away(run_store: Any) -> None:
    """Done with a store :func:`_open_store` opened for a run that ended well: keep it for
    the next run on its file (a SQLite file: see :mod:`iterflow.store.kept_stores`)."""
    from iterflow.store.kept_stores import give_back

    give_back(run_store)
