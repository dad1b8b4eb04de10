"""The dashboard's view of a loop: its iterations summarised, paged, one at a time.

A loop of 100,000 iterations is read here without ever sending 100,000 rows
anywhere: :func:`iteration_page` pages by *loop index* (a keyset, so a jump
to iteration 99,999 costs what the first page does), :class:`LoopStats`
keeps the summary (counts, percentiles, the strip) and reads only what was
recorded since its last look, and :func:`iteration_detail` reads one
iteration and, for a loop block, its body's task runs by a primary-key range.

Iterations are read from ``state_transitions`` through the index
``ix_state_transitions_iteration`` (task run, loop index, time, kind): in
that order a task run's history is the order it happened, and the index
covers the summary's reads. An iteration's row is its *end*: the ``Looped``
state that continued the loop, or the state that ended it; a ``Retrying``
row is a failed attempt at that iteration. An attempt's duration is the time
since the row before it (the previous end, or the ``Running`` that restarted
the task after a retry); the first row's is the time since the task run
started (``task_runs.started``: a task run that started and ended in one of
the writer's batches has no ``Running`` row, see :mod:`iterflow.store.batch`).

Nothing is unpickled: values are shown by the previews stored beside them.

>>> from iterflow.store import open_store, run_shape, iteration_page   # doctest: +SKIP
>>> store = open_store()                                                # doctest: +SKIP
>>> loop = run_shape(store, "3f9a").tasks[0]                            # doctest: +SKIP
>>> iteration_page(store, loop.key, start=99_990, failed_only=True)     # doctest: +SKIP
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from iterflow.runids import iteration_prefix
from iterflow.store.schema import state_transitions, task_runs

if TYPE_CHECKING:
    from iterflow.store import RunStore

__all__ = [
    "FAILED_KINDS",
    "IterationPage",
    "IterationRow",
    "IterationSummary",
    "LoopStats",
    "StripBucket",
    "iteration_detail",
    "iteration_page",
    "iteration_summary",
]

#: States of an attempt that did not succeed (a ``Retrying`` is a failed attempt).
FAILED_KINDS = ("Retrying", "Failed", "TriggerFailed", "TimedOut", "Cancelled")
_MAX_PAGE = 500
s = state_transitions
t = task_runs
# A task run's history in the order it happened, which is the iteration
# index's own order (so no database sorts it); ``kind`` only breaks ties.
_HISTORY = (s.c.loop_index, s.c.time, s.c.kind)


def _pagesize(limit: int) -> int:
    return max(1, min(int(limit), _MAX_PAGE))


@dataclass(frozen=True, slots=True)
class StripBucket:
    """Iterations ``first..last`` of a loop, in one pixel column of the strip."""

    first: int
    last: int
    count: int
    max_duration: float
    mean_duration: float
    failed: int


@dataclass(frozen=True, slots=True)
class IterationSummary:
    """What a loop's iterations add up to (see the module docstring)."""

    iterations: int
    states: dict[str, int]
    retries: int
    p50: float | None
    p95: float | None
    max: float | None
    rate: float | None  # iterations per second, over the loop's span
    first_failure: int | None
    slowest: int | None
    strip: list[StripBucket]
    last_index: int | None


