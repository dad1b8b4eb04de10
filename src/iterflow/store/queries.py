"""Reading the store: runs, task runs, iteration histories, logs.

:class:`StoreReaders` holds the questions a :class:`~iterflow.store.runstore.RunStore`
answers; ``iterflow.store`` also offers each as a function taking the store as
``store=`` (:mod:`iterflow.store.api`). They return the plain frozen records of
:mod:`iterflow.store.records`, whose ``as_dict()`` is ready for ``json.dumps``.

>>> from iterflow.store import open_store              # doctest: +SKIP
>>> for run in open_store().list_runs(limit=5):        # doctest: +SKIP
...     print(run.run_id[:8], run.flow_name, run.state)

A run is identified by its id or any unique prefix of it. A run recorded as
live but dead is shown ``Crashed`` (:mod:`iterflow.store.liveness`).

Nothing here unpickles a result unless asked to (:meth:`StoreReaders.load_result`):
listings show the stored previews.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa

from iterflow.errors import StoreError
from iterflow.runids import block_index_of
from iterflow.store.liveness import LIVE, run_info
from iterflow.store.lookup import find_run, load_state_results
from iterflow.store.schema import flow_runs, results, state_transitions
from iterflow.store.schema import logs as logs_table
from iterflow.store.schema import task_runs as task_runs_table

if TYPE_CHECKING:
    # Imported where they are built: a store that only records never builds one
    # (defining the records' dataclasses costs several ms at start-up).
    from iterflow.store.records import IterationRecord, LogEntry, RunInfo, TaskRunInfo

__all__ = ["StoreReaders"]

T = TypeVar("T")


class StoreReaders:
    """The read-only questions a run store answers (a base of ``RunStore``).

    A subclass provides :meth:`read`, :attr:`name` and :attr:`stale_after`.
    """

    name: str
    stale_after: float

    def read(self, fn: Callable[[sa.Connection], T]) -> T:  # pragma: no cover - abstract
        """Run ``fn(conn)`` in one read transaction."""
        raise NotImplementedError

    def list_runs(
        self,
        limit: int | None = 20,
        flow_name: str | None = None,
        state: str | None = None,
    ) -> list[RunInfo]:
        """The most recent runs, newest first.

        ``state`` filters on the state shown (so ``"Crashed"`` finds dead runs and
        ``"Running"`` only live ones). ``limit=None`` lists them all.
        """

        def query(conn: sa.Connection) -> list[RunInfo]:
            stmt = sa.select(flow_runs).order_by(
                flow_runs.c.started.desc(), flow_runs.c.run_id.desc()
            )
            if flow_name is not None:
                stmt = stmt.where(flow_runs.c.flow_name == flow_name)
            if state is None or state not in (LIVE | {"Crashed"}):
                if state is not None:
                    stmt = stmt.where(flow_runs.c.state == state)
                if limit is not None:
                    stmt = stmt.limit(limit)
                return [run_info(row, self.stale_after) for row in conn.execute(stmt)]
            # Crashed is not stored, and a stored Running may be Crashed: decide
            # per row. Live-looking rows are few, so filtering here is cheap.
            stmt = stmt.where(flow_runs.c.state.in_(sorted(LIVE)))
            found = [
                info
                for info in (run_info(row, self.stale_after) for row in conn.execute(stmt))
                if info.state == state
            ]
            return found if limit is None else found[:limit]

        return self.read(query)

    def get_run(self, run_id: str) -> RunInfo:
        """One run, by id or unique id prefix (:class:`StoreError` if unknown or ambiguous)."""
        return self.read(
            lambda conn: run_info(find_run(conn, run_id, self.name), self.stale_after)
        )

    def task_runs(self, run_id: str) -> list[TaskRunInfo]:
        """The task runs of a run, in the order they started."""

        def query(conn: sa.Connection) -> list[TaskRunInfo]:
            from iterflow.store.records import TaskRunInfo

            run = find_run(conn, run_id, self.name)
            t = task_runs_table
            s = state_transitions
            stmt = (
                sa.select(t, s.c.preview)
                .select_from(t.outerjoin(s, s.c.id == t.c.result_transition))
                .where(t.c.flow_run_id == run.run_id)
                .order_by(t.c.started, t.c.task_slug, t.c.map_index)
            )
            return [
                TaskRunInfo(
                    task_run_id=row.task_run_id,
                    task_slug=row.task_slug,
                    task_name=row.task_name,
                    map_index=row.map_index,
                    state=row.state,
                    loop_count=row.loop_count,
                    loop_index=row.loop_index,
                    started=row.started,
                    ended=row.ended,
                    message=row.message,
                    result_preview=row.preview,
                    block_index=block_index_of(
                        row.task_run_id, row.task_slug, row.map_index, run.run_id
                    ),
                    task_run_name=row.task_run_name,
                )
                for row in conn.execute(stmt)
            ]

        return self.read(query)

    def iterations(
        self,
        run_id: str,
        task: str,
        map_index: int | None = None,
    ) -> list[IterationRecord]:
        """The recorded history of one task run: every ``Looped`` state, retries, the end.

        ``task`` is the task's slug or name; a mapped child needs its
        ``map_index``. ``Running`` states are left out: the store keeps them only
        where a task run (re)started, and each ``Looped`` already marks the start
        of the next iteration. A resumed task run shows both runs' states. For a
        task inside a loop block, the history of its runs in every block
        iteration, in order (each record's ``block_index`` says which).
        """

        def query(conn: sa.Connection) -> list[IterationRecord]:
            from iterflow.store.records import IterationRecord

            run = find_run(conn, run_id, self.name)
            keys = find_task_run(conn, run.run_id, task, map_index, self.name)
            s = state_transitions
            stmt = (
                sa.select(
                    s.c.id, s.c.loop_index, s.c.kind, s.c.time, s.c.message, s.c.block_index,
                    s.c.traceback, s.c.serializer, s.c.preview,
                    sa.func.coalesce(sa.func.length(s.c.data), results.c.size).label("size"),
                    s.c.label,
                )
                .select_from(s.outerjoin(results, results.c.id == s.c.result_id))
                .where(s.c.task_run.in_(keys), s.c.kind != "Running")
                .order_by(s.c.id)
            )
            return [
                IterationRecord(
                    loop_index=row.loop_index,
                    state=row.kind,
                    time=row.time,
                    message=row.message,
                    # No serializer: the state carried None.
                    preview=row.preview if row.serializer is not None else None,
                    result_id=row.id if row.serializer is not None else None,
                    size=row.size if row.serializer is not None else None,
                    serializer=row.serializer,
                    block_index=row.block_index,
                    traceback=row.traceback,
                    label=row.label,
                )
                for row in conn.execute(stmt)
            ]

        return self.read(query)

    def logs(
        self,
        run_id: str,
        task: str | None = None,
        *,
        after: int | None = None,
    ) -> list[LogEntry]:
        """The log lines of a run, in order; ``task`` (slug or name) keeps one task's.

        ``after`` is the ``id`` of the last line already read: only newer ones come
        back, so following a long run reads each line once::

            seen = store.logs(run_id)
            more = store.logs(run_id, after=seen[-1].id if seen else None)
        """

        def query(conn: sa.Connection) -> list[LogEntry]:
            from iterflow.store.records import LogEntry

            run = find_run(conn, run_id, self.name)
            lg, t = logs_table, task_runs_table
            stmt = (
                sa.select(lg, t.c.task_slug, t.c.task_run_id, t.c.map_index)
                .select_from(lg.outerjoin(t, t.c.id == lg.c.task_run))
                .where(lg.c.flow_run == run.id)
                .order_by(lg.c.id)
            )
            if after is not None:
                stmt = stmt.where(lg.c.id > after)
            if task is not None:
                by_name = sa.select(t.c.task_slug).where(
                    t.c.flow_run_id == run.run_id, t.c.task_name == task
                )
                stmt = stmt.where(sa.or_(t.c.task_slug == task, t.c.task_slug.in_(by_name)))
            return [
                LogEntry(
                    id=row.id,
                    time=row.time,
                    level=row.level,
                    level_name=logging.getLevelName(row.level),
                    message=row.message,
                    task_slug=row.task_slug,
                    task_run_id=row.task_run_id,
                    map_index=row.map_index,
                    loop_index=row.loop_index,
                )
                for row in conn.execute(stmt)
            ]

        return self.read(query)

    def load_result(self, result_id: int) -> Any:
        """Load one recorded value, by an :class:`IterationRecord`'s ``result_id``.

        This *does* unpickle it.
        """
        return self.read(lambda conn: load_state_results(conn, [result_id])[result_id])


def find_task_run(
    conn: sa.Connection, run_id: str, task: str, map_index: int | None, name: str
) -> Any:
    """A query for the keys (``task_runs.id``) of a run's task runs of one task.

    By task slug or name, and map index; or by a task run's own name
    (``task_run_name=``), which names a mapped child without its map index.
    One task run, but for a task inside a loop block, which has a task run in
    every block iteration.
    """
    t = task_runs_table
    cols = (t.c.id, t.c.task_slug, t.c.task_name, t.c.map_index)
    rows = conn.execute(
        sa.select(*cols).where(t.c.flow_run_id == run_id, t.c.task_slug == task)
    )
    rows = rows.all() or conn.execute(
        sa.select(*cols).where(t.c.flow_run_id == run_id, t.c.task_name == task)
    ).all()
    if not rows:
        rows = conn.execute(
            sa.select(*cols).where(t.c.flow_run_id == run_id, t.c.task_run_name == task)
        ).all()
        children = {r.map_index for r in rows}
        if map_index is None and len(children) == 1:
            map_index = children.pop()  # "fetch example.org" names its child
    if not rows:
        raise StoreError(
            f"Run {run_id} has no task run of a task named {task!r} (by slug, name or "
            f"task run name). `iterflow show {run_id[:8]}` lists its task runs."
        )
    slugs = sorted({r.task_slug for r in rows})
    if len(slugs) > 1:
        raise StoreError(
            f"Several tasks of run {run_id} are named {task!r} ({', '.join(slugs)}); "
            f"name one by its slug."
        )
    if any(r.map_index == map_index for r in rows):
        index = t.c.map_index.is_(None) if map_index is None else t.c.map_index == map_index
        return sa.select(t.c.id).where(
            t.c.flow_run_id == run_id, t.c.task_slug == slugs[0], index
        )
    indexes = sorted(r.map_index for r in rows if r.map_index is not None)
    if map_index is None and indexes:
        raise StoreError(
            f"Task {task!r} of run {run_id} is mapped: pass map_index "
            f"(recorded children: {indexes[0]}..{indexes[-1]})."
        )
    raise StoreError(f"Task {task!r} of run {run_id} has no child with map_index {map_index}.")
