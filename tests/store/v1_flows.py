"""The flows recorded in ``data/v1_store.json`` (a store written at schema version 1).

The fixture was made by running :func:`record_v1_runs` with iterflow 0.1.0,
whose store was at schema version 1, and dumping every table. The migration
test loads it into a fresh database with the version-1 tables, opens it with
today's code, and checks that the runs read back and resume as they did.
"""

from __future__ import annotations

import iterflow
from iterflow import LOOP, Flow, Parameter, task

#: Set to a loop index to make ``count`` fail there (the fixture's first run did).
FAIL_AT: dict[str, int | None] = {"at": None}


@task
def count(n):
    total = iterflow.context.get("loop_result", 0) + iterflow.context.loop_index
    iterflow.context.logger.info("count at %d", iterflow.context.loop_index)
    if FAIL_AT["at"] == iterflow.context.loop_index:
        raise RuntimeError(f"failed at {iterflow.context.loop_index}")
    if iterflow.context.loop_index < n:
        raise LOOP(result=total)
    return total


@task
def square_loop(x):
    value = iterflow.context.get("loop_result", x)
    if iterflow.context.loop_index < 2:
        raise LOOP(result=value * 2)
    return value


@task(serializer="json")
def as_json(values):
    return {"values": list(values)}


def build() -> Flow:
    with Flow("v1 fixture") as flow:
        n = Parameter("n", default=5)
        shape = Parameter("shape", default=(2, 3))
        total = count(n)
        squares = square_loop.map([1, 2, 3])
        as_json(squares, upstream_tasks=[total, shape])
    return flow


def record_v1_runs(store_url: str) -> tuple[str, str]:
    """A failed run (``count`` failed at iteration 3) and a successful one."""
    flow = build()
    FAIL_AT["at"] = 3
    failed = flow.run(store=store_url)
    FAIL_AT["at"] = None
    ok = flow.run(store=store_url, parameters={"n": 2})
    return failed.run_id, ok.run_id
