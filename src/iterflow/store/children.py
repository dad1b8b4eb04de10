"""Child flow runs (subflows): how the store links a child run to its parent.

A subflow task run starts a child flow run. Before the child's first event,
the runtime records one row in ``flow_run_parents``: the child's run id, the
parent's run id and task run id, and where in the parent it was started (the
task's slug, ``map_index``, ``loop_index`` and the loop-block iteration
``block_index``). Child run ids are deterministic (``iterflow.runids
.subflow_run_id``), so a resumed parent finds its children again; recording
the link twice is harmless.

Readers: :func:`parent_of` (the link of a child run), :func:`child_runs` (a
run's children, with their states), and :func:`list_runs`, which leaves child
runs out unless asked (what ``iterflow runs`` shows without ``--all``).

>>> from iterflow.store import open_store                      # doctest: +SKIP
>>> from iterflow.store.children import child_runs
>>> [c.run_id for c in child_runs(parent_run_id, store=open_store())]  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from iterflow.store.liveness import run_info
from iterflow.store.records import RunInfo, _Record
from iterflow.store.runstore import using_store
from iterflow.store.schema import flow_run_parents, flow_runs

if TYPE_CHECKING:
    from iterflow.store.runstore import RunStore

__all__ = [
    "ChildRun",
    "ParentLink",
    "child_runs",
    "list_runs",
    "parent_of",
    "parents_of",
    "record_parent",
    "repair_links",
    "write_links",
]

_LIVE = ("Running", "Pending")  # stored states that may be shown as Crashed


@dataclass(frozen=True, slots=True)
class ParentLink(_Record):
    """Where a child flow run was started: its parent run, task run and iteration."""

    run_id: str
    parent_run_id: str
    parent_task_run_id: str
    task_slug: str | None = None
    map_index: int | None = None
    loop_index: int | None = None
    block_index: int | None = None


@dataclass(frozen=True, slots=True)
class ChildRun(_Record):
    """A child flow run as its parent lists it: the link, and the run's own record."""

    run_id: str
    flow_name: str
    state: str
    started: float | None
    ended: float | None
    message: str | None
    parent_task_run_id: str
    task_slug: str | None
    map_index: int | None
    loop_index: int | None
    block_index: int | None


def record_parent(store: RunStore, link: ParentLink) -> None:
    """Record that ``link.run_id`` is a child run (once; a resumed child keeps its row)."""
    table = flow_run_parents

    def write(conn: sa.Connection) -> None:
        found = conn.execute(
            sa.select(table.c.run_id).where(table.c.run_id == link.run_id)
        ).first()
        if found is None:
            conn.execute(sa.insert(table).values(**link.as_dict()))

    store.write(write)


def record_parents(store: RunStore, links: list[ParentLink]) -> None:
    """Record several links in one transaction (those already recorded are left alone)."""
    if not links:
        return
    store.write(lambda conn: write_links(conn, links))


def write_links(conn: sa.Connection, links: list[ParentLink]) -> None:
    """Insert ``links`` in the caller's transaction, leaving those already recorded alone.

    The store's writer calls it for the links its batch holds (a new child run's
    link goes in with its rows: :meth:`~iterflow.store.writer.StoreSink.record_link`).
    """
    if not links:
        return
    if conn.dialect.name == "sqlite":
        _insert_new_links_sqlite(conn, links)
        return
    table = flow_run_parents
    ids = [link.run_id for link in links]
    known = {
        row[0] for row in conn.execute(
            sa.select(table.c.run_id).where(table.c.run_id.in_(ids))
        )
    }
    new = {link.run_id: link.as_dict() for link in links if link.run_id not in known}
    if new:
        conn.execute(sa.insert(table), list(new.values()))


_LINK_COLUMNS = ("run_id", "parent_run_id", "parent_task_run_id", "task_slug", "map_index",
                 "loop_index", "block_index")


