"""The store sink's other half: the hand-over to the writer thread, and that thread.

:class:`WriterThread` is mixed into :class:`~iterflow.store.writer.StoreSink`:
the sink's ``handle`` (in the threads that make transitions) fills a buffer
through the hand-over methods here (``_put``, ``_wake_writer``; they wait while
too much is queued, and for a synchronous record's commit), and the writer
thread drains it — in transactions of ``batch_size`` records, or of up to
``max_batch`` behind a fast loop — keeps the heartbeat, and wakes whoever waits
for a commit or for room. Only the hand-over runs in a task's thread.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

from iterflow.errors import StoreError
from iterflow.store.batch import BatchRecorder
from iterflow.store.record_layout import (
    BIG,
    F_PARAMS_STORED,
    FLOW,
    LINK,
    LOOPED,
    LS_STORED,
    MARK,
    S_DATA,
    S_PATH,
    S_SIZE,
    STARTED,
    SUCCEEDED,
    T_STORED,
    TASK,
)
from iterflow.store.sink_lanes import MAX_PENDING_BYTES

if TYPE_CHECKING:
    import sqlalchemy as sa

    from iterflow.store.metric_buffers import MetricBuffers
    from iterflow.store.runstore import RunStore
    from iterflow.store.writer_process import HandOver, RemoteBatches

__all__ = ["WriterThread"]


class WriterThread:
    """The writer thread's loop and its transactions (the state is the sink's)."""

    # Set by StoreSink.__init__; declared here for the methods below.
    store: RunStore
    batch_interval: float
    batch_size: int
    max_batch: int
    max_pending: int
    _sizes: tuple[int, int] | None
    _thread: threading.Thread
    _buffer: deque[tuple[Any, ...]]
    _metrics: MetricBuffers
    _wake: threading.Event
    _room: threading.Condition
    _big_lock: threading.Lock
    _big_bytes: int
    _batches: BatchRecorder | RemoteBatches
    _hand_over: HandOver | None
    _conn: sa.Connection | None
    _error: StoreError | None
    _stopping: bool
    _writing: bool

    # Defined by StoreSink (declared only: a method here would stand before its).
    _fail: Callable[[StoreError], None]
    _raise: Callable[[], NoReturn]

    # -- the hand-over: what the emitting side calls, in the task's thread ---------------
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
        if self._pending() >= self.max_pending or self._big_bytes > MAX_PENDING_BYTES:
            self._wait_for_room()

    def _pending(self) -> int:
        """Records waiting for the writer: states, lines, metrics."""
        return len(self._buffer) + len(self._metrics)

    def _wait_for_room(self) -> None:
        with self._room:
            while (
                (self._pending() >= self.max_pending or self._big_bytes > MAX_PENDING_BYTES)
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

    # -- the writer thread ---------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                self._wake.wait(self.batch_interval)
                self._wake.clear()
                stopping = self._stopping
                self._drain()
                if self._error is None and self._batches.beat_due():
                    try:
                        self._batches.commit([], 0)  # nothing queued, but the heartbeat is due
                    except StoreError as exc:  # a run taken over, a database locked too long
                        self._fail(exc)
                if stopping and not self._buffer and not self._metrics:
                    return
        except BaseException as exc:  # a bug here must not leave handle() waiting forever
            self._fail(StoreError(
                f"The writer for the run store {self.store.name} failed: "
                f"{type(exc).__name__}: {exc}"
            ))
            self._discard_all()
        finally:
            # A writer that ended well leaves its connection, statements compiled,
            # for the next run's (see writer_connections).
            self._drop_connection(keep=self._error is None)
            if not isinstance(self._batches, BatchRecorder):
                self._batches.close()  # the writer process forgets this sink

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

    def _drop_connection(self, *, keep: bool = False) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if keep:
            from iterflow.store.writer_connections import give_back

            give_back(self.store, conn)
            return
        with contextlib.suppress(Exception):
            conn.close()

    def _drain(self) -> None:
        # Set before the first record leaves the queues, cleared once all taken are
        # committed: empty queues and no drain under way mean nothing is pending
        # (see StoreSink.flush).
        self._writing = True
        try:
            self._drain_batches()
        finally:
            self._writing = False

    def _drain_batches(self) -> None:
        buffer = self._buffer
        metrics_queue = self._metrics
        # Batches sent to the writer process and not settled: (waiters, bytes released).
        sent: deque[tuple[list[threading.Event], int]] = deque()
        popleft = buffer.popleft
        while buffer or metrics_queue:  # (metrics_queue: true while a metric waits)
            # Behind a fast loop, take all that waits (up to max_batch): each
            # transaction costs the writer several waits for the GIL, so fewer,
            # larger ones let it keep up (see statements.FastInsert). Taken at
            # once, then sorted by comprehensions: behind a loop nearly every
            # record is a LOOPED one, which needs nothing here but its place.
            limit = min(max(self.batch_size, len(buffer)), self.max_batch)
            taken = [popleft() for _ in range(min(limit, len(buffer)))]
            if taken and type(self._batches) is not BatchRecorder:
                # With the writer process the queue has room again now, not once the
                # batch is committed: a loop waiting for room goes on while the process
                # writes (at most the queue and two batches wait in memory). The writer
                # thread does not: there the loop's thread would take the GIL the
                # writer needs to build the rows, and both go slower.
                with self._room:
                    self._room.notify_all()
            signals = [r[-1] for r in taken if r[-1] is not None]
            if not signals and self._sizes is not None:
                self._end_opening()
            # Only a flush's MARK has nothing to write, and it always has a signal.
            batch = [r for r in taken if r[0] != MARK] if signals else taken
            n_ids = len(batch)  # a state row or a log line each, but links
            released = 0
            for record in [r for r in batch if r[0] != LOOPED and r[0] != STARTED]:
                tag = record[0]
                if tag == LINK:
                    n_ids -= 1  # a link row has its child's run id for its key
                elif tag in (TASK, SUCCEEDED):
                    # (a task lane's Success may hold a value in a file, or a big one)
                    stored = record[T_STORED if tag == TASK else LS_STORED]
                    if stored is not None:
                        if stored[S_PATH] is not None:
                            n_ids += 1  # a results row: the value is in a file
                        elif stored[S_DATA] is not None and stored[S_SIZE] > BIG:
                            released += stored[S_SIZE]  # counted by handle() (see _count_big)
                elif tag == FLOW and record[F_PARAMS_STORED] is not None:
                    n_ids += 1  # the run's parameters always get a results row
            # Every metric logged so far, also those logged before the batch's last record.
            metrics = metrics_queue.take()
            if (batch or metrics) and self._error is None:
                if self._hand_over is not None:
                    self._maybe_hand_over(len(batch) + len(metrics), len(signals))
                batches = self._batches
                if type(batches) is not BatchRecorder:
                    # The writer process: send this batch, then settle the one before
                    # (the process commits one while this thread drains the next).
                    if self._guarded(batches.send, batch, n_ids, metrics):
                        sent.append((signals, released))
                        if len(sent) > 1:
                            self._guarded(batches.settle)
                            self._settled(*sent.popleft())
                        continue
                else:
                    self._guarded(batches.commit, batch, n_ids, metrics)
            self._settled(signals, released)
        while sent:  # nothing more to send: wait for what is on its way
            self._guarded(self._batches.settle)  # type: ignore[union-attr]
            self._settled(*sent.popleft())

    def _end_opening(self) -> None:
        """The run's opening batch is over: the sink's own sizes from now on.

        Called at the first batch with no synchronous record (the run's start is
        one): what waits was queued unprompted, while the run went on; and by a
        loop's first ``Looped`` (see "The opening batch" in :mod:`iterflow.store.writer`).
        """
        sizes = self._sizes
        if sizes is not None:  # (a loop's first Looped may have ended it, see looped_lane)
            self._sizes = None
            self.batch_size, self.max_pending = sizes

    def _guarded(self, step: Callable[..., None], *args: Any) -> bool:
        """Run one step of a commit; a failure fails the sink (the first one says why)."""
        try:
            step(*args)
            return True
        except StoreError as exc:
            self._fail(exc)
        except Exception as exc:
            self._fail(StoreError(
                f"Recording to the run store {self.store.name} failed: "
                f"{type(exc).__name__}: {exc}"
            ))
        return False

    def _settled(self, signals: list[threading.Event], released: int) -> None:
        """A batch is committed (or failed): free its bytes, wake its waiters and the queue."""
        if released:
            with self._big_lock:
                self._big_bytes -= released
        for signal in signals:
            signal.set()
        with self._room:
            self._room.notify_all()

    def _maybe_hand_over(self, records: int, waits: int) -> None:
        """Give the recorder to the store's writer process once it is due and ready.

        ``waits``: how many of the batch's commits someone waits for.
        """
        recorder = self._batches
        # (a sink hands over once: _hand_over is None from then on)
        assert self._hand_over is not None and isinstance(recorder, BatchRecorder)
        remote = self._hand_over.due(records, recorder, waits)
        if remote is not None:
            self._batches = remote
            self._hand_over = None
            self._drop_connection(keep=True)  # the process writes from now on

    def _discard_all(self) -> None:
        self._metrics.clear()
        while self._buffer:
            signal = self._buffer.popleft()[-1]
            if signal is not None:
                signal.set()
        with self._room:
            self._room.notify_all()
