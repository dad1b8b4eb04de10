"""Reading the metrics tasks logged with ``iterflow.log_metric``.

>>> from iterflow.store import metrics, metric_summary       # doctest: +SKIP
>>> for m in metrics(run_id, task="train", name="loss"):     # doctest: +SKIP
...     print(m.loop_index, m.value)
>>> for s in metric_summary(run_id):                         # doctest: +SKIP
...     print(s.task_name, s.name, s.count, s.first, s.last, s.min, s.max)
"""

from __future__ import annotations

import json
from operator import itemgetter

import sqlalchemy as sa

from iterflow.store.lookup import find_run
from iterflow.store.metric_packing import values
from iterflow.store.records import MetricRecord, MetricSummary
from iterflow.store.runstore import RunStore, using_store
from iterflow.store.schema import metrics as metrics_table
from iterflow.store.schema import task_runs as task_runs_table

__all__ = ["metric_summary", "metrics"]

_first = itemgetter(0)


def metrics(
    run_id: str,
    task: str | None = None,
    name: str | None = None,
    *,
    store: RunStore | str | None = None,
) -> list[MetricRecord]:
    """The metrics of a run, in the order they were logged.

    ``run_id`` is a run id or a unique prefix; ``task`` (slug or name) keeps one
    task's metrics, ``name`` one metric's.
    """

    def query(conn: sa.Connection) -> list[MetricRecord]:
        run = find_run(conn, run_id, st.name)
        m, t = metrics_table, task_runs_table
        stmt = (
            sa.select(m.c.count, m.c.names, m.c.data, t.c.task_name, t.c.map_index)
            .select_from(m.outerjoin(t, t.c.id == m.c.task_run))
            .where(m.c.flow_run == run.id)
            .order_by(m.c.id)
        )
        if task is not None:
            stmt = stmt.where(sa.or_(t.c.task_slug == task, t.c.task_name == task))
        if name is not None:  # a chunk's names are a JSON list: a cheap first sieve
            stmt = stmt.where(m.c.names.contains(json.dumps(name), autoescape=True))
        found = [
            (seq, MetricRecord(
                task_name=row.task_name, map_index=row.map_index, loop_index=loop_index,
                block_index=block_index, name=metric, value=value, time=at,
            ))
            for row in conn.execute(stmt)
            for seq, loop_index, block_index, metric, value, at in values(row)
            if name is None or metric == name
        ]
        # Chunks are per task run: values of task runs logging at once interleave by seq.
        found.sort(key=_first)
        return [record for _seq, record in found]

    with using_store(store) as st:
        return st.read(query)


def metric_summary(
    run_id: str,
    task: str | None = None,
    name: str | None = None,
    *,
    store: RunStore | str | None = None,
) -> list[MetricSummary]:
    """Per task and metric name: count, first, last, min and max, in first-logged order."""
    found: dict[tuple[str | None, str], list[float]] = {}
    for record in metrics(run_id, task, name, store=store):
        found.setdefault((record.task_name, record.name), []).append(record.value)
    return [
        MetricSummary(
            task_name=task_name, name=metric, count=len(values), first=values[0],
            last=values[-1], min=min(values), max=max(values),
        )
        for (task_name, metric), values in found.items()
    ]
