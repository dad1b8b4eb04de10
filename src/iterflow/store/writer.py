"""The store's event sink: events in, batched transactions out, on one background thread.

:meth:`StoreSink.handle` runs in the thread that made the transition, so it
does only what must happen there:

* it **snapshots the result** of ``Looped``, ``Success`` and ``Cached``
  states — serializes it, makes its preview, and writes results over 1 MiB
  to their file — so a later iteration that mutates the same object cannot
  change the record (DESIGN §7.10). A value that cannot be serialized raises
  :class:`~iterflow.errors.SerializationError` naming the task, the iteration
  and the type. Other states' results (a failure's exception) are kept on a
  best-effort basis: a preview if nothing else;
* it turns the event into a small record (never holding the live result) and
  appends it to a bounded buffer.

A loop's plain iterations skip even that: a task run with no state handlers
hands each ``Looped`` state with a number for its result (and no message) to
:meth:`StoreSink.record_looped` as values (the loop driver's *lane*, see
:func:`iterflow.engine.transitions.looped_lane`), with no state or event
made for it, and it becomes a compact record. Anything else the lane
declines, and it comes as an event.

The writer thread wakes every ``batch_interval`` (50 ms), or as soon as
``batch_size`` records are waiting, and commits what is waiting: in
transactions of ``batch_size`` records, or of up to ``max_batch`` when it has
fallen behind a fast loop — each transaction costs it several waits for the
GIL, so fewer, larger ones let it keep up. Back-pressure keeps memory flat:
``handle`` waits while ``max_pending`` records (or 64 MiB of result bytes)
are queued; logged metrics count eight to a record, for waking the writer
too (:data:`~iterflow.store.metric_buffers.VALUES_PER_RECORD`). That limit
also bounds what a run waits for at its end: a loop that keeps the writer
behind leaves the transaction in flight and at most ``max_pending``
records to commit after its last iteration. At 1,024 a 100,000-iteration
loop waits ~5 ms at its end on SQLite, ~13 on PostgreSQL
(at 4,096: 15 to 40 ms, ~60; 10,000 left 50 to 80 ms on SQLite), and runs
no slower: the writer still takes all that waits in one transaction, and
the per-transaction cost of four times as many is within the noise. So
``max_batch`` only matters for a sink given a larger ``max_pending``, or an
opening batch. How records become rows is :mod:`iterflow.store.batch`'s job.

The opening batch
-----------------
A sink given ``opening_batch`` (a flow run's own sink: 4,096, see
:data:`OPENING_BATCH`) lets a run's first records wait for the batch
interval, or until that many wait: until the writer's first batch with no
synchronous record in it (the run's start is one), or a loop's first
``Looped`` (:meth:`StoreSink.looped_lane`: the writer keeps up with a loop as
its iterations come), ``batch_size`` and ``max_pending`` are both
``opening_batch``. A short run — a chain of a thousand tasks, a few ms of
work — is then written in one transaction, with
its end, rather than in several, each of which stopped the task's thread
while the writer, holding the GIL, built its rows (and a woken writer waits
up to the interpreter's switch interval for the GIL). A longer run goes on
with the sizes above after its first batch, at most ``batch_interval``
(50 ms) in: its end waits no longer than before. What a SIGKILL may lose
is still one batch, of at most ``max_batch`` records and ``batch_interval``.

What is recorded
----------------
* every ``Looped`` state with its result, in one ``state_transitions`` row
  (a value over 1 MiB in a file, with a ``results`` row for its path);
* every ``Retrying``, failed and finished state, with message and traceback;
* ``Running`` only where a task run (re)starts: its first ``Running``, one
  after a ``Retrying``, the first one of a resumed run, and any with a
  message. The ``Running`` that follows each ``Looped`` is implied by it and
  skipped — it is half of all events in a loop. Nor is the first ``Running``
  of a task run new to the store that also ends within the same batch (a
  map's child, a loop block's body task, a chain's link) recorded: its
  ``task_runs.started`` holds that time, and the row would be a third of such
  a task run's rows. A task run still open when its batch is committed keeps
  it. ``Pending`` task states are not recorded;
* a task with ``checkpoint=False`` records these states with a preview of
  their values only (:data:`~iterflow.store.snapshots.PREVIEW_ONLY`);
* every flow-run state, log line, and a heartbeat for each open flow run;
  a new child run's link to its parent (:meth:`StoreSink.record_link`), in the
  same transaction as the child's first rows or an earlier one;
  except the states of a flow run new to the store that starts and ends
  within one batch (a child run of a subflow): its ``flow_runs`` row holds
  its start, its end, its final state and message, all its ``Running`` and
  final state rows would say (a top-level run's start is committed on its
  own, so its states are all rows);
* every metric (``iterflow.log_metric``), packed: one ``metrics`` row holds a
  batch's metrics of one task run (:mod:`iterflow.store.metric_packing`), which
  wait in a buffer per task run, packed as they are logged
  (:mod:`iterflow.store.metric_buffers`); from a
  :class:`~iterflow.events.MetricEvent`, or through the sink's metric lane
  (:meth:`StoreSink.record_metric`, :meth:`StoreSink.metric_lane`) when this sink
  is the only one;
* ``task_runs`` holds each task run's latest state, updated once per batch.

Durability
----------
``event.sync`` (``checkpoint="every"``) makes ``handle`` return only after
the event is committed; so does every :class:`FlowRunEvent` (a run's start
must be visible — with its pid — before any task runs, and its end before
``flow.run()`` returns), except a child run's (``sync=False``: its parent's
own events, written after it, cover it); the runner's flow lane
(:meth:`StoreSink.record_flow`, given a signal for such a state) waits the
same. :meth:`flush` waits for everything queued.

One history per task run
------------------------
Once this sink has recorded a task run's ``Success``, ``Cached`` or ``Mapped``
state, it refuses any later non-final state of that task run — the late
``Running`` of a rerun that a Dask worker's loss set off after the task run
had finished — and says so: a warning on the ``iterflow.store`` logger and
in the run's log, naming the task run. Only this sink's own records count: a
resumed run (a new driver), a rewind and a retry start from what the store
holds. A ``Failed``, ``Cancelled`` or ``Crashed`` task run is not guarded: a
retried subflow task resumes its child run through its parent's sink, and
reopens exactly those.

Each run records this sink's owner token; once a resume elsewhere has
claimed the run, the sink's next transaction writes nothing and the sink
stops with :class:`~iterflow.errors.RunTakenOver` (see :mod:`iterflow.store.batch`).

A failed transaction (a full disk, a database locked past ``lock_timeout``)
is rolled back whole, so what was committed stays. The sink then stops
writing: ``handle`` and ``flush`` raise the :class:`~iterflow.errors.StoreError`
(every time, so the runner cannot miss it), and ``close`` raises it if nobody
has seen it yet.
"""

