"""What ``iterflow serve`` keeps in the store: ticks, leases and run triggers.

Ticks. Every occurrence of a schedule is one ``schedule_ticks`` row, unique
on (flow, schedule, scheduled time), with what became of it: ``launched``
(with its run id), ``skipped`` (a run was in flight), ``missed`` (``serve``
was down, beyond the catch-up policy) or ``queued`` (waiting for the run in
flight; it becomes ``launched`` or ``skipped``). :func:`claim_ticks` inserts
with "on conflict do nothing" and says which rows it inserted: a tick some
other process recorded first is never acted on twice, whatever the timing.

Leases. One ``serve`` per store and flow: ``serve_leases`` holds the owner
(a random token), its pid and host and a heartbeat. :func:`acquire_lease`
takes a free, stopped or dead lease in one write transaction and otherwise
raises :class:`ServeConflict` naming the holder. A holder is dead when its
heartbeat is older than ``stale_after`` or, on this host, its process is
gone. :func:`renew_lease` answers False once another process took the lease
over: the loser stops serving that flow.

Triggers. ``run_triggers`` says what started a run: ``schedule`` (with the
schedule's name and time) or ``resume``; a run with none was started by hand.

>>> from iterflow.store import open_store, ticks
>>> store = open_store()                    # ITERFLOW_STORE_URL or $ITERFLOW_HOME/iterflow.db
>>> row = {"flow_name": "sync-orders", "schedule": "hourly", "scheduled": 0.0,
...        "outcome": "missed"}
>>> claim_ticks(store, [row, row])          # the second is the same occurrence
[True, False]
>>> [t.outcome for t in ticks("sync-orders", store=store)]
['missed']
>>> store.close()
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from iterflow.errors import IterflowError, ServeConflict
from iterflow.store.schema import flow_runs, run_triggers, schedule_ticks, serve_leases

if TYPE_CHECKING:
    from iterflow.store.runstore import RunStore

__all__ = [
    "LeaseInfo",
    "ServeConflict",
    "TickInfo",
    "TriggerInfo",
    "acquire_lease",
    "claim_ticks",
    "last_ticks",
    "lease",
    "lease_alive",
    "leases",
    "record_trigger",
    "release_lease",
    "renew_lease",
    "serve_runs",
    "tick_of_run",
    "ticks",
    "triggers",
    "update_tick",
]

HOST = socket.gethostname()
_TICK_KEY = ["flow_name", "schedule", "scheduled"]  # unique: ux_schedule_ticks
_IN_CHUNK = 500


@dataclass(frozen=True, slots=True)
class TickInfo:
    """One occurrence of a schedule and what became of it (times: epoch seconds)."""

    flow_name: str
    schedule: str
    scheduled: float
    outcome: str
    run_id: str | None
    resumes: int
    recorded: float
    message: str | None

    def as_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (JSON-ready)."""
        return dataclasses.asdict(self)


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    """Who serves a flow: ``stopped`` is set once that ``serve`` let go."""

    flow_name: str
    owner: str
    pid: int | None
    host: str | None
    started: float | None
    heartbeat: float | None
    stopped: float | None
    covered: float | None = None
    schedules: list[dict[str, Any]] | None = None

    def as_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (JSON-ready)."""
        return dataclasses.asdict(self)


@dataclass(frozen=True, slots=True)
class TriggerInfo:
    """What started a run: ``kind`` is ``manual``, ``schedule`` or ``resume``.

    ``schedule``/``scheduled`` name the occurrence that started it (also when
    it was resumed since); ``resumes`` counts the resumes.
    """

    kind: str
    schedule: str | None = None
    scheduled: float | None = None
    resumes: int = 0

    def as_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (JSON-ready)."""
        return dataclasses.asdict(self)


@contextlib.contextmanager
def _using(store: RunStore | str | None) -> Iterator[RunStore]:
    """``store`` as an open store: itself, or one opened from a URL (closed after)."""
    from iterflow.store.runstore import RunStore, open_store

    if isinstance(store, RunStore):
        yield store
        return
    opened = open_store(store)
    try:
        yield opened
    finally:
        opened.close()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    try:  # a zombie (killed, not reaped yet) still answers kill(0)
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except (OSError, IndexError):
        return True


def _lease_info(row: Any) -> LeaseInfo:
    return LeaseInfo(
        row.flow_name, row.owner, row.pid, row.host, row.started, row.heartbeat, row.stopped,
        row.covered, row.schedules,
    )


def lease_alive(info: LeaseInfo, stale_after: float, now: float | None = None) -> bool:
    """Whether the ``serve`` holding ``info`` is still serving (see the module doc)."""
    if info.stopped is not None or info.heartbeat is None:
        return False
    now = time.time() if now is None else now
    if now - info.heartbeat > stale_after:
        return False
    return not (info.pid is not None and info.host == HOST and not _pid_alive(info.pid))


