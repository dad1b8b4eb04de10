"""The store sink's lanes: loop iterations and metrics taken as plain values.

:class:`SinkLanes` is mixed into :class:`~iterflow.store.writer.StoreSink`.
A loop makes an event per iteration, and a metric-logging loop several; on
the hot path, making those events (a state, a named tuple, the sink's
dispatch on its type) costs the task's thread more than the store spends
recording them. So the engine hands the common cases here as values, in the
task's own thread: a plain ``Looped`` state with a number for its result
(:meth:`SinkLanes.record_looped`, through
:func:`iterflow.engine.transitions.looped_lane`) and a metric when the store
is the only sink (:meth:`SinkLanes.record_metric`). Each makes the compact
record the writer expects (``batch.LOOPED``; a metric is packed into its
task run's buffer, ``metric_buffers``); anything a lane declines comes as an
event to ``handle``.
"""

from __future__ import annotations

import pickle
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, NoReturn

from iterflow.store.batch import LOOPED, ROLE_LOOP
from iterflow.store.metric_buffers import VALUES_PER_RECORD, MetricBuffers
from iterflow.store.metric_packing import NONE, RECORD
from iterflow.store.snapshots import SCALARS

__all__ = ["SinkLanes"]

_SCALARS = SCALARS  # a module global: one lookup less per iteration
_PROTOCOL = pickle.HIGHEST_PROTOCOL
_now = time.time  # a Looped state's timestamp (State.timestamp) is the same clock
#: Result bytes queued before the emitting side waits for the writer (back-pressure).
MAX_PENDING_BYTES = 64 * 1024 * 1024


class SinkLanes:
    """The lanes of a store sink (the state is the sink's, see StoreSink.__init__)."""

    # Set by StoreSink.__init__; declared here for the methods below.
    batch_size: int
    max_pending: int
    _buffer: deque[tuple[Any, ...]]
    _metrics: MetricBuffers
    _big_bytes: int
    _done: set[str]
    _last_role: dict[str, int]
    _previews_only: frozenset[str]
    _unusable: bool
    _wake: threading.Event

    # Defined by StoreSink and its WriterThread (declarations only: a method here would
    # stand before theirs in the sink's method order).
    _raise: Callable[[], NoReturn]
    _wake_writer: Callable[[], None]

    def looped_lane(self, slug: str, serializer: str | None) -> Any:
        """:meth:`record_looped` for task ``slug``'s plain ``Looped`` states, or None.

        The engine asks once per task run (see
        :func:`iterflow.engine.transitions.looped_lane`). None where a loop
        result is not pickled as it is: another serializer, or a task with
        ``checkpoint=False`` (previews only).
        """
        if serializer not in (None, "pickle") or slug in self._previews_only:
            return None
        return self.record_looped

    def record_looped(
        self, head: tuple[Any, ...], loop_index: int, value: Any, label: str | None
    ) -> bool:
        """Record ``Looped(loop_index, value)`` of the task run ``head`` names; False if not.

        The hot path of a loop with the store on, called by the loop driver
        in the task's thread instead of making a state and an event: a number
        is pickled here and goes in a compact record
        (:data:`~iterflow.store.batch.LOOPED`). Anything else — another value,
        a task run already finished — returns False and
        the driver takes the usual way through ``handle``.
        """
        if self._unusable:
            self._raise()
        task_run_id = head[1]
        if task_run_id in self._done:
            return False
        if type(value) not in _SCALARS:
            return False
        data = pickle.dumps(value, _PROTOCOL)
        if len(data) >= 64:  # a very long int: its preview is cut short by handle()
            return False
        self._last_role[task_run_id] = ROLE_LOOP
        buffer = self._buffer
        # Slots are batch.LP_*, in this order.
        buffer.append((LOOPED, head[0], task_run_id, head, loop_index, data, repr(value), _now(),
                       label, None))
        n = len(buffer)
        if n >= self.batch_size and (
            not n % self.batch_size or n >= self.max_pending
            or self._big_bytes > MAX_PENDING_BYTES
        ):
            self._wake_writer()
        return True

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
        if not number % (self.batch_size * VALUES_PER_RECORD):
            self._wake_writer()  # which also waits while too much is queued

    def metric_lane(
        self, flow_run_id: str, task_run_id: str | None, get: Callable[[str], Any]
    ) -> Callable[[str, float], None]:
        """:meth:`record_metric` for one task run, as ``record(name, value)``.

        ``get`` reads the task's context (its ``loop_index`` and ``block_index``
        at the time of the call). What a loop's metric costs its thread is
        mostly calls: this closure is the only one between ``log_metric`` and
        the task run's buffer (see ``TaskLogger.metric``), and it packs the value
        there itself (``metric_packing.RECORD``): the writer reads no record per value.
        """
        buffers = self._metrics
        number_next = buffers.count
        pack = RECORD.pack
        wake_every = self.batch_size * VALUES_PER_RECORD
        wake = self._wake_writer
        now = time.time

        def record(name: str, value: float) -> None:
            if self._unusable:
                self._raise()
            code = code_of(name)
            if code is None:
                code = buffers.new_code(buffer, name)
            loop = get("loop_index")
            block = get("block_index")
            number = number_next()
            append(pack(number, NONE if loop is None else loop,
                        NONE if block is None else block, code, value, now()))
            if not number % wake_every:
                wake()  # which also waits while too much is queued

        # Found once the lane exists: the buffer is kept for as long as the lane lives.
        buffer = buffers.for_lane(flow_run_id, task_run_id, record)
        append = buffer.data.extend  # one call per value: whole even with two threads
        code_of = buffer.codes.get
        return record