from __future__ import annotations

import atexit
import logging
import pickle
import threading
import uuid
import weakref
from collections import deque
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from iterflow.core.state import Kind, State
from iterflow.errors import RunTakenOver, StoreError
from iterflow.events import FlowRunEvent, LogEvent, MetricEvent, TaskRunEvent
from iterflow.store.batch import BatchRecorder
from iterflow.store.liveness import driving
from iterflow.store.metric_buffers import VALUES_PER_RECORD, MetricBuffers
from iterflow.store.record_layout import (
    BIG,
    LINK,
    LOG,
    MARK,
    ROLE_END,
    ROLE_END_MAPPED,
    ROLE_END_STRICT,
    ROLE_KEEP,
    ROLE_LOOP,
    ROLE_SKIP,
    ROLE_START,
    S_DATA,
    S_SIZE,
    TASK,
)
from iterflow.store.results import Stored, preview
from iterflow.store.sink_lanes import SinkLanes
from iterflow.store.snapshots import PREVIEW_ONLY, SCALARS, snapshot
from iterflow.store.writer_process import hand_over_policy
from iterflow.store.writer_thread import WriterThread

if TYPE_CHECKING:
    from iterflow.store.runstore import RunStore

__all__ = ["OPENING_BATCH", "StoreSink"]

#: A flow run's sink's ``opening_batch`` (see "The opening batch"): ``max_batch``'s default.
OPENING_BATCH = 4096

# What handle() does with a task run's state, by kind (see batch.ROLE_*).
_ROLE_BY_KIND = {
    Kind.PENDING: ROLE_SKIP,
    Kind.RUNNING: ROLE_START,
    Kind.LOOPED: ROLE_LOOP,
    Kind.RETRYING: ROLE_KEEP,
    Kind.SUCCESS: ROLE_END_STRICT,
    Kind.CACHED: ROLE_END_STRICT,
    Kind.MAPPED: ROLE_END_MAPPED,
}
# (kind name, role) per state class, filled on first sight: a dict lookup by
# class is several times cheaper than going through the Kind enum each time.
_ROLES: dict[type, tuple[str, int]] = {}

