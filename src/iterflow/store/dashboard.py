"""Readers for the dashboard: pages of runs, a run's shape, logs, change detection.

Every function here answers one screen's question with bounded work, however
big the run: listings are pages fetched by *keyset* (the last row's key, never
``OFFSET``), a run's top-level task runs are found by primary key (a loop
block's thousands of body task runs are never read), and a mapped task's
children are counted by state in SQL instead of listed. A loop's iterations
have their own module, :mod:`iterflow.store.dashboard_loops`.

Nothing is unpickled: values are shown by the previews stored beside them.

>>> from iterflow.store import open_store, runs_page        # doctest: +SKIP
>>> page = runs_page(open_store(), flow="training")         # doctest: +SKIP
>>> more = runs_page(open_store(), flow="training", after=page.next_key)  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from iterflow.store import get_run
from iterflow.store.liveness import run_info
from iterflow.store.schema import flow_run_shapes, flow_runs, flows, state_transitions, task_runs
from iterflow.store.schema import logs as logs_table

if TYPE_CHECKING:
    from iterflow.store import RunInfo, RunStore

__all__ = [
    "LogPage",
    "RunShape",
    "RunsPage",
    "TaskGroup",
    "change_marker",
    "flow_names",
    "flow_tasks",
    "log_page",
    "mapped_children",
    "run_shape",
    "runs_page",
    "task_run_row",
]

_LIVE = ("Running", "Pending")
_MAX_PAGE = 500
s = state_transitions
t = task_runs


def _pagesize(limit: int) -> int:
    return max(1, min(int(limit), _MAX_PAGE))


# -- runs -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunsPage:
    """One page of runs, newest first; ``next_key`` fetches the page after it."""

    runs: list[RunInfo]
    next_key: str | None
    loop_progress: dict[str, int] = field(default_factory=dict)


def _encode_key(started: float | None, run_id: str) -> str:
    return f"{'' if started is None else repr(started)}~{run_id}"


def _decode_key(key: str) -> tuple[float | None, str] | None:
    started, sep, run_id = key.partition("~")
    if not sep:
        return None
    try:
        return (float(started) if started else None), run_id
    except ValueError:
        return None


def runs_page(
    store: RunStore,
    *,
    flow: str | None = None,
    state: str | None = None,
    since: float | None = None,
    until: float | None = None,
    text: str | None = None,
    after: str | None = None,
    limit: int = 50,
) -> RunsPage:
    """Runs matching the filters, newest first, ``limit`` at a time.

    ``state`` is the state shown (``Crashed`` finds dead runs, ``Running``
    live ones, as in ``iterflow runs``); ``since``/``until`` bound the start
    time (epoch seconds); ``text`` matches a run id prefix, or a substring of
    the flow name or of the parameters' JSON. ``after`` is a page's
    ``next_key``. ``loop_progress`` maps run ids to their largest loop count.
    """
    limit = _pagesize(limit)
    f = flow_runs
    stmt = sa.select(f).order_by(f.c.started.desc(), f.c.run_id.desc())
    if flow:
        stmt = stmt.where(f.c.flow_name == flow)
    if since is not None:
        stmt = stmt.where(f.c.started >= since)
    if until is not None:
        stmt = stmt.where(f.c.started < until)
    if text:
        like = f"%{text}%"
        stmt = stmt.where(
            sa.or_(
                f.c.run_id.startswith(text, autoescape=True),
                f.c.flow_name.contains(text, autoescape=True),
                sa.cast(f.c.parameters, sa.Text).like(like),
            )
        )
    key = _decode_key(after) if after else None
    if key is not None:
        started, run_id = key
        if started is None:
            stmt = stmt.where(f.c.started.is_(None), f.c.run_id < run_id)
        else:
            stmt = stmt.where(
                sa.or_(
                    f.c.started < started,
                    sa.and_(f.c.started == started, f.c.run_id < run_id),
                    f.c.started.is_(None),
                )
            )
    # Crashed is not stored and a stored Running may be Crashed: such rows are
    # decided one by one, and live-looking rows are few.
    decide = state in ("Crashed", *_LIVE)
    if state and not decide:
        stmt = stmt.where(f.c.state == state)
    elif decide:
        stmt = stmt.where(f.c.state.in_(_LIVE))

    def query(conn: sa.Connection) -> RunsPage:
        found: list[RunInfo] = []
        last = None
        for row in conn.execute(stmt.limit(limit + 1 if not decide else None)):
            info = run_info(row, store.stale_after)
            if decide and info.state != state:
                continue
            if len(found) == limit:
                next_key = _encode_key(last.started, last.run_id)
                return RunsPage(found, next_key, _progress(conn, found))
            found.append(info)
            last = row
        return RunsPage(found, None, _progress(conn, found))

    return store.read(query)


def _progress(conn: sa.Connection, runs: list[RunInfo]) -> dict[str, int]:
    """The largest loop count of each run's top-level task runs.

    The runs' task slugs come from the index alone; then each top-level task
    run is read by its primary key, so a run whose loop block made thousands
    of body task runs costs no more than one without.
    """
    if not runs:
        return {}
    pairs = conn.execute(
        sa.select(t.c.flow_run_id, t.c.task_slug)
        .where(t.c.flow_run_id.in_([r.run_id for r in runs])).distinct()
    ).all()
    ids = [f"{run_id}/{slug}" for run_id, slug in pairs]
    out: dict[str, int] = {}
    for start in range(0, len(ids), _MAX_PAGE):
        rows = conn.execute(
            sa.select(t.c.flow_run_id, t.c.loop_count, t.c.loop_index)
            .where(t.c.task_run_id.in_(ids[start:start + _MAX_PAGE]))
        )
        for run_id, count, index in rows:
            value = max(count or 0, (index + 1) if index is not None else 0)
            if value > max(1, out.get(run_id, 0)):
                out[run_id] = value
    return out


def flow_names(store: RunStore) -> list[str]:
    """The names of the recorded flows (for the runs list's filter)."""
    return store.read(
        lambda conn: list(
            conn.execute(sa.select(flows.c.name).order_by(flows.c.name).limit(500)).scalars()
        )
    )


# -- a run's shape --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TaskGroup:
    """A task of a run as one row: a task run, or a mapped task with its children folded.

    ``children`` counts a mapped task's children by state (``width`` in all);
    ``is_block`` marks a loop block (its body's task runs live under its
    iterations). ``key`` is the task run's integer key (for iteration queries).
    ``task_run_name`` is the run's own name (``task_run_name=``), if it has one.
    """

    task_slug: str
    task_name: str
    task_run_id: str
    key: int
    state: str
    loop_count: int | None
    loop_index: int | None
    started: float | None
    ended: float | None
    message: str | None
    preview: str | None
    looped_index: int | None = None
    width: int = 0
    children: dict[str, int] = field(default_factory=dict)
    is_block: bool = False
    task_run_name: str | None = None

    @property
    def loops(self) -> bool:
        """Whether this task run looped (or is looping) or is a loop block."""
        return self.is_block or (self.loop_count or 0) > 1 or (self.loop_index or 0) > 0


@dataclass(frozen=True, slots=True)
class RunShape:
    """A run's header and its top-level tasks, in the order they started."""

    run: RunInfo
    key: int
    tasks: list[TaskGroup]
    flow_tasks: list[tuple[str, str]]
    #: The flow's description recorded with the run (``iterflow.core.shape``), if any.
    graph: dict[str, Any] | None = None


def run_shape(store: RunStore, run_id: str) -> RunShape:
    """The run (id or unique prefix) and its tasks: block bodies left out, maps folded."""
    run = get_run(run_id, store=store)

    def query(conn: sa.Connection) -> RunShape:
        key = conn.execute(
            sa.select(flow_runs.c.id).where(flow_runs.c.run_id == run.run_id)
        ).scalar()
        listed = conn.execute(
            sa.select(flows.c.tasks).where(flows.c.name == run.flow_name)
        ).scalar()
        # The run's slugs from the index alone, then each top-level task run by
        # its primary key (``<run id>/<slug>``): a block's thousands of body
        # task runs are never read.
        slugs = conn.execute(
            sa.select(t.c.task_slug).where(t.c.flow_run_id == run.run_id).distinct()
        ).scalars().all()
        single = t.c.task_run_id.in_([f"{run.run_id}/{slug}" for slug in slugs])
        rows = conn.execute(
            sa.select(t, s.c.preview)
            .select_from(t.outerjoin(s, s.c.id == t.c.result_transition))
            .where(t.c.flow_run_id == run.run_id, single)
            .order_by(t.c.started, t.c.task_slug)
        ).all()
        # Children of mapped tasks, counted by state in SQL.
        counts: dict[str, dict[str, int]] = {}
        mapped = [r.task_slug for r in rows if r.state == "Mapped" or _has_children(conn, r, True)]
        if mapped:
            for slug, state, n in conn.execute(
                sa.select(t.c.task_slug, t.c.state, sa.func.count())
                .where(t.c.flow_run_id == run.run_id, t.c.task_slug.in_(mapped),
                       t.c.map_index.is_not(None))
                .group_by(t.c.task_slug, t.c.state)
            ):
                counts.setdefault(slug, {})[state] = n
        groups = []
        for r in rows:
            children = counts.get(r.task_slug, {})
            groups.append(
                TaskGroup(
                    task_slug=r.task_slug, task_name=r.task_name, task_run_id=r.task_run_id,
                    key=r.id, state=r.state, loop_count=r.loop_count, loop_index=r.loop_index,
                    started=r.started, ended=r.ended, message=r.message, preview=r.preview,
                    looped_index=r.looped_index, width=sum(children.values()), children=children,
                    is_block=not children and _has_children(conn, r, False),
                    task_run_name=r.task_run_name,
                )
            )
        tasks = [tuple(x) for x in listed or []]
        graph = conn.execute(
            sa.select(flow_run_shapes.c.shape).where(flow_run_shapes.c.run_id == run.run_id)
        ).scalar()
        return RunShape(run=run, key=key or 0, tasks=groups, flow_tasks=tasks,  # type: ignore[arg-type]
                        graph=graph if isinstance(graph, dict) else None)

    return store.read(query)


def _has_children(conn: sa.Connection, row: Any, mapped: bool) -> bool:
    """Whether task runs live under this one's id: mapped children, or a block's body."""
    if row.map_index is not None:
        return False
    prefix = row.task_run_id + "/"
    # A range on the primary key: one index probe.
    hit = conn.execute(
        sa.select(t.c.map_index)
        .where(t.c.task_run_id > prefix, t.c.task_run_id < row.task_run_id + "0")
        .limit(1)
    ).first()
    if hit is None:
        return False
    return (hit.map_index is not None) == mapped if mapped else row.state != "Mapped"


def mapped_children(
    store: RunStore, run_id: str, slug: str, *, after: int = -1, limit: int = 50
) -> tuple[list[Any], int | None]:
    """A page of a mapped task's children by map index: ``(rows, next after)``."""
    limit = _pagesize(limit)

    def query(conn: sa.Connection) -> tuple[list[Any], int | None]:
        rows = conn.execute(
            sa.select(t.c.task_run_id, t.c.id, t.c.map_index, t.c.state, t.c.loop_count,
                      t.c.loop_index, t.c.started, t.c.ended, t.c.message, t.c.task_run_name)
            .where(t.c.flow_run_id == run_id, t.c.task_slug == slug,
                   t.c.map_index > after,
                   t.c.task_run_id == run_id + "/" + slug + "/" + sa.cast(t.c.map_index, sa.String))
            .order_by(t.c.map_index)
            .limit(limit + 1)
        ).all()
        more = rows[limit - 1].map_index if len(rows) > limit else None
        return rows[:limit], more

    return store.read(query)


def task_run_row(store: RunStore, task_run_id: str) -> Any:
    """The ``task_runs`` row of a task run id, or ``None``."""
    return store.read(
        lambda conn: conn.execute(sa.select(t).where(t.c.task_run_id == task_run_id)).first()
    )


# -- logs ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LogPage:
    """A page of log lines in id order; ``next_after`` continues after the last one."""

    lines: list[Any]
    next_after: int | None


def log_page(
    store: RunStore,
    run_id: str,
    *,
    task: str | None = None,
    task_run_key: int | None = None,
    iteration: int | None = None,
    level: int | None = None,
    text: str | None = None,
    after: int = 0,
    limit: int = 100,
) -> LogPage:
    """A run's log lines with ``id > after``, filtered; at most ``limit``.

    ``run_id`` is the full run id (see :func:`~iterflow.store.get_run` for prefixes).

    ``task`` is a task slug (every task run of it), ``task_run_key`` one task
    run; ``iteration`` its loop index; ``level`` the least level shown.
    """
    limit = _pagesize(limit)
    lg = logs_table
    stmt = (
        sa.select(lg.c.id, lg.c.time, lg.c.level, lg.c.message, lg.c.loop_index,
                  t.c.task_slug, t.c.task_name, t.c.map_index, t.c.task_run_id,
                  t.c.task_run_name)
        .select_from(lg.outerjoin(t, t.c.id == lg.c.task_run))
        .where(lg.c.flow_run == _run_key(run_id), lg.c.id > after)
        .order_by(lg.c.id)
        .limit(limit + 1)
    )
    if task:
        stmt = stmt.where(t.c.task_slug == task)
    if task_run_key is not None:
        stmt = stmt.where(lg.c.task_run == task_run_key)
    if iteration is not None:
        stmt = stmt.where(lg.c.loop_index == iteration)
    if level:
        stmt = stmt.where(lg.c.level >= level)
    if text:
        stmt = stmt.where(lg.c.message.contains(text, autoescape=True))

    def query(conn: sa.Connection) -> LogPage:
        rows = conn.execute(stmt).all()
        more = rows[limit - 1].id if len(rows) > limit else None
        return LogPage(rows[:limit], more)

    return store.read(query)


def _run_key(run_id: str) -> Any:
    return sa.select(flow_runs.c.id).where(flow_runs.c.run_id == run_id).scalar_subquery()


def flow_tasks(store: RunStore, flow_name: str) -> list[tuple[str, str]]:
    """``(slug, name)`` of a flow's tasks as its latest run recorded them."""
    listed = store.read(lambda conn: conn.execute(
        sa.select(flows.c.tasks).where(flows.c.name == flow_name)).scalar())
    return [(str(slug), str(name)) for slug, name in listed or []]


# -- change detection -------------------------------------------------------------------------


def change_marker(store: RunStore) -> tuple[Any, ...]:
    """A cheap value that changes whenever anything is written to the store.

    On SQLite, ``PRAGMA data_version`` (bumped by other connections' commits)
    with the newest ids; elsewhere the newest ids and the latest heartbeat.
    """

    def query(conn: sa.Connection) -> tuple[Any, ...]:
        newest = conn.execute(
            sa.select(
                sa.select(sa.func.max(s.c.id)).scalar_subquery(),
                sa.select(sa.func.max(logs_table.c.id)).scalar_subquery(),
                sa.select(sa.func.max(flow_runs.c.heartbeat)).scalar_subquery(),
            )
        ).one()
        return tuple(newest)

    return store.read(query)
