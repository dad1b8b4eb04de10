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
* it turns the event into a small tuple (never holding the live result) and
  appends it to a bounded buffer.

The writer thread wakes every ``batch_interval`` (50 ms), or as soon as
``batch_size`` records are waiting, and commits what is waiting: in
transactions of ``batch_size`` records, or of up to ``max_batch`` when it has
fallen behind a fast loop — each transaction costs it several waits for the
GIL, so fewer, larger ones let it keep up. Back-pressure keeps memory flat:
``handle`` waits while ``max_pending`` records (or 64 MiB of result bytes)
are queued.

How a batch is written
----------------------
Ids of state rows, log lines and results come from one counter, one
``UPDATE`` per batch; flow runs and task runs are referred to by their
integer keys, cached while they are in flight (a batch's newcomers are
looked up, or given keys, in one statement). Rows are grouped by shape —
a ``Looped`` state with its pickled value, a ``Running``, a finished state
with its value, anything else — and each group goes in as one statement
(:mod:`iterflow.store.statements`); their ids keep them in event order.

What is recorded
----------------
* every ``Looped`` state with its result, in one ``state_transitions`` row
  (a value over 1 MiB in a file, with a ``results`` row for its path);
* every ``Retrying``, failed and finished state, with message and traceback;
* ``Running`` only where a task run (re)starts: its first ``Running``, one
  after a ``Retrying``, the first one of a resumed run. The ``Running`` that
  follows each ``Looped`` is implied by it and skipped — it is half of all
  events in a loop. ``Pending`` task states are not recorded;
* every flow-run state, log line, and a heartbeat for each open flow run;
* ``task_runs`` holds each task run's latest state, updated once per batch.

Durability
----------
``event.sync`` (``checkpoint="every"``) makes ``handle`` return only after
the event is committed; so does every :class:`FlowRunEvent` (a run's start
must be visible — with its pid — before any task runs, and its end before
``flow.run()`` returns), except a child run's (``sync=False``: its parent's
own events, written after it, cover it). :meth:`flush` waits for everything queued.

A failed transaction (a full disk, a database locked past ``lock_timeout``)
is rolled back whole, so what was committed stays. The sink then stops
writing: ``handle`` and ``flush`` raise the :class:`~iterflow.errors.StoreError`
(every time, so the runner cannot miss it), and ``close`` raises it if nobody
has seen it yet.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import pickle
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from iterflow.core.state import Kind, State
from iterflow.errors import SerializationError, StoreError
from iterflow.events import FlowRunEvent, LogEvent, TaskRunEvent
from iterflow.store.queries import HOST
from iterflow.store.results import (
    SERIALIZERS,
    Stored,
    describe_failure,
    make_stored,
    preview,
    preview_only,
)
from iterflow.store.schema import flow_runs, flows, task_runs
from iterflow.store.statements import (
    NATIVE_UPSERT,
    TASK_RUN_COLUMNS,
    TASK_RUN_RULES,
    allocate_ids,
    find_keys,
    insert_finished,
    insert_logs,
    insert_looped,
    insert_results,
    insert_running,
    insert_transitions,
    upsert,
    upsert_task_runs,
)

if TYPE_CHECKING:
    from iterflow.store.runstore import RunStore

__all__ = ["StoreSink"]

# Record tags: the first item of every buffered tuple; the last is the
# threading.Event to set once it is committed (or None).
_TASK, _FLOW, _LOG, _MARK = range(4)
# Where things sit in a _TASK record (see StoreSink._task_event).
_T_ROLE, _T_TIME, _T_STORED = 8, 9, 13
_F_STORED = 7  # the parameters' stored value, in a _FLOW record

