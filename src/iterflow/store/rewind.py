"""Rewind a loop to iteration K: ``iterflow resume RUN --from-iteration K [--task NAME]``.

The looping task (or loop block) continues from the carried value as it was
when iteration K started — the recorded ``Looped`` result of iteration K-1;
K=0 starts the loop over — and everything downstream of it runs again. The
iterations recorded from K on stay in the history, marked superseded by a row
in ``rewinds`` (nothing is deleted).

>>> plan = plan_rewind(store, point, flow, 40, task="train")   # doctest: +SKIP
>>> plan.slug, plan.from_iteration                              # doctest: +SKIP
('train', 40)
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from iterflow.errors import ParameterError
from iterflow.events import ResumePoint
from iterflow.store.lookup import load_state_results
from iterflow.store.schema import rewinds, state_transitions, task_runs

if TYPE_CHECKING:
    from iterflow.store.runstore import RunStore

__all__ = ["Rewind", "RewoundCheckpoints", "plan_rewind", "record_rewind", "superseded_before"]

_NOTHING: Any = object()


@dataclass
class Rewind:
    """What a rewind changes: the loop's slug, K, its start value, the tasks rerun."""

    slug: str
    from_iteration: int
    loop_result: Any
    downstream: list[str]


def plan_rewind(
    store: RunStore, point: ResumePoint, flow: Any, from_iteration: int, task: str | None
) -> Rewind:
    """Check the rewind and change ``point`` so the resumed run continues at iteration K.

    Raises :class:`~iterflow.errors.ParameterError` naming the flow and run for
    a K beyond the recorded iterations, a task that does not loop, or no
    ``task`` when several tasks loop.
    """
    run_id = point.run_id
    where = f"run {run_id} of flow {flow.name!r}"
    if from_iteration < 0:
        raise ParameterError(f"{where}: --from-iteration must be 0 or more, got {from_iteration}")
    rows = store.read(lambda conn: conn.execute(
        sa.select(task_runs.c.task_slug, task_runs.c.task_name, task_runs.c.id,
                  task_runs.c.loop_count, task_runs.c.looped_index)
        .where(task_runs.c.flow_run_id == run_id, task_runs.c.map_index.is_(None),
               task_runs.c.task_run_id == sa.literal(f"{run_id}/") + task_runs.c.task_slug)
    ).all())
    looping = [r for r in rows if r.looped_index is not None]
    if task is None:
        if len(looping) != 1:
            names = ", ".join(sorted(r.task_name for r in looping)) or "none"
            raise ParameterError(
                f"{where}: say which loop to rewind with --task NAME (task=NAME); tasks "
                f"that looped: {names}" if looping else
                f"{where}: no task of it looped, so there is no iteration to rewind to"
            )
        row = looping[0]
    else:
        named = [r for r in rows if task in (r.task_name, r.task_slug)]
        if not named:
            known = ", ".join(sorted(r.task_name for r in rows)) or "none"
            raise ParameterError(f"{where} has no task {task!r}; its tasks: {known}")
        looped = [r for r in named if r.looped_index is not None]
        if not looped:
            raise ParameterError(
                f"task {task!r} in {where} does not loop (it recorded no LOOP): there is no "
                f"iteration to rewind to; resume without --from-iteration"
            )
        row = looped[0]
    last = row.looped_index + 1  # the latest iteration a recorded value can start
    if from_iteration > last:
        raise ParameterError(
            f"task {row.task_name!r} in {where} recorded iterations up to {last} that can be "
            f"started again (0..{last}); --from-iteration {from_iteration} is beyond them"
        )
    value = _NOTHING
    if from_iteration > 0:
        value = store.read(lambda conn: _looped_value(conn, row.id, from_iteration - 1))
    by_slug = {t.slug: t for t in flow.tasks}
    rewound = by_slug.get(row.task_slug)
    downstream = sorted(
        t.slug for t in _downstream(flow, rewound) if t is not rewound
    ) if rewound is not None else []
    gone = {row.task_slug, *downstream}
    point.finished = {k: v for k, v in point.finished.items() if k[0] not in gone}
    point.loops = {k: v for k, v in point.loops.items() if k[0] not in gone}
    prefixes = tuple(f"{run_id}/{slug}/" for slug in gone)
    point.iterations = {k: v for k, v in point.iterations.items() if not k.startswith(prefixes)}
    if from_iteration > 0:
        point.loops[(row.task_slug, None)] = (from_iteration, value)
    return Rewind(row.task_slug, from_iteration, value, downstream)


