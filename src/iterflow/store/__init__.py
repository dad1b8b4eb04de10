"""The run store: every run, task run and iteration, recorded in a database.

Public names are loaded on first use, so ``import iterflow`` (and even
``import iterflow.store``) does not import SQLAlchemy; only a run that records,
or a query, pays for it.

>>> from iterflow.store import open_store, list_runs       # doctest: +SKIP
>>> store = open_store()                  # ITERFLOW_STORE_URL or ~/.iterflow/iterflow.db
>>> [run.state for run in list_runs(store=store)]           # doctest: +SKIP

Modules: :mod:`~iterflow.store.schema` (tables), :mod:`~iterflow.store.migrations`
(versions, migrations, opening a store at the newest),
:mod:`~iterflow.store.results` (serializers, previews, result files),
:mod:`~iterflow.store.writer` (the event sink: snapshots, back-pressure, its
thread), :mod:`~iterflow.store.writer_process` and :mod:`~iterflow.store.writer_child`
(a long run's batches written by a process of their own),
:mod:`~iterflow.store.record_layout` (the records the sink hands its writer),
:mod:`~iterflow.store.batch` (a batch of records into rows, with
:mod:`~iterflow.store.batch_rows`),
:mod:`~iterflow.store.statements` (the SQL it runs),
:mod:`~iterflow.store.runstore` (opening a store, claiming a run to resume),
:mod:`~iterflow.store.kept_stores` (stores runs opened by URL, kept for the next run),
:mod:`~iterflow.store.queries` (reading), :mod:`~iterflow.store.records` (what
reading returns), :mod:`~iterflow.store.liveness` (hosts, pids, heartbeats),
:mod:`~iterflow.store.resume` (building resume points),
:mod:`~iterflow.store.lookup` (a run by id prefix, values by id),
:mod:`~iterflow.store.api` (the questions as functions taking ``store=``),
:mod:`~iterflow.store.paging` (long iteration histories, a page at a time),
:mod:`~iterflow.store.serving` (schedule ticks, ``serve`` leases, run triggers),
:mod:`~iterflow.store.retention` (deleting runs),
:mod:`~iterflow.store.cancelling` and :mod:`~iterflow.store.cancel_watch`
(``iterflow cancel``: asking a run's process to stop), :mod:`~iterflow.store.db`
(connections, transactions, errors), :mod:`~iterflow.store.dashboard` and
:mod:`~iterflow.store.dashboard_loops` (what ``iterflow ui`` shows: pages, shapes,
loop summaries).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from iterflow.store.api import (
        get_run,
        iterations,
        list_runs,
        load_result,
        logs,
        resume_point,
        task_runs,
    )
    from iterflow.store.cancelling import request_cancel
    from iterflow.store.dashboard import (
        change_marker,
        flow_names,
        flow_tasks,
        log_page,
        mapped_children,
        run_shape,
        runs_page,
        task_run_row,
    )
    from iterflow.store.dashboard_loops import (
        IterationSummary,
        LoopStats,
        iteration_detail,
        iteration_page,
        iteration_summary,
    )
    from iterflow.store.dashboard_series import loop_series
    from iterflow.store.metric_queries import metric_summary, metrics
    from iterflow.store.migrations import SCHEMA_VERSION
    from iterflow.store.paging import (
        count_iterations,
        iter_iteration_dicts,
        iter_iterations,
        last_iterations,
    )
    from iterflow.store.records import (
        IterationRecord,
        LogEntry,
        MetricRecord,
        MetricSummary,
        RunInfo,
        TaskRunInfo,
    )
    from iterflow.store.retention import delete_run, runs_older_than
    from iterflow.store.runstore import CheckpointSource, RunStore, open_store
    from iterflow.store.serving import (
        LeaseInfo,
        ServeConflict,
        TickInfo,
        TriggerInfo,
        lease,
        record_trigger,
        ticks,
        triggers,
    )
    from iterflow.store.writer import StoreSink

__all__ = [
    "SCHEMA_VERSION",
    "CheckpointSource",
    "IterationRecord",
    "IterationSummary",
    "LeaseInfo",
    "LogEntry",
    "LoopStats",
    "MetricRecord",
    "MetricSummary",
    "RunInfo",
    "RunStore",
    "ServeConflict",
    "StoreSink",
    "TaskRunInfo",
    "TickInfo",
    "TriggerInfo",
    "change_marker",
    "count_iterations",
    "delete_run",
    "flow_names",
    "flow_tasks",
    "get_run",
    "iter_iteration_dicts",
    "iter_iterations",
    "iteration_detail",
    "iteration_page",
    "iteration_summary",
    "iterations",
    "last_iterations",
    "lease",
    "list_runs",
    "load_result",
    "log_page",
    "logs",
    "loop_series",
    "mapped_children",
    "metric_summary",
    "metrics",
    "open_store",
    "record_trigger",
    "request_cancel",
    "resume_point",
    "run_shape",
    "runs_older_than",
    "runs_page",
    "task_run_row",
    "task_runs",
    "ticks",
    "triggers",
]

_HOME = {
    "open_store": "runstore",
    "RunStore": "runstore",
    "CheckpointSource": "runstore",
    "StoreSink": "writer",
    "SCHEMA_VERSION": "migrations",
    "delete_run": "retention",
    "request_cancel": "cancelling",
    "runs_older_than": "retention",
    "iter_iterations": "paging",
    "iter_iteration_dicts": "paging",
    "count_iterations": "paging",
    "last_iterations": "paging",
    # Readers for the dashboard (iterflow ui).
    **{
        name: "dashboard"
        for name in (
            "runs_page", "run_shape", "log_page", "mapped_children", "change_marker",
            "task_run_row", "flow_names", "flow_tasks",
        )
    },
    **{
        name: "dashboard_loops"
        for name in (
            "iteration_summary", "iteration_page", "iteration_detail", "LoopStats",
            "IterationSummary",
        )
    },
    **{
        name: "serving"
        for name in (
            "LeaseInfo", "ServeConflict", "TickInfo", "TriggerInfo", "lease", "record_trigger",
            "ticks", "triggers",
        )
    },
    "loop_series": "dashboard_series",
    **{
        name: "records"
        for name in (
            "RunInfo", "TaskRunInfo", "IterationRecord", "LogEntry", "MetricRecord",
            "MetricSummary",
        )
    },
    "metrics": "metric_queries",
    "metric_summary": "metric_queries",
    **{
        name: "api"
        for name in (
            "list_runs", "get_run", "task_runs", "iterations", "logs", "load_result",
            "resume_point",
        )
    },
}


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module 'iterflow.store' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"iterflow.store.{module}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
