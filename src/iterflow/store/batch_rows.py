"""The rows of one batch of records, grouped by the statement that inserts them.

:class:`~iterflow.store.batch.BatchRecorder` fills a :class:`BatchRows` from a
batch's records (:mod:`iterflow.store.record_layout`) inside its transaction,
then writes each group with one statement; :func:`task_run_row` is the
``task_runs`` row a task run has after the batch.
"""

from __future__ import annotations

from typing import Any

from iterflow.store.record_layout import (
    BIG,
    LP_HEAD,
    LP_LOOP_INDEX,
    LP_TIME,
    LS_BLOCK_INDEX,
    LS_HEAD,
    LS_LABEL,
    LS_LOOP_INDEX,
    LS_STORED,
    LS_TIME,
    ROLE_END_STRICT,
    ROLE_LOOP,
    ROLE_START,
    S_DATA,
    S_PATH,
    S_PREVIEW,
    S_SERIALIZER,
    STARTED,
    SUCCEEDED,
    T_BLOCK_INDEX,
    T_KIND,
    T_LABEL,
    T_LOOP_INDEX,
    T_MESSAGE,
    T_ROLE,
    T_STORED,
    T_TASK_RUN_ID,
    T_TIME,
    T_TRACEBACK,
    TASK,
)
from iterflow.store.statements import TASK_RUN_COLUMNS

__all__ = ["BatchRows", "as_task_record", "blob", "lane_task_record", "task_run_row"]


class BatchRows:
    """The rows of one batch, grouped by the statement that inserts them.

    ``fresh`` names the task runs that have no row in the store yet. The
    ``Running`` that starts one of them is held in :attr:`opening` rather than
    :attr:`running`: if the task run also ends in this batch, that row says
    nothing ``task_runs.started`` does not (the time of its first record, this
    one), so :meth:`BatchRecorder.commit` drops it — a third of the rows of a
    short task run (a map's child, a loop block's body, a chain's link).
    """

    __slots__ = ("finished", "finished_outside", "first", "flow_opening", "flow_runs",
                 "flow_states", "flows", "fresh", "fresh_runs", "latest", "links", "logs",
                 "looped", "looped_rows", "opening", "other", "results", "running", "shapes")

    def __init__(self, fresh: dict[str, None], fresh_runs: dict[str, None] | None = None
                 ) -> None:
        self.fresh = fresh
        # Flow runs with no row in the store yet, and the first Running state of each,
        # held until the batch's end: one that also ends in this batch (a child run)
        # writes no state rows, its ``flow_runs`` row says it all (flow_rows.write_flow).
        self.fresh_runs = fresh_runs or {}
        # run id -> (its Running's state row, its flow_runs row dict).
        self.flow_opening: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = {}
        # task run id -> its first Running row (the shape of `running`'s), until the
        # batch's end tells whether it is kept.
        self.opening: dict[str, tuple[Any, ...]] = {}
        self.results: list[tuple[Any, ...]] = []
        # id, flow_run, task_run, loop_index, data, preview, time
        self.looped_rows: list[tuple[Any, ...]] = []
        # id, flow_run, task_run, loop_index, block_index, time
        self.running: list[tuple[Any, ...]] = []
        # id, flow_run, task_run, kind, loop_index, block_index, data, preview, time
        self.finished: list[tuple[Any, ...]] = []
        # The same without block_index, NULL (outside any loop block: a NULL costs
        # sqlite3 ~13 times what an int does to bind, see prepared.FastInsert).
        self.finished_outside: list[tuple[Any, ...]] = []
        # id, flow_run, task_run, kind, loop_index, block_index, message, traceback,
        # serializer, data, preview, result_id, time, label
        self.other: list[tuple[Any, ...]] = []
        # id, flow_run, kind, message, time: a flow run's states (no task run, no value)
        self.flow_states: list[tuple[Any, ...]] = []
        # id, flow_run, task_run, loop_index, level, message, time
        self.logs: list[tuple[Any, ...]] = []
        # Child runs' links (ParentLink), written with the batch.
        self.links: list[Any] = []
        # Flow-level rows, written by flow_rows.write_flow_rows: the flows by name (the last
        # task list), each flow-run state's (run id, upsert rules, row), shapes by run.
        self.flows: dict[str, dict[str, Any]] = {}
        self.flow_runs: list[tuple[str, dict[str, str], dict[str, Any]]] = []
        self.shapes: dict[str, dict[str, Any]] = {}
        # Per task run: time of its first record; its last record and that
        # record's row id; its last Looped (index, row id).
        self.first: dict[str, float] = {}
        self.latest: dict[str, tuple[tuple[Any, ...], int]] = {}
        self.looped: dict[str, tuple[int, int]] = {}

    def task_state(
        self, record: tuple[Any, ...], run_key: int, task_key: int, next_id: int
    ) -> int:
        """Add the rows of a TASK record; return the next free id."""
        row_id = next_id
        next_id += 1
        task_run_id = record[T_TASK_RUN_ID]
        at = record[T_TIME]
        opens = task_run_id not in self.first
        if opens:
            self.first[task_run_id] = at
        self.latest[task_run_id] = (record, row_id)
        stored = record[T_STORED]
        role = record[T_ROLE]
        label = record[T_LABEL]
        if label is not None:  # rare enough: the general statement, which has the column
            if role == ROLE_LOOP:
                self.looped[task_run_id] = (record[T_LOOP_INDEX], row_id)
        elif role == ROLE_LOOP:
            self.looped[task_run_id] = (record[T_LOOP_INDEX], row_id)
            # The compact row has no message column: a LOOP(message=...) takes the other.
            if (stored is not None and stored[S_SERIALIZER] == "pickle"
                    and stored[S_PATH] is None and record[T_BLOCK_INDEX] is None
                    and record[T_MESSAGE] is None):
                self.looped_rows.append((row_id, run_key, task_key, record[T_LOOP_INDEX],
                                         blob(stored[S_DATA]), stored[S_PREVIEW], at))
                return next_id
        elif role == ROLE_START and record[T_MESSAGE] is None and stored is None:
            row = (row_id, run_key, task_key, record[T_LOOP_INDEX], record[T_BLOCK_INDEX], at)
            if opens and task_run_id in self.fresh:
                self.opening[task_run_id] = row  # see the class docstring
            else:  # a restart, a resumed run's start, a task run open before this batch
                self.running.append(row)
            return next_id
        elif (role == ROLE_END_STRICT and stored is not None and stored[S_SERIALIZER] == "pickle"
              and stored[S_DATA] is not None and record[T_MESSAGE] is None):
            # A task run that ended well with a pickled value in the row (each child of a map).
            block_index = record[T_BLOCK_INDEX]
            if block_index is None:
                self.finished_outside.append((row_id, run_key, task_key, record[T_KIND],
                                              record[T_LOOP_INDEX], blob(stored[S_DATA]),
                                              stored[S_PREVIEW], at))
            else:
                self.finished.append((row_id, run_key, task_key, record[T_KIND],
                                      record[T_LOOP_INDEX], block_index, blob(stored[S_DATA]),
                                      stored[S_PREVIEW], at))
            return next_id
        serializer = data = preview = result_id = None
        if stored is not None:
            serializer, data, path, _size, preview = stored
            if path is not None:  # in a file: its results row holds the path
                result_id = next_id
                next_id += 1
                self.results.append((result_id, *stored))
                data = None
        self.other.append((row_id, run_key, task_key, record[T_KIND], record[T_LOOP_INDEX],
                           record[T_BLOCK_INDEX], record[T_MESSAGE], record[T_TRACEBACK],
                           serializer, data, preview, result_id, at, label))
        return next_id


