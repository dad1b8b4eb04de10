"""How a store moves from one schema version to the next.

Versions and migrations
-----------------------
``schema_version`` holds one integer. :data:`MIGRATIONS` is an ordered tuple of
functions; ``MIGRATIONS[i]`` takes a store from version ``i + 1`` to ``i + 2``,
so :data:`SCHEMA_VERSION` is ``1 + len(MIGRATIONS)``. To change the schema,
edit the tables in :mod:`iterflow.store.schema` *and* append a migration that
makes the same change to an existing store, in plain DDL (``ALTER TABLE ...`` through
``conn.exec_driver_sql``) rather than through the table objects there, which
always describe the newest version. Released migrations are never edited.

:func:`prepare` runs on every open, in this order:

1. Read the version without writing anything (on SQLite two plain queries: the
   table names, then the version). Newer than this code knows:
   :class:`StoreError`, nothing touched. Equal: done (the common case: no
   schema check beyond that; on SQLite WAL mode is made sure of).
2. Otherwise take the write lock (``BEGIN IMMEDIATE`` on SQLite, an advisory
   lock on PostgreSQL), read the version again — another process may have
   just done the work — and then either create every table at the newest
   version in one go (an empty store: no migration runs) or apply the pending
   migrations in order, bumping the version after each. All of it is one
   transaction (DDL is transactional on SQLite and PostgreSQL), so a failing
   migration leaves the store as it was.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa

from iterflow.errors import StoreError
from iterflow.store import db
from iterflow.store.metric_packing import COLUMNS, chunk_row
from iterflow.store.schema import (
    _ID,
    _OUR_TABLES,
    _TIME,
    METRICS_BLOCK_INDEX,
    _cancel_requests_table,
    _flow_run_shapes_table,
    _metrics_table,
    _parent_links_table,
    _rewinds_table,
    _schedule_tables,
    counters,
    metadata,
    schema_version,
)

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "Migration", "prepare"]

#: One step: takes a store, inside the upgrade's transaction, one version up.
Migration = Callable[[sa.Connection], None]


def _add_schedule_tables(conn: sa.Connection) -> None:
    """Schedules: ``schedule_ticks``, ``serve_leases`` and ``run_triggers``.

    New tables only, so it applies after any other migration. They are built
    from a frozen copy of their definition, here and in new stores alike.
    """
    for table in _schedule_tables(sa.MetaData()):
        table.create(conn, checkfirst=True)


def _v2_results_in_state_rows(conn: sa.Connection) -> None:
    """Version 2: one lean row per state, results in it, integer keys.

    Flow runs and task runs get an integer ``id``, which state rows and log
    lines use instead of the text ids. Values kept in the database move from ``results``
    into the row of the state that carried them; values in files, and run
    parameters, stay in ``results``. ``task_runs`` then points at state rows
    (``looped_transition``, ``result_transition``) instead of results. One
    counter (``ids``) hands out every id the writer assigns.

    ``state_transitions`` and ``logs`` are rebuilt (new table, one
    ``INSERT ... SELECT``, old one dropped) rather than altered: SQLite before 3.35 cannot drop a
    column, and one pass over a big table beats several ``UPDATE`` passes.
    """
    run = conn.exec_driver_sql
    for table, key in (("flow_runs", "run_id"), ("task_runs", "task_run_id")):
        run(f"ALTER TABLE {table} ADD COLUMN id BIGINT NOT NULL DEFAULT 0")
        names = [row[0] for row in run(f"SELECT {key} FROM {table} ORDER BY started, {key}")]
        if names:
            conn.execute(
                sa.text(f"UPDATE {table} SET id = :id WHERE {key} = :name"),
                [{"id": i, "name": name} for i, name in enumerate(names, 1)],
            )
        run(f"CREATE UNIQUE INDEX ux_{table}_id ON {table} (id)")

    # task_runs pointed at results; each result belonged to one state row.
    run("CREATE INDEX ix_migrate_v2 ON state_transitions (result_id)")
    run("ALTER TABLE task_runs RENAME COLUMN looped_result_id TO looped_transition")
    run("ALTER TABLE task_runs RENAME COLUMN result_id TO result_transition")
    for column in ("looped_transition", "result_transition"):
        run(
            f"UPDATE task_runs SET {column} = (SELECT max(s.id) FROM state_transitions s "
            f"WHERE s.result_id = task_runs.{column}) WHERE {column} IS NOT NULL"
        )

    # The version-2 table, frozen here (the module's tables are always the newest).
    rebuilt = sa.Table(
        "state_transitions_v2",
        sa.MetaData(),
        sa.Column("id", _ID, primary_key=True, autoincrement=False),
        sa.Column("flow_run", sa.BigInteger, nullable=False),
        sa.Column("task_run", sa.BigInteger),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("loop_index", sa.Integer),
        sa.Column("block_index", sa.Integer),
        sa.Column("message", sa.Text),
        sa.Column("traceback", sa.Text),
        sa.Column("time", _TIME, nullable=False),
        sa.Column("serializer", sa.String(16)),
        sa.Column("data", sa.LargeBinary),
        sa.Column("preview", sa.Text),
        sa.Column("result_id", sa.BigInteger),
    )
    rebuilt.create(conn)
    run(
        "INSERT INTO state_transitions_v2 (id, flow_run, task_run, kind, loop_index, "
        "block_index, message, traceback, time, serializer, data, preview, result_id) "
        "SELECT s.id, coalesce(f.id, 0), "
        # A task run with no row of its own keeps a key that is not the flow run's.
        "CASE WHEN s.task_run_id IS NULL THEN NULL ELSE coalesce(t.id, 0) END, "
        "s.kind, s.loop_index, s.block_index, s.message, "
        "s.traceback, s.time, r.serializer, CASE WHEN r.path IS NULL THEN r.data END, "
        "r.preview, CASE WHEN r.path IS NOT NULL THEN r.id END "
        "FROM state_transitions s "
        "LEFT JOIN flow_runs f ON f.run_id = s.flow_run_id "
        "LEFT JOIN task_runs t ON t.task_run_id = s.task_run_id "
        "LEFT JOIN results r ON r.id = s.result_id"
    )
    run("DROP TABLE state_transitions")  # its indexes go with it
    run("ALTER TABLE state_transitions_v2 RENAME TO state_transitions")
    run("CREATE INDEX ix_state_transitions_task_run ON state_transitions (task_run)")
    logs_v2 = sa.Table(
        "logs_v2",
        sa.MetaData(),
        sa.Column("id", _ID, primary_key=True, autoincrement=False),
        sa.Column("flow_run", sa.BigInteger, nullable=False),
        sa.Column("task_run", sa.BigInteger),
        sa.Column("loop_index", sa.Integer),
        sa.Column("level", sa.Integer, nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("time", _TIME, nullable=False),
    )
    logs_v2.create(conn)
    run(
        "INSERT INTO logs_v2 (id, flow_run, task_run, loop_index, level, message, time) "
        "SELECT l.id, coalesce(f.id, 0), "
        "CASE WHEN l.task_run_id IS NULL THEN NULL ELSE coalesce(t.id, 0) END, "
        "l.loop_index, l.level, l.message, l.time "
        "FROM logs l "
        "LEFT JOIN flow_runs f ON f.run_id = l.flow_run_id "
        "LEFT JOIN task_runs t ON t.task_run_id = l.task_run_id"
    )
    run("DROP TABLE logs")
    run("ALTER TABLE logs_v2 RENAME TO logs")
    run("CREATE INDEX ix_logs_flow_run ON logs (flow_run, id)")
    if conn.dialect.name == "postgresql":
        # Name what the rebuilt tables bring as a new store would have it.
        for table in ("state_transitions", "logs"):
            run(f"ALTER TABLE {table} RENAME CONSTRAINT {table}_v2_pkey TO {table}_pkey")
        for table in ("flow_runs", "task_runs"):
            run(f"ALTER TABLE {table} ALTER COLUMN id DROP DEFAULT")

    # What moved into state rows leaves results; files and run parameters stay.
    run(
        "DELETE FROM results WHERE path IS NULL AND id NOT IN "
        "(SELECT parameters_result_id FROM flow_runs WHERE parameters_result_id IS NOT NULL)"
    )

    top = max(
        run(f"SELECT coalesce(max({column}), 0) FROM {table}").scalar() or 0
        for table, column in (
            ("counters", "value"), ("state_transitions", "id"), ("flow_runs", "id"),
            ("task_runs", "id"), ("results", "id"), ("logs", "id"),
        )
    )
    run("DELETE FROM counters")
    conn.execute(sa.text("INSERT INTO counters (name, value) VALUES ('ids', :top)"), {"top": top})


def _add_flow_run_parents(conn: sa.Connection) -> None:
    """Subflows: the ``flow_run_parents`` table linking a child run to its parent.

    A new table only, so it applies after any other migration; built from a
    frozen copy of its definition, and left alone when already there.
    """
    _parent_links_table(sa.MetaData()).create(conn, checkfirst=True)


def _run_owner_and_task_identity(conn: sa.Connection) -> None:
    """Fencing and resume safety: ``flow_runs.owner`` and ``task_runs.identity``.

    Both start NULL: a run recorded before has no owner token (the first
    resume gives it one), and its task runs no identity (a resume trusts them,
    as before).
    """
    inspector = sa.inspect(conn)
    # Columns already there are left alone (a store created by code that had them).
    for table, column, kind in (("flow_runs", "owner", "VARCHAR(32)"),
                                ("task_runs", "identity", "VARCHAR(64)")):
        if column not in {c["name"] for c in inspector.get_columns(table)}:
            conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")


def _iteration_index(conn: sa.Connection) -> None:
    """Add ``ix_state_transitions_iteration``: a loop's iterations by index.

    Only an index, so it applies whatever other migrations ran before it; on
    a store that somehow has it already, nothing happens.
    """
    conn.exec_driver_sql(
        "CREATE INDEX IF NOT EXISTS ix_state_transitions_iteration "
        "ON state_transitions (task_run, loop_index, time, kind)"
    )


def _add_flow_run_shapes(conn: sa.Connection) -> None:
    """Add ``flow_run_shapes``: each run's graph (tasks, edges, blocks) for pictures.

    A new table only, built from a frozen copy of its definition and skipped
    when it exists, so it applies whatever other migrations ran before it.
    Runs recorded before it have no row: the dashboard draws them without edges.
    """
    if "flow_run_shapes" not in sa.inspect(conn).get_table_names():
        _flow_run_shapes_table(sa.MetaData()).create(conn)


def _add_rewinds(conn: sa.Connection) -> None:
    """Add the ``rewinds`` table (superseded iterations). A new table only, so it
    applies whatever other migrations ran before it; one already there is kept."""
    _rewinds_table(sa.MetaData()).create(conn, checkfirst=True)


def _metric_rows_table(meta: sa.MetaData) -> sa.Table:
    """The ``metrics`` table as :func:`_add_metrics` made it: one row per value (frozen)."""
    return sa.Table(
        "metrics",
        meta,
        sa.Column("id", _ID, primary_key=True, autoincrement=False),
        sa.Column("flow_run", sa.BigInteger, nullable=False),
        sa.Column("task_run", sa.BigInteger),
        sa.Column("loop_index", sa.Integer),
        sa.Column("block_index", sa.Integer),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("value", sa.Float, nullable=False),
        sa.Column("time", _TIME, nullable=False),
        sa.Index("ix_metrics_flow_run", "flow_run", "id"),
    )


def _add_metrics(conn: sa.Connection) -> None:
    """Add the ``metrics`` table (``iterflow.log_metric``) unless the store has it already.

    Only creates what is missing, so it works whatever migrations ran before it.
    """
    if "metrics" in sa.inspect(conn).get_table_names():
        return
    _metric_rows_table(sa.MetaData()).create(conn)


def _add_cancel_requests(conn: sa.Connection) -> None:
    """Add the ``cancel_requests`` table (``iterflow cancel RUN``) unless it is there.

    A new table only, so it applies whatever other migrations ran before it.
    """
    _cancel_requests_table(sa.MetaData()).create(conn, checkfirst=True)


def _add_names_and_labels(conn: sa.Connection) -> None:
    """Add ``task_runs.task_run_name`` and ``state_transitions.label`` (both NULL before).

    New nullable columns only, so it applies whatever migrations ran before
    it; a column already there is left alone.
    """
    inspector = sa.inspect(conn)
    for table, column in (("task_runs", "task_run_name"), ("state_transitions", "label")):
        if column not in {c["name"] for c in inspector.get_columns(table)}:
            conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {column} TEXT")


def _metrics_dashboard_indexes(conn: sa.Connection) -> None:
    """Index ``metrics`` for the dashboard's charts: by task run and iteration, and by
    flow run and block iteration (:mod:`iterflow.store.dashboard_metrics`).

    Only indexes, created if missing, so it applies whatever migrations ran before it.
    """
    if _metrics_are_packed(conn):
        return  # a newer layout, indexed as it is made
    conn.exec_driver_sql(
        "CREATE INDEX IF NOT EXISTS ix_metrics_task_run ON metrics (task_run, loop_index, id)"
    )
    conn.exec_driver_sql(
        "CREATE INDEX IF NOT EXISTS ix_metrics_block ON metrics (flow_run, block_index)"
    )


def _metrics_block_index_partial(conn: sa.Connection) -> None:
    """Make ``ix_metrics_block`` index only the metrics logged inside a loop block.

    Its readers (:mod:`iterflow.store.dashboard_metrics`) ask for those rows
    alone, and the writer paid for it on every metric logged outside a block
    too. Drops and creates an index only, so it applies whatever migrations
    ran before it; on a store whose index is partial already it changes nothing.
    """
    if _metrics_are_packed(conn):
        return  # a newer layout (a store created at this version by a later iterflow)
    conn.exec_driver_sql("DROP INDEX IF EXISTS ix_metrics_block")
    conn.exec_driver_sql(
        "CREATE INDEX ix_metrics_block ON metrics (flow_run, block_index) "
        "WHERE block_index IS NOT NULL"
    )


def _metrics_packed(conn: sa.Connection) -> None:
    """Pack metrics: one row holds a batch's values for a task run (``metric_packing``).

    The table is rebuilt: the rows of each task run (and each flow run's
    values of no task run), in id order, become chunks of up to
    :data:`_CHUNK` values in the newest table. Values keep their ids (in the
    chunks' ``seq``), so the order they were logged in is kept. Old rows are
    streamed, so a store with millions of them is not read into memory.
    """
    if _metrics_are_packed(conn):
        return  # a store created with this layout under an older version number
    old = _metric_rows_table(sa.MetaData())
    packed = _metrics_table(sa.MetaData())
    packed.name = "metrics_packed"  # beside the old table until it is dropped
    packed.indexes.clear()  # index names are the old table's until then
    packed.create(conn)
    rows = conn.execute(
        sa.select(old.c.id, old.c.flow_run, old.c.task_run, old.c.loop_index,
                  old.c.block_index, old.c.name, old.c.value, old.c.time)
        .order_by(old.c.flow_run, old.c.task_run, old.c.id)
        .execution_options(stream_results=True, yield_per=10_000)
    )
    insert = sa.insert(packed)
    ready: list[dict[str, Any]] = []
    part: list[Any] = []
    for row in rows:
        if part and (len(part) == _CHUNK or (row.flow_run, row.task_run)
                     != (part[0].flow_run, part[0].task_run)):
            ready.append(dict(zip(COLUMNS, _packed(part))))
            part = []
            if len(ready) == 200:
                conn.execute(insert, ready)
                ready = []
        part.append(row)
    if part:
        ready.append(dict(zip(COLUMNS, _packed(part))))
    if ready:
        conn.execute(insert, ready)
    conn.exec_driver_sql("DROP TABLE metrics")  # its indexes go with it
    conn.exec_driver_sql("ALTER TABLE metrics_packed RENAME TO metrics")
    if conn.dialect.name == "postgresql":  # a renamed table keeps its key's name
        conn.exec_driver_sql(
            "ALTER TABLE metrics RENAME CONSTRAINT metrics_packed_pkey TO metrics_pkey")
    for index in _metrics_table(sa.MetaData()).indexes:
        index.create(conn)
    conn.exec_driver_sql(METRICS_BLOCK_INDEX)


def _metrics_are_packed(conn: sa.Connection) -> bool:
    """Whether ``metrics`` has the packed layout already (:func:`_metrics_packed`)."""
    return "data" in {c["name"] for c in sa.inspect(conn).get_columns("metrics")}


def _packed(part: list[Any]) -> tuple[Any, ...]:
    """The packed row of ``part``, old rows of one task run in id order."""
    return chunk_row(
        part[0].flow_run, part[0].task_run, [r.id for r in part], [r.loop_index for r in part],
        [r.block_index for r in part], [r.name for r in part], [float(r.value) for r in part],
        [float(r.time) for r in part],
    )


#: Values per chunk when old rows are packed (the writer's batches hold up to 4,096).
_CHUNK = 4096


#: Ordered migrations: ``MIGRATIONS[i]`` upgrades a store from version i+1 to i+2.
MIGRATIONS: tuple[Migration, ...] = (
    _v2_results_in_state_rows,
    _add_schedule_tables,
    _run_owner_and_task_identity,
    _iteration_index,
    _add_flow_run_shapes,
    _add_flow_run_parents,
    _add_rewinds,
    _add_metrics,
    _add_names_and_labels,
    _add_cancel_requests,
    _metrics_dashboard_indexes,
    _metrics_block_index_partial,
    _metrics_packed,
)
#: The version this code writes and reads.
SCHEMA_VERSION = 1 + len(MIGRATIONS)

# Any constant works; it only has to be the same in every iterflow process.
_PG_LOCK_KEY = 0x69746572666C6F77 & 0x7FFFFFFFFFFFFFFF  # "iterflow"

# SQLite's own tables (sqlite_sequence, sqlite_stat1) are not the application's.
_SQLITE_TABLES = (
    "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite~_%' ESCAPE '~'"
)


def _table_names(conn: sa.Connection) -> list[str]:
    """The database's table names (on PostgreSQL, of the connection's default schema)."""
    if conn.dialect.name == "sqlite":
        # Every open of a SQLite store asks this: one query, without building
        # an inspector and its reflection caches for one list of names.
        return [row[0] for row in conn.exec_driver_sql(_SQLITE_TABLES)]
    return sa.inspect(conn).get_table_names()


def _read_version(conn: sa.Connection) -> tuple[int | None, list[str]]:
    names = _table_names(conn)
    if "schema_version" not in names:
        return None, names
    version = conn.exec_driver_sql("SELECT version FROM schema_version").scalar()
    return (0 if version is None else int(version)), names


def _too_new(version: int, target: int, name: str) -> StoreError:
    return StoreError(
        f"The run store {name} was written by a newer iterflow (schema version {version}; "
        f"this iterflow knows versions up to {target}). Upgrade iterflow, or point "
        f"ITERFLOW_STORE_URL (or flow.run(store=...)) at another store."
    )


def _check_not_foreign(dialect: str, names: list[str], name: str) -> None:
    # A SQLite file belongs to one application: any table means it is not ours.
    # A server database may host other applications; only clashes matter there.
    sqlite = dialect == "sqlite"
    foreign = sorted(names) if sqlite else sorted(set(names) & _OUR_TABLES)
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise StoreError(
            f"{name} is a database but not an iterflow run store (it has the tables "
            f"{shown} and no schema_version). Point ITERFLOW_STORE_URL at another database."
        )


def prepare(
    engine: sa.Engine,
    name: str,
    *,
    migrations: Sequence[Migration] = MIGRATIONS,
    lock_timeout: float = 30.0,
    read_only: bool = False,
) -> int:
    """Check the store's version and bring it to the newest; return that version.

    See the module docstring for the steps. ``name`` (the file or URL) is used
    in messages; ``migrations`` is a parameter so tests can play a future release.
    ``read_only``: check only, writing nothing (a store opened for queries).
    """
    target = 1 + len(migrations)
    try:
        version, names = db.read(engine, _read_version, name=name)
        if version is not None and version > target:
            raise _too_new(version, target, name)
        if read_only:
            if version != target:
                if version is None:  # an older store has its tables: they are ours
                    _check_not_foreign(engine.dialect.name, names, name)
                state = "empty" if version is None else f"at schema version {version}"
                raise StoreError(
                    f"The run store {name} is {state} and read-only here, so it cannot be "
                    f"brought to version {target}: open it once where it can be written "
                    f"(any iterflow command), or set ITERFLOW_STORE_URL to another store."
                )
            return target
        if version is None:
            _check_not_foreign(engine.dialect.name, names, name)
        if engine.dialect.name == "sqlite":
            # After the version check (WAL is a persistent change to the file)
            # and outside the transaction below (it cannot be inside one).
            db.set_wal(engine, name, lock_timeout)
        if version == target:
            return target

        def upgrade(conn: sa.Connection) -> int:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_LOCK_KEY)))
            current, names = _read_version(conn)
            if current is None:
                _check_not_foreign(conn.dialect.name, names, name)
                # None of our tables exists (just checked, under the lock): every table
                # at the newest version in one go, without asking first about each.
                metadata.create_all(conn, checkfirst=False)
                conn.execute(sa.insert(schema_version).values(version=target))
                conn.execute(sa.insert(counters).values(name="ids", value=0))
                return target
            if current > target:
                raise _too_new(current, target, name)
            if current < 1:
                raise StoreError(
                    f"The run store {name} is damaged: its schema_version table is empty. "
                    f"Move it aside and start a new store."
                )
            for step in range(current, target):
                try:
                    migrations[step - 1](conn)
                except Exception as exc:
                    raise StoreError(
                        f"Upgrading the run store {name} from schema version {step} to "
                        f"{step + 1} failed ({type(exc).__name__}: {exc}); the store was "
                        f"left at version {current}, unchanged."
                    ) from exc
                conn.execute(sa.update(schema_version).values(version=step + 1))
            return target

        return db.write(engine, upgrade, name=name, lock_timeout=lock_timeout)
    except StoreError:
        raise
    except (sa.exc.SQLAlchemyError, OSError) as exc:
        raise StoreError(db.describe_error(exc, name)) from exc
