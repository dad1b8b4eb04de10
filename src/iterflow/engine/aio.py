"""Async tasks: the loop driver for an ``async def``, and the run's event loop.

An ``async def`` task is awaited, by the rules of ``docs/loops.md`` and no
others. :func:`drive_async` is :func:`iterflow.engine.expand.drive` with
``await`` where that one calls: the same ``while``, the same outcomes, the
same transitions (:class:`~iterflow.engine.transitions.TaskTransitions`),
the same context keys, the same copy of the loop result for a retry and the
same messages. The two are twins on purpose — the sync loop is the
engine's hot path and must not pay for a coroutine — so a change to one is a
change to the other; ``tests/loops/test_property.py`` runs a random mix of
sync and async tasks against one reference interpreter to hold them equal.

Where an async task run is awaited
    :class:`FlowLoop` is the flow run's event loop, on a thread the runner
    owns (or the caller's loop, for ``await flow.run_async()``). The runner
    sends an async task run there instead of to the executor when the
    executor runs jobs in this process (``LocalExecutor``,
    ``ThreadExecutor``), so every async task of the run shares one loop — a
    client made in one task works in the next — and independent ones (the
    children of a map, parallel branches) are awaited side by side, at most
    ``max_concurrency`` at once. Sync tasks keep running on the executor.
    On an executor that runs jobs elsewhere (Dask), an async task run is a
    job like any other, and :func:`run_async_task_run` awaits it on its
    worker thread's own loop (:mod:`iterflow.aio_loops`), reused by every
    later job on that thread.

Cancellation
    Ctrl-C or SIGTERM makes the runner call :meth:`FlowLoop.interrupt`:
    every async task run is cancelled where it awaits, records
    ``Cancelled`` at its iteration, and returns — no waiting for the
    iteration to end, as a sync task must.

A task that blocks the loop
    A loop whose iterations never suspend (nothing awaited really waits)
    would keep the event loop for all its iterations; the driver lets the
    loop turn between iterations every :data:`_TURN` seconds. Within one
    iteration only the task can, so a heartbeat on the loop and a watchdog
    thread beside it look out for one that does not: when the loop has not
    turned for :data:`BLOCKED_AFTER` seconds and one of the run's async task
    runs is the one running, a :class:`~iterflow.errors.LoopBlockedWarning`
    names it while it happens.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import functools
import pickle
import queue
import threading
import time
import traceback
import warnings
from concurrent.futures import Future
from typing import Any

from iterflow.aio_loops import run_on_thread_loop
from iterflow.context import _reset as _reset_context
from iterflow.context import _set as _set_context
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
)
from iterflow.engine.call import (
    ERRORED,
    FAILED,
    LOOPED,
    RETRY_ASKED,
    RETURNED,
    SKIPPED,
    SUCCEEDED,
    TIMED_OUT,
    Outcome,
    call_once_async,
)
from iterflow.engine.expand import (
    _UNASKED,
    TaskRunSpec,
    _loop_label,
    _loop_limit,
    _where,
    enter_task_run,
    keep_for_retry,
)
from iterflow.engine.mapping import NOTHING
from iterflow.engine.tasklog import TaskLogger
from iterflow.engine.transitions import Emit, TaskTransitions
from iterflow.errors import LoopBlockedWarning
from iterflow.naming import LABEL_KEY, render_run_name

__all__ = [
    "BLOCKED_AFTER",
    "DEFAULT_MAX_CONCURRENCY",
    "FlowLoop",
    "drive_async",
    "drive_task_run",
    "run_async_task_run",
]

#: How many async task runs a flow run awaits at once unless told otherwise.
DEFAULT_MAX_CONCURRENCY = 100
#: Seconds the loop may stay in one async task's step before a warning names it.
BLOCKED_AFTER = 0.5
#: How often the heartbeat beats and the watchdog looks (seconds).
_BEAT = 0.1
#: A looping task lets the event loop turn at least this often (seconds), even when its
#: iterations never suspend.
_TURN = 0.01
#: Seconds closing the loop waits for what tasks left on it (threads, generators).
_CLOSE_GRACE = 5.0


def run_async_task_run(spec: TaskRunSpec, emit: Emit | None = None) -> State:
    """The job of an async task run on a worker thread: await it on the thread's loop."""
    return run_on_thread_loop(drive_task_run(spec, emit))