def blob(data: bytes | None) -> bytes | bytearray | None:
    """A small pickled value as the sqlite3 module binds it fastest: a ``bytearray``.

    It binds ``bytes`` only after looking for an adapter (~800 ns with the GIL
    held, see :class:`~iterflow.store.prepared.FastInsert`), a ``bytearray`` at
    once (~200 ns); the copy costs ~150 ns. Most state rows hold one (a
    ``Looped`` value, a map child's result). Large values are left alone: their
    copy would cost more than the lookup, and the memory twice over.
    """
    return bytearray(data) if data is not None and len(data) <= BIG else data


def as_task_record(record: tuple[Any, ...]) -> tuple[Any, ...]:
    """The TASK record a LOOPED record stands for (for the ``task_runs`` row)."""
    flow_run_id, task_run_id, slug, name, map_index, run_name = record[LP_HEAD]
    return (TASK, flow_run_id, task_run_id, slug, name, map_index, record[LP_LOOP_INDEX],
            "Looped", ROLE_LOOP, record[LP_TIME], None, None, None, None, None, None, run_name,
            None)


def lane_task_record(record: tuple[Any, ...]) -> tuple[Any, ...]:
    """The TASK record a task lane's STARTED or SUCCEEDED record stands for.

    The record ``handle`` makes of that state's event, slot for slot (see
    ``StoreSink.record_started`` and ``record_success``); other records as they are.
    """
    tag = record[0]
    if tag != STARTED and tag != SUCCEEDED:
        return record
    flow_run_id, task_run_id, slug, name, map_index, run_name = record[LS_HEAD]
    loop_index = record[LS_LOOP_INDEX]
    if tag == STARTED:
        return (TASK, flow_run_id, task_run_id, slug, name, map_index, loop_index, "Running",
                ROLE_START, record[LS_TIME], None, None, record[LS_BLOCK_INDEX], None, None,
                None, run_name, None)
    return (TASK, flow_run_id, task_run_id, slug, name, map_index, loop_index, "Success",
            ROLE_END_STRICT, record[LS_TIME], None, None, record[LS_BLOCK_INDEX],
            record[LS_STORED], loop_index + 1, record[LS_LABEL], run_name, None)


def task_run_row(
    record: tuple[Any, ...],
    key: int,
    row_id: int,
    started: float,
    looped: tuple[int, int] | None,
    identity: str | None,
) -> tuple[Any, ...]:
    """The ``task_runs`` row after a batch (in table order), from its last record there."""
    (_, flow_run_id, task_run_id, slug, name, map_index, loop_index, kind, role, at,
     message, _traceback, _block, _stored, loop_count, _label, run_name, _signal) = record
    finished = role >= ROLE_END_STRICT
    if not finished:
        loop_count = None
    looped_index = looped_transition = None
    if looped is not None:
        looped_index, looped_transition = looped
        if loop_count is None:
            loop_count = looped_index + 1  # iterations recorded so far
    return (
        task_run_id, key, flow_run_id, slug, name, map_index, kind, loop_count, loop_index,
        looped_index, looped_transition, row_id if finished else None, started,
        at if finished else None, message, identity, run_name,
    )


ROW_ORDER = (
    "task_run_id", "id", "flow_run_id", "task_slug", "task_name", "map_index", "state",
    "loop_count", "loop_index", "looped_index", "looped_transition", "result_transition",
    "started", "ended", "message", "identity", "task_run_name",
)
# task_run_row builds its tuple in the table's column order; keep them in step.
assert ROW_ORDER == TASK_RUN_COLUMNS, "task_runs columns changed: update task_run_row"
