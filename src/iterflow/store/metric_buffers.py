"""Metrics waiting for the writer: one buffer per task run, packed as they are logged.

A loop may log several metrics per iteration. Queued as a tuple per value,
each cost the writer a pass in Python to group, convert and pack it — with
the GIL, so the loop's thread waited for it. Here the emitting side packs
each value straight into its task run's buffer (a ``bytearray`` of
:data:`~iterflow.store.metric_packing.RECORD`\\ s, its names numbered as
they come), and the writer takes each buffer's bytes whole and turns them
into a chunk row in a few C-level passes
(:func:`~iterflow.store.metric_packing.taken_row`).

Each value carries a number from one counter of the sink, taken as it is
logged: the order across task runs, which the writer maps onto the ids it
allocates (the ``seq`` of the stored format).

Thread safety rests on the GIL: a value is appended to its buffer by a single
``bytearray.extend`` (whole, also when several threads log for one task
run), and the writer takes a prefix of whole values and deletes just that
prefix. A buffer is dropped once empty and no lane (see
:meth:`MetricBuffers.for_lane`) can append to it any more.
"""

from __future__ import annotations

import itertools
import threading
import weakref
from collections.abc import Callable
from typing import Any

from iterflow.store.metric_packing import NONE, RECORD, Taken

__all__ = ["VALUES_PER_RECORD", "MetricBuffer", "MetricBuffers"]

#: What a buffered value counts for against the sink's ``batch_size`` (when to wake
#: the writer) and ``max_pending`` (back-pressure): this many are one record. A
#: value is 48 bytes and costs the writer a share of a few C-level passes, a record
#: a row; counted one for one, a loop logging 3 metrics per iteration had the
#: writer commit 3 times as often, the loop waiting on each.
VALUES_PER_RECORD = 8

_SIZE = RECORD.size
_pack = RECORD.pack


class MetricBuffer:
    """The values of one task run (or of a flow run, outside task runs) not yet taken."""

    __slots__ = ("codes", "data", "flow_run_id", "lanes", "task_run_id")

    def __init__(self, flow_run_id: str, task_run_id: str | None) -> None:
        self.flow_run_id = flow_run_id
        self.task_run_id = task_run_id
        #: RECORD after RECORD; only ever appended to whole, or cut by a whole prefix.
        self.data = bytearray()
        #: Name -> its code in ``data``: only grows, so any snapshot names every code before it.
        self.codes: dict[str, int] = {}
        #: Lanes that may still append (weak: a lane ends with its task run's logger).
        self.lanes: list[weakref.ref[Any]] = []

    def idle(self) -> bool:
        """Nothing waiting, and no lane left that could add more."""
        if self.data:
            return False
        return all(lane() is None for lane in self.lanes)


class MetricBuffers:
    """A store sink's metric buffers, by owner (task run id, else flow run id).

    The sink's ``_metrics``: true while any value waits, its ``len`` what the
    values waiting count for against ``max_pending`` (:data:`VALUES_PER_RECORD`),
    :meth:`take` the writer's side.
    """

    def __init__(self) -> None:
        self._owners: dict[str, MetricBuffer] = {}
        # Guards the owners' dict and new name codes; a lane's values need no lock.
        self._lock = threading.Lock()
        #: The order of values across task runs: each takes the next number.
        self.count: Callable[[], int] = itertools.count(1).__next__

    def __bool__(self) -> bool:
        return any(buffer.data for buffer in list(self._owners.values()))

    def __len__(self) -> int:
        return -(-self.waiting() // VALUES_PER_RECORD)

    def waiting(self) -> int:
        """How many values wait for the writer."""
        return sum(len(buffer.data) for buffer in list(self._owners.values())) // _SIZE

    def _buffer(self, flow_run_id: str, task_run_id: str | None) -> MetricBuffer:
        """The buffer of a task run's (or a flow run's) values; call with the lock held."""
        owner = task_run_id or flow_run_id
        buffer = self._owners.get(owner)
        if buffer is None:
            buffer = self._owners[owner] = MetricBuffer(flow_run_id, task_run_id)
        return buffer

    def add(self, flow_run_id: str, task_run_id: str | None, loop_index: int | None,
            block_index: int | None, name: str, value: float, at: float) -> int:
        """Buffer one value (an event's: the slow path); returns its number."""
        with self._lock:
            buffer = self._buffer(flow_run_id, task_run_id)
            code = buffer.codes.setdefault(name, len(buffer.codes))
            number = self.count()
            buffer.data.extend(_pack(
                number, NONE if loop_index is None else loop_index,
                NONE if block_index is None else block_index, code, value, at,
            ))
        return number

    def for_lane(self, flow_run_id: str, task_run_id: str | None,
                 lane: Callable[..., Any]) -> MetricBuffer:
        """The buffer ``lane`` appends to, kept (at least) for as long as ``lane`` lives."""
        with self._lock:
            buffer = self._buffer(flow_run_id, task_run_id)
            buffer.lanes.append(weakref.ref(lane))
        return buffer

    def new_code(self, buffer: MetricBuffer, name: str) -> int:
        """``name``'s code in ``buffer``, numbered now if it has none (a lane's slow path)."""
        with self._lock:  # two threads of one task run may bring new names at once
            return buffer.codes.setdefault(name, len(buffer.codes))

    def take(self) -> list[Taken]:
        """All values waiting, per buffer; buffers with nothing more to come are dropped."""
        taken: list[Taken] = []
        with self._lock:
            for owner, buffer in list(self._owners.items()):
                data = buffer.data
                size = len(data)  # whole values: each came in one extend
                if size:
                    chunk = data[:size]
                    del data[:size]  # values appended meanwhile stay for the next take
                    # Names after the values: every code in the chunk is named.
                    taken.append(Taken(buffer.flow_run_id, buffer.task_run_id, chunk,
                                       list(buffer.codes)))
                elif buffer.idle():
                    del self._owners[owner]
        return taken

    def clear(self) -> None:
        """Drop everything waiting (the writer failed)."""
        with self._lock:
            for buffer in self._owners.values():
                del buffer.data[:]
