"""Metrics stored packed: one ``metrics`` row holds many logged values.

A loop that logs three metrics per iteration would make three rows per
iteration, each with its own index entries: more work for the writer than
the iteration's own state row, and more for a chart to read back. So the
writer packs the metrics a batch carries for one task run into one row — a
*chunk* — whose ``data`` column holds the values as arrays, and whose other
columns (``count``, ``loop_lo``/``loop_hi``, ``block_lo``/``block_hi``)
let readers pick chunks by task run and iteration range in SQL. The arrays
are decoded here, in C (:mod:`array`): a chart of 100,000 iterations reads
about 25 rows, not 100,000. They are also made here in C: the emitting side
buffers each value as a :data:`RECORD` (see :mod:`iterflow.store.metric_buffers`),
and :class:`Values` turns a task run's buffer into its row with slices.

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

__all__ = ["COLUMNS", "NONE", "RECORD", "Chunk", "Taken", "Values", "chunk_row", "pack",
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


#: A value as the emitting side buffers it (``iterflow.store.metric_buffers``), in the
#: machine's byte order: its number (the order values were logged in, across task
#: runs), loop_index and block_index (NONE for none), its name's code, value, time.
#: All 8 bytes wide, so that the writer reads a buffer as two arrays and takes each
#: column with a C-level slice. Native mode ("@"): with all fields 8 bytes wide it
#: lays them out as "=" would (no padding), and packs an int a little faster.
RECORD = struct.Struct("@qqqqdd")
assert RECORD.size == 48, "a record is six 8-byte fields"
_FIELDS = 6
#: NONE as the machine stores it (a buffer's block_index when none is given).
_NONE_NATIVE = struct.pack("=q", NONE)
#: Which int32 of a record holds its name code: the low half of slot 3.
_CODE_WORD = 7 if _SWAP else 6


class Taken(NamedTuple):
    """What the writer took from a task run's buffer (see metric_buffers)."""

    flow_run_id: str
    task_run_id: str | None
    data: bytes | bytearray  # RECORDs
    names: list[str]  # by code


class Values:
    """A :class:`Taken`'s buffer read as columns (before its ids are known).

    Each column is a strided view of the buffer (no copy until its bytes are
    joined into the row); only the ids (numbers + an offset) and the index
    ranges take a pass over the values.
    """

    __slots__ = ("floats", "ints", "names", "words")

    def __init__(self, taken: Taken) -> None:
        data = memoryview(taken.data)
        self.ints = data.cast("q")
        self.floats = data.cast("d")
        self.words = data.cast("i")  # a name code as int32: the low half of its slot
        self.names = taken.names

    def numbers(self) -> array[int]:
        """Each value's number (see RECORD)."""
        return _array(self.ints[0::_FIELDS])

    def row(self, flow_run: int, task_run: int | None, offset: int) -> tuple[object, ...]:
        """The ``metrics`` row (:data:`COLUMNS`); a value's id is its number + ``offset``."""
        ints, floats = self.ints, self.floats
        seq = array("q", [number + offset for number in _array(ints[0::_FIELDS])])
        loop = _array(ints[1::_FIELDS])
        block = ints[2::_FIELDS]
        loop_range = _span(loop)
        # Most values have no block index: a memcmp tells, not a pass over them.
        no_block = block.tobytes() == _NONE_NATIVE * len(seq)
        block_range = None if no_block else _span(_array(block))
        return (
            seq[0], flow_run, task_run, len(seq), *(loop_range or (None, None)),
            *(block_range or (None, None)),
            json.dumps(self.names),
            b"".join((
                _VERSION, _le(seq), _le(loop), _le(block),
                _le(self.words[_CODE_WORD::2 * _FIELDS]),
                _le(floats[4::_FIELDS]), _le(floats[5::_FIELDS]),
            )),
        )


def _array(column: memoryview) -> array[int]:
    """An int64 column as an array: a copy in C, iterated faster than the view."""
    copy = array("q")
    copy.frombytes(column.tobytes())
    return copy


def _span(indexes: array[int]) -> tuple[int, int] | None:
    """The smallest and largest of ``indexes`` that are not NONE (None if all are)."""
    low = min(indexes)
    if low != NONE:  # the common case: all have one
        return low, max(indexes)
    high = max(indexes)
    if high == NONE:
        return None
    # Some have none: the least of the others (NONE is the least int64).
    return min(filter(NONE.__ne__, indexes)), high


def _le(column: array[Any] | memoryview) -> bytes:
    """``column``'s bytes, little-endian (the stored format's order on any machine)."""
    if _SWAP:
        swapped = array(column.format if isinstance(column, memoryview) else column.typecode)
        swapped.frombytes(column.tobytes())
        swapped.byteswap()
        return swapped.tobytes()
    return column.tobytes()


def number_span(columns: Sequence[Values]) -> tuple[int, int]:
    """(the least number, how many ids the numbers span) of values taken in one batch.

    The writer allocates that many ids: a value's id is its number + (first id -
    least number), so ids keep the order values were logged in. Numbers a batch
    lacks (a value still being appended as the writer took its buffer) waste an id.
    """
    if not columns:
        return 0, 0
    numbers = [column.numbers() for column in columns]
    least = min(map(min, numbers))
    return least, max(map(max, numbers)) - least + 1


def metric_rows(taken: Sequence[Taken], columns: Sequence[Values], offset: int,
                run_key_of: dict[str, int],
                task_key_of: dict[str, int]) -> list[tuple[object, ...]]:
    """The packed rows of values ``taken`` (read as ``columns``); ids are number + ``offset``.

    ``run_key_of``/``task_key_of``: the key of every flow run and task run the
    batch names, kept from before it or found or made in it.
    """
    rows = []
    for take, values in zip(taken, columns):
        task_run_id = take.task_run_id
        rows.append(values.row(
            run_key_of[take.flow_run_id],
            None if task_run_id is None else task_key_of[task_run_id],
            offset,
        ))
    return rows