class LoopStats:
    """The running summary of one task run's iterations, read incrementally.

    Percentiles and the strip need every attempt's duration, and a window
    query over 100,000 rows costs more than a page may; so the first
    :meth:`update` reads the task run's history once, in index order (an
    index-only scan), and every later one reads only the rows recorded since.
    A viewer of a running loop thus costs a few new rows per tick, and a
    finished loop nothing. Memory: 9 bytes per iteration.
    """

    def __init__(self, key: int) -> None:
        self.key = key
        self.durations = array("d")  # per attempt end, in history order
        self.indexes = array("q")  # its loop index
        self.failed = array("b")  # 1: a failed attempt
        self.states: dict[str, int] = {}
        self.first_failure: int | None = None
        self._last: tuple[int, float, str] | None = None  # (loop index, time, kind) last read
        self._prev_time: float | None = None
        self._span: tuple[float, float] | None = None
        self._summaries: dict[tuple[int, int], IterationSummary] = {}

    def update(self, store: RunStore) -> None:
        """Read the rows recorded since the last call."""
        cols = (s.c.id, s.c.loop_index, s.c.time, s.c.kind)
        stmt = sa.select(*cols).where(s.c.task_run == self.key, s.c.loop_index.is_not(None))
        if self._last is not None:
            stmt = stmt.where(
                sa.tuple_(s.c.loop_index, s.c.time, s.c.kind) > sa.tuple_(*self._last)
            )
        stmt = stmt.order_by(*_HISTORY)
        first_read = self._last is None

        def query(conn: sa.Connection) -> tuple[list[Any], float | None]:
            found = conn.execute(stmt).all()
            return found, _started(conn, self.key) if first_read and found else None

        rows, started = store.read(query)
        if not rows:
            return
        prev = started if first_read else self._prev_time
        durations, indexes, failed, states = self.durations, self.indexes, self.failed, self.states
        for _id, i, tm, kind in rows:
            if kind != "Running":
                durations.append(tm - prev if prev is not None else 0.0)
                indexes.append(i)
                bad = kind in FAILED_KINDS
                failed.append(bad)
                if bad and self.first_failure is None:
                    self.first_failure = i
                states[kind] = states.get(kind, 0) + 1
            prev = tm
        self._prev_time = prev
        last = rows[-1]
        self._last = (last.loop_index, last.time, last.kind)
        first_time = self._span[0] if self._span else rows[0].time
        self._span = (first_time, last.time)
        self._summaries.clear()

    def summary(self, width: int = 600) -> IterationSummary:
        """The summary as of the last :meth:`update`; ``width`` strip buckets at most."""
        cached = self._summaries.get((width, len(self.durations)))
        if cached is not None:
            return cached
        n_rows = len(self.durations)
        if not n_rows:
            return IterationSummary(0, {}, 0, None, None, None, None, None, None, [], None)
        first, last = self.indexes[0], self.indexes[-1]
        n = last - first + 1
        ordered = sorted(self.durations)
        slowest_at = max(range(n_rows), key=self.durations.__getitem__)
        step = max(1, -(-n // max(1, width)))
        strip: list[StripBucket] = []
        lo = 0
        durations, indexes, failed = self.durations, self.indexes, self.failed
        while lo < n_rows:
            bucket = (indexes[lo] - first) // step
            hi = lo
            while hi < n_rows and (indexes[hi] - first) // step == bucket:
                hi += 1
            part = durations[lo:hi]
            strip.append(StripBucket(indexes[lo], indexes[hi - 1], hi - lo, max(part),
                                     sum(part) / (hi - lo), sum(failed[lo:hi])))
            lo = hi
        span = self._span[1] - self._span[0] if self._span else 0.0
        result = IterationSummary(
            iterations=n,
            states=dict(self.states),
            retries=self.states.get("Retrying", 0),
            p50=ordered[(n_rows - 1) // 2],
            p95=ordered[min(n_rows - 1, int(0.95 * (n_rows - 1) + 0.5))],
            max=ordered[-1],
            rate=(n / span) if span > 0 else None,
            first_failure=self.first_failure,
            slowest=indexes[slowest_at],
            strip=strip,
            last_index=last,
        )
        self._summaries = {(width, n_rows): result}
        return result


def iteration_summary(store: RunStore, key: int, *, width: int = 600) -> IterationSummary:
    """Summarise the iterations of the task run with integer key ``key``.

    ``strip`` has one bucket per iteration, or ``width`` buckets of equal
    iteration ranges when there are more iterations than that. A viewer that
    asks again and again keeps a :class:`LoopStats` instead.
    """
    stats = LoopStats(key)
    stats.update(store)
    return stats.summary(width)


@dataclass(frozen=True, slots=True)
class IterationRow:
    """One attempt at an iteration: its end state, duration, preview and message."""

    loop_index: int
    state: str
    time: float
    duration: float | None
    attempt: int
    message: str | None
    preview: str | None
    id: int
    label: str | None = None


@dataclass(frozen=True, slots=True)
class IterationPage:
    """A page of a loop's iteration rows; ``next_from`` starts the next page."""

    rows: list[IterationRow]
    next_from: int | None
    prev_from: int | None


def iteration_page(
    store: RunStore,
    key: int,
    *,
    start: int = 0,
    failed_only: bool = False,
    label: str | None = None,
    limit: int = 50,
) -> IterationPage:
    """The rows of iterations ``start``, ``start + 1``, ... of task run ``key``.

    Keyset by loop index, so a jump to iteration 99,999 costs what the first
    page does. ``failed_only`` keeps failed attempts (retried ones included);
    ``label`` keeps iterations whose label contains that text (any case),
    searched by the database, page by page like the rest.
    """
    limit = _pagesize(limit)
    start = max(0, int(start))

    def query(conn: sa.Connection) -> IterationPage:
        cond = [s.c.task_run == key, s.c.kind != "Running", s.c.loop_index >= start,
                *_filters(failed_only, label)]
        cols = (s.c.id, s.c.loop_index, s.c.kind, s.c.time, s.c.message, s.c.preview,
                s.c.serializer, s.c.label)
        rows = conn.execute(
            sa.select(*cols).where(*cond)
            .order_by(*_HISTORY).limit(limit + 1)
        ).all()
        more = rows[limit].loop_index if len(rows) > limit else None
        rows = rows[:limit]
        if not rows:
            return IterationPage([], None, _previous(conn, key, start, failed_only, label, limit))
        # Durations: each row's time minus the row before it (any kind, so a
        # retried attempt counts from its restart). A contiguous page reads its
        # range once; a sparse one (failed only) probes once per row.
        lo, hi = rows[0].loop_index, rows[-1].loop_index
        before: dict[int, float] = {}
        attempts: dict[int, int] = {}
        # The first row of the history is timed from the task run's start.
        first_row = _first_row(conn, key) if lo <= 0 else None
        started = _started(conn, key) if first_row is not None else None
        if started is not None:
            before[first_row] = started
        if hi - lo <= 2 * limit:
            context = conn.execute(
                sa.select(s.c.id, s.c.loop_index, s.c.kind, s.c.time)
                .where(s.c.task_run == key, s.c.loop_index >= lo - 1, s.c.loop_index <= hi)
                .order_by(*_HISTORY)
            ).all()
            last: float | None = None
            seen: dict[int, int] = {}
            for c in context:
                if last is not None:
                    before[c.id] = last
                last = c.time
                if c.kind != "Running":
                    seen[c.loop_index] = seen.get(c.loop_index, 0) + 1
                    attempts[c.id] = seen[c.loop_index]
        else:
            # One indexed read of the iterations these rows are in and the ones
            # before them; then each row is timed from the row just before it.
            wanted = sorted({r.loop_index for r in rows} | {r.loop_index - 1 for r in rows})
            around: dict[int, list[Any]] = {}
            for c in conn.execute(
                sa.select(s.c.id, s.c.loop_index, s.c.kind, s.c.time)
                .where(s.c.task_run == key, s.c.loop_index.in_(wanted))
                .order_by(*_HISTORY)
            ):
                around.setdefault(c.loop_index, []).append(c)
            for r in rows:
                history = around.get(r.loop_index - 1, [])[-1:] + around.get(r.loop_index, [])
                mine = [c.id for c in history].index(r.id)
                if mine:
                    before[r.id] = history[mine - 1].time
                attempts[r.id] = sum(
                    1 for c in history[:mine + 1]
                    if c.loop_index == r.loop_index and c.kind != "Running"
                )
        out = [
            IterationRow(
                loop_index=r.loop_index, state=r.kind, time=r.time,
                duration=(r.time - before[r.id]) if r.id in before else None,
                attempt=attempts.get(r.id, 1), message=r.message,
                preview=r.preview if r.serializer is not None else None, id=r.id,
                label=r.label,
            )
            for r in rows
        ]
        return IterationPage(out, more, _previous(conn, key, start, failed_only, label, limit))

    return store.read(query)


def _started(conn: sa.Connection, key: int) -> float | None:
    """When the task run with integer key ``key`` started (``task_runs.started``)."""
    return conn.execute(sa.select(t.c.started).where(t.c.id == key)).scalar()


def _first_row(conn: sa.Connection, key: int) -> int | None:
    """The id of the first row of a task run's history (in the iteration index's order)."""
    return conn.execute(
        sa.select(s.c.id).where(s.c.task_run == key, s.c.loop_index.is_not(None))
        .order_by(*_HISTORY).limit(1)
    ).scalar()


def _filters(failed_only: bool, label: str | None) -> list[Any]:
    """The conditions of the failed-only and label filters."""
    cond: list[Any] = []
    if failed_only:
        cond.append(s.c.kind.in_(FAILED_KINDS))
    if label:
        # Any case; % and _ in the text are themselves, not wildcards.
        cond.append(s.c.label.icontains(label, autoescape=True))
    return cond


def _previous(
    conn: sa.Connection, key: int, start: int, failed_only: bool, label: str | None, limit: int
) -> int | None:
    """Where the page before one starting at ``start`` starts (``None``: no such page)."""
    if start <= 0:
        return None
    cond = [s.c.task_run == key, s.c.kind != "Running", s.c.loop_index < start,
            *_filters(failed_only, label)]
    inner = (
        sa.select(s.c.loop_index).where(*cond)
        .order_by(*(c.desc() for c in _HISTORY)).limit(limit).subquery()
    )
    return conn.execute(sa.select(sa.func.min(inner.c.loop_index))).scalar()


def iteration_detail(store: RunStore, task_run_id: str, key: int, index: int) -> dict[str, Any]:
    """Iteration ``index`` of a task run: its states (with tracebacks) and, for a
    loop block, its body's task runs (every attempt's)."""
    prefix = iteration_prefix(task_run_id, index)

    def query(conn: sa.Connection) -> dict[str, Any]:
        states = conn.execute(
            sa.select(s.c.id, s.c.kind, s.c.loop_index, s.c.time, s.c.message, s.c.traceback,
                      s.c.preview, s.c.serializer, s.c.label)
            .where(s.c.task_run == key, s.c.loop_index.between(index - 1, index))
            .order_by(*_HISTORY)
        ).all()
        body = conn.execute(
            sa.select(t.c.task_run_id, t.c.id, t.c.task_slug, t.c.task_name, t.c.map_index,
                      t.c.state, t.c.loop_count, t.c.started, t.c.ended, t.c.message,
                      t.c.task_run_name)
            .where(t.c.task_run_id > prefix + "/", t.c.task_run_id < prefix + "0")
            .order_by(t.c.started, t.c.task_run_id)
            .limit(_MAX_PAGE)
        ).all()
        previous = [r for r in states if r.loop_index == index - 1 and r.kind != "Running"]
        mine = [r for r in states if r.loop_index == index]
        if previous:
            started = previous[-1].time
        elif mine and mine[0].kind == "Running":
            started = mine[0].time
        elif mine:  # the first iteration of a task run with no Running row (see above)
            started = _started(conn, key)
            started = mine[0].time if started is None else min(started, mine[0].time)
        else:
            started = None
        return {"states": mine, "started": started, "body": body}

    return store.read(query)