# Loop results common enough for a fast path in handle() (see snapshots.SCALARS).
_SCALARS = SCALARS  # a module global: one lookup less in handle()
_PROTOCOL = pickle.HIGHEST_PROTOCOL

_log = logging.getLogger("iterflow.store")
# What _prepare returns for an event that is not recorded.
_NOT_RECORDED: Any = object()


def _role_of(cls: type[State]) -> tuple[str, int]:
    kind = cls.kind
    info = _ROLES[cls] = (kind.value, _ROLE_BY_KIND.get(kind, ROLE_END))
    return info


class StoreSink(SinkLanes, WriterThread):
    """Records a run's events in a :class:`~iterflow.store.runstore.RunStore`.

    Give one to the runner as an event sink for each flow run, and call
    :meth:`close` (or :meth:`flush`) before ``flow.run()`` returns::

        sink = store.sink()
        try:
            ...            # the runner calls sink.handle(event) for every event
        finally:
            sink.close()   # commits the rest; raises StoreError if writing failed

    See the module docstring for what is recorded and when it is committed.
    """

    #: The Running after a Looped is not recorded (see "What is recorded").
    implied_running = True

    def __init__(
        self,
        store: RunStore,
        *,
        batch_interval: float = 0.05,
        batch_size: int = 500,
        max_pending: int = 1024,
        max_batch: int = 4096,
        opening_batch: int = 0,
        heartbeat_interval: float = 5.0,
        owner: str | None = None,
        identities: dict[str, str] | None = None,
        forget: dict[str, list[str]] | None = None,
        previews_only: frozenset[str] = frozenset(),
    ) -> None:
        self.store = store
        self.batch_interval = batch_interval
        self.batch_size = batch_size
        self.max_pending = max(max_pending, batch_size)
        self.max_batch = max(max_batch, batch_size)
        # Metrics wake the writer once per batch_size records' worth, opening batch or not.
        self._metric_wake = batch_size * VALUES_PER_RECORD
        # While a run's opening batch lasts (see "The opening batch"), batch_size and
        # max_pending are both opening_batch; these are the ones the writer restores.
        self._sizes: tuple[int, int] | None = None
        if opening_batch > self.max_pending:
            self._sizes = (self.batch_size, self.max_pending)
            self.batch_size = self.max_pending = opening_batch
            self.max_batch = max(self.max_batch, opening_batch)
        self.heartbeat_interval = heartbeat_interval
        self._buffer: deque[tuple[Any, ...]] = deque()
        # Metrics wait apart, packed per task run as they are logged (metric_buffers): the
        # writer takes them whole into each transaction; each commit holds every metric
        # logged before its last record, so a flush or a synchronous event covers them too.
        self._metrics = MetricBuffers()
        self._wake = threading.Event()
        self._room = threading.Condition()
        self._big_bytes = 0
        self._big_lock = threading.Lock()
        # Role of the last recorded state of each task run still going: tells
        # which Running to skip. Entries leave when the task run finishes, so
        # this never outgrows the task runs in flight.
        self._last_role: dict[str, int] = {}
        # Task runs whose Success, Cached or Mapped this sink recorded: no later
        # non-final state of theirs is recorded (see "One history per task run").
        # A flow run's entries leave when it ends: _done_by_run lists them by run, so
        # a child run's end does not scan its parent's (a map of children: quadratic).
        self._done: set[str] = set()
        self._done_by_run: dict[str, list[str]] = {}
        self._error: StoreError | None = None
        self._error_seen = False
        self._closed = False
        # One flag for handle() to test: set once writing failed or the sink closed.
        self._unusable = False
        self._stopping = False
        self._writing = False  # the writer is committing records it took (see flush)
        self._conn: sa.Connection | None = None  # the writer's own (SQLite), see _write
        # Owned by the writer thread: turns batches into rows, keeps the heartbeat.
        # Runs started and not ended here: this process drives them (see liveness).
        self._driving: set[str] = set()
        # Runs ended here whose end is not committed yet (see sink_lanes._Undrive).
        self._undriving: dict[str, Any] = {}
        #: The token this sink's runs record as their owner (see BatchRecorder).
        self.owner = owner or uuid.uuid4().hex
        self._batches = BatchRecorder(
            self._write, heartbeat_interval, owner=self.owner, identities=identities,
            forget=forget,
        )
        #: When the writer thread gives its recorder to the writer process (None: never).
        self._hand_over = hand_over_policy(store)
        self._previews_only = previews_only
        if previews_only:
            # Tasks with checkpoint=False (by slug) record states and previews only. Only
            # runs that have such tasks pay for the check, in this wrapper.
            self.handle = self._handle_previews_only  # type: ignore[method-assign]
        self._thread = threading.Thread(
            target=self._run, name=f"iterflow-store-writer-{id(self):x}", daemon=True
        )
        self._thread.start()
        _LIVE_SINKS.add(self)

    # -- the emitting side ------------------------------------------------------------
    def handle(self, event: Any) -> None:
        """Record ``event`` (see the module docstring); cheap unless ``event.sync``."""
        if self._unusable:
            self._raise()
        cls = type(event)
        if cls is TaskRunEvent:
            state = event.state
            kind_name, role = _ROLES.get(type(state)) or _role_of(type(state))
            task_run_id = event.task_run_id
            signal: threading.Event | None = None
            if task_run_id in self._done and ROLE_SKIP < role < ROLE_END_STRICT:
                self._refuse(event, kind_name)
                return
            if role == ROLE_LOOP and not event.sync:
                # The hot path, once per iteration in the task's thread. A number
                # is snapshotted here; anything else through _snapshot.
                value = state.result
                serializer = event.serializer
                stored: Stored | None = None
                if value is not None:
                    if type(value) in _SCALARS and (serializer is None or serializer == "pickle"):
                        data = pickle.dumps(value, _PROTOCOL)
                        if len(data) < 64:
                            text = repr(value)
                        else:  # a very long int: cut short, or too long for repr at all
                            text = preview(value)
                            self._count_big(len(data))
                        stored = ("pickle", data, None, len(data), text)
                    else:
                        stored = self._snapshot(event, value, True)  # may raise: not recorded
                self._last_role[task_run_id] = ROLE_LOOP
            else:
                stored = self._prepare(event, role)
                if stored is _NOT_RECORDED:
                    return
                if event.sync:
                    signal = threading.Event()
            # A TASK record from an event; its slots are batch.T_* in this order (the
            # writer makes the same of the task lane's compact records, see
            # batch_rows.lane_task_record). A tuple display, not a named tuple: see
            # iterflow.store.batch.
            self._append_task(
                (TASK, event.flow_run_id, task_run_id, event.task_slug, event.task_name,
                 event.map_index, event.loop_index, kind_name, role, state.timestamp,
                 state.message, state.traceback, event.block_index, stored, state.loop_count,
                 event.label, event.task_run_name, signal)
            )
            if signal is not None:
                self._wake.set()
                self._wait(signal)
        elif cls is MetricEvent:  # through a relay, or with other sinks: see record_metric
            self.record_metric(event.flow_run_id, event.task_run_id, event.loop_index,
                               event.block_index, event.name, event.value, event.time)
        elif cls is FlowRunEvent:
            self._flow_event(event)
        elif cls is LogEvent:
            self._put(
                (LOG, event.flow_run_id, event.task_run_id, event.task_slug, event.map_index,
                 event.loop_index, event.level, event.message, event.time, None),
                None,
            )
        # Anything else is not ours to record.

    def _handle_previews_only(self, event: Any) -> None:
        """:meth:`handle`, recording only previews of the values of some tasks' states."""
        if type(event) is TaskRunEvent and event.task_slug in self._previews_only:
            event = event._replace(serializer=PREVIEW_ONLY)
        StoreSink.handle(self, event)

    def _prepare(self, event: TaskRunEvent, role: int) -> Any:
        """The snapshot of a task event's result off the hot path (``None`` when it has none).

        :data:`_NOT_RECORDED` when the event is not recorded: a ``Pending``, or
        the ``Running`` that follows a ``Looped`` (implied by it, see "What is
        recorded"; see also ``EventBus.implied_running``).
        """
        state = event.state
        task_run_id = event.task_run_id
        last = self._last_role
        if role == ROLE_START:
            previous = last.get(task_run_id)
            last[task_run_id] = ROLE_START
            return _NOT_RECORDED if previous == ROLE_LOOP else None
        if role == ROLE_SKIP:
            return _NOT_RECORDED
        if role == ROLE_LOOP:
            last[task_run_id] = ROLE_LOOP
            if state.result is None:
                return None
            return self._snapshot(event, state.result, True)  # may raise: not recorded
        if role == ROLE_KEEP:
            last[task_run_id] = ROLE_KEEP
        else:
            last.pop(task_run_id, None)
            if role != ROLE_END:
                self._mark_done(event.flow_run_id, task_run_id)
        if state.result is None or role == ROLE_END_MAPPED:
            return None
        return self._snapshot(event, state.result, role == ROLE_END_STRICT)

    def _refuse(self, event: TaskRunEvent, kind_name: str) -> None:
        """Do not record ``event``, a non-final state after its task run finished; say so."""
        message = (
            f"Ignored a late {kind_name} state of task run {event.task_run_id} "
            f"(task {event.task_name!r}, iteration {event.loop_index}): its final state "
            f"is recorded already. A rerun of a finished task run (e.g. after a Dask "
            f"worker was lost) does not rewrite its history."
        )
        _log.warning(message)
        self._put(
            (LOG, event.flow_run_id, event.task_run_id, event.task_slug, event.map_index,
             event.loop_index, logging.WARNING, message, event.state.timestamp, None),
            None,
        )

    def _snapshot(self, event: TaskRunEvent, value: Any, strict: bool) -> Stored:
        stored = snapshot(event, value, strict, self.store.run_results_dir)
        if stored[S_DATA] is not None:
            self._count_big(stored[S_SIZE])
        return stored

    def _count_big(self, size: int) -> None:
        """Count a big task result held in memory until committed (back-pressure).

        Only results of task events, kept in the database (not in a file), count;
        ``_drain`` gives back exactly those.
        """
        if size > BIG:
            with self._big_lock:
                self._big_bytes += size

    def _flow_event(self, event: FlowRunEvent) -> None:
        # A resumed run sends its original parameters again; they are recorded already.
        self.record_flow(
            event.flow_run_id, event.flow_name, event.state,
            None if event.resumed else event.parameters, event.tasks, event.source,
            event.shape, threading.Event() if event.sync else None,
        )

    def record_link(self, link: Any) -> None:
        """Record a new child run's link to its parent run (a ``ParentLink``).

        Queued like an event, before the child's first one: it commits with the
        child's rows (or before them), in this sink's transactions.
        """
        if self._unusable:
            self._raise()
        # As a lane's record: the writer is woken once per batch_size records, not on
        # every record once that many wait (a map of children queues one per child).
        self._append_task((LINK, link.parent_run_id, None, link, None))

    def _raise(self) -> None:
        error = self._error
        if error is None:
            if self._closed:
                raise StoreError(f"The sink for the run store {self.store.name} is closed.")
            error = StoreError(f"The writer for the run store {self.store.name} stopped.")
        self._error_seen = True
        raise type(error)(str(error)) from error  # a RunTakenOver stays one

    def _fail(self, error: StoreError) -> None:
        if self._error is None:
            self._error = error
        self._unusable = True
        self._give_up_runs()

    def _give_up_runs(self) -> None:
        """This process no longer drives the runs this sink recorded (liveness)."""
        while self._driving:
            driving(self._driving.pop(), self.owner, False)
        for undrive in list(self._undriving.values()):
            undrive.set()

    def flush(self) -> None:
        """Block until everything handed to :meth:`handle` is committed."""
        if self._error is not None:
            self._raise()
        if self._closed:
            return
        if not self._buffer and not self._metrics and not self._writing:
            # Nothing queued, no transaction in flight: all is committed. A run's end
            # flushes just after its last state was committed (synchronously), twice;
            # each round trip through the writer cost ~0.1 ms, or a few ms on a busy
            # machine, where a woken thread waits for a core.
            if self._error is not None:
                self._raise()
            return
        signal = threading.Event()
        self._buffer.append((MARK, signal))
        self._wake.set()
        self._wait(signal)

    def close(self) -> None:
        """Commit what is queued and stop the writer thread. Safe to call twice."""
        if self._closed:
            return
        try:
            if self._error is None:
                self.flush()
        finally:
            self._closed = True
            self._unusable = True
            self._stopping = True
            self._wake.set()
            self._thread.join(timeout=self.store.lock_timeout + 5)
            _LIVE_SINKS.discard(self)
            self._give_up_runs()
        if self._error is not None and not self._error_seen:
            self._raise()

    def __enter__(self) -> StoreSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def taken_over(self) -> RunTakenOver | None:
        """The error that stopped this sink because another process took its run over."""
        error = self._error
        return error if isinstance(error, RunTakenOver) else None

    def __repr__(self) -> str:
        return f"StoreSink({self.store.name!r}, pending={self._pending()})"


# Sinks whose writer may still hold records: flushed at interpreter exit, so a
# script that forgets close() still leaves a complete record.
_LIVE_SINKS: weakref.WeakSet[StoreSink] = weakref.WeakSet()


@atexit.register
def _flush_at_exit() -> None:
    for sink in list(_LIVE_SINKS):
        try:
            sink.close()
        except Exception:
            pass