async def drive_task_run(spec: TaskRunSpec, emit: Emit | None = None) -> State:
    """Await one async task run — every iteration, retry and timeout — to its final state."""
    # As expand.run_task_run: where the loop starts, the run's context with a logger.
    start, loop_result = spec.start_loop_index, spec.loop_result
    if spec.checkpoint_source is not None:
        found = spec.checkpoint_source.last_loop(spec.task_run_id)
        if found is not None and found[0] > start:
            start, loop_result = found
    ctx = dict(spec.base_context)
    ctx["logger"] = TaskLogger(ctx, emit)
    token = _set_context(ctx)  # this asyncio task's own copy of the context variable
    try:
        return await drive_async(spec, ctx, emit, start, loop_result)
    finally:
        _reset_context(token)


async def drive_async(spec: TaskRunSpec, ctx: dict[str, Any], emit: Emit | None,
                      loop_index: int = 0, loop_result: Any = NOTHING) -> State:
    """:func:`iterflow.engine.expand.drive` for an ``async def`` task, line for line."""
    task = spec.task
    enter_task_run(ctx, spec)
    fn = task.run
    inputs = spec.inputs
    run_name = (
        render_run_name(task, inputs, ctx["logger"].warning)
        if task.task_run_name is not None else None
    )
    ctx["task_run_name"] = run_name or task.name
    timeout = task.timeout
    stdout = ctx["logger"].info if task.log_stdout else None
    max_loops = task.max_loops
    max_retries = task.max_retries
    moves = (
        TaskTransitions(task, spec.flow_run_id, spec.task_run_id, spec.map_index,
                        task.serializer or spec.serializer, emit, run_name)
        if task.state_handlers or emit is not None
        else None
    )
    implied = spec.implied_running and not task.state_handlers
    after_looped = False
    state: State = Pending() if moves is not None else None  # type: ignore[assignment]
    has_result = loop_result is not NOTHING
    retries = max_retries > 0
    kept = keep_for_retry(loop_result) if retries and has_result else None
    run_count = 1
    cancel = spec.cancel
    clock = time.monotonic
    turn_at = clock() + _TURN
    try:
        lane: Any = _UNASKED  # the sinks' loop lane, once asked
        lane_head: tuple[Any, ...] = ()
        while True:
            if clock() >= turn_at:
                # An iteration that never suspends would keep the loop to itself for the
                # whole loop: let the other tasks (and a cancellation) in now and then.
                await asyncio.sleep(0)
                turn_at = clock() + _TURN
            if cancel is not None and cancel.is_set():
                stopped = Cancelled("cancelled before this iteration started",
                                    loop_count=loop_index)
                if moves is None:
                    return stopped
                return moves.ended(moves.move(state, stopped, loop_index), loop_index)
            ctx["loop_index"] = loop_index
            ctx["task_loop_count"] = loop_index + 1
            ctx["task_run_count"] = run_count
            if has_result:
                ctx["loop_result"] = ctx["task_loop_result"] = loop_result
            if moves is not None and not (after_looped and implied):
                state = moves.move(state, Running(loop_index=loop_index), loop_index)
                if state.is_finished():
                    return moves.ended(state, loop_index)
            after_looped = False

            try:
                outcome = await call_once_async(fn, inputs, timeout, stdout)
            except asyncio.CancelledError as exc:
                outcome = _cancelled_inside(exc)  # re-raises when the run is being cancelled
            kind = outcome.kind

            if kind == LOOPED:
                if max_loops is not None and loop_index + 1 >= max_loops:
                    final: State = _loop_limit(spec, task, loop_index)
                else:
                    loop_result = outcome.value
                    has_result = True
                    if moves is not None:
                        label = outcome.label
                        label = (ctx.pop(LABEL_KEY, None) if label is None
                                 else _loop_label(ctx, label))
                        if lane is _UNASKED:  # asked once, at the first Looped
                            lane, lane_head = moves.looped_lane, moves.lane_head
                        # As drive: a sink's lane takes a plain Looped as values, with no
                        # state or event made for it (see transitions.looped_lane).
                        if lane is None or outcome.message is not None or not lane(
                            lane_head, loop_index, loop_result, label
                        ):
                            looped = Looped(outcome.message, loop_result,
                                            loop_index=loop_index)
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
                    outcome.message or f"task {task.name!r} raised FAIL",
                    loop_count=loop_index + 1,
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
                        await asyncio.sleep(task.retry_delay)
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
                label = outcome.label
                label = ctx.pop(LABEL_KEY, None) if label is None else _loop_label(ctx, label)
                state = moves.move(state, final, loop_index, label)
                return moves.ended(state, loop_index)
            return final
    except asyncio.CancelledError as stop:
        # The run is being cancelled (Ctrl-C, SIGTERM): this task run stops where it
        # awaits and is recorded Cancelled at this iteration, resumable like a failure.
        stopped = Cancelled(str(stop) or "cancelled", loop_count=loop_index + 1)
        if moves is None:
            return stopped
        return moves.ended(moves.move(state, stopped, loop_index), loop_index)