# -- leases ------------------------------------------------------------------------------
def acquire_lease(
    store: RunStore,
    flow_name: str,
    owner: str,
    *,
    stale_after: float = 15.0,
    schedules: list[dict[str, Any]] | None = None,
    covered: float | None = None,
) -> LeaseInfo | None:
    """Take the lease of ``flow_name`` for ``owner``; return the previous holder's, if any.

    :class:`ServeConflict` (naming its pid and host) when a live ``serve`` holds it.
    """

    def take(conn: sa.Connection) -> LeaseInfo | None:
        row = conn.execute(
            sa.select(serve_leases).where(serve_leases.c.flow_name == flow_name)
            .with_for_update()
        ).first()
        previous = None if row is None else _lease_info(row)
        now = time.time()
        if previous is not None and previous.owner != owner and lease_alive(previous, stale_after):
            age = now - (previous.heartbeat or now)
            raise ServeConflict(
                f"flow {flow_name!r} is already served by process {previous.pid} on "
                f"{previous.host} (last heartbeat {age:.0f} s ago) in the run store "
                f"{store.name}. Stop that `iterflow serve` first; once it is gone this one "
                f"takes over."
            )
        values = {
            "owner": owner, "pid": os.getpid(), "host": HOST, "started": now,
            "heartbeat": now, "stopped": None, "schedules": schedules,
            # Until this serve beats, what the previous one covered still holds.
            "covered": covered if previous is None else (previous.covered or covered),
        }
        if row is None:
            conn.execute(sa.insert(serve_leases).values(flow_name=flow_name, **values))
        else:
            conn.execute(
                sa.update(serve_leases).where(serve_leases.c.flow_name == flow_name)
                .values(**values)
            )
        return previous

    return store.write(take)


def renew_lease(
    store: RunStore, flow_name: str, owner: str, *, covered: float | None = None
) -> bool:
    """Beat the lease's heartbeat; False when ``owner`` no longer holds it.

    ``covered``: the schedule time up to which ticks were dealt with.
    """

    def beat(conn: sa.Connection) -> bool:
        done = conn.execute(
            sa.update(serve_leases)
            .where(serve_leases.c.flow_name == flow_name, serve_leases.c.owner == owner,
                   serve_leases.c.stopped.is_(None))
            .values(heartbeat=time.time(), **({} if covered is None else {"covered": covered}))
        )
        return done.rowcount == 1

    return store.write(beat)


def release_lease(
    store: RunStore, flow_name: str, owner: str, *, covered: float | None = None
) -> None:
    """Let go of the lease (the row stays: ``covered`` says until when it served)."""
    extra = {} if covered is None else {"covered": covered}
    store.write(lambda conn: conn.execute(
        sa.update(serve_leases)
        .where(serve_leases.c.flow_name == flow_name, serve_leases.c.owner == owner)
        .values(stopped=time.time(), heartbeat=time.time(), **extra)
    ))


def lease(flow_name: str, *, store: RunStore | str | None = None) -> LeaseInfo | None:
    """The lease row of ``flow_name`` (held, stopped or dead), or None."""
    with _using(store) as st:
        row = st.read(lambda conn: conn.execute(
            sa.select(serve_leases).where(serve_leases.c.flow_name == flow_name)
        ).first())
    return None if row is None else _lease_info(row)


def leases(store: RunStore) -> list[LeaseInfo]:
    """Every lease row, by flow name: the flows ``serve`` serves or has served."""
    rows = store.read(lambda conn: conn.execute(
        sa.select(serve_leases).order_by(serve_leases.c.flow_name)
    ).all())
    return [_lease_info(row) for row in rows]


# -- ticks --------------------------------------------------------------------------------
def _tick_info(row: Any) -> TickInfo:
    return TickInfo(
        row.flow_name, row.schedule, row.scheduled, row.outcome, row.run_id, row.resumes,
        row.recorded, row.message,
    )


def _insert_ignoring_duplicates(conn: sa.Connection) -> Any:
    if conn.dialect.name == "sqlite":
        from sqlalchemy.dialects import sqlite

        return sqlite.insert(schedule_ticks).on_conflict_do_nothing(index_elements=_TICK_KEY)
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(schedule_ticks).on_conflict_do_nothing(index_elements=_TICK_KEY)
    # pragma: no cover - iterflow supports SQLite and PostgreSQL
    raise IterflowError(f"schedules need SQLite or PostgreSQL, not {conn.dialect.name}")


def claim_ticks(store: RunStore, rows: Sequence[dict[str, Any]]) -> list[bool]:
    """Record ticks (dicts of ``schedule_ticks`` columns); True for each one inserted.

    False means that occurrence was recorded before, by this or another
    process: the caller must not act on it.
    """

    def claim(conn: sa.Connection) -> list[bool]:
        now = time.time()
        stmt = _insert_ignoring_duplicates(conn)
        # RETURNING, not rowcount: drivers differ on what rowcount says for DO NOTHING.
        stmt = stmt.returning(schedule_ticks.c.id)
        return [
            conn.execute(stmt.values(recorded=now, resumes=0, **row)).first() is not None
            for row in rows
        ]

    return store.write(claim) if rows else []