# What handle() does with a task run's state, by kind:
_SKIP = 0  # Pending: not recorded
_START = 1  # Running: recorded unless it follows a Looped
_LOOP = 2  # Looped: recorded with its result, which must serialize
_KEEP = 3  # Retrying: recorded, result best-effort
_END_STRICT = 4  # Success, Cached: finished, result must serialize
_END = 5  # Failed & co, Skipped, Cancelled: finished, result best-effort
_END_MAPPED = 6  # Mapped: finished; its result is its children's, stored with them
_ROLE_BY_KIND = {
    Kind.PENDING: _SKIP,
    Kind.RUNNING: _START,
    Kind.LOOPED: _LOOP,
    Kind.RETRYING: _KEEP,
    Kind.SUCCESS: _END_STRICT,
    Kind.CACHED: _END_STRICT,
    Kind.MAPPED: _END_MAPPED,
}
# (kind name, role) per state class, filled on first sight: a dict lookup by
# class is several times cheaper than going through the Kind enum each time.
_ROLES: dict[type, tuple[str, int]] = {}

# Loop results common enough for a fast path in _snapshot.
_SCALARS = frozenset({int, float, bool})
_PROTOCOL = pickle.HIGHEST_PROTOCOL

# Results counted against the byte budget (small ones are bounded by the count).
_BIG = 4096
_MAX_PENDING_BYTES = 64 * 1024 * 1024


def _role_of(cls: type[State]) -> tuple[str, int]:
    kind = cls.kind
    info = _ROLES[cls] = (kind.value, _ROLE_BY_KIND.get(kind, _END))
    return info


def _task_label(event: TaskRunEvent) -> str:
    mapped = "" if event.map_index is None else f" (map_index {event.map_index})"
    return f"task {event.task_name!r}{mapped}"


