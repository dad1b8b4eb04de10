"""Building a resume point: what a resumed run already has, read from its records.

A run's task runs are grouped by scope: the top level (ids ``<run>/<slug>``,
``<run>/<slug>/<map_index>``) and each loop block iteration (ids
``<block task run>/<k>[/attemptN]/<slug>``, see :mod:`iterflow.runids`).
Finished task runs give their final states, with their values loaded;
unfinished ones that recorded a ``Looped`` state give the iteration to
continue at and its loop result. Only the block iterations a resume
continues are read.

A task run is reused only if its task is the same call it was (its recorded
identity is the resuming flow's, :mod:`iterflow.core.fingerprint`): after the
flow changed, a slug may name another call, and its result is not this one's.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from iterflow.core.state import Mapped, State, state_class
from iterflow.errors import RunNotResumable, StoreError
from iterflow.events import IterationResume, ResumePoint
from iterflow.runids import iteration_prefix, scope_prefix, split_attempt
from iterflow.store.lookup import find_run, load_results, load_state_results
from iterflow.store.schema import state_transitions, task_runs

__all__ = ["SUCCESSFUL", "build_resume_point", "changed_tasks"]

_IN_CHUNK = 500  # ids per IN (...) list: well under every database's parameter limit

#: Task run states a resume keeps (their task runs are not run again).
SUCCESSFUL = frozenset({"Success", "Cached", "Skipped"})


def build_resume_point(
    conn: sa.Connection, run_id: str, name: str, identities: dict[str, str] | None = None
) -> ResumePoint:
    """What run ``run_id`` already has, read in ``conn``; see :meth:`RunStore.resume_point`.

    ``name`` names the store in messages. With ``identities`` (task slug ->
    identity in the flow that resumes, :mod:`iterflow.core.fingerprint`),
    task runs recorded with another identity are left out: they run again.
    """
    run = find_run(conn, run_id, name, error=RunNotResumable)
    t = task_runs
    rows = conn.execute(sa.select(t).where(t.c.flow_run_id == run.run_id)).all()
    if identities is not None:
        rows = [r for r in rows if _same_task(r, identities)]
    rows = _with_values_kept(conn, rows)

    scopes: dict[str, list[Any]] = {}
    for r in rows:
        prefix = scope_prefix(r.task_run_id, r.task_slug, r.map_index)
        scopes.setdefault(prefix or run.run_id, []).append(r)
    # A retried block iteration records each attempt after the first under
    # ``<iteration>/attemptN``: the engine continues the latest one it is given.
    attempts: dict[str, list[str]] = {}
    for key in scopes:
        base, attempt = split_attempt(key)
        if attempt > 1:
            attempts.setdefault(base, []).append(key)
    # The top level, then the iteration each unfinished task run would continue
    # at, if task runs were recorded under it (that task run is a loop block).
    included = [run.run_id]
    for prefix in included:  # grows while iterating: a breadth-first walk
        for r in scopes.get(prefix, ()):
            if r.state in SUCCESSFUL or r.state == "Mapped":
                continue
            inner = iteration_prefix(
                r.task_run_id, 0 if r.looped_index is None else r.looped_index + 1
            )
            for key in (inner, *attempts.get(inner, ())):
                if key in scopes and key not in included:
                    included.append(key)
    used = [r for prefix in included for r in scopes.get(prefix, ())]

    wanted = [
        r.result_transition
        for r in used
        if r.state in SUCCESSFUL and r.result_transition is not None
    ]
    wanted += [
        r.looped_transition
        for r in used
        if r.state not in SUCCESSFUL and r.looped_index is not None
        and r.looped_transition is not None
    ]
    parameters = run.parameters or {}
    try:
        values = load_state_results(conn, wanted)
        if run.parameters_result_id is not None:
            # Not exactly JSON: the pickled originals.
            parameters = load_results(conn, [run.parameters_result_id])[run.parameters_result_id]
    except StoreError as exc:
        raise RunNotResumable(f"Run {run.run_id} cannot be resumed: {exc}") from exc
    except Exception as exc:  # unpickling runs user code: name what broke
        raise RunNotResumable(
            f"Run {run.run_id} cannot be resumed: a recorded result cannot be loaded "
            f"({type(exc).__name__}: {exc}). Is the code that defines it importable here?"
        ) from exc

    point = ResumePoint(run_id=run.run_id, parameters=dict(parameters))
    point.finished, point.loops = _scope_resume(scopes.get(run.run_id, []), values)
    for prefix in included[1:]:
        finished, loops = _scope_resume(scopes[prefix], values)
        point.iterations[prefix] = IterationResume(finished=finished, loops=loops)
    return point


def changed_tasks(
    conn: sa.Connection, run_id: str, name: str, identities: dict[str, str]
) -> list[str]:
    """Slugs of the run's recorded tasks whose identity is not the one in ``identities``."""
    run = find_run(conn, run_id, name, error=RunNotResumable)
    t = task_runs
    rows = conn.execute(
        sa.select(t.c.task_slug, t.c.identity).where(t.c.flow_run_id == run.run_id).distinct()
    )
    return sorted({r.task_slug for r in rows if not _same_task(r, identities)})


