"""The store's tables, their version, and how a store moves from one version to the next.

Tables (SQLAlchemy Core; times are epoch seconds as floats; ``run_id`` and
``task_run_id`` are the strings the runner makes, ``id`` an integer key)::

    flows              name, created, updated, tasks (JSON list of [slug, name])
    flow_runs          run_id, id, flow_name, state, started, ended, parameters
                       (JSON), parameters_result_id, source, pid, host, heartbeat,
                       message, owner (the driving process's token)
    task_runs          task_run_id, id, flow_run_id, task_slug, task_name,
                       map_index, state, loop_count, loop_index (of the latest
                       event), looped_index + looped_transition (the latest Looped:
                       where a resumed run continues), result_transition (the final
                       state), started, ended, message, identity (the task's
                       fingerprint in the flow that ran it)
    state_transitions  id, flow_run (flow_runs.id), task_run (task_runs.id; NULL:
                       the flow run's own), kind, loop_index, block_index, message,
                       traceback, time, and the result the state carries:
                       serializer, data, preview (inline), or result_id (kept out
                       of line, in ``results``)
    results            id, serializer, data (inline) or path (a file), size, preview:
                       values too big to keep in a state's row, and run parameters
    logs               id, flow_run (flow_runs.id), task_run (task_runs.id; NULL:
                       the engine's), loop_index, level, message, time
    counters           name, value — hands out state, log and result ids in blocks
    schema_version     version — one row
    schedule_ticks     id, flow_name, schedule, scheduled (unique together), outcome
                       (launched / skipped / missed / queued), run_id, resumes,
                       recorded, message: every occurrence of a schedule, once
    serve_leases       flow_name, owner, pid, host, started, heartbeat, stopped,
                       covered, schedules (JSON): the one ``iterflow serve`` serving each flow
    run_triggers       id, run_id, kind (schedule / resume), schedule, scheduled,
                       time: what started a run (none recorded: by hand)

A state's result lives in its own row because a loop records one ``Looped``
state per iteration, each with its result: one row per iteration is half the
work of a state row plus a result row (version 1 did that), and integer keys
instead of the text ids make that row and its index entry a third the size. A state row with
``serializer`` set carries a value: in ``data``, or in the ``results`` row
``result_id`` names (a file, for values over ``FILE_THRESHOLD``); with neither,
only its ``preview`` could be kept (an exception that does not pickle, say).
``serializer`` NULL means the state carried ``None``. ``task_runs`` points at
the rows holding the values a resume needs by their ``state_transitions`` ids.

There are no foreign-key constraints, on purpose: the writer must never lose a
batch because events arrived in an unusual order (a log line before its task
run's first state, say); the references hold by construction.

Versions and migrations
-----------------------
``schema_version`` holds one integer. :data:`MIGRATIONS` is an ordered tuple of
functions; ``MIGRATIONS[i]`` takes a store from version ``i + 1`` to ``i + 2``,
so :data:`SCHEMA_VERSION` is ``1 + len(MIGRATIONS)``. To change the schema,
edit the tables below *and* append a migration that makes the same change to
an existing store, in plain DDL (``ALTER TABLE ...`` through
``conn.exec_driver_sql``) rather than through the table objects here, which
always describe the newest version. Released migrations are never edited.

:func:`prepare` runs on every open, in this order:

1. Read the version without writing anything. Newer than this code knows:
   :class:`StoreError`, nothing touched. Equal: done (the common case, one query).
2. Otherwise take the write lock (``BEGIN IMMEDIATE`` on SQLite, an advisory
   lock on PostgreSQL), read the version again — another process may have
   just done the work — and then either create every table at the newest
   version (an empty store) or apply the pending migrations in order, bumping
   the version after each. All of it is one transaction (DDL is transactional
   on SQLite and PostgreSQL), so a failing migration leaves the store as it was.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import sqlalchemy as sa

from iterflow.errors import StoreError
from iterflow.store import db

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "Migration",
    "check_sqlite_file",
    "counters",
    "flow_runs",
    "flows",
    "logs",
    "metadata",
    "metrics",
    "prepare",
    "results",
    "run_triggers",
    "schedule_ticks",
    "schema_version",
    "serve_leases",
    "state_transitions",
    "task_runs",
]

Migration = Callable[[sa.Connection], None]

# INTEGER PRIMARY KEY is SQLite's rowid (compact, auto-assigned); BIGINT elsewhere.
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TIME = sa.Double()

metadata = sa.MetaData()

schema_version = sa.Table(
    "schema_version",
    metadata,
    sa.Column("version", sa.Integer, nullable=False),
)

counters = sa.Table(
    "counters",
    metadata,
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("value", sa.BigInteger, nullable=False),
)

flows = sa.Table(
    "flows",
    metadata,
    sa.Column("name", sa.String, primary_key=True),
    sa.Column("created", _TIME),
    sa.Column("updated", _TIME),
    sa.Column("tasks", sa.JSON(none_as_null=True)),
)

flow_runs = sa.Table(
    "flow_runs",
    metadata,
    sa.Column("run_id", sa.String, primary_key=True),
    # The key state rows use (assigned by the writer from `counters`).
    sa.Column("id", sa.BigInteger, nullable=False),
    sa.Column("flow_name", sa.String, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("started", _TIME),
    sa.Column("ended", _TIME),
    sa.Column("parameters", sa.JSON(none_as_null=True)),
    # Set when the parameters are not exactly representable as JSON: the
    # pickled originals, so a resumed run gets the very same values.
    sa.Column("parameters_result_id", sa.BigInteger),
    sa.Column("source", sa.Text),
    sa.Column("pid", sa.Integer),
    sa.Column("host", sa.String),
    sa.Column("heartbeat", _TIME),
    sa.Column("message", sa.Text),
    # The token of the process that drives the run (see iterflow.store.liveness):
    # a resume writes a new one, and a process whose token is gone stops writing.
    sa.Column("owner", sa.String(32)),
    sa.Index("ix_flow_runs_started", "started"),
    sa.Index("ix_flow_runs_flow_name", "flow_name", "started"),
    sa.Index("ix_flow_runs_state", "state"),
    sa.Index("ux_flow_runs_id", "id", unique=True),
)

task_runs = sa.Table(
    "task_runs",
    metadata,
    sa.Column("task_run_id", sa.String, primary_key=True),
    # The key state rows use (assigned by the writer from `counters`).
    sa.Column("id", sa.BigInteger, nullable=False),
    sa.Column("flow_run_id", sa.String, nullable=False),
    sa.Column("task_slug", sa.String, nullable=False),
    sa.Column("task_name", sa.String, nullable=False),
    sa.Column("map_index", sa.Integer),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("loop_count", sa.Integer),
    sa.Column("loop_index", sa.Integer),
    sa.Column("looped_index", sa.Integer),
    # state_transitions ids: the latest Looped state, and the final state.
    sa.Column("looped_transition", sa.BigInteger),
    sa.Column("result_transition", sa.BigInteger),
    sa.Column("started", _TIME),
    sa.Column("ended", _TIME),
    sa.Column("message", sa.Text),
    # The task's identity in the flow that ran it (iterflow.core.fingerprint):
    # a resume reuses the task run's results only if the flow's task has it still.
    sa.Column("identity", sa.String(64)),
    sa.Index("ix_task_runs_flow_run", "flow_run_id", "task_slug", "map_index"),
    sa.Index("ux_task_runs_id", "id", unique=True),
)

state_transitions = sa.Table(
    "state_transitions",
    metadata,
    # Assigned by the writer from `counters` (see results.id), in event order.
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
    # A task run's history in order. (SQLite appends the rowid to every index
    # entry, so this is ordered by id there too.)
    sa.Index("ix_state_transitions_task_run", "task_run"),
    # A loop's iterations by index: pages, jumps, failed-only filters and the
    # dashboard's summaries read only this index (it covers time and kind, in
    # the order a task run's history happened).
    sa.Index("ix_state_transitions_iteration", "task_run", "loop_index", "time", "kind"),
)

results = sa.Table(
    "results",
    metadata,
    # Assigned by the writer from `counters`, so one batch can insert results
    # and the rows that point at them without a round trip per row.
    # Since version 2 only values kept out of line and run parameters.
    sa.Column("id", _ID, primary_key=True, autoincrement=False),
    sa.Column("serializer", sa.String(16), nullable=False),
    sa.Column("data", sa.LargeBinary),
    sa.Column("path", sa.Text),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("preview", sa.Text, nullable=False),
)

logs = sa.Table(
    "logs",
    metadata,
    # Assigned by the writer from `counters`, in the order lines were written.
    sa.Column("id", _ID, primary_key=True, autoincrement=False),
    sa.Column("flow_run", sa.BigInteger, nullable=False),
    sa.Column("task_run", sa.BigInteger),
    sa.Column("loop_index", sa.Integer),
    sa.Column("level", sa.Integer, nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("time", _TIME, nullable=False),
    sa.Index("ix_logs_flow_run", "flow_run", "id"),
)


def _metrics_table(meta: sa.MetaData) -> sa.Table:
    """The numbers tasks log per iteration; one definition for new stores and the migration."""
    return sa.Table(
        "metrics",
        meta,
        # Assigned by the writer from `counters`, in the order metrics were logged.
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


metrics = _metrics_table(metadata)


# -- schedules (iterflow.store.serving reads and writes these) ---------------------------
def _schedule_tables(meta: sa.MetaData) -> tuple[sa.Table, sa.Table, sa.Table]:
    """The tables of ``iterflow serve``; one definition for new stores and the migration."""
    ticks = sa.Table(
        "schedule_ticks",
        meta,
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("flow_name", sa.String, nullable=False),
        sa.Column("schedule", sa.String, nullable=False),
        sa.Column("scheduled", _TIME, nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("run_id", sa.String),
        sa.Column("resumes", sa.Integer, nullable=False, server_default="0"),
        sa.Column("recorded", _TIME, nullable=False),
        sa.Column("message", sa.Text),
        # What makes "every occurrence recorded once" hold against any number of servers.
        sa.Index("ux_schedule_ticks", "flow_name", "schedule", "scheduled", unique=True),
        sa.Index("ix_schedule_ticks_run", "run_id"),
    )
    leases = sa.Table(
        "serve_leases",
        meta,
        sa.Column("flow_name", sa.String, primary_key=True),
        sa.Column("owner", sa.String, nullable=False),
        sa.Column("pid", sa.Integer),
        sa.Column("host", sa.String),
        sa.Column("started", _TIME),
        sa.Column("heartbeat", _TIME),
        sa.Column("stopped", _TIME),
        # The schedule time up to which it dealt with ticks (at its last heartbeat).
        sa.Column("covered", _TIME),
        # What it serves, for `iterflow schedules`: each schedule's definition.
        sa.Column("schedules", sa.JSON(none_as_null=True)),
    )
    triggers = sa.Table(
        "run_triggers",
        meta,
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("schedule", sa.String),
        sa.Column("scheduled", _TIME),
        sa.Column("time", _TIME, nullable=False),
        sa.Index("ix_run_triggers_run", "run_id"),
    )
    return ticks, leases, triggers


schedule_ticks, serve_leases, run_triggers = _schedule_tables(metadata)


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


def _add_metrics(conn: sa.Connection) -> None:
    """Add the ``metrics`` table (``iterflow.log_metric``) unless the store has it already.

    Only creates what is missing, so it works whatever migrations ran before it.
    """
    if "metrics" in sa.inspect(conn).get_table_names():
        return
    _metrics_table(sa.MetaData()).create(conn)


#: Ordered migrations: ``MIGRATIONS[i]`` upgrades a store from version i+1 to i+2.
MIGRATIONS: tuple[Migration, ...] = (
    _v2_results_in_state_rows,
    _add_schedule_tables,
    _run_owner_and_task_identity,
    _iteration_index,
    _add_metrics,
)
#: The version this code writes and reads.
SCHEMA_VERSION = 1 + len(MIGRATIONS)

_OUR_TABLES = frozenset(metadata.tables)
_SQLITE_MAGIC = b"SQLite format 3\x00"
# Any constant works; it only has to be the same in every iterflow process.
_PG_LOCK_KEY = 0x69746572666C6F77 & 0x7FFFFFFFFFFFFFFF  # "iterflow"


def check_sqlite_file(path: str) -> None:
    """Refuse a file that exists but is not a SQLite database, before opening it.

    SQLite only notices on the first read, and by then a connection hook may
    already have tried to change the file; checking the 16-byte header first
    means nothing is ever written to somebody else's file.
    """
    p = Path(path)
    if p.is_dir():
        raise StoreError(
            f"The run store {path} is a directory, not a file. Point ITERFLOW_STORE_URL "
            f"at a file (sqlite:///{p / 'iterflow.db'})."
        )
    try:
        with open(p, "rb") as fh:
            header = fh.read(len(_SQLITE_MAGIC))
    except FileNotFoundError:
        return  # a new store
    except OSError as exc:
        raise StoreError(f"The run store {path} cannot be read ({exc}).") from exc
    if header and header != _SQLITE_MAGIC:
        raise StoreError(
            f"{path} is not an iterflow run store: it is not a SQLite database (it starts "
            f"with {header[:8]!r}). Move the file aside, or point ITERFLOW_STORE_URL at "
            f"another file."
        )


def _read_version(conn: sa.Connection) -> tuple[int | None, list[str]]:
    names = sa.inspect(conn).get_table_names()
    if "schema_version" not in names:
        return None, names
    version = conn.execute(sa.select(schema_version.c.version)).scalar()
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


def _set_wal(engine: sa.Engine, name: str) -> None:
    # journal_mode cannot change inside a transaction, so use the raw DB-API
    # connection (autocommit: pysqlite's BEGIN handling is off, see db.py).
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        mode = cursor.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        cursor.close()
    finally:
        raw.close()
    if str(mode).lower() != "wal":
        raise StoreError(f"The run store {name} cannot use SQLite's WAL mode (got {mode!r}).")


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
            _set_wal(engine, name)
        if version == target:
            return target

        def upgrade(conn: sa.Connection) -> int:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_LOCK_KEY)))
            current, names = _read_version(conn)
            if current is None:
                _check_not_foreign(conn.dialect.name, names, name)
                metadata.create_all(conn)
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