def _insert_new_links_sqlite(conn: sa.Connection, links: list[ParentLink]) -> None:
    """Insert ``links`` whose child run has none yet, in statements of many rows (SQLite).

    A map of children hands the link writer hundreds at a time: one ``INSERT OR
    IGNORE`` of many rows costs a fraction of a lookup and a Core insert.
    """
    from iterflow.store.statements import dbapi_cursor, sqlite_variable_limit

    step = max(sqlite_variable_limit(conn) // len(_LINK_COLUMNS), 1)
    group = "(" + ", ".join(["?"] * len(_LINK_COLUMNS)) + ")"
    for start in range(0, len(links), step):
        chunk = links[start:start + step]
        sql = (f"INSERT OR IGNORE INTO {flow_run_parents.name} ({', '.join(_LINK_COLUMNS)}) "
               f"VALUES {', '.join([group] * len(chunk))}")
        params = [value for link in chunk for value in (
            link.run_id, link.parent_run_id, link.parent_task_run_id, link.task_slug,
            link.map_index, link.loop_index, link.block_index)]
        with contextlib.closing(dbapi_cursor(conn)) as cursor:
            cursor.execute(sql, params)


def repair_links(store: RunStore, run_id: str, slugs: set[str]) -> int:
    """Link child runs of run ``run_id`` whose link was lost (a crash inside the batch window).

    ``slugs`` name the run's subflow tasks. A child run's id is derived from
    its task run's id, so every recorded task run of those tasks tells which
    child run it started; a child run recorded without a link gets one.
    Returns how many links were added. A resumed parent calls it first.
    """
    from iterflow.runids import block_index_of, subflow_run_id
    from iterflow.store.schema import task_runs

    if not slugs:
        return 0

    def query(conn: sa.Connection) -> list[ParentLink]:
        rows = conn.execute(
            sa.select(task_runs.c.task_run_id, task_runs.c.task_slug, task_runs.c.map_index)
            .where(task_runs.c.flow_run_id == run_id, task_runs.c.task_slug.in_(sorted(slugs)))
        ).all()
        # A mapped task's parent row started no child: its id matches no run.
        wanted = {subflow_run_id(r.task_run_id): r for r in rows}
        if not wanted:
            return []
        present = {
            row[0] for row in conn.execute(
                sa.select(flow_runs.c.run_id).where(flow_runs.c.run_id.in_(list(wanted)))
            )
        }
        linked = {
            row[0] for row in conn.execute(
                sa.select(flow_run_parents.c.run_id)
                .where(flow_run_parents.c.run_id.in_(list(present)))
            )
        } if present else set()
        return [
            ParentLink(
                run_id=child, parent_run_id=run_id, parent_task_run_id=r.task_run_id,
                task_slug=r.task_slug, map_index=r.map_index, loop_index=0,
                block_index=block_index_of(r.task_run_id, r.task_slug, r.map_index, run_id),
            )
            for child, r in wanted.items() if child in present and child not in linked
        ]

    missing = store.read(query)
    record_parents(store, missing)
    return len(missing)


def _link(row: Any) -> ParentLink:
    return ParentLink(
        run_id=row.run_id, parent_run_id=row.parent_run_id,
        parent_task_run_id=row.parent_task_run_id, task_slug=row.task_slug,
        map_index=row.map_index, loop_index=row.loop_index, block_index=row.block_index,
    )


def parent_of(run_id: str, *, store: RunStore | str | None = None) -> ParentLink | None:
    """The link of child run ``run_id`` to its parent; None for a top-level run."""
    with using_store(store) as st:

        def query(conn: sa.Connection) -> ParentLink | None:
            row = conn.execute(
                sa.select(flow_run_parents).where(flow_run_parents.c.run_id == run_id)
            ).first()
            return None if row is None else _link(row)

        return st.read(query)


def parents_of(
    run_ids: list[str], *, store: RunStore | str | None = None
) -> dict[str, ParentLink]:
    """The links of those of ``run_ids`` that are child runs, by run id."""
    with using_store(store) as st:

        def query(conn: sa.Connection) -> dict[str, ParentLink]:
            found: dict[str, ParentLink] = {}
            for start in range(0, len(run_ids), 500):
                chunk = run_ids[start : start + 500]
                rows = conn.execute(
                    sa.select(flow_run_parents).where(flow_run_parents.c.run_id.in_(chunk))
                )
                found.update((row.run_id, _link(row)) for row in rows)
            return found

        return st.read(query) if run_ids else {}


def find_run(run_id: str, *, store: RunStore | str | None = None) -> RunInfo | None:
    """The run with exactly this id, or None (no prefix matching: child ids are exact)."""
    with using_store(store) as st:

        def query(conn: sa.Connection) -> RunInfo | None:
            row = conn.execute(sa.select(flow_runs).where(flow_runs.c.run_id == run_id)).first()
            return None if row is None else run_info(row, st.stale_after)

        return st.read(query)


def child_runs(run_id: str, *, store: RunStore | str | None = None) -> list[ChildRun]:
    """The child runs started by run ``run_id``, in the order they started."""
    with using_store(store) as st:

        def query(conn: sa.Connection) -> list[ChildRun]:
            links = flow_run_parents
            stmt = (
                sa.select(flow_runs, links.c.parent_task_run_id, links.c.task_slug,
                          links.c.map_index, links.c.loop_index, links.c.block_index)
                .join(links, links.c.run_id == flow_runs.c.run_id)
                .where(links.c.parent_run_id == run_id)
                .order_by(flow_runs.c.started, flow_runs.c.run_id)
            )
            out = []
            for row in conn.execute(stmt):
                info = run_info(row, st.stale_after)
                out.append(ChildRun(
                    run_id=info.run_id, flow_name=info.flow_name, state=info.state,
                    started=info.started, ended=info.ended, message=info.message,
                    parent_task_run_id=row.parent_task_run_id, task_slug=row.task_slug,
                    map_index=row.map_index, loop_index=row.loop_index,
                    block_index=row.block_index,
                ))
            return out

        return st.read(query)


def list_runs(
    limit: int | None = 20,
    flow_name: str | None = None,
    state: str | None = None,
    *,
    include_children: bool = False,
    store: RunStore | str | None = None,
) -> list[RunInfo]:
    """The most recent runs, newest first, leaving child runs out unless ``include_children``.

    Same filters as :meth:`iterflow.store.RunStore.list_runs`.
    """
    with using_store(store) as st:
        if include_children:
            return st.list_runs(limit, flow_name, state)

        def query(conn: sa.Connection) -> list[RunInfo]:
            stmt = (
                sa.select(flow_runs)
                .where(flow_runs.c.run_id.not_in(sa.select(flow_run_parents.c.run_id)))
                .order_by(flow_runs.c.started.desc(), flow_runs.c.run_id.desc())
            )
            if flow_name is not None:
                stmt = stmt.where(flow_runs.c.flow_name == flow_name)
            live_filter = state is not None and (state in _LIVE or state == "Crashed")
            if state is not None and not live_filter:
                stmt = stmt.where(flow_runs.c.state == state)
            if live_filter:
                # Crashed is not stored, and a stored Running may be Crashed: decide per row.
                stmt = stmt.where(flow_runs.c.state.in_(_LIVE))
                found = [
                    info for info in (run_info(r, st.stale_after) for r in conn.execute(stmt))
                    if info.state == state
                ]
                return found if limit is None else found[:limit]
            if limit is not None:
                stmt = stmt.limit(limit)
            return [run_info(row, st.stale_after) for row in conn.execute(stmt)]

        return st.read(query)
