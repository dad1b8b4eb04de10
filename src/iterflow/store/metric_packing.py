"""Metrics stored packed: one ``metrics`` row holds many logged values.

A loop that logs three metrics per iteration would make three rows per
iteration, each with its own index entries: more work for the writer than
the iteration's own state row, and more for a chart to read back. So the
writer packs the metrics a batch carries for one task run into one row — a
*chunk* — whose ``data`` column holds the values as arrays, and whose other
columns (``count``, ``loop_lo``/``loop_hi``, ``block_lo``/``block_hi``)
let readers pick chunks by task run and iteration range in SQL. The arrays
are decoded here, in C (:mod:`array`): a chart of 100,000 iterations reads
about 25 rows, not 100,000.

Format (version 1), all little-endian, ``n`` values::

    b"\\x01"                     format version
    int64[n]   seq               each value's id: the order values were logged in
    int64[n]   loop_index        NONE for a metric logged outside a task's iterations
    int64[n]   block_index       NONE outside a loop block
    int32[n]   name              index into the row's ``names`` (a JSON list)
    float64[n] value
    float64[n] time              seconds since the epoch

>>> data = pack([7, 8], [0, 0], [NONE, NONE], [0, 1], [0.5, 2.0], [1.0, 1.0])
>>> unpack(data, 2).value.tolist()
[0.5, 2.0]
"""

from __future__ import annotations

import json
import struct
import sys
from array import array
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

from iterflow.errors import StoreError

__all__ = ["COLUMNS", "NONE", "Chunk", "chunk_row", "group_metrics", "metric_row", "pack",
           "unpack", "values"]

#: Stands for NULL in the index arrays (no iteration, no block iteration).
NONE = -(2**63)
_VERSION = b"\x01"
_NONE_BYTES = struct.pack("<q", NONE)
_SWAP = sys.byteorder != "little"  # stored little-endian whatever the machine


class Chunk(NamedTuple):
    """The arrays of one packed row (see the module docstring)."""

    seq: array[int]
    loop_index: array[int]
    block_index: array[int]
    name: array[int]
    value: array[float]
    time: array[float]


def _bytes(typecode: str, values: Sequence[float]) -> bytes:
    # struct packs a sequence of numbers about twice as fast as array() converts it.
    return struct.pack(f"<{len(values)}{typecode}", *values)


def pack(
    seq: Sequence[int],
    loop_index: Sequence[int],
    block_index: Sequence[int] | None,
    name: Sequence[int],
    value: Sequence[float],
    time: Sequence[float],
) -> bytes:
    """The ``data`` of a chunk of ``len(seq)`` values (``NONE`` for a missing index).

    ``block_index`` None: no value has one (most metrics are logged outside loop blocks).
    """
    return b"".join((
        _VERSION, _bytes("q", seq), _bytes("q", loop_index),
        _NONE_BYTES * len(seq) if block_index is None else _bytes("q", block_index),
        _bytes("i", name), _bytes("d", value), _bytes("d", time),
    ))


def unpack(data: bytes, count: int) -> Chunk:
    """The arrays of a chunk of ``count`` values; :class:`StoreError` if ``data`` is damaged."""
    if data[:1] != _VERSION or len(data) != 1 + count * 44:
        raise StoreError(
            f"A metrics row of the run store is damaged or from a newer iterflow "
            f"(format {data[:1]!r}, {len(data)} bytes for {count} values)."
        )
    arrays = []
    at = 1
    for typecode, width in (("q", 8), ("q", 8), ("q", 8), ("i", 4), ("d", 8), ("d", 8)):
        part = array(typecode)
        part.frombytes(data[at:at + count * width])
        if _SWAP:
            part.byteswap()
        arrays.append(part)
        at += count * width
    return Chunk(*arrays)


#: A metric (``iterflow.log_metric``). Metrics have a queue of their own (the sink's
#: ``_metrics``), so their records carry no tag and no signal: a loop may log several per
#: iteration, so the record is made from plain values in the task's thread (the sink's
#: metric lane) and the writer takes them all at once, packed by task run (see
#: :func:`metric_row`).
(M_FLOW_RUN_ID, M_TASK_RUN_ID, M_LOOP_INDEX, M_BLOCK_INDEX, M_NAME, M_VALUE,
 M_TIME) = range(7)