class StoreSink:
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
        max_pending: int = 10_000,
        max_batch: int = 4096,
        heartbeat_interval: float = 5.0,
    ) -> None:
        self.store = store
        self.batch_interval = batch_interval
        self.batch_size = batch_size
        self.max_pending = max(max_pending, batch_size)
        self.max_batch = max(max_batch, batch_size)
        self.heartbeat_interval = heartbeat_interval
        self._buffer: deque[tuple[Any, ...]] = deque()
        self._wake = threading.Event()
        self._room = threading.Condition()
        self._big_bytes = 0
        self._big_lock = threading.Lock()
        # Role of the last recorded state of each task run still going: tells
        # which Running to skip. Entries leave when the task run finishes, so
        # this never outgrows the task runs in flight.
        self._last_role: dict[str, int] = {}
        self._error: StoreError | None = None
        self._error_seen = False
        self._closed = False
        # One flag for handle() to test: set once writing failed or the sink closed.
        self._unusable = False
        self._stopping = False
        self._open_runs: dict[str, None] = {}  # flow runs to keep heartbeating
        # Integer keys of the flow runs and task runs in flight (their ``id``
        # columns), so that only a batch's newcomers are looked up. Owned by the
        # writer thread; a task run's key leaves when it finishes.
        self._run_keys: dict[str, int] = {}
        self._task_keys: dict[str, int] = {}
        self._conn: sa.Connection | None = None  # the writer's own (SQLite), see _write
        self._next_beat = 0.0
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
            info = _ROLES.get(type(state)) or _role_of(type(state))
            if info[1] == _LOOP and not event.sync:
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
                task_run_id = event.task_run_id
                self._last_role[task_run_id] = _LOOP
                buffer = self._buffer
                buffer.append(
                    (_TASK, event.flow_run_id, task_run_id, event.task_slug, event.task_name,
                     event.map_index, event.loop_index, info[0], _LOOP, state.timestamp,
                     None, None, event.block_index, stored, state.loop_count, None)
                )
                if len(buffer) >= self.batch_size:
                    self._wake_writer()
                return
            # The Running that follows a Looped is settled here without another
            # call, when it comes at all (see EventBus.implied_running).
            if info[1] == _START:
                last = self._last_role
                previous = last.get(event.task_run_id)
                last[event.task_run_id] = _START
                if previous == _LOOP:
                    return  # implied by the Looped row (see "What is recorded")
            self._task_event(event, info)
        elif cls is FlowRunEvent:
            self._flow_event(event)
        elif cls is LogEvent:
            self._put(
                (_LOG, event.flow_run_id, event.task_run_id, event.task_slug, event.map_index,
                 event.loop_index, event.level, event.message, event.time, None),
                None,
            )
        # Anything else is not ours to record.

    def _task_event(self, event: TaskRunEvent, info: tuple[str, int]) -> None:
        state = event.state
        kind_name, role = info
        task_run_id = event.task_run_id
        last = self._last_role
        stored: Stored | None = None
        if role == _START:
            pass  # handle() has decided to record it
        elif role == _LOOP:
            if state.result is not None:
                stored = self._snapshot(event, state.result, True)  # may raise: not recorded
            last[task_run_id] = _LOOP
        elif role == _SKIP:
            return
        else:
            if role == _KEEP:
                last[task_run_id] = _KEEP
            else:
                last.pop(task_run_id, None)
            if state.result is not None and role != _END_MAPPED:
                stored = self._snapshot(event, state.result, role == _END_STRICT)
        signal = threading.Event() if event.sync else None
        # A _TASK record: tag, flow_run_id, task_run_id, slug, name, map_index,
        # loop_index, kind, role, time, message, traceback, block_index, stored,
        # loop_count, signal (see _T_* for the indexes the writer reads).
        self._put(
            (_TASK, event.flow_run_id, task_run_id, event.task_slug, event.task_name,
             event.map_index, event.loop_index, kind_name, role, state.timestamp,
             state.message, state.traceback, event.block_index, stored, state.loop_count,
             signal),
            signal,
        )

    def _snapshot(self, event: TaskRunEvent, value: Any, strict: bool) -> Stored:
        serializer = event.serializer
        if serializer is not None and serializer not in SERIALIZERS:
            raise SerializationError(
                f"{_task_label(event).capitalize()} asks for the serializer {serializer!r}; "
                f"iterflow has {', '.join(map(repr, SERIALIZERS))}."
            )
        if type(value) in _SCALARS and serializer != "json":
            # The common loop result (a number, a short string): nothing can fail,
            # nothing goes to a file, so skip the general path.
            data = pickle.dumps(value, _PROTOCOL)
            self._count_big(len(data))  # a very long int
            return ("pickle", data, None, len(data), preview(value))
        try:
            stored = make_stored(value, serializer, lambda: self._results_dir(event.flow_run_id))
        except StoreError:
            raise  # the results directory cannot be written: a store problem
        except Exception as exc:
            if not strict:
                return preview_only(value, serializer)
            what = (
                f"the loop result of {_task_label(event)} at iteration {event.loop_index}"
                if type(event.state).kind is Kind.LOOPED
                else f"the result of {_task_label(event)} (iteration {event.loop_index})"
            )
            raise SerializationError(
                f"Cannot record {what}: {describe_failure(value, serializer, exc)}"
            ) from exc
        if stored[1] is not None:
            self._count_big(stored[3])
        return stored

    def _count_big(self, size: int) -> None:
        """Count a big task result held in memory until committed (back-pressure).

        Only results of task events, kept in the database (not in a file), count;
        ``_drain`` gives back exactly those.
        """
        if size > _BIG:
            with self._big_lock:
                self._big_bytes += size

    def _results_dir(self, run_id: str) -> Any:
        return self.store.run_results_dir(run_id)

    def _flow_event(self, event: FlowRunEvent) -> None:
        state = event.state
        params_json = params_stored = None
        # A resumed run sends its original parameters again; they are recorded already.
        if event.parameters is not None and not event.resumed:
            params_json, params_stored = self._snapshot_parameters(event)
        signal = threading.Event() if event.sync else None
        self._put(
            (_FLOW, event.flow_run_id, event.flow_name, state.kind.value, state.timestamp,
             state.message, params_json, params_stored,
             [list(pair) for pair in event.tasks] or None, event.source, state.is_finished(),
             signal),
            signal,
        )

    def _snapshot_parameters(self, event: FlowRunEvent) -> tuple[dict[str, Any], Stored | None]:
        params = event.parameters or {}
        try:
            as_json = json.loads(json.dumps(params))
            if as_json == params:
                return as_json, None
        except (TypeError, ValueError):
            pass
        # Not exactly JSON (tuples, datetimes, objects): keep a readable JSON
        # version for display and the pickled originals for resuming.
        shown: dict[str, Any] = {}
        for key, value in params.items():
            try:
                json.dumps(value)
                shown[str(key)] = value
            except (TypeError, ValueError):
                shown[str(key)] = preview(value)
        try:
            stored = make_stored(
                dict(params), "pickle", lambda: self._results_dir(event.flow_run_id)
            )
        except StoreError:
            raise
        except Exception:
            stored = preview_only(params, "pickle")
        return shown, stored

    def _put(self, record: tuple[Any, ...], signal: threading.Event | None) -> None:
        buffer = self._buffer
        buffer.append(record)
        if len(buffer) >= self.batch_size:
            self._wake_writer()
        if signal is not None:
            self._wake.set()
            self._wait(signal)

    def _wake_writer(self) -> None:
        """A batch is waiting: wake the writer, and wait while too much is queued."""
        wake = self._wake
        if not wake.is_set():  # set() takes a lock; the writer may already be awake
            wake.set()
        if len(self._buffer) >= self.max_pending or self._big_bytes > _MAX_PENDING_BYTES:
            self._wait_for_room()

    def _wait_for_room(self) -> None:
        with self._room:
            while (
                (len(self._buffer) >= self.max_pending or self._big_bytes > _MAX_PENDING_BYTES)
                and self._error is None
                and self._thread.is_alive()
            ):
                self._wake.set()
                self._room.wait(0.1)
        if self._error is not None:
            self._raise()

    def _wait(self, signal: threading.Event) -> None:
        while not signal.wait(0.5):
            if not self._thread.is_alive():
                break
        if self._error is not None or not signal.is_set():
            self._raise()

    def _raise(self) -> None:
        error = self._error
        if error is None:
            if self._closed:
                raise StoreError(f"The sink for the run store {self.store.name} is closed.")
            error = StoreError(f"The writer for the run store {self.store.name} stopped.")
        self._error_seen = True
        raise StoreError(str(error)) from error

    def _fail(self, error: StoreError) -> None:
        if self._error is None:
            self._error = error
        self._unusable = True

    def flush(self) -> None:
        """Block until everything handed to :meth:`handle` is committed."""
        if self._error is not None:
            self._raise()
        if self._closed:
            return
        signal = threading.Event()
        self._buffer.append((_MARK, signal))
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
        if self._error is not None and not self._error_seen:
            self._raise()

    def __enter__(self) -> StoreSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"StoreSink({self.store.name!r}, pending={len(self._buffer)})"

    # -- the writer thread ----------------------------------------------------------------
    def _run(self) -> None:
        try:
            while True:
                self._wake.wait(self.batch_interval)
                self._wake.clear()
                stopping = self._stopping
                self._drain()
                if self._open_runs and self._error is None and time.monotonic() >= self._next_beat:
                    self._commit([], 0)  # nothing queued, but the heartbeat is due
                if stopping and not self._buffer:
                    return
        except BaseException as exc:  # a bug here must not leave handle() waiting forever
            self._fail(StoreError(
                f"The writer for the run store {self.store.name} failed: "
                f"{type(exc).__name__}: {exc}"
            ))
            self._discard_all()
        finally:
            self._drop_connection()

    def _write(self, transaction: Callable[[sa.Connection], None]) -> None:
        """Commit ``transaction``; on SQLite through a connection the writer keeps.

        With ``checkpoint="every"`` the writer commits once per iteration, and a
        pool checkout and return cost about as much as the transaction. A server
        database keeps the pool, whose pre-ping survives a restarted server.
        """
        if self.store.engine.dialect.name != "sqlite":
            self.store.write(transaction)
            return
        if self._conn is None:
            self._conn = self.store.write_connection()
        try:
            self.store.write(transaction, connection=self._conn)
        except BaseException:
            self._drop_connection()  # the next attempt starts from a fresh one
            raise

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _drain(self) -> None:
        buffer = self._buffer
        while buffer:
            batch: list[tuple[Any, ...]] = []
            signals: list[threading.Event] = []
            released = n_ids = 0
            # Behind a fast loop, take all that waits (up to max_batch): each
            # transaction costs the writer several waits for the GIL, so fewer,
            # larger ones let it keep up (see statements.FastInsert).
            limit = min(max(self.batch_size, len(buffer)), self.max_batch)
            while buffer and len(batch) < limit:
                record = buffer.popleft()
                signal = record[-1]
                if signal is not None:
                    signals.append(signal)
                tag = record[0]
                if tag == _MARK:
                    continue
                batch.append(record)
                n_ids += 1  # a state row or a log line each
                if tag == _TASK:
                    stored = record[_T_STORED]
                    if stored is not None:
                        if stored[2] is not None:
                            n_ids += 1  # a results row: the value is in a file
                        elif stored[1] is not None and stored[3] > _BIG:
                            released += stored[3]  # counted by handle() (see _count_big)
                elif tag == _FLOW and record[_F_STORED] is not None:
                    n_ids += 1  # the run's parameters always get a results row
            if batch and self._error is None:
                try:
                    self._commit(batch, n_ids)
                except StoreError as exc:
                    self._fail(exc)
                except Exception as exc:
                    self._fail(StoreError(
                        f"Recording to the run store {self.store.name} failed: "
                        f"{type(exc).__name__}: {exc}"
                    ))
            if released:
                with self._big_lock:
                    self._big_bytes -= released
            for signal in signals:
                signal.set()
            with self._room:
                self._room.notify_all()

    def _discard_all(self) -> None:
        while self._buffer:
            signal = self._buffer.popleft()[-1]
            if signal is not None:
                signal.set()
        with self._room:
            self._room.notify_all()

    def _commit(self, batch: list[tuple[Any, ...]], n_ids: int) -> None:
        beat = time.monotonic() >= self._next_beat
        committed_runs: dict[str, None] = {}
        run_keys, task_keys = self._run_keys, self._task_keys
        # Flow runs and task runs this batch names that have no key here yet:
        # new ones, or ones an earlier process recorded (a resumed run).
        new_runs: dict[str, None] = {}
        new_tasks: dict[str, None] = {}
        for record in batch:
            tag = record[0]
            if tag == _TASK or (tag == _LOG and record[2] is not None):
                if record[2] not in task_keys:
                    new_tasks[record[2]] = None
                if record[1] not in run_keys:
                    new_runs[record[1]] = None
            elif record[1] not in run_keys:  # a flow run's state, an engine log line
                new_runs[record[1]] = None
        keyed_runs: dict[str, int] = {}
        keyed_tasks: dict[str, int] = {}
        finished: list[str] = []

        def transaction(conn: sa.Connection) -> None:
            # Everything is rebuilt on each attempt: a retry gets fresh ids.
            keyed_runs.clear()
            keyed_tasks.clear()
            finished.clear()
            keyed_runs.update(find_keys(conn, flow_runs, "run_id", new_runs))
            keyed_tasks.update(find_keys(conn, task_runs, "task_run_id", new_tasks))
            unkeyed = [r for r in new_runs if r not in keyed_runs]
            unkeyed += [t for t in new_tasks if t not in keyed_tasks]
            count = n_ids + len(unkeyed)
            next_id = allocate_ids(conn, count) if count else 0
            for name in unkeyed:
                (keyed_runs if name in new_runs else keyed_tasks)[name] = next_id
                next_id += 1
            result_rows: list[tuple[Any, ...]] = []
            looped_rows: list[tuple[Any, ...]] = []
            running_rows: list[tuple[Any, ...]] = []
            finished_rows: list[tuple[Any, ...]] = []
            other_rows: list[tuple[Any, ...]] = []
            log_rows: list[tuple[Any, ...]] = []
            # Per task run: time of its first record; its last record and that
            # record's row id; its last Looped (index, row id).
            first: dict[str, float] = {}
            latest: dict[str, tuple[tuple[Any, ...], int]] = {}
            looped: dict[str, tuple[int, int]] = {}
            runs = dict(self._open_runs)
            for record in batch:
                tag = record[0]
                if tag == _TASK:
                    row_id = next_id
                    next_id += 1
                    task_run_id = record[2]
                    # Keys start at 1, so `or` only falls through for a missing one.
                    task_key = task_keys.get(task_run_id) or keyed_tasks[task_run_id]
                    run_key = run_keys.get(record[1]) or keyed_runs[record[1]]
                    stored = record[_T_STORED]
                    if record[_T_ROLE] == _LOOP:
                        looped[task_run_id] = (record[6], row_id)
                        if (stored is not None and stored[0] == "pickle" and stored[2] is None
                                and record[12] is None):
                            # id, flow_run, task_run, loop_index, data, preview, time
                            looped_rows.append((row_id, run_key, task_key, record[6],
                                                stored[1], stored[4], record[_T_TIME]))
                            if task_run_id not in first:
                                first[task_run_id] = record[_T_TIME]
                            latest[task_run_id] = (record, row_id)
                            continue
                    elif record[_T_ROLE] == _START and record[10] is None and stored is None:
                        # id, flow_run, task_run, loop_index, block_index, time
                        running_rows.append((row_id, run_key, task_key, record[6], record[12],
                                             record[_T_TIME]))
                        if task_run_id not in first:
                            first[task_run_id] = record[_T_TIME]
                        latest[task_run_id] = (record, row_id)
                        continue
                    elif (record[_T_ROLE] == _END_STRICT and stored is not None
                          and stored[0] == "pickle" and stored[1] is not None
                          and record[10] is None):
                        # A task run that ended well with a pickled value in the row
                        # (each child of a map): id, flow_run, task_run, kind, loop_index,
                        # block_index, data, preview, time
                        finished_rows.append((row_id, run_key, task_key, record[7], record[6],
                                              record[12], stored[1], stored[4],
                                              record[_T_TIME]))
                        if task_run_id not in first:
                            first[task_run_id] = record[_T_TIME]
                        latest[task_run_id] = (record, row_id)
                        continue
                    serializer = data = preview = result_id = None
                    if stored is not None:
                        serializer, data, _path, _size, preview = stored
                        if _path is not None:  # in a file: its results row holds the path
                            result_id = next_id
                            next_id += 1
                            result_rows.append((result_id, *stored))
                            data = None
                    # id, flow_run, task_run, kind, loop_index, block_index,
                    # message, traceback, serializer, data, preview, result_id, time
                    other_rows.append((row_id, run_key, task_key, record[7], record[6],
                                       record[12], record[10], record[11], serializer, data,
                                       preview, result_id, record[_T_TIME]))
                    if task_run_id not in first:
                        first[task_run_id] = record[_T_TIME]
                    latest[task_run_id] = (record, row_id)
                elif tag == _LOG:
                    # id, flow_run, task_run, loop_index, level, message, time
                    task_run_id = record[2]
                    log_rows.append((
                        next_id,
                        run_keys.get(record[1]) or keyed_runs[record[1]],
                        None if task_run_id is None
                        else task_keys.get(task_run_id) or keyed_tasks[task_run_id],
                        record[5], record[6], record[7], record[8],
                    ))
                    next_id += 1
                elif tag == _FLOW:
                    run_key = run_keys.get(record[1]) or keyed_runs[record[1]]
                    next_id = self._write_flow(conn, record, run_key, next_id, result_rows,
                                               other_rows, runs)
            snapshots: list[tuple[Any, ...]] = []
            for task_run_id, (record, row_id) in latest.items():
                task_key = task_keys.get(task_run_id) or keyed_tasks[task_run_id]
                snapshots.append(_task_run_row(
                    record, task_key, row_id, first[task_run_id], looped.get(task_run_id)
                ))
                if record[_T_ROLE] >= _END_STRICT:
                    finished.append(task_run_id)
            insert_results.run(conn, result_rows)
            if conn.dialect.name in NATIVE_UPSERT:
                upsert_task_runs.run(conn, snapshots)
            else:
                upsert(conn, task_runs, "task_run_id",
                        [dict(zip(TASK_RUN_COLUMNS, row)) for row in snapshots],
                        TASK_RUN_RULES)
            insert_looped.run(conn, looped_rows)
            insert_running.run(conn, running_rows)
            insert_finished.run(conn, finished_rows)
            insert_transitions.run(conn, other_rows)
            insert_logs.run(conn, log_rows)
            if beat and runs:
                conn.execute(
                    sa.update(flow_runs)
                    .where(flow_runs.c.run_id.in_(list(runs)))
                    .values(heartbeat=time.time())
                )
            committed_runs.clear()
            committed_runs.update(runs)

        self._write(transaction)
        # Only now, with the transaction committed, do the run set and keys change.
        # Keys of what finished are dropped (a straggler's event looks them up again),
        # so these maps hold only what is in flight.
        self._open_runs = committed_runs
        run_keys.update(keyed_runs)
        task_keys.update(keyed_tasks)
        for task_run_id in finished:
            task_keys.pop(task_run_id, None)
        for record in batch:
            if record[0] == _FLOW and record[10]:  # a flow run ended: its task runs too
                run_keys.pop(record[1], None)
                prefix = record[1] + "/"
                for task_run_id in [t for t in task_keys if t.startswith(prefix)]:
                    del task_keys[task_run_id]
        if beat:
            self._next_beat = time.monotonic() + self.heartbeat_interval

    def _write_flow(
        self,
        conn: sa.Connection,
        record: tuple[Any, ...],
        run_key: int,
        next_id: int,
        result_rows: list[tuple[Any, ...]],
        state_rows: list[tuple[Any, ...]],
        runs: dict[str, None],
    ) -> int:
        (_, run_id, flow_name, kind, at, message, params_json, params_stored, tasks, source,
         finished, _signal) = record
        if tasks is not None:
            upsert(conn, flows, "name",
                    [{"name": flow_name, "created": at, "updated": at, "tasks": tasks}],
                    {"created": "old", "updated": "new", "tasks": "new"})
        row_id = next_id
        next_id += 1
        row: dict[str, Any] = {
            "run_id": run_id, "id": run_key, "flow_name": flow_name, "state": kind, "started": at,
            "message": message, "ended": at if finished else None, "source": source,
        }
        rules = {"id": "old", "flow_name": "new", "state": "new", "message": "new", "ended": "new",
                 "started": "old", "source": "new_or_old"}
        if params_json is not None:
            # A resumed run sends the original parameters again: keep the first record.
            row["parameters"] = params_json
            row["parameters_result_id"] = None
            if params_stored is not None:
                row["parameters_result_id"] = next_id
                result_rows.append((next_id, *params_stored))
                next_id += 1
            rules["parameters"] = "old"
            rules["parameters_result_id"] = "old"
        if finished:
            runs.pop(run_id, None)
        else:
            row.update(pid=os.getpid(), host=HOST, heartbeat=time.time())
            rules.update(pid="new", host="new", heartbeat="new")
            runs[run_id] = None
        upsert(conn, flow_runs, "run_id", [row], rules)
        state_rows.append(
            (row_id, run_key, None, kind, None, None, message, None, None, None, None, None, at)
        )
        return next_id


