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

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from iterflow.store.queries import RunInfo, _Record, run_info, using_store
from iterflow.store.schema import flow_run_parents, flow_runs

if TYPE_CHECKING:
    from iterflow.store.runstore import RunStore

__all__ = ["ChildRun", "ParentLink", "child_runs", "list_runs", "parent_of", "record_parent"]

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

    Same filters as :func:`iterflow.store.queries.list_runs`.
    """
    if include_children:
        from iterflow.store import queries

        return queries.list_runs(limit, flow_name, state, store=store)
    with using_store(store) as st:

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
