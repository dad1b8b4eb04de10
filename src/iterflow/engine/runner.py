"""The flow runner: drives the :class:`FlowMachine` with an executor.

It reads like a small scheduler. There are three collections:

- ``todo``: instructions from the machine not yet acted on;
- ``running``: futures of submitted jobs, each one task run;
- the machine's own record of finished task runs.

The loop: act on every instruction in ``todo`` (submit a job, or record a
state the machine decided), then wait until at least one running job
finishes, tell the machine, and put its answer in ``todo``. It ends when
nothing is left to do and nothing is running. A job runs a task run to its
end, loop included, so the runner sees one result per task run however many
iterations it took. On an executor that finishes each job inside ``submit``
(``executor.runs_inline``: the LocalExecutor), the runner acts on the job's
state at once instead, with no round through ``running``; with nothing to
emit, a plain task's run there needs no job spec at all
(:func:`~iterflow.engine.expand.run_plain`).

Loop blocks add *scopes* (:mod:`iterflow.engine.scopes`): every instruction
and every running job belongs to one, the flow itself or one iteration of a
block, which has its own small machine. The runner treats them all alike and
knows only the machine's two instruction kinds, ``RunTask`` and ``Finished``;
the blocks' own instructions (start a block, an iteration ended, retry after
a delay) are plain data it hands, in one branch, to
:meth:`Blocks.act <iterflow.engine.blocks.Blocks.act>`, whose iterations then
feed ``todo`` like the flow's machine does. It only waits out a delay an
instruction carries first, as a job. Whether simple block bodies may run
without jobs the executor says (``executor.runs_inline``); the engine imports
no executor (:mod:`iterflow.engine.protocols` names what it calls on one).

State handlers, legality checks and events of every transition, the flow
run's included, go through :mod:`iterflow.engine.transitions`; the flow run's
own moves are :class:`~iterflow.engine.flow_moves.FlowMoves`, mixed in.

An ``async def`` task run goes to the run's event loop
(:class:`~iterflow.engine.aio.FlowLoop`, made when the first one is sent)
rather than to an in-process executor, so that every async task of the run
shares one loop and they are awaited side by side; the runner waits on both
kinds of job at once. On an executor that runs jobs elsewhere (Dask) it is a
job like any other.

Parameters and cache hits finish on the spot, without a job. A job that
cannot be sent (an unpicklable task on Dask) or that crashes outside the task
(a worker lost for good) fails its task run with a message naming the cause.
Ctrl-C (or SIGTERM, turned into :class:`RunCancelled` by the runtime) marks
everything unfinished ``Cancelled``, records it, and re-raises.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections import deque
from typing import Any

from iterflow.core.helpers import Constant
from iterflow.core.parameter import Parameter
from iterflow.core.state import (
    Cached,
    Cancelled,
    Failed,
    Running,
    State,
    Success,
)
from iterflow.core.subflow import judged_tasks
from iterflow.core.task import FunctionTask
from iterflow.engine.blocks import Blocks
from iterflow.engine.cache import MemoryCache, cache_fingerprint
from iterflow.engine.expand import TaskRunSpec, plain_context, run_plain, run_task_run
from iterflow.engine.flow_moves import FlowMoves
from iterflow.engine.machine import NOTHING, Finished, FlowMachine, RunTask
from iterflow.engine.protocols import CheckpointSource, Executor
from iterflow.engine.scopes import BlockInstruction, Scope, compile_blocks
from iterflow.engine.transitions import (
    Emit,
    TaskLane,
    settle,
    task_lane,
)
from iterflow.errors import RunCancelled
from iterflow.events import EventBus, ResumePoint
from iterflow.run_signals import signals_held
from iterflow.runids import task_run_id

__all__ = ["FlowRunner", "RunCancelled", "task_run_id"]


#: Seconds a cancelled run waits for in-process loops to stop at their next iteration.
CANCEL_GRACE = 2.0

class FlowRunner(FlowMoves):
    """Runs one flow run to its end; built by :mod:`iterflow.runtime`."""

    #: Whether a recording sink waits for the run's own states to be committed
    #: (``FlowRunEvent.sync``); a child run recording through its parent's sink does not.
    sync_flow_events = True

    def __init__(
        self,
        flow: Any,
        executor: Executor,
        bus: EventBus | None = None,
        parameters: dict[str, Any] | None = None,
        context: dict[str, Any] | None = None,
        run_id: str | None = None,
        resume: ResumePoint | None = None,
        cache: MemoryCache | None = None,
        checkpoint_source: CheckpointSource | None = None,
        source: str | None = None,
        max_concurrency: int | None = None,
        event_loop: Any = None,
        cancel: Any = None,
    ) -> None:
        self.flow = flow
        self.executor = executor
        self.bus = bus if bus else None
        self.parameters = dict(parameters or {})
        self.user_context = dict(context or {})
        self.resume = resume
        self.run_id = resume.run_id if resume else (run_id or uuid.uuid4().hex)
        self.cache = cache if cache is not None else MemoryCache()
        self.checkpoint_source = checkpoint_source
        self.source = source
        # Input fingerprints of submitted task runs that fill the cache when they succeed.
        self._fingerprints: dict[tuple[Any, int | None], str] = {}
        self._blocks: Blocks | None = None  # the flow's loop blocks, when it has any
        # Set on Ctrl-C / SIGTERM: in-process loops stop before their next iteration.
        # A child run's is given (its parent's, see iterflow.childruns): none made for it.
        self._cancel = cancel if cancel is not None else threading.Event()
        # The run's event loop for async tasks, made when the first one is sent.
        self.max_concurrency = max_concurrency
        self._event_loop = event_loop
        self._flow_loop: Any = None
        self._stop_why: str | None = None  # set by stop()
        # Where a signal's exception waits over a job's hand-over (set per run: the thread).
        self._hold: Any = contextlib.nullcontext()
        # Where the run's states go as values, when the only sink takes them so (see
        # EventBus.flow_lane); a resumed run's first event says more (its finished tasks).
        self._flow_lane = (
            self.bus.flow_lane() if self.bus is not None and resume is None else None)

    # -- public ---------------------------------------------------------------
    def run(self) -> State:
        """Run the flow; return its final state (``result``: task -> final state)."""
        flow = self.flow
        emit = self.bus.emitter() if self.bus is not None else None
        self._implied_running = bool(getattr(self.bus, "implied_running", False))
        # The plain LocalExecutor finishes each job inside submit (a subclass that counts
        # or wraps jobs does not say runs_inline, and goes the usual way).
        self._inline = getattr(self.executor, "runs_inline", False) is True
        root_view, plans = compile_blocks(flow)  # checks blocks before anything runs
        if plans:
            self._blocks = Blocks(
                flow, plans, self.run_id, emit, self.resume,
                inline=bool(getattr(self.executor, "runs_inline", False)),
                executor_name=repr(self.executor),
                implied_running=self._implied_running,
            )
        machine = FlowMachine(
            root_view,
            resume_finished=self.resume.finished if self.resume else None,
            resume_loops=self.resume.loops if self.resume else None,
            settle=settle,
            judged=judged_tasks(flow),
        )
        self.base_context = {
            **self.user_context,
            "flow_name": flow.name,
            "flow_run_id": self.run_id,
            "parameters": self.parameters,
        }
        state = self._flow_move(None, Running("running"), initial=True)
        running: dict[Any, tuple[Scope, Any, int | None]] = {}
        self._hold = hold = signals_held()
        try:
            if state.is_finished():  # a flow state handler ended the run before it began
                return self._finish(state, machine)
            with self.executor.start():
                relay = self.executor.event_relay(emit)
                root = Scope(machine, self.run_id, self.base_context, relay,
                             has_blocks=bool(plans))
                todo: deque = deque(root.start())
                while todo or running:
                    if self._stop_why is not None:  # stop() from another thread
                        raise RunCancelled(self._stop_why)
                    while todo:
                        if self._stop_why is not None:  # between inline jobs too
                            raise RunCancelled(self._stop_why)
                        scope, instr = todo.popleft()
                        self._act(instr, scope, running, todo, emit)
                    if running:
                        done, _ = (
                            self.executor.wait(list(running)) if self._flow_loop is None
                            else self._flow_loop.wait(self.executor, list(running))
                        )
                        for future in done:
                            scope, task, map_index = running[future]
                            if isinstance(task, BlockInstruction):  # its delay has passed
                                with hold:
                                    del running[future]
                                    todo.extend(self._to_blocks(scope, task))
                                continue
                            final = self._job_result(future, scope, task, map_index, emit)
                            # Its end reaches the machine whole, or the job stays running.
                            with hold:
                                del running[future]
                                self._remember(task, map_index, final)
                                todo.extend(scope.task_run_finished(task, map_index, final))
                if self._stop_why is not None:  # stopped as the last jobs ended
                    raise RunCancelled(self._stop_why)
            final_state = machine.flow_state()
        except BaseException as exc:
            if not isinstance(exc, (KeyboardInterrupt, RunCancelled)):
                raise
            if self._stop_why is not None:
                # Stopped from another thread: say why, whichever came first here, the
                # flag or a job that saw it and stopped (iterflow.sleep raises its own).
                why = self._stop_why
            elif isinstance(exc, KeyboardInterrupt):
                why = "cancelled by Ctrl-C"
            else:
                why = str(exc) or "cancelled"
            self._stop_running(running, emit, why)
            self._cancel_unfinished(machine, running, emit, why)
            self._finish(Cancelled(why), machine)
            raise
        finally:
            if self._flow_loop is not None:
                self._flow_loop.close()
        return self._finish(final_state, machine)

    def stop(self, why: str = "cancelled") -> None:
        """Cancel the run from another thread, as Ctrl-C would: recorded ``Cancelled``.

        Loops stop before their next iteration, async tasks where they await;
        the runner's thread then raises :class:`RunCancelled` out of :meth:`run`.
        """
        self._stop_why = why
        self._cancel.set()
        if self._flow_loop is not None:
            self._flow_loop.interrupt(why)

    # -- acting on instructions -------------------------------------------------
    def _act(self, instr: Any, scope: Scope, running: dict, todo: deque, emit: Emit | None
             ) -> None:
        # A loop, not a call per instruction: a plain task run's one next instruction, with
        # nothing else waiting, is acted on here, as the run loop would act on it next.
        while True:
            if type(instr) is not RunTask:  # one question for the usual instruction, not two
                self._act_otherwise(instr, scope, running, todo, emit)
                return
            task, map_index = instr.task, instr.map_index
            # Asked only of the tasks that may finish without a job (most have no cache;
            # a plain @task call is neither a Parameter nor a Constant).
            if task.cache_for is not None or (type(task) is not FunctionTask and (
                isinstance(task, Parameter) or type(task) is Constant
            )):
                quick = self._finish_without_job(instr)
                if quick is not None:
                    quick = settle(task, quick)
                    if emit is not None and not self._quick_by_lane(emit, scope, task,
                                                                    map_index, quick):
                        emit(self._event(scope, task, map_index, quick))
                    todo.extend(scope.task_run_finished(task, map_index, quick))
                    return
            inline = self._inline and not task.is_async
            relay = scope.relay
            if (
                inline and self.checkpoint_source is None
                and instr.start_loop_index == 0 and instr.loop_result is NOTHING
                and (relay is None or (lane := self._task_lane(relay, task)) is not None)
            ):
                # Nothing to emit, or a sink that takes the start and success as values: a
                # plain task's run takes run_plain's fewer steps (a chain's every link); it
                # says None, having done nothing, for any other task.
                template = scope.plain_context
                if template is None:  # once per scope: its base context does not change
                    template = scope.plain_context = plain_context(scope.base_context)
                try:
                    final = run_plain(
                        task, instr.inputs, template,
                        # As scope.task_run_id, one call less; every task in a flow has its slug.
                        task_run_id(scope.prefix, task.slug, map_index),  # type: ignore[arg-type]
                        map_index, self._cancel, relay, lane if relay is not None else None,
                        _make_spec, self, instr, scope,
                    )
                except Exception as exc:  # a crash outside the task, as _job_result says
                    final = self._crashed(exc, scope, task, map_index, emit)
                if final is not None:
                    if task.cache_for is not None:
                        self._remember(task, map_index, final)
                    if not scope.bare:
                        todo.extend(scope.task_run_finished(task, map_index, final))
                        return
                    # Scope.task_run_finished's plain case, with no pair made for the one
                    # instruction (a chain's next link) that is acted on next, here: todo
                    # was empty, and the run loop would pop it and act on it, unless the
                    # run was stopped meanwhile.
                    after = scope.machine.task_run_finished(task, map_index, final)
                    if len(after) == 1 and not todo and self._stop_why is None:
                        instr = after[0]
                        continue
                    todo.extend([(scope, i) for i in after])
                    return
            spec = self._spec(instr, scope, inline)
            if inline:
                # The executor would run the job in this thread, done when submit returns:
                # run it here and act on its state now, with no future, no round through
                # ``running`` and no ``executor.wait``.
                try:
                    final = run_task_run(spec, scope.relay)
                except Exception as exc:  # a crash outside the task, as _job_result says
                    final = self._crashed(exc, scope, task, map_index, emit)
                self._remember(task, map_index, final)
                todo.extend(scope.task_run_finished(task, map_index, final))
                return
            # Values many jobs hold in common travel apart from the spec, so that an executor
            # may send them once; it replaces the cancel flag where jobs run elsewhere.
            shared = {"base_context": scope.base_context, "inputs": instr.inputs,
                      "cancel": self._cancel}
            try:
                # A signal's exception waits until the job is known to be running: cut in
                # between, the job would run on unnamed, uncancelled and unrecorded.
                with self._hold:
                    if task.is_async and not self.executor.remote:
                        future = self._async_loop().submit(spec, scope.relay, **shared)
                    else:
                        future = self.executor.submit(run_task_run, spec, scope.relay,
                                                      key=spec.task_run_id, shared=shared)
                    running[future] = (scope, task, map_index)
            except Exception as exc:
                failed = Failed(
                    f"task {task.name!r} in flow {self.flow.name!r} could not be sent to "
                    f"{self.executor!r}: {type(exc).__name__}: {exc}",
                    exc,
                    loop_count=0,
                )
                self._fingerprints.pop((task, map_index), None)
                if emit is not None:
                    emit(self._event(scope, task, map_index, failed))
                todo.extend(scope.task_run_finished(task, map_index, failed))
            return

    def _task_lane(self, relay: Emit, task: Any) -> TaskLane | None:
        """The sinks' lane for ``task``'s plain start and success, where it may take one."""
        if task.state_handlers or task.checkpoint == "every":
            return None
        return task_lane(relay, task.slug, task.serializer or self.flow.serializer)

    def _quick_by_lane(self, emit: Emit, scope: Scope, task: Any, map_index: int | None,
                       state: State) -> bool:
        """Record a task run finished without a job through the sinks' task lane; False if not.

        A Parameter's or a literal's plain ``Success`` (a child run of a subflow
        has one per parameter) is recorded as the event would record it, with
        no event made; a cache hit (its message), a handler's state or a sink
        with no lane goes the usual way.
        """
        if type(state) is not Success or state.message is not None:
            return False
        lane = self._task_lane(emit, task)
        if lane is None:
            return False
        head = (self.run_id, scope.task_run_id(task, map_index), task.slug, task.name,
                map_index, None)
        return bool(lane[1](head, max((state.loop_count or 1) - 1, 0), scope.block_index,
                            state.result, None))

    def _act_otherwise(self, instr: Any, scope: Scope, running: dict, todo: deque,
                       emit: Emit | None) -> None:
        """Act on an instruction other than :class:`RunTask`: the blocks' own, or Finished."""
        if isinstance(instr, BlockInstruction):  # the loop blocks' own: theirs to act on
            if instr.delay:
                try:  # waited out as a job, so the rest of the flow goes on meanwhile
                    with self._hold:
                        future = self.executor.submit(time.sleep, instr.delay, key=instr.key)
                        running[future] = (scope, instr, None)
                    return
                except Exception:  # no worker to wait on: skip the delay rather than stall
                    pass
            todo.extend(self._to_blocks(scope, instr))
            return
        if isinstance(instr, Finished) and emit is not None and not instr.resumed:
            emit(self._event(scope, instr.task, instr.map_index, instr.state))

    def _spec(self, instr: RunTask, scope: Scope, inline: bool) -> TaskRunSpec:
        """The job's :class:`TaskRunSpec`; ``inline``: for this thread, inputs included."""
        task, map_index = instr.task, instr.map_index
        # Positional, in TaskRunSpec's field order: half the cost of keywords, per task run.
        return TaskRunSpec(
            task,
            map_index,
            self.run_id,
            # As scope.task_run_id, one call less; every task in a flow has its slug.
            task_run_id(scope.prefix, task.slug, map_index),  # type: ignore[arg-type]
            instr.inputs if inline else {},  # inputs
            scope.base_context if inline else {},  # base_context
            instr.start_loop_index,
            instr.loop_result,
            self.flow.serializer,
            # Asked by task run id, so a body task inside a loop block finds its own
            # iteration's record, not another iteration's run of the same task.
            self.checkpoint_source,
            self._cancel if inline else None,  # cancel
            self._implied_running,
        )

    def _to_blocks(self, scope: Scope, instr: BlockInstruction) -> list:
        assert self._blocks is not None  # a scope makes block instructions only when it has any
        return self._blocks.act(scope, instr)

    def _async_loop(self) -> Any:
        if self._flow_loop is None:
            from iterflow.engine.aio import FlowLoop  # only runs with async tasks load it

            self._flow_loop = FlowLoop(self.flow.name, self.max_concurrency, self._event_loop)
        return self._flow_loop

    def _finish_without_job(self, instr: RunTask) -> State | None:
        task = instr.task
        if isinstance(task, Parameter):
            return Success(result=self.parameters.get(task.name, task.default), loop_count=1)
        if type(task) is Constant:  # the literal behind t.map([...]): no job, no round trip
            return Success(result=task.value, loop_count=1)
        if task.cache_for is not None:
            fingerprint = cache_fingerprint(instr.inputs)
            hit = self.cache.get(self._cache_key(task), fingerprint)
            if hit is not None:
                value, loop_count, _expires = hit
                return Cached("cached final value", value, loop_count=loop_count)
            # A miss: remember the fingerprint, so the final value fills the cache.
            self._fingerprints[(task, instr.map_index)] = fingerprint
        return None

    def _remember(self, task: Any, map_index: int | None, state: State) -> None:
        if task.cache_for is not None:
            fingerprint = self._fingerprints.pop((task, map_index), None)
            if fingerprint is not None and state.kind is Success.kind:
                self.cache.put(
                    self._cache_key(task), fingerprint, state.result,
                    state.loop_count, task.cache_for,
                )

    def _cache_key(self, task: Any) -> str:
        return task.cache_key or f"{self.flow.name}/{task.slug}"

    def _job_result(self, future: Any, scope: Scope, task: Any, map_index: int | None,
                    emit) -> State:
        try:
            return self.executor.result(future)
        except Exception as exc:
            return self._crashed(exc, scope, task, map_index, emit)

    def _crashed(self, exc: Exception, scope: Scope, task: Any, map_index: int | None,
                 emit) -> State:
        """The Failed state (recorded) of a job that crashed outside its task."""
        failed = Failed(
            f"task {task.name!r} in flow {self.flow.name!r} did not finish on "
            f"{self.executor!r}: {type(exc).__name__}: {exc}",
            exc,
            loop_count=0,
        )
        if emit is not None:
            emit(self._event(scope, task, map_index, failed))
        return failed

    # -- ending -----------------------------------------------------------------
    def _stop_running(self, running: dict, emit, why: str = "cancelled") -> None:
        """Ask running jobs to stop at their next iteration and give them a moment to.

        In-process loops see the cancel flag before their next iteration and record
        themselves ``Cancelled``; jobs still running after the grace period (a long
        iteration, a remote worker) are cancelled and recorded here by the caller.
        """
        self._cancel.set()
        if self._flow_loop is not None:  # async tasks stop where they await
            self._flow_loop.interrupt(why)
        deadline = time.monotonic() + CANCEL_GRACE
        try:
            while running and time.monotonic() < deadline:
                for future in [f for f in running if f.done()]:
                    running.pop(future)
                    try:
                        self.executor.result(future)  # its own events were emitted by the job
                    except (Exception, KeyboardInterrupt, RunCancelled):
                        # A job on another thread that saw the flag stops as the runner
                        # does (iterflow.sleep raises RunCancelled), recorded Cancelled by
                        # itself: its stop must not cut this run's own end short.
                        pass
                if running:
                    time.sleep(0.01)
        except (KeyboardInterrupt, RunCancelled):
            # A second Ctrl-C (or SIGTERM) while the loops are given their moment: the
            # user will not wait. Stop waiting, but still record the run's end below,
            # or the run would be left to read as Crashed.
            pass
        self.executor.cancel(list(running))

    def _cancel_unfinished(self, machine: FlowMachine, running, emit, why: str) -> None:
        for scope, task, map_index in list(running.values()):
            if emit is not None and not isinstance(task, BlockInstruction):
                # How far its loop got is unknown here (the job is still inside an
                # iteration); the store counts the iterations it recorded.
                emit(self._event(scope, task, map_index, Cancelled(why)))
        if self._blocks is not None:
            self._blocks.cancel(why)
        for task in machine.unfinished():
            machine.states[task] = Cancelled(why, loop_count=0)


#: FlowRunner._spec as a plain function, for run_plain to call when it needs a spec:
#: ``self._spec`` would make a bound method per task run, though it is seldom called.
_make_spec = FlowRunner._spec
