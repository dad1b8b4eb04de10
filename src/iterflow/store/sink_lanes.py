"""The store sink's lanes: loop iterations and metrics taken as plain values.

:class:`SinkLanes` is mixed into :class:`~iterflow.store.writer.StoreSink`.
A loop makes an event per iteration, and a metric-logging loop several; on
the hot path, making those events (a state, a named tuple, the sink's
dispatch on its type) costs the task's thread more than the store spends
recording them. So the engine hands the common cases here as values, in the
task's own thread: a plain ``Looped`` state with a number for its result
(:meth:`SinkLanes.record_looped`, through
:func:`iterflow.engine.transitions.looped_lane`), the ``Running`` and the
plain ``Success`` of a short task run — a chain's link, a map's child, a
loop block's body task, two events each — (:meth:`SinkLanes.record_started`
and :meth:`SinkLanes.record_success`, through
:func:`iterflow.engine.transitions.task_lane`; a Parameter's value too), a
flow run's states when the store is the run's only sink — a child run of a
subflow has two — (:meth:`SinkLanes.record_flow`, through
:meth:`iterflow.events.EventBus.flow_lane`; ``handle`` hands a
``FlowRunEvent`` to it as well) and a metric when the store is the only sink
(:meth:`SinkLanes.record_metric`). Each makes the record the writer expects
(``batch.LOOPED``; a compact ``STARTED`` or ``SUCCEEDED`` record, which the
writer makes the ``batch.TASK`` record ``handle`` makes; a ``batch.FLOW`` record as
``handle`` makes it; a metric is packed into its task run's buffer, ``metric_buffers``);
anything a lane declines comes as an event to ``handle``.
"""

from __future__ import annotations

import pickle
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, NoReturn

from iterflow.events import TaskRunEvent
from iterflow.metrics import INT_LIMIT, checked_metric
from iterflow.store.liveness import driving
from iterflow.store.metric_buffers import MetricBuffers
from iterflow.store.metric_packing import NONE, RECORD
from iterflow.store.record_layout import (
    BIG,
    FLOW,
    LOOPED,
    ROLE_LOOP,
    ROLE_START,
    STARTED,
    SUCCEEDED,
)
from iterflow.store.results import preview
from iterflow.store.snapshots import SCALARS, snapshot_parameters

__all__ = ["SinkLanes"]