def _with_values_kept(conn: sa.Connection, rows: list[Any]) -> list[Any]:
    """``rows`` without the task runs whose value a resume needs was not kept.

    A task with ``checkpoint=False`` records its states with previews only:
    such a task run cannot be reused, nor its loop continued, so it runs again.
    """
    needed = {}
    for r in rows:
        if r.state in SUCCESSFUL and r.result_transition is not None:
            needed[r.result_transition] = r
        elif r.state not in SUCCESSFUL and r.looped_transition is not None:
            needed[r.looped_transition] = r
    s = state_transitions
    ids = sorted(needed)
    lost: set[int] = set()
    for start in range(0, len(ids), _IN_CHUNK):
        lost.update(conn.execute(
            sa.select(s.c.id).where(
                s.c.id.in_(ids[start : start + _IN_CHUNK]), s.c.serializer.is_not(None),
                s.c.data.is_(None), s.c.result_id.is_(None),
            )
        ).scalars())
    dropped = {id(needed[i]) for i in lost}
    return [r for r in rows if id(r) not in dropped]


def _same_task(row: Any, identities: dict[str, str]) -> bool:
    # A task run recorded before identities were (NULL) is trusted, as it was then.
    return row.identity is None or identities.get(row.task_slug) == row.identity


def _scope_resume(
    rows: list[Any], values: dict[int, Any]
) -> tuple[dict[tuple[str, int | None], State], dict[tuple[str, int | None], tuple[int, Any]]]:
    """``finished`` and ``loops`` for the task runs of one scope."""
    finished: dict[tuple[str, int | None], State] = {}
    loops: dict[tuple[str, int | None], tuple[int, Any]] = {}
    mapped_parents = []
    for r in rows:
        key = (r.task_slug, r.map_index)
        if r.state in SUCCESSFUL:
            finished[key] = state_class(r.state)(
                r.message,
                None if r.result_transition is None else values[r.result_transition],
                loop_count=r.loop_count,
                timestamp=r.ended if r.ended is not None else r.started,
            )
        elif r.state == "Mapped" and r.map_index is None:
            mapped_parents.append(r)
        elif r.looped_index is not None:
            value = None if r.looped_transition is None else values[r.looped_transition]
            loops[key] = (r.looped_index + 1, value)

    for parent in mapped_parents:
        indexes = sorted(
            r.map_index for r in rows
            if r.task_slug == parent.task_slug and r.map_index is not None
        )
        children = [finished.get((parent.task_slug, index)) for index in indexes]
        if all(child is not None for child in children):
            finished[(parent.task_slug, None)] = Mapped(
                parent.message,
                map_states=children,
                timestamp=parent.ended if parent.ended is not None else parent.started,
            )
    return finished, loops