def _cancelled_inside(exc: asyncio.CancelledError) -> Outcome:
    """A ``CancelledError`` out of the task: the run's cancellation, or the task's own error.

    Only a cancel request on this asyncio task (``cancelling()``) stops the
    run; a task that awaited something cancelled elsewhere just failed.
    """
    current = asyncio.current_task()
    if current is not None and current.cancelling():
        raise exc
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return Outcome(ERRORED, exc, f"CancelledError: something the task awaited was cancelled "
                   f"{str(exc)!r}", text)


class FlowLoop:
    """A flow run's event loop: async task runs are sent here and awaited side by side.

    ``loop=None`` makes a loop on a thread of its own, closed by :meth:`close`;
    a loop passed in (the caller's, for ``flow.run_async``) is used, not closed.
    """

    def __init__(self, flow_name: str, max_concurrency: int | None = None,
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.flow_name = flow_name
        self.max_concurrency = max_concurrency or DEFAULT_MAX_CONCURRENCY
        self._owned = loop is None
        self.loop = asyncio.new_event_loop() if loop is None else loop
        self._slots = asyncio.Semaphore(self.max_concurrency)
        self._jobs: dict[asyncio.Task, str] = {}  # running jobs -> what to call them
        self._pending: set[Future] = set()  # futures not done yet (the runner waits on them)
        # Futures report here when done: this loop's, and the executor's once watched.
        self._done: queue.SimpleQueue = queue.SimpleQueue()
        self._watched: set[Any] = set()
        self._outbox: collections.deque = collections.deque()  # sent, not yet started
        self._sending = False
        self._beat = time.monotonic()
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        if self._owned:
            self._thread = threading.Thread(
                target=self._serve, name="iterflow-event-loop", daemon=True
            )
            self._thread.start()
        self.loop.call_soon_threadsafe(self._heartbeat)
        self._watchdog = threading.Thread(
            target=self._watch, name="iterflow-loop-watchdog", daemon=True
        )
        self._watchdog.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    # -- jobs -----------------------------------------------------------------
    def submit(self, spec: TaskRunSpec, emit: Emit | None, *,
               base_context: dict[str, Any] | None = None, inputs: dict[str, Any] | None = None,
               cancel: Any = None) -> Future:
        """Start awaiting ``spec``'s task run on the loop; a future of its final state.

        The keywords fill the spec's fields of those names, as for
        :func:`~iterflow.engine.expand.run_task_run`.
        """
        if base_context is not None:
            spec.base_context = base_context
        if inputs is not None:
            spec.inputs = inputs
        if cancel is not None:
            spec.cancel = cancel
        if self.loop.is_closed():
            raise RuntimeError(f"the event loop of flow {self.flow_name!r} is closed")
        future: Future = Future()
        self._pending.add(future)
        self._watched.add(future)
        future.add_done_callback(self._report)
        # The job runs in a copy of this thread's context: the user's context variables
        # reach the task, as on a ThreadExecutor.
        self._outbox.append((spec, emit, future, contextvars.copy_context()))
        if not self._sending:
            # One wake-up of the loop for all the jobs sent before it gets to them (a
            # map's children): waking it per job costs a write to its socket each.
            self._sending = True
            self.loop.call_soon_threadsafe(self._start_sent)
        return future

    def _start_sent(self) -> None:
        self._sending = False  # before taking: a job sent from now on wakes the loop again
        outbox = self._outbox
        while outbox:
            spec, emit, future, ctx = outbox.popleft()
            if future.cancelled():
                continue
            job = self.loop.create_task(self._job(spec, emit), name=spec.task_run_id,
                                        context=ctx)
            self._jobs[job] = _describe(spec, self.flow_name)
            job.add_done_callback(functools.partial(self._job_done, future))

    async def _job(self, spec: TaskRunSpec, emit: Any) -> State:
        async with self._slots:
            return await drive_task_run(spec, emit)

    def _job_done(self, future: Future, job: asyncio.Task) -> None:
        self._jobs.pop(job, None)
        if future.cancelled():
            return
        if job.cancelled():  # cancelled while it waited for a slot: it never ran
            future.cancel()
        elif job.exception() is not None:
            future.set_exception(job.exception())
        else:
            future.set_result(job.result())

    def _report(self, future: Future) -> None:
        self._pending.discard(future)
        self._done.put(future)

    def wait(self, executor: Any, futures: list) -> tuple[set, set]:
        """Block until one of ``futures`` (the executor's or this loop's) is done.

        Done futures report to a queue, so a wait costs what finished, not what
        runs (``concurrent.futures.wait`` would hook every future each time).
        """
        wanted = set(futures)
        done = self._drain(wanted)
        if not done and not self._pending:
            return executor.wait(futures)  # only the executor's jobs are left
        while not done:
            poll = False
            for f in futures:
                if f in self._watched:
                    continue
                if isinstance(f, Future):  # a ThreadExecutor's: it reports when done
                    self._watched.add(f)
                    f.add_done_callback(self._done.put)
                elif f.done():  # a LocalExecutor's is done when made
                    done.add(f)
                else:  # another kind: look again in 10 ms
                    poll = True
            if done:
                break
            try:
                first = self._done.get(timeout=0.01 if poll else None)
            except queue.Empty:
                continue
            if first in wanted:
                done.add(first)
            done |= self._drain(wanted)
        self._watched -= done
        return done, wanted - done

    def _drain(self, wanted: set) -> set:
        done: set[Any] = set()
        while True:
            try:
                f = self._done.get_nowait()
            except queue.Empty:
                return done
            if f in wanted:  # not one the executor's own wait already gave back
                done.add(f)

    def interrupt(self, why: str) -> None:
        """Cancel every async task run where it awaits; each records ``Cancelled``."""
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            self.loop.call_soon_threadsafe(self._cancel_jobs, why)

    def _cancel_jobs(self, why: str) -> None:
        for job in list(self._jobs):
            job.cancel(why)

    def close(self) -> None:
        """End the loop: cancel what tasks left running on it, then close it (if ours)."""
        self._closing.set()
        thread = self._thread
        if thread is None:  # the caller's loop: stop only what is ours on it
            self.interrupt("the flow run ended")
            self._watchdog.join()
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._shutdown(), self.loop).result(_CLOSE_GRACE)
        self.loop.call_soon_threadsafe(self.loop.stop)
        thread.join(_CLOSE_GRACE)
        self._watchdog.join()
        if not thread.is_alive():
            self.loop.close()

    async def _shutdown(self) -> None:
        # What asyncio.run does at its end: tasks a task spawned and left running are
        # cancelled, async generators and the default thread pool closed.
        me = asyncio.current_task()
        left = [t for t in asyncio.all_tasks() if t is not me]
        for t in left:
            t.cancel()
        await asyncio.gather(*left, return_exceptions=True)
        await self.loop.shutdown_asyncgens()
        await self.loop.shutdown_default_executor()

    # -- a task that blocks the loop -----------------------------------------------
    def _heartbeat(self) -> None:
        self._beat = time.monotonic()
        if not self._closing.is_set():
            self.loop.call_later(_BEAT, self._heartbeat)

    def _watch(self) -> None:
        # One job seen running at every look while the loop did not turn: that job's
        # one step holds the loop. (A burst of many short steps — a big map starting —
        # also keeps the heartbeat waiting, but shows another job at each look.)
        seen: Any = None
        since = beat = 0.0
        warned: tuple[Any, float] | None = None
        while not self._closing.wait(_BEAT):
            now = time.monotonic()
            job = asyncio.current_task(self.loop)  # a read of one dict entry: safe here
            if job is None or job is not seen or self._beat != beat:
                seen, since, beat = job, now, self._beat
                continue
            held = now - since + _BEAT  # it was already running at the look before
            name = self._jobs.get(job)
            if held < BLOCKED_AFTER or name is None or warned == (job, beat):
                continue
            warned = (job, beat)
            message = (
                f"{name} has blocked the event loop for {held:.1f} s, holding up the "
                f"run's other async tasks: await non-blocking calls (asyncio.sleep, "
                f"httpx.AsyncClient), move blocking work to a thread with "
                f"`await asyncio.to_thread(...)`, or make the task a plain `def`"
            )
            try:
                warnings.warn(message, LoopBlockedWarning, stacklevel=1)
            except Warning:  # warnings turned into errors: nothing here can raise them
                pass


def _describe(spec: TaskRunSpec, flow_name: str) -> str:
    mapped = f" (map_index {spec.map_index})" if spec.map_index is not None else ""
    return f"async task {spec.task.name!r}{mapped} in flow {flow_name!r}"