class _Undrive:
    """A finished run's record's signal: once it is committed, this process stops driving it.

    Until then the run's row still says it is live, and a reader in this
    process judges such a row by whether the run is driven here (see
    :func:`iterflow.store.liveness.effective_state`): let go at once, a live
    page would read the finishing run as Crashed and stop following it. With
    ``event`` (a synchronous state), its waiter is woken too.
    """

    __slots__ = ("event", "run_id", "sink")
    _lock = threading.Lock()  # (taken only around a run's last and a resumed run's first state)

    def __init__(self, sink: SinkLanes, run_id: str, event: threading.Event | None) -> None:
        self.sink = sink
        self.run_id = run_id
        self.event = event
        sink._undriving[run_id] = self

    def set(self) -> None:
        """Committed (or given up): stop driving the run, unless it started again since."""
        with self._lock:
            undriving = self.sink._undriving
            if undriving.get(self.run_id) is self:
                del undriving[self.run_id]
                driving(self.run_id, self.sink.owner, False)
        if self.event is not None:
            self.event.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the commit (only a synchronous state's waiter waits)."""
        assert self.event is not None
        return self.event.wait(timeout)

    def is_set(self) -> bool:
        """Whether the commit was reached (only a synchronous state's waiter asks)."""
        assert self.event is not None
        return self.event.is_set()

    @classmethod
    def cancel(cls, sink: SinkLanes, run_id: str) -> bool:
        """The run starts again before its end was committed: keep driving it.

        True when an end was pending (the run is still marked driven).
        """
        with cls._lock:
            return sink._undriving.pop(run_id, None) is not None


# A state class's kind name, filled on first sight: reading it through the Kind enum
# (a property on the member) costs several dict look-ups' worth.
_KIND_NAMES: dict[type, str] = {}


def _kind_name(cls: type) -> str:
    name = _KIND_NAMES[cls] = cls.kind.value  # type: ignore[attr-defined]
    return name

_SCALARS = SCALARS  # a module global: one lookup less per iteration
#: Ints the loop lane takes: pickled in under 64 bytes, shown whole (2**255: 46 bytes).
_SHORT = 2**255
#: A task's usual results: pickled as they are (no cloudpickle), never a failure.
_PLAIN_RESULTS = frozenset({int, float, bool, str, bytes})
_PROTOCOL = pickle.HIGHEST_PROTOCOL
_now = time.time  # a Looped state's timestamp (State.timestamp) is the same clock
#: Result bytes queued before the emitting side waits for the writer (back-pressure).
MAX_PENDING_BYTES = 64 * 1024 * 1024


class SinkLanes:
    """The lanes of a store sink (the state is the sink's, see StoreSink.__init__)."""

    # Set by StoreSink.__init__; declared here for the methods below.
    batch_size: int
    max_pending: int
    _metric_wake: int
    _buffer: deque[tuple[Any, ...]]
    _metrics: MetricBuffers
    _big_bytes: int
    _done: set[str]
    _done_by_run: dict[str, list[str]]
    _driving: set[str]
    _undriving: dict[str, _Undrive]
    _last_role: dict[str, int]
    _previews_only: frozenset[str]
    _unusable: bool
    _wake: threading.Event

    #: What :meth:`task_lane` gives, once made.
    _task_lane: tuple[Callable[..., bool], Callable[..., bool], None] | None = None

    # Defined by StoreSink and its WriterThread (declarations only: a method here would
    # stand before theirs in the sink's method order).
    _raise: Callable[[], NoReturn]
    _end_opening: Callable[[], None]
    _sizes: tuple[int, int] | None
    _snapshot: Callable[..., Any]
    _wake_writer: Callable[[], None]
    _put: Callable[[tuple[Any, ...], threading.Event | None], None]
    owner: str
    store: Any

    def looped_lane(self, slug: str, serializer: str | None) -> Any:
        """:meth:`record_looped` for task ``slug``'s plain ``Looped`` states, or None.

        The engine asks once per task run (see
        :func:`iterflow.engine.transitions.looped_lane`). None where a loop
        result is not pickled as it is: another serializer, or a task with
        ``checkpoint=False`` (previews only).
        """
        if self._sizes is not None:
            # A loop: the writer keeps up with its iterations as they come, the
            # opening batch would only stop the loop longer for its first commit.
            self._end_opening()
        if serializer not in (None, "pickle") or slug in self._previews_only:
            return None
        return self.record_looped

    def record_looped(
        self, head: tuple[Any, ...], loop_index: int, value: Any, label: str | None
    ) -> bool:
        """Record ``Looped(loop_index, value)`` of the task run ``head`` names; False if not.

        The hot path of a loop with the store on, called by the loop driver
        in the task's thread instead of making a state and an event: a number
        goes as it is in a compact record (:data:`~iterflow.store.batch.LOOPED`),
        pickled by the writer. Anything else — another value,
        a task run already finished — returns False and
        the driver takes the usual way through ``handle``.
        """
        if self._unusable:
            self._raise()
        task_run_id = head[1]
        if task_run_id in self._done:
            return False
        cls = type(value)
        if cls not in _SCALARS or (cls is int and not -_SHORT < value < _SHORT):
            return False  # a very long int: its preview is cut short by handle()
        self._last_role[task_run_id] = ROLE_LOOP
        buffer = self._buffer
        # Slots are batch.LP_*, in this order. The number itself: the writer
        # pickles it and makes its preview, off this thread.
        buffer.append((LOOPED, head[0], task_run_id, head, loop_index, value, _now(),
                       label, None))
        n = len(buffer)
        if n >= self.batch_size and (
            not n % self.batch_size or n >= self.max_pending
            or self._big_bytes > MAX_PENDING_BYTES
        ):
            self._wake_writer()
        return True

    def task_lane(self, slug: str, serializer: str | None) -> Any:
        """:meth:`record_started` and :meth:`record_success` for task ``slug`` (a task lane).

        The engine asks once per task run that may use them (see
        :func:`iterflow.engine.transitions.task_lane`): a task with no state
        handler whose iterations are not committed one by one. None where a
        result is not pickled as it is (another serializer, ``checkpoint=False``).
        The third slot is the block index the records carry: none of its own.
        """
        if serializer not in (None, "pickle") or slug in self._previews_only:
            return None
        lane = self._task_lane
        if lane is None:  # the same for every task: made once per sink
            lane = self._task_lane = (self.record_started, self.record_success, None)
        return lane

    def record_started(self, head: tuple[Any, ...], loop_index: int,
                       block_index: int | None) -> bool:
        """Record ``Running`` at iteration ``loop_index`` of the task run ``head`` names.

        What ``handle`` does with that state's event, made from plain values:
        a short task run (a chain's link, a map's child, a block's body task)
        makes two events, and making them cost its thread more than the store
        spends recording them. ``head`` is the looped lane's (flow run id, task
        run id, slug, name, map index, task run name). False, having recorded
        nothing, where ``handle`` would do more than record it (a task run
        already finished, a store that failed): the driver then emits the event.
        """
        task_run_id = head[1]
        if self._unusable or task_run_id in self._done:
            return False
        last = self._last_role
        previous = last.get(task_run_id)
        last[task_run_id] = ROLE_START
        if previous == ROLE_LOOP:
            return True  # implied by the Looped before it: not recorded (see handle)
        # _append_task's work, written out: two records per short task run make this
        # and record_success the costliest calls of a block body's or a chain's store.
        buffer = self._buffer
        # Slots are record_layout.LS_*: the writer makes the TASK record handle would.
        buffer.append((STARTED, head, loop_index, _now(), block_index, None))
        n = len(buffer)
        if n >= self.batch_size and (
            not n % self.batch_size or n >= self.max_pending
            or self._big_bytes > MAX_PENDING_BYTES
        ):
            self._wake_writer()
        return True

    def record_success(self, head: tuple[Any, ...], loop_index: int, block_index: int | None,
                       value: Any, label: str | None) -> bool:
        """Record ``Success(result=value)`` ending iteration ``loop_index`` of ``head``'s task run.

        As :meth:`record_started`, for the state a plain return makes (no
        message). False, having recorded nothing, when ``handle`` must take the
        event instead: a value that cannot be snapshotted (whose error the
        usual way turns into the task run's failure), a finished task run, a
        store that failed.
        """
        task_run_id = head[1]
        if self._unusable or task_run_id in self._done:
            return False
        stored: Any = None
        if value is not None:
            cls = type(value)
            if cls in _PLAIN_RESULTS:  # as snapshot() keeps them, in fewer steps
                data = pickle.dumps(value, _PROTOCOL)
                size = len(data)
                if size <= BIG:  # below the byte budget's notice, and far from a file
                    # A number pickled in under 64 bytes is shown whole: its repr is the
                    # preview (as handle's for a Looped one), without preview()'s checks.
                    text = repr(value) if size < 64 and cls in _SCALARS else preview(value, size)
                    stored = ("pickle", data, None, size, text)
            if stored is None:  # the general way (a file, the byte budget, errors)
                event = TaskRunEvent(*head[:5], loop_index, None, False, None, block_index,
                                     label, head[5])
                try:
                    stored = self._snapshot(event, value, True)
                except Exception:
                    return False
        flow_run_id = head[0]
        self._last_role.pop(task_run_id, None)
        # _mark_done's and _append_task's work, written out (see record_started).
        self._done.add(task_run_id)
        done = self._done_by_run.get(flow_run_id)
        if done is None:
            done = self._done_by_run[flow_run_id] = []
        done.append(task_run_id)
        buffer = self._buffer
        # Slots are record_layout.LS_*: the writer makes the TASK record handle would.
        buffer.append((SUCCEEDED, head, loop_index, _now(), block_index, stored, label, None))
        n = len(buffer)
        if n >= self.batch_size and (
            not n % self.batch_size or n >= self.max_pending
            or self._big_bytes > MAX_PENDING_BYTES
        ):
            self._wake_writer()
        return True

    def record_flow(self, run_id: str, flow_name: str, state: Any,
                    parameters: dict[str, Any] | None, tasks: tuple[tuple[str, str], ...],
                    source: str | None, shape: dict[str, Any] | None,
                    signal: threading.Event | None = None) -> None:
        """Record flow run ``run_id`` moving to ``state``: a ``FlowRunEvent``'s fields.

        What ``handle`` does with that event, from plain values (it calls this):
        a child run of a subflow makes two, and making them (an event of eleven
        fields, the sink's dispatch) cost its thread more than the rest of
        their recording. The runner hands them here when this sink is its only
        one (:meth:`iterflow.events.EventBus.flow_lane`). ``parameters`` are the
        run's, on its first state (None: none to record, as for a resumed run's,
        recorded already); ``tasks`` and ``shape`` the flow's, on its first
        state. With ``signal`` (a synchronous state) this returns once it is committed.
        """
        if self._unusable:
            self._raise()
        finished = state.is_finished()
        # This process drives the run from its first state until its last is
        # committed (liveness): a dashboard in this process reads a run it no
        # longer drives, still recorded live, as Crashed.
        if not finished:
            if run_id not in self._driving:
                self._driving.add(run_id)
                if not self._undriving or not _Undrive.cancel(self, run_id):
                    driving(run_id, self.owner, True)
        else:
            if run_id in self._driving:
                self._driving.discard(run_id)
                signal = _Undrive(self, run_id, signal)
            done = self._done_by_run.pop(run_id, None)
            if done:
                self._done.difference_update(done)
        params_json = params_stored = None
        if parameters is not None:
            params_json, params_stored = snapshot_parameters(
                parameters, lambda: self.store.run_results_dir(run_id))
        # Slots are batch.F_*, in this order. The (slug, name) pairs as they come (JSON
        # makes them lists): a child run's are the same tuple each time, and copying
        # them cost its thread.
        cls = type(state)
        kind_name = _KIND_NAMES.get(cls) or _kind_name(cls)
        record = (FLOW, run_id, flow_name, kind_name, state.timestamp, state.message,
                  params_json, params_stored, tasks or None, source, finished, shape, signal)
        if signal is None:
            self._append_task(record)
        elif type(signal) is _Undrive and signal.event is None:
            self._append_task(record)  # (its writer sets it once committed)
        else:
            self._put(record, signal)

    def _mark_done(self, flow_run_id: str, task_run_id: str) -> None:
        """Remember that ``task_run_id``'s final state is recorded: no later state of it is."""
        self._done.add(task_run_id)
        done = self._done_by_run.get(flow_run_id)
        if done is None:
            done = self._done_by_run[flow_run_id] = []
        done.append(task_run_id)

    def _append_task(self, record: tuple[Any, ...]) -> None:
        """Queue a task record (``handle``'s or a lane's), or a flow run's unsynced state.

        The writer is woken once per ``batch_size`` records (it drains all that
        waits), and back-pressure is checked only at the limits: a writer behind
        a fast loop once cost every record a call here.
        """
        buffer = self._buffer
        buffer.append(record)
        n = len(buffer)
        if n >= self.batch_size and (
            not n % self.batch_size or n >= self.max_pending
            or self._big_bytes > MAX_PENDING_BYTES
        ):
            self._wake_writer()

    def record_metric(
        self,
        flow_run_id: str,
        task_run_id: str | None,
        loop_index: int | None,
        block_index: int | None,
        name: str,
        value: float,
        at: float,
    ) -> None:
        """Record a metric (a :class:`~iterflow.events.MetricEvent`'s fields, value checked).

        A task's logger calls this directly when this sink is the only one
        (``iterflow.engine.tasklog.metric_recorder``): a loop may log several
        metrics per iteration, and a record made from plain values here costs
        its thread a third of an event handed to ``handle``. The value is packed
        into its task run's buffer (``metric_buffers``), which the writer takes
        whole into its next transaction; it is woken once per ``batch_size`` records'
        worth of metrics (``metric_buffers.VALUES_PER_RECORD``).
        """
        if self._unusable:
            self._raise()
        number = self._metrics.add(flow_run_id, task_run_id, loop_index, block_index, name,
                                   value, at)
        if not number % self._metric_wake:
            self._wake_writer()  # which also waits while too much is queued

    def metric_lane(
        self, flow_run_id: str, task_run_id: str | None, get: Callable[[str], Any]
    ) -> Callable[[str, float], None]:
        """:meth:`record_metric` for one task run, as ``record(name, value)``.

        ``get`` reads the task's context: its ``loop_index`` at the time of each
        call, its ``block_index`` once (a task run belongs to one block
        iteration). What a loop's metric costs its thread is mostly calls: this
        closure is the only one between ``log_metric`` and the task run's buffer
        (see ``TaskLogger.metric``), and it packs the value there itself
        (``metric_packing.RECORD``): the writer reads no record per value. It
        also checks the value (``log_metric`` leaves that to the logger): a name
        it has numbered before and a finite float or a plain int pass two cheap
        tests, anything else goes through :func:`iterflow.metrics.checked_metric`.
        """
        buffers = self._metrics
        number_next = buffers.count
        pack = RECORD.pack
        wake_every = self._metric_wake
        wake = self._wake_writer
        now = time.time
        # A task run's block iteration is its own: it does not change while it loops.
        block = get("block_index")
        block = NONE if block is None else block

        def record(name: str, value: float) -> None:
            code = code_of(name)
            # A name seen before was checked then; a finite float needs no more (x - x
            # is NaN for NaN and the infinities), an int only a range that ``pack``
            # turns into a float. Anything else goes the slow way.
            kind = type(value)
            if code is None or not (
                (kind is float and not value - value)
                or (kind is int and -INT_LIMIT < value < INT_LIMIT)
            ):
                value = checked_metric(name, value, get("task_name"))
                if code is None:
                    code = buffers.new_code(buffer, name)
            loop = get("loop_index")
            number = number_next()
            append(pack(number, NONE if loop is None else loop, block, code, value, now()))
            if not number % wake_every:
                # A store that failed (or a sink closed) is noticed here, once per wake,
                # not per value: what was logged meanwhile is never written, and the run's
                # next state raises too.
                if self._unusable:
                    self._raise()
                wake()  # which also waits while too much is queued

        # Found once the lane exists: the buffer is kept for as long as the lane lives.
        buffer = buffers.for_lane(flow_run_id, task_run_id, record)
        append = buffer.data.extend  # one call per value: whole even with two threads
        code_of = buffer.codes.get
        return record