def record_rewind(store: RunStore, run_id: str, plan: Rewind) -> int:
    """Mark what the rewind supersedes: the state rows recorded so far, from K on.

    Returns the last state row id before the rewind.
    """

    def mark(conn: sa.Connection) -> int:
        before = conn.execute(sa.select(sa.func.max(state_transitions.c.id))).scalar() or 0
        conn.execute(sa.insert(rewinds).values(
            run_id=run_id, task_slug=plan.slug, from_iteration=plan.from_iteration,
            before_id=before, downstream=json.dumps(plan.downstream), time=time.time(),
        ))
        return int(before)

    return store.write(mark)


def superseded_before(store: RunStore, run_id: str) -> list[tuple[str, int, int]]:
    """``(task_slug, from_iteration, before_id)`` of each rewind of ``run_id``, oldest first.

    A state row of that task run with ``loop_index >= from_iteration`` and
    ``id <= before_id`` is superseded: kept in the history, replaced by what
    the rewound run recorded after it.
    """
    return [tuple(r) for r in store.read(lambda conn: conn.execute(
        sa.select(rewinds.c.task_slug, rewinds.c.from_iteration, rewinds.c.before_id)
        .where(rewinds.c.run_id == run_id).order_by(rewinds.c.before_id)
    ).all())]


def _looped_value(conn: sa.Connection, task_run_key: int, loop_index: int) -> Any:
    found = conn.execute(
        sa.select(state_transitions.c.id)
        .where(state_transitions.c.task_run == task_run_key,
               state_transitions.c.kind == "Looped",
               state_transitions.c.loop_index == loop_index)
        .order_by(state_transitions.c.id.desc()).limit(1)
    ).scalar()
    if found is None:
        return None
    return load_state_results(conn, [found]).get(found)


def _downstream(flow: Any, start: Any) -> set[Any]:
    seen: set[Any] = set()
    todo = [start]
    while todo:
        task = todo.pop()
        if task in seen:
            continue
        seen.add(task)
        todo.extend(flow.downstream_tasks(task))
    return seen


class RewoundCheckpoints:
    """A checkpoint source that ignores the iterations a rewind superseded.

    A job re-scheduled elsewhere (a lost Dask worker) asks where its loop got
    to; in a rewound run the answer must come from what this run recorded
    after the rewind (state rows after ``before_id``), never from the
    superseded iterations. Picklable, like the source it wraps.
    """

    __slots__ = ("before_id", "source")

    def __init__(self, source: Any, before_id: int) -> None:
        self.source = source
        self.before_id = before_id

    def last_loop(self, task_run_id: str) -> tuple[int, Any] | None:
        """See :meth:`iterflow.store.RunStore.last_loop`; None for a superseded record."""
        store = self.source._store()
        latest = store.read(lambda conn: conn.execute(
            sa.select(task_runs.c.looped_transition)
            .where(task_runs.c.task_run_id == task_run_id)
        ).first())
        if latest is None or latest[0] is None or latest[0] <= self.before_id:
            return None
        found: tuple[int, Any] | None = self.source.last_loop(task_run_id)
        return found

    def __reduce__(self) -> tuple[Any, ...]:
        return (RewoundCheckpoints, (self.source, self.before_id))