#: A chunk row's columns, in the order :func:`chunk_row` gives them.
COLUMNS = ("id", "flow_run", "task_run", "count", "loop_lo", "loop_hi", "block_lo", "block_hi",
           "names", "data")


def chunk_row(
    flow_run: int,
    task_run: int | None,
    seq: Sequence[int],
    loop_index: Sequence[int | None],
    block_index: Sequence[int | None],
    names: Sequence[str],
    value: Sequence[float],
    time: Sequence[float],
) -> tuple[object, ...]:
    """The ``metrics`` row (:data:`COLUMNS`) of one task run's values, in ``seq`` order."""
    # C-level passes over the columns (a loop may log several metrics per iteration).
    codes = {name: code for code, name in enumerate(dict.fromkeys(names))}
    name_codes = list(map(codes.__getitem__, names))
    loop_range = _range(loop_index)
    block_range = _range(block_index)
    loop_index = _filled(loop_index, loop_range)
    return (
        seq[0], flow_run, task_run, len(seq), *(loop_range or (None, None)),
        *(block_range or (None, None)),
        json.dumps(list(codes)),
        pack(seq, loop_index, None if block_range is None else _filled(block_index, block_range),
             name_codes, value, time),
    )


def _range(indexes: Sequence[int | None]) -> tuple[int, int] | None:
    """The smallest and largest of ``indexes`` that are not None (None if all are)."""
    if None not in indexes:
        return min(indexes), max(indexes)  # type: ignore[type-var]
    given = [i for i in indexes if i is not None]
    return (min(given), max(given)) if given else None


def _filled(indexes: Sequence[int | None], given: tuple[int, int] | None) -> Sequence[int]:
    """``indexes`` with :data:`NONE` for None (``given``: their range, see :func:`_range`)."""
    if given is None:
        return [NONE] * len(indexes)  # none has one
    if None in indexes:
        return [NONE if i is None else i for i in indexes]
    return indexes  # type: ignore[return-value]


def values(row: Any) -> Iterator[tuple[int, int | None, int | None, str, float, float]]:
    """``(seq, loop_index, block_index, name, value, time)`` of each value of chunk ``row``.

    ``row`` has at least the ``count``, ``names`` and ``data`` columns.
    """
    chunk = unpack(row.data, row.count)
    names = json.loads(row.names)
    for seq, loop, block, code, value, at in zip(*chunk):
        yield (seq, None if loop == NONE else loop, None if block == NONE else block,
               names[code], value, at)


def group_metrics(metrics: list[tuple[Any, ...]],
                   chunks: dict[str, tuple[int, int | None, list[int], list[Any]]],
                   next_id: int, run_keys: dict[str, int], keyed_runs: dict[str, int],
                   task_keys: dict[str, int], keyed_tasks: dict[str, int]) -> int:
    """Give ``metrics`` their ids, from ``next_id``, and group them by task run in ``chunks``.

    Returns the next free id. A chunk is ``(flow run key, task run key, ids, records)``;
    values of no task run are grouped by their run id.
    """
    for record in metrics:
        owner = record[M_TASK_RUN_ID] or record[M_FLOW_RUN_ID]
        chunk = chunks.get(owner)
        if chunk is None:
            task_run_id = record[M_TASK_RUN_ID]
            chunk = chunks[owner] = (
                run_keys.get(record[M_FLOW_RUN_ID]) or keyed_runs[record[M_FLOW_RUN_ID]],
                None if task_run_id is None
                else task_keys.get(task_run_id) or keyed_tasks[task_run_id],
                [], [],
            )
        chunk[2].append(next_id)
        chunk[3].append(record)
        next_id += 1
    return next_id


def metric_row(flow_run: int, task_run: int | None, ids: list[int],
               records: list[tuple[Any, ...]]) -> tuple[Any, ...]:
    """The packed ``metrics`` row of a task run's metric ``records`` (see metric_packing)."""
    columns = list(zip(*records))  # in C: the records' slots as columns
    return chunk_row(
        flow_run, task_run, ids, columns[M_LOOP_INDEX], columns[M_BLOCK_INDEX],
        columns[M_NAME], columns[M_VALUE], columns[M_TIME],
    )
