"""A loop's logged metrics per iteration, for the dashboard's charts and iteration table.

Metrics (``iterflow.log_metric``) are stored packed, a row (a *chunk*) per
task run and writer batch (:mod:`iterflow.store.metric_packing`), and read
here by *task run and index range*, never as a whole run's list: a looping
task's chunks through ``ix_metrics_task_run`` (task run, id), keeping those
whose ``loop_lo``..``loop_hi`` meets the range; a loop block's — logged by the
task runs of its body, against ``block_index`` — through ``ix_metrics_block``
(flow run, ``block_lo``), keeping the chunks of task runs whose ids lie under
the block's. The chunks' arrays are decoded here and cut to the range. So a
chart of iterations 90,000..90,500 of a 100,000-iteration loop decodes a
chunk or two, and a page of the iteration table the chunks of its iterations.

The charts go through :class:`MetricHistory`, which the dashboard keeps per
task run: it reads a task run's metrics once, then only the rows logged
since (by id), and answers any index range from memory.

An iteration's value of a metric is the *last* one logged in it (a retried
iteration, or a metric logged several times per iteration, counts its
latest).

>>> metric_series(store, key, task_run_id, start=0, end=999)   # doctest: +SKIP
{'loss': ([0, 1, 2], [0.9, 0.5, 0.31]), 'acc': ([0, 1, 2], [0.1, 0.4, 0.6])}
>>> metric_cells(store, key, task_run_id, [0, 1])              # doctest: +SKIP
{0: {'loss': 0.9, 'acc': 0.1}, 1: {'loss': 0.5, 'acc': 0.4}}
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterable
from operator import itemgetter
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from iterflow.store.metric_packing import NONE, unpack
from iterflow.store.schema import flow_runs as f
from iterflow.store.schema import metrics as m
from iterflow.store.schema import task_runs as t

if TYPE_CHECKING:
    from iterflow.store.runstore import RunStore

__all__ = ["MetricHistory", "metric_cells", "metric_series"]

_by_x = itemgetter(1)


def _own(key: int, lo: int | None, hi: int | None) -> sa.Select[Any]:
    """Chunks of metrics a task run logged itself in ``lo..hi`` (``ix_metrics_task_run``)."""
    where = [m.c.task_run == key, m.c.loop_lo.is_not(None)]
    if lo is not None:
        where.append(m.c.loop_hi >= lo)
    if hi is not None:
        where.append(m.c.loop_lo <= hi)
    return sa.select(m.c.id, m.c.count, m.c.names, m.c.data).where(*where).order_by(m.c.id)


def _under(block_id: str) -> sa.Select[Any]:
    """The keys of the task runs under loop block ``block_id`` (its body's, any depth)."""
    # Task run ids under the block sort between "<block>/" and "<block>0" ("0" follows "/").
    return sa.select(t.c.id).where(t.c.task_run_id > block_id + "/",
                                   t.c.task_run_id < block_id + "0")


def _body(block_id: str, flow_run: int, lo: int | None, hi: int | None) -> sa.Select[Any]:
    """Chunks of metrics a loop block's body logged in ``lo..hi`` (``ix_metrics_block``)."""
    where = [m.c.flow_run == flow_run, m.c.block_lo.is_not(None),
             m.c.task_run.in_(_under(block_id))]
    if lo is not None:
        where.append(m.c.block_hi >= lo)
    if hi is not None:
        where.append(m.c.block_lo <= hi)
    return sa.select(m.c.id, m.c.count, m.c.names, m.c.data).where(*where).order_by(m.c.id)


def _points(chunks: Iterable[Any], by_block: bool, lo: int | None = None,
            hi: int | None = None, wanted: set[int] | None = None
            ) -> list[tuple[int, int, str, float]]:
    """``(seq, x, name, value)`` of the chunks' values with an x in range, in seq order.

    x is each value's ``block_index`` when ``by_block``, else its ``loop_index``.
    """
    out: list[tuple[int, int, str, float]] = []
    for row in chunks:
        chunk = unpack(row.data, row.count)
        names = json.loads(row.names)
        xs = chunk.block_index if by_block else chunk.loop_index
        for seq, x, code, value in zip(chunk.seq, xs, chunk.name, chunk.value):
            if x == NONE or (lo is not None and x < lo) or (hi is not None and x > hi):
                continue
            if wanted is None or x in wanted:
                out.append((seq, x, names[code], value))
    out.sort()
    return out


def _rows(store: RunStore, key: int, task_run_id: str, lo: int | None, hi: int | None,
          indexes: list[int] | None = None) -> list[tuple[int, str, float]]:
    """``(x, name, value)`` of task run ``key`` (id ``task_run_id``), by x, then as logged."""
    wanted = None if indexes is None else set(indexes)

    def query(conn: sa.Connection) -> list[tuple[int, int, str, float]]:
        found = _points(conn.execute(_own(key, lo, hi)), False, lo, hi, wanted)
        if found:
            return found
        # Nothing logged by the task run itself: a loop block's body may have logged.
        run_id = task_run_id.partition("/")[0]  # a task run id starts with its run's
        flow_run = conn.execute(sa.select(f.c.id).where(f.c.run_id == run_id)).scalar()
        if flow_run is None:
            return []
        return _points(conn.execute(_body(task_run_id, flow_run, lo, hi)), True, lo, hi,
                       wanted)

    points = store.read(query)
    points.sort(key=_by_x)  # stable: within an iteration, still in the order logged
    return [(x, name, value) for _seq, x, name, value in points]


def metric_series(store: RunStore, key: int, task_run_id: str, *, start: int | None = None,
                  end: int | None = None) -> dict[str, tuple[list[int], list[float]]]:
    """Per metric name: iteration indexes and each iteration's last value.

    ``key`` and ``task_run_id`` name a looping task's run (x is
    ``loop_index``) or a loop block's (x is ``block_index``, metrics of its
    body's task runs). ``start``/``end`` bound x, inclusive. Names come in the order they
    first appear.
    """
    series: dict[str, tuple[list[int], list[float]]] = {}
    for x, name, value in _rows(store, key, task_run_id, start, end):
        xs, ys = series.setdefault(name, ([], []))
        if xs and xs[-1] == x:  # logged again in the same iteration: the last counts
            ys[-1] = float(value)
        else:
            xs.append(x)
            ys.append(float(value))
    return series


def metric_cells(store: RunStore, key: int, task_run_id: str, indexes: Iterable[int]
                 ) -> dict[int, dict[str, float]]:
    """The iteration table's metric column: ``{index: {name: last value}}`` for ``indexes``."""
    wanted = sorted(set(indexes))
    if not wanted:
        return {}
    cells: dict[int, dict[str, float]] = {}
    for x, name, value in _rows(store, key, task_run_id, wanted[0], wanted[-1], wanted):
        cells.setdefault(x, {})[name] = float(value)
    return cells



class MetricHistory:
    """A task run's metrics per iteration, kept in memory and read incrementally.

    The first :meth:`update` reads every metric of the task run (or of the
    loop block's body); later ones only the rows logged since (by id), so a
    live chart's refresh and a finished loop's second look cost what was
    added, not the whole loop. :meth:`series` answers any index range from
    memory (bisect). Each iteration keeps the last value logged in it.
    """

    def __init__(self, key: int, task_run_id: str) -> None:
        self.key = key
        self.task_run_id = task_run_id
        self.last_id = 0
        self.flow_run: int | None = None
        self.body: bool | None = None  # a loop block's body logged them (x: block_index)
        self.data: dict[str, tuple[list[int], list[float]]] = {}

    def __len__(self) -> int:
        return sum(len(xs) for xs, _ys in self.data.values())

    def update(self, store: RunStore) -> None:
        """Read the metrics logged since the last update."""

        def query(conn: sa.Connection) -> list[Any]:
            if self.body is not True:
                own = conn.execute(
                    sa.select(m.c.id, m.c.count, m.c.names, m.c.data)
                    .where(m.c.task_run == self.key, m.c.loop_lo.is_not(None),
                           m.c.id > self.last_id).order_by(m.c.id)
                ).all()
                if own or self.body is False:
                    self.body = False
                    return own
            if self.flow_run is None:
                run_id = self.task_run_id.partition("/")[0]
                self.flow_run = conn.execute(
                    sa.select(f.c.id).where(f.c.run_id == run_id)).scalar()
                if self.flow_run is None:
                    return []
            found = conn.execute(
                sa.select(m.c.id, m.c.count, m.c.names, m.c.data)
                .where(m.c.flow_run == self.flow_run, m.c.id > self.last_id,
                       m.c.block_lo.is_not(None), m.c.task_run.in_(_under(self.task_run_id)))
                .order_by(m.c.id)
            ).all()
            if found:
                self.body = True
            return found

        chunks = store.read(query)
        if not chunks:
            return
        self.last_id = max(self.last_id, chunks[-1].id)
        if not self.body:
            # One task run's chunks, in id order: its values in the order logged, as they come.
            for row in chunks:
                chunk = unpack(row.data, row.count)
                targets = [self.data.setdefault(name, ([], [])) for name in json.loads(row.names)]
                for x, code, value in zip(chunk.loop_index, chunk.name, chunk.value):
                    if x != NONE:
                        self._put(targets[code], x, value)
            return
        # Several task runs (a block's body): their values merged back into the order logged.
        data = self.data
        for _seq, x, name, value in _points(chunks, True):
            self._put(data.setdefault(name, ([], [])), x, value)

    @staticmethod
    def _put(series: tuple[list[int], list[float]], x: int, value: float) -> None:
        """Add iteration ``x``'s ``value``; one logged again in an iteration replaces it."""
        xs, ys = series
        if not xs or x > xs[-1]:
            xs.append(x)
            ys.append(value)
            return
        at = bisect.bisect_left(xs, x)
        if at < len(xs) and xs[at] == x:
            ys[at] = value  # logged again in that iteration: the last counts
        else:
            xs.insert(at, x)
            ys.insert(at, value)

    def series(self, start: int | None = None, end: int | None = None
               ) -> dict[str, tuple[list[int], list[float]]]:
        """Per name, the iterations in ``start``..``end`` (inclusive) and their values."""
        out = {}
        for name, (xs, ys) in self.data.items():
            lo = 0 if start is None else bisect.bisect_left(xs, start)
            hi = len(xs) if end is None else bisect.bisect_right(xs, end)
            out[name] = (xs[lo:hi], ys[lo:hi])
        if start is not None or end is not None:
            out = {name: v for name, v in out.items() if v[0]}
        return out
