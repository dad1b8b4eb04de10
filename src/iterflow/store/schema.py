"""The store's tables, as the newest schema version has them.

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
                       fingerprint in the flow that ran it), task_run_name (its
                       name from the task's ``task_run_name``, or NULL)
    state_transitions  id, flow_run (flow_runs.id), task_run (task_runs.id; NULL:
                       the flow run's own), kind, loop_index, block_index, message,
                       traceback, time, label (of the iteration the state ends,
                       or NULL), and the result the state carries:
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

Versions and migrations live in :mod:`iterflow.store.migrations`: the tables
here always describe the newest version.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from iterflow.errors import StoreError

__all__ = [
    "METRICS_BLOCK_INDEX",
    "check_sqlite_file",
    "counters",
    "flow_run_parents",
    "flow_runs",
    "flows",
    "logs",
    "metadata",
    "metrics",
    "results",
    "rewinds",
    "run_triggers",
    "schedule_ticks",
    "schema_version",
    "serve_leases",
    "state_transitions",
    "task_runs",
]

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
    # What the task's task_run_name made of this run's inputs (NULL: none given).
    sa.Column("task_run_name", sa.Text),
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
    # The label of the iteration this state ends (iterflow.set_iteration_label):
    # a column rather than a table of its own, so a labelled iteration is still one row.
    sa.Column("label", sa.Text),
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


# A child flow run (a subflow) and where its parent started it: which run, which
# task run, and at which map index, loop index and loop-block iteration. Runs
# without a row are top-level runs (iterflow.store.children reads and writes it).
def _parent_links_table(meta: sa.MetaData) -> sa.Table:
    """The ``flow_run_parents`` table; one definition for new stores and the migration."""
    return sa.Table(
        "flow_run_parents",
        meta,
        sa.Column("run_id", sa.String, primary_key=True),
        sa.Column("parent_run_id", sa.String, nullable=False),
        sa.Column("parent_task_run_id", sa.String, nullable=False),
        sa.Column("task_slug", sa.String),
        sa.Column("map_index", sa.Integer),
        sa.Column("loop_index", sa.Integer),
        sa.Column("block_index", sa.Integer),
        sa.Index("ix_flow_run_parents_parent", "parent_run_id"),
    )


flow_run_parents = _parent_links_table(metadata)


def _metrics_table(meta: sa.MetaData) -> sa.Table:
    """The numbers tasks log, packed; one definition for new stores and the migration.

    A row (a *chunk*) holds the metrics one batch of the writer carried for one
    task run, as arrays in ``data`` (see :mod:`iterflow.store.metric_packing`);
    the other columns say what it holds, for readers to choose rows by task run
    and iteration range without decoding them.
    """
    return sa.Table(
        "metrics",
        meta,
        # The id of the chunk's first value; every value has one (from `counters`,
        # in the order values were logged), kept in the chunk's `seq` array.
        sa.Column("id", _ID, primary_key=True, autoincrement=False),
        sa.Column("flow_run", sa.BigInteger, nullable=False),
        sa.Column("task_run", sa.BigInteger),
        sa.Column("count", sa.Integer, nullable=False),
        # The smallest and largest loop_index and block_index of the chunk's values
        # (NULL when none has one): the range a chart or a table page asks about.
        sa.Column("loop_lo", sa.Integer),
        sa.Column("loop_hi", sa.Integer),
        sa.Column("block_lo", sa.Integer),
        sa.Column("block_hi", sa.Integer),
        sa.Column("names", sa.Text, nullable=False),  # a JSON list; the arrays index it
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.Index("ix_metrics_flow_run", "flow_run", "id"),
        sa.Index("ix_metrics_task_run", "task_run", "id"),
    )


metrics = _metrics_table(metadata)
#: A loop block's body's metrics, by flow run and block iteration (the dashboard's
#: charts of a block, :mod:`iterflow.store.dashboard_metrics`). Partial: only chunks
#: logged inside a block, which its readers ask for alone. Created by this DDL, not by
#: ``sa.Index(..., postgresql_where=...)``: a dialect's keyword makes SQLAlchemy import
#: that dialect, in every SQLite process too. The index stays in the metadata (with its
#: columns) for what compares stores to it.
METRICS_BLOCK_INDEX = (
    "CREATE INDEX ix_metrics_block ON metrics (flow_run, block_lo) "
    "WHERE block_lo IS NOT NULL"
)
sa.Index("ix_metrics_block", metrics.c.flow_run, metrics.c.block_lo).ddl_if(
    callable_=lambda *_args, **_kwargs: False
)
sa.event.listen(metrics, "after_create", sa.DDL(METRICS_BLOCK_INDEX))


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


def _flow_run_shapes_table(meta: sa.MetaData) -> sa.Table:
    # One row per run: the flow's description (iterflow.core.shape) for its pictures.
    return sa.Table(
        "flow_run_shapes",
        meta,
        sa.Column("run_id", sa.String, primary_key=True),
        sa.Column("shape", sa.JSON(none_as_null=True)),
    )


flow_run_shapes = _flow_run_shapes_table(metadata)


def _rewinds_table(meta: sa.MetaData) -> sa.Table:
    # One row per rewind (``iterflow resume RUN --from-iteration K``): the rows of
    # that task run recorded up to ``before_id`` from iteration K on are superseded,
    # kept in the history, never deleted.
    return sa.Table(
        "rewinds",
        meta,
        sa.Column("run_id", sa.String, nullable=False),
        sa.Column("task_slug", sa.String, nullable=False),
        sa.Column("from_iteration", sa.Integer, nullable=False),
        # The last state row id before the rewind: rows after it are the new history.
        sa.Column("before_id", sa.BigInteger, nullable=False),
        # Tasks downstream of it, rerun (JSON list of slugs).
        sa.Column("downstream", sa.JSON),
        sa.Column("time", _TIME, nullable=False),
        sa.Index("ix_rewinds_run", "run_id"),
    )


rewinds = _rewinds_table(metadata)


def _cancel_requests_table(meta: sa.MetaData) -> sa.Table:
    # One row per run someone asked to cancel (``iterflow cancel RUN``). ``owner`` is
    # the run's owner token when asked: only the process driving it under that token
    # acts on it, so a later resume (a new token) is not cancelled by an old request.
    return sa.Table(
        "cancel_requests",
        meta,
        sa.Column("run_id", sa.String, primary_key=True),
        sa.Column("owner", sa.String),
        sa.Column("requested", _TIME, nullable=False),
    )


cancel_requests = _cancel_requests_table(metadata)



_OUR_TABLES = frozenset(metadata.tables)
_SQLITE_MAGIC = b"SQLite format 3\x00"



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
