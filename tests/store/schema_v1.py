"""The run store's tables as they were at schema version 1 (iterflow 0.1.0), frozen.

The migration tests build a version-1 store from these and the rows in
``data/v1_store.json``, then open it with today's code. Never edit this file:
it is what real version-1 stores look like.
"""

from __future__ import annotations

import sqlalchemy as sa

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
    sa.Index("ix_flow_runs_started", "started"),
    sa.Index("ix_flow_runs_flow_name", "flow_name", "started"),
    sa.Index("ix_flow_runs_state", "state"),
)

task_runs = sa.Table(
    "task_runs",
    metadata,
    sa.Column("task_run_id", sa.String, primary_key=True),
    sa.Column("flow_run_id", sa.String, nullable=False),
    sa.Column("task_slug", sa.String, nullable=False),
    sa.Column("task_name", sa.String, nullable=False),
    sa.Column("map_index", sa.Integer),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("loop_count", sa.Integer),
    sa.Column("loop_index", sa.Integer),
    sa.Column("looped_index", sa.Integer),
    sa.Column("looped_result_id", sa.BigInteger),
    sa.Column("result_id", sa.BigInteger),
    sa.Column("started", _TIME),
    sa.Column("ended", _TIME),
    sa.Column("message", sa.Text),
    sa.Index("ix_task_runs_flow_run", "flow_run_id", "task_slug", "map_index"),
)

state_transitions = sa.Table(
    "state_transitions",
    metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("flow_run_id", sa.String, nullable=False),
    sa.Column("task_run_id", sa.String),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("loop_index", sa.Integer),
    sa.Column("block_index", sa.Integer),
    sa.Column("message", sa.Text),
    sa.Column("traceback", sa.Text),
    sa.Column("result_id", sa.BigInteger),
    sa.Column("time", _TIME, nullable=False),
    # A task run's history in order. (SQLite appends the rowid to every index
    # entry, so this is ordered by id there too.)
    sa.Index("ix_state_transitions_task_run", "task_run_id"),
)

results = sa.Table(
    "results",
    metadata,
    # Assigned by the writer from `counters`, so one batch can insert results
    # and the rows that point at them without a round trip per row.
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
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("flow_run_id", sa.String, nullable=False),
    sa.Column("task_run_id", sa.String),
    sa.Column("task_slug", sa.String),
    sa.Column("map_index", sa.Integer),
    sa.Column("loop_index", sa.Integer),
    sa.Column("level", sa.Integer, nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("time", _TIME, nullable=False),
    sa.Index("ix_logs_flow_run", "flow_run_id"),
)
