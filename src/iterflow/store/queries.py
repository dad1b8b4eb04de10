"""Reading the store: runs, task runs, iteration histories, logs, resume points.

Every function takes the store as ``store=``: a :class:`RunStore`, a URL, or
``None`` for the default store (``ITERFLOW_STORE_URL`` or
``$ITERFLOW_HOME/iterflow.db``), and returns plain frozen dataclasses whose
``as_dict()`` is ready for ``json.dumps`` (times are epoch seconds). Field
names follow the CLI's JSON (DESIGN §9).

>>> from iterflow.store import list_runs, task_runs    # doctest: +SKIP
>>> for run in list_runs(limit=5):                      # doctest: +SKIP
...     print(run.run_id[:8], run.flow_name, run.state)

A run is identified by its id or any unique prefix of it.

Liveness: a run recorded as ``Running`` or ``Pending`` is reported as
``Crashed`` when its heartbeat is older than the store's ``stale_after``
(30 s by default; the writer beats every few seconds) or when it ran on this
host and its process is gone. ``recorded_state`` keeps what the database says.

Nothing here unpickles a result unless asked to (:func:`load_result`,
:func:`resume_point`): listings show the stored previews.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import socket
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from iterflow.core.state import Mapped, State, state_class
from iterflow.errors import RunNotResumable, StoreError
from iterflow.events import IterationResume, ResumePoint
from iterflow.runids import block_index_of, iteration_prefix, scope_prefix, split_attempt
from iterflow.store.results import load_stored
from iterflow.store.schema import flow_runs, results, state_transitions
from iterflow.store.schema import logs as logs_table
from iterflow.store.schema import task_runs as task_runs_table

if TYPE_CHECKING:
    from iterflow.store.runstore import RunStore

__all__ = [
    "IterationRecord",
    "LogEntry",
    "RunInfo",
    "TaskRunInfo",
    "effective_state",
    "get_run",
    "iterations",
    "list_runs",
    "load_result",
    "logs",
    "resume_point",
    "task_runs",
]

_LIVE = frozenset({"Running", "Pending"})
_SUCCESSFUL = frozenset({"Success", "Cached", "Skipped"})
HOST = socket.gethostname()
_IN_CHUNK = 500  # ids per IN (...) list: well under every database's parameter limit


# -- records ------------------------------------------------------------------


class _Record:
    __slots__ = ()

    def as_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (JSON-ready)."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]


@dataclass(frozen=True, slots=True)
class RunInfo(_Record):
    """One flow run. ``state`` is what to show (``Crashed`` for a dead live run)."""

    run_id: str
    flow_name: str
    state: str
    started: float | None
    ended: float | None
    recorded_state: str
    parameters: dict[str, Any] | None
    source: str | None
    pid: int | None
    host: str | None
    heartbeat: float | None
    message: str | None


@dataclass(frozen=True, slots=True)
class TaskRunInfo(_Record):
    """One task run (a mapped child is its own task run, with its ``map_index``).

    ``loop_count`` is the number of iterations run (for a finished task run,
    its final ``loop_count``; while looping, the iterations recorded so far).
    ``result_preview`` is the preview of the final result, if any.
    ``block_index`` is, for a task inside a loop block, the block's iteration
    this task run belongs to (each iteration runs its body tasks anew; of
    nested blocks, the innermost); ``None`` outside blocks.
    """

    task_run_id: str
    task_slug: str
    task_name: str
    map_index: int | None
    state: str
    loop_count: int | None
    loop_index: int | None
    started: float | None
    ended: float | None
    message: str | None
    result_preview: str | None
    block_index: int | None = None


@dataclass(frozen=True, slots=True)
class IterationRecord(_Record):
    """A recorded state of a task run: each ``Looped`` iteration, retries, the end.

    ``result_id`` can be passed to :func:`load_result`; ``preview`` shows the
    value without loading it.
    """

    loop_index: int | None
    state: str
    time: float
    message: str | None
    preview: str | None
    result_id: int | None
    size: int | None
    serializer: str | None
    block_index: int | None
    traceback: str | None


@dataclass(frozen=True, slots=True)
class LogEntry(_Record):
    """A log line written during a run; ``id`` grows in the order lines were written."""

    id: int
    time: float
    level: int
    level_name: str
    message: str
    task_slug: str | None
    task_run_id: str | None
    map_index: int | None
    loop_index: int | None


# -- liveness -------------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except OSError:
        return False
    # A killed process its parent has not reaped yet still answers kill(0).
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            status = fh.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return status not in (b"Z", b"X")


def effective_state(
    state: str,
    pid: int | None,
    host: str | None,
    heartbeat: float | None,
    *,
    stale_after: float,
    now: float | None = None,
) -> str:
    """``state``, or ``"Crashed"`` when a run recorded as live is not (see module doc)."""
    if state not in _LIVE:
        return state
    now = time.time() if now is None else now
    if heartbeat is None or now - heartbeat > stale_after:
        return "Crashed"
    if pid is not None and host == HOST and not _pid_alive(pid):
        return "Crashed"
    return state


# -- helpers --------------------------------------------------------------------


@contextlib.contextmanager
def using_store(store: RunStore | str | None) -> Iterator[RunStore]:
    """``store`` as an open :class:`RunStore`: itself, or one opened (and closed after)."""
    from iterflow.store.runstore import RunStore, open_store

    if isinstance(store, RunStore):
        yield store
        return
    opened = open_store(store)
    try:
        yield opened
    finally:
        opened.close()


def run_info(row: Any, stale_after: float) -> RunInfo:
    return RunInfo(
        run_id=row.run_id,
        flow_name=row.flow_name,
        state=effective_state(
            row.state, row.pid, row.host, row.heartbeat, stale_after=stale_after
        ),
        started=row.started,
        ended=row.ended,
        recorded_state=row.state,
        parameters=row.parameters,
        source=row.source,
        pid=row.pid,
        host=row.host,
        heartbeat=row.heartbeat,
        message=row.message,
    )


def find_run(
    conn: sa.Connection,
    run_id: str,
    name: str,
    *,
    error: type[StoreError] = StoreError,
    for_update: bool = False,
) -> Any:
    """The ``flow_runs`` row for a run id or a unique prefix of one."""
    if not run_id:
        raise error("No run id given. `iterflow runs` lists the recorded runs.")
    query = sa.select(flow_runs)
    if for_update:
        query = query.with_for_update()
    row = conn.execute(query.where(flow_runs.c.run_id == run_id)).first()
    if row is not None:
        return row
    rows = conn.execute(
        query.where(flow_runs.c.run_id.startswith(run_id, autoescape=True))
        .order_by(flow_runs.c.run_id)
        .limit(6)
    ).all()
    if len(rows) == 1:
        return rows[0]
    if not rows:
        raise error(
            f"No run {run_id!r} in the run store {name}. `iterflow runs` lists the recorded runs."
        )
    shown = ", ".join(r.run_id for r in rows[:5]) + (", ..." if len(rows) > 5 else "")
    raise error(
        f"The run id prefix {run_id!r} matches more than one run in {name} ({shown}); "
        f"give more characters."
    )


def load_results(conn: sa.Connection, ids: Sequence[int]) -> dict[int, Any]:
    """Load (unpickle) the ``results`` rows with these ids (files, run parameters)."""
    values: dict[int, Any] = {}
    unique = sorted(set(ids))
    for start in range(0, len(unique), _IN_CHUNK):
        chunk = unique[start : start + _IN_CHUNK]
        rows = conn.execute(
            sa.select(
                results.c.id, results.c.serializer, results.c.data, results.c.path,
                results.c.preview,
            ).where(results.c.id.in_(chunk))
        )
        for row in rows:
            values[row.id] = load_stored(row.serializer, row.data, row.path, row.preview)
    missing = set(unique) - values.keys()
    if missing:
        raise StoreError(f"The store has lost the results {sorted(missing)[:5]}: it is damaged.")
    return values


def load_state_results(conn: sa.Connection, ids: Sequence[int]) -> dict[int, Any]:
    """Load (unpickle) the values carried by the state rows with these ids.

    A state that carried no value (``LOOP()`` without a result, a task that
    returned ``None``) gives ``None``.
    """
    values: dict[int, Any] = {}
    outside: dict[int, int] = {}  # state row id -> results row id
    unique = sorted(set(ids))
    s = state_transitions
    for start in range(0, len(unique), _IN_CHUNK):
        chunk = unique[start : start + _IN_CHUNK]
        rows = conn.execute(
            sa.select(s.c.id, s.c.serializer, s.c.data, s.c.preview, s.c.result_id)
            .where(s.c.id.in_(chunk))
        )
        for row in rows:
            if row.serializer is None:
                values[row.id] = None
            elif row.result_id is not None:
                outside[row.id] = row.result_id
            else:
                values[row.id] = load_stored(row.serializer, row.data, None, row.preview or "")
    if outside:
        loaded = load_results(conn, list(outside.values()))
        for row_id, result_id in outside.items():
            values[row_id] = loaded[result_id]
    missing = set(unique) - values.keys() - outside.keys()
    if missing:
        raise StoreError(
            f"The store has lost the recorded states {sorted(missing)[:5]}: it is damaged."
        )
    return values


# -- queries ----------------------------------------------------------------------


def list_runs(
    limit: int | None = 20,
    flow_name: str | None = None,
    state: str | None = None,
    *,
    store: RunStore | str | None = None,
) -> list[RunInfo]:
    """The most recent runs, newest first.

    ``state`` filters on the state shown (so ``"Crashed"`` finds dead runs and
    ``"Running"`` only live ones). ``limit=None`` lists them all.
    """
    with using_store(store) as st:

        def query(conn: sa.Connection) -> list[RunInfo]:
            stmt = sa.select(flow_runs).order_by(
                flow_runs.c.started.desc(), flow_runs.c.run_id.desc()
            )
            if flow_name is not None:
                stmt = stmt.where(flow_runs.c.flow_name == flow_name)
            if state is None or state not in (_LIVE | {"Crashed"}):
                if state is not None:
                    stmt = stmt.where(flow_runs.c.state == state)
                if limit is not None:
                    stmt = stmt.limit(limit)
                return [run_info(row, st.stale_after) for row in conn.execute(stmt)]
            # Crashed is not stored, and a stored Running may be Crashed: decide
            # per row. Live-looking rows are few, so filtering here is cheap.
            stmt = stmt.where(flow_runs.c.state.in_(sorted(_LIVE)))
            found = [
                info
                for info in (run_info(row, st.stale_after) for row in conn.execute(stmt))
                if info.state == state
            ]
            return found if limit is None else found[:limit]

        return st.read(query)


def get_run(run_id: str, *, store: RunStore | str | None = None) -> RunInfo:
    """One run, by id or unique id prefix (:class:`StoreError` if unknown or ambiguous)."""
    with using_store(store) as st:
        return st.read(lambda conn: run_info(find_run(conn, run_id, st.name), st.stale_after))


def task_runs(run_id: str, *, store: RunStore | str | None = None) -> list[TaskRunInfo]:
    """The task runs of a run, in the order they started."""
    with using_store(store) as st:

        def query(conn: sa.Connection) -> list[TaskRunInfo]:
            run = find_run(conn, run_id, st.name)
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
                )
                for row in conn.execute(stmt)
            ]

        return st.read(query)


def _find_task_run(
    conn: sa.Connection, run_id: str, task: str, map_index: int | None, name: str
) -> Any:
    """A query for the keys (``task_runs.id``) of a run's task runs of one task.

    By task slug or name, and map index. One task run, but for a task inside
    a loop block, which has a task run in every block iteration.
    """
    t = task_runs_table
    cols = (t.c.id, t.c.task_slug, t.c.task_name, t.c.map_index)
    rows = conn.execute(sa.select(*cols).where(t.c.flow_run_id == run_id, t.c.task_slug == task))
    rows = rows.all() or conn.execute(
        sa.select(*cols).where(t.c.flow_run_id == run_id, t.c.task_name == task)
    ).all()
    if not rows:
        raise StoreError(
            f"Run {run_id} has no task run of a task named {task!r} (by slug or name). "
            f"`iterflow show {run_id[:8]}` lists its task runs."
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


def iterations(
    run_id: str,
    task: str,
    map_index: int | None = None,
    *,
    store: RunStore | str | None = None,
) -> list[IterationRecord]:
    """The recorded history of one task run: every ``Looped`` state, retries, the end.

    ``task`` is the task's slug or name; a mapped child needs its
    ``map_index``. ``Running`` states are left out: the store keeps them only
    where a task run (re)started, and each ``Looped`` already marks the start
    of the next iteration. A resumed task run shows both runs' states. For a
    task inside a loop block, the history of its runs in every block
    iteration, in order (each record's ``block_index`` says which).
    """
    with using_store(store) as st:

        def query(conn: sa.Connection) -> list[IterationRecord]:
            run = find_run(conn, run_id, st.name)
            keys = _find_task_run(conn, run.run_id, task, map_index, st.name)
            s = state_transitions
            stmt = (
                sa.select(
                    s.c.id, s.c.loop_index, s.c.kind, s.c.time, s.c.message, s.c.block_index,
                    s.c.traceback, s.c.serializer, s.c.preview,
                    sa.func.coalesce(sa.func.length(s.c.data), results.c.size).label("size"),
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
                )
                for row in conn.execute(stmt)
            ]

        return st.read(query)


def logs(
    run_id: str,
    task: str | None = None,
    *,
    after: int | None = None,
    store: RunStore | str | None = None,
) -> list[LogEntry]:
    """The log lines of a run, in order; ``task`` (slug or name) keeps one task's.

    ``after`` is the ``id`` of the last line already read: only newer ones come
    back, so following a long run reads each line once::

        seen = logs(run_id)
        more = logs(run_id, after=seen[-1].id if seen else None)
    """
    with using_store(store) as st:

        def query(conn: sa.Connection) -> list[LogEntry]:
            run = find_run(conn, run_id, st.name)
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

        return st.read(query)


def load_result(result_id: int, *, store: RunStore | str | None = None) -> Any:
    """Load one recorded value, by an :class:`IterationRecord`'s ``result_id``.

    This *does* unpickle it.
    """
    with using_store(store) as st:
        return st.read(lambda conn: load_state_results(conn, [result_id])[result_id])


def resume_point(run_id: str, *, store: RunStore | str | None = None) -> ResumePoint:
    """What a resumed run already has: see :class:`~iterflow.events.ResumePoint`.

    ``finished`` holds the task runs that ended well (Success, Cached,
    Skipped), with their results loaded, and a ``Mapped`` parent when it was
    recorded and all its children are among them. ``loops`` holds, for each
    other task run that recorded a ``Looped`` state, ``(i + 1, result)`` for
    its latest ``Looped`` iteration ``i``.

    Task runs inside loop blocks (ids ``<block task run id>/<k>/<slug>``) go
    to ``iterations``, keyed by that prefix, for the one iteration each
    unfinished block continues at (``k`` = its next loop index), nested
    blocks included; finished iterations are left out, so a resume loads
    only what it uses. It does not check that the run may be resumed: see
    :meth:`RunStore.check_resumable`.
    """
    with using_store(store) as st:
        return st.read(lambda conn: _resume_point(conn, run_id, st.name))


def _resume_point(conn: sa.Connection, run_id: str, name: str) -> ResumePoint:
    run = find_run(conn, run_id, name, error=RunNotResumable)
    t = task_runs_table
    rows = conn.execute(sa.select(t).where(t.c.flow_run_id == run.run_id)).all()

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
            if r.state in _SUCCESSFUL or r.state == "Mapped":
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
        if r.state in _SUCCESSFUL and r.result_transition is not None
    ]
    wanted += [
        r.looped_transition
        for r in used
        if r.state not in _SUCCESSFUL and r.looped_index is not None
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


def _scope_resume(
    rows: list[Any], values: dict[int, Any]
) -> tuple[dict[tuple[str, int | None], State], dict[tuple[str, int | None], tuple[int, Any]]]:
    """``finished`` and ``loops`` for the task runs of one scope."""
    finished: dict[tuple[str, int | None], State] = {}
    loops: dict[tuple[str, int | None], tuple[int, Any]] = {}
    mapped_parents = []
    for r in rows:
        key = (r.task_slug, r.map_index)
        if r.state in _SUCCESSFUL:
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