def _task_run_row(
    record: tuple[Any, ...],
    key: int,
    row_id: int,
    started: float,
    looped: tuple[int, int] | None,
) -> tuple[Any, ...]:
    """The ``task_runs`` row after a batch (in table order), from its last record there."""
    (_, flow_run_id, task_run_id, slug, name, map_index, loop_index, kind, role, at,
     message, _traceback, _block, _stored, loop_count, _signal) = record
    finished = role >= _END_STRICT
    if not finished:
        loop_count = None
    looped_index = looped_transition = None
    if looped is not None:
        looped_index, looped_transition = looped
        if loop_count is None:
            loop_count = looped_index + 1  # iterations recorded so far
    row = (
        task_run_id, key, flow_run_id, slug, name, map_index, kind, loop_count, loop_index,
        looped_index, looped_transition, row_id if finished else None, started,
        at if finished else None, message,
    )
    return row


_ROW_ORDER = (
    "task_run_id", "id", "flow_run_id", "task_slug", "task_name", "map_index", "state",
    "loop_count", "loop_index", "looped_index", "looped_transition", "result_transition",
    "started", "ended", "message",
)
# _task_run_row builds its tuple in the table's column order; keep them in step.
assert _ROW_ORDER == TASK_RUN_COLUMNS, "task_runs columns changed: update _task_run_row"


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