def update_tick(
    store: RunStore, flow_name: str, schedule: str, scheduled: float, **values: Any
) -> None:
    """Change a recorded tick (``outcome``, ``run_id``, ``resumes``, ``message``)."""
    t = schedule_ticks
    store.write(lambda conn: conn.execute(
        sa.update(t)
        .where(t.c.flow_name == flow_name, t.c.schedule == schedule, t.c.scheduled == scheduled)
        .values(**values)
    ))


def last_ticks(store: RunStore, flow_name: str) -> dict[str, float]:
    """The latest recorded time of each schedule of ``flow_name``."""
    t = schedule_ticks
    rows = store.read(lambda conn: conn.execute(
        sa.select(t.c.schedule, sa.func.max(t.c.scheduled))
        .where(t.c.flow_name == flow_name).group_by(t.c.schedule)
    ).all())
    return {schedule: float(latest) for schedule, latest in rows}


def ticks(
    flow_name: str | None = None,
    schedule: str | None = None,
    *,
    outcome: str | None = None,
    limit: int | None = None,
    store: RunStore | str | None = None,
) -> list[TickInfo]:
    """Recorded ticks, oldest first (``limit``: the newest ``limit`` of them)."""
    t = schedule_ticks

    def query(conn: sa.Connection) -> list[TickInfo]:
        stmt = sa.select(t).order_by(t.c.scheduled.desc(), t.c.id.desc())
        if flow_name is not None:
            stmt = stmt.where(t.c.flow_name == flow_name)
        if schedule is not None:
            stmt = stmt.where(t.c.schedule == schedule)
        if outcome is not None:
            stmt = stmt.where(t.c.outcome == outcome)
        if limit is not None:
            stmt = stmt.limit(limit)
        return [_tick_info(row) for row in reversed(conn.execute(stmt).all())]

    with _using(store) as st:
        return st.read(query)


def serve_runs(store: RunStore, flow_name: str) -> list[TickInfo]:
    """Launched ticks of ``flow_name`` whose run is recorded as not finished.

    What a starting ``serve`` checks for runs that died while it was away.
    """
    t, f = schedule_ticks, flow_runs
    rows = store.read(lambda conn: conn.execute(
        sa.select(t).select_from(t.join(f, f.c.run_id == t.c.run_id))
        .where(t.c.flow_name == flow_name, t.c.outcome == "launched",
               f.c.state.in_(("Running", "Pending")))
        .order_by(t.c.scheduled)
    ).all())
    return [_tick_info(row) for row in rows]


# -- triggers ----------------------------------------------------------------------------
def record_trigger(
    run_id: str,
    kind: str,
    schedule: str | None = None,
    scheduled: float | None = None,
    *,
    store: RunStore | str | None = None,
) -> None:
    """Record what started (or resumed) ``run_id``: ``kind`` is ``schedule`` or ``resume``."""
    if kind not in ("schedule", "resume"):
        raise ValueError(f"a run trigger is 'schedule' or 'resume', got {kind!r}")
    with _using(store) as st:
        st.write(lambda conn: conn.execute(sa.insert(run_triggers).values(
            run_id=run_id, kind=kind, schedule=schedule, scheduled=scheduled, time=time.time()
        )))


def triggers(
    run_ids: Iterable[str], *, store: RunStore | str | None = None
) -> dict[str, TriggerInfo]:
    """What started each run (runs with no record: ``manual``)."""
    wanted = sorted(set(run_ids))
    tr = run_triggers

    def query(conn: sa.Connection) -> list[Any]:
        rows: list[Any] = []
        for start in range(0, len(wanted), _IN_CHUNK):
            chunk = wanted[start : start + _IN_CHUNK]
            rows += conn.execute(
                sa.select(tr).where(tr.c.run_id.in_(chunk)).order_by(tr.c.id)
            ).all()
        return rows

    found: dict[str, TriggerInfo] = dict.fromkeys(wanted, TriggerInfo("manual"))
    if wanted:
        with _using(store) as st:
            rows = st.read(query)
    for row in rows if wanted else []:
        info = found[row.run_id]
        if row.kind == "resume":
            found[row.run_id] = dataclasses.replace(info, resumes=info.resumes + 1)
        else:
            found[row.run_id] = TriggerInfo(row.kind, row.schedule, row.scheduled, info.resumes)
    for run_id, info in found.items():
        if info.kind == "manual" and info.resumes:
            # Started by hand, resumed since: the first row says how it began.
            found[run_id] = dataclasses.replace(info, kind="resume")
    return found


def tick_of_run(store: RunStore, run_id: str) -> TickInfo | None:
    """The tick that launched ``run_id``, if a schedule did."""
    t = schedule_ticks
    row = store.read(lambda conn: conn.execute(
        sa.select(t).where(t.c.run_id == run_id).order_by(t.c.id.desc()).limit(1)
    ).first())
    return None if row is None else _tick_info(row)
