"""A run's flow-level JSON (its flow's task list, its shape) when flows come again.

The writer reuses the text it encoded last while the same value comes again
(``flow_rows._json_text``): each run must still record its own flow's.
"""

from __future__ import annotations

from iterflow import Flow, task
from iterflow.core.shape import describe
from iterflow.store import open_store, run_shape
from iterflow.store.dashboard import flow_tasks


def inc(x):
    return x + 1


def chain(n: int) -> Flow:
    step = task(inc)
    with Flow("again") as flow:
        last = step(0)
        for _ in range(n - 1):
            last = step(last)
    return flow


def test_each_run_records_its_own_flows_tasks_and_shape(store_url):
    with open_store(store_url) as store:
        # The same flow twice, another of the same name, then one built as the first was.
        flows = [chain(3), None, chain(5), chain(3)]
        flows[1] = flows[0]
        for flow in flows:
            state = flow.run(store=store)
            assert state.is_successful()
            assert run_shape(store, state.run_id).graph == describe(flow)
            assert flow_tasks(store, "again") == [(t.slug, t.name) for t in flow.sorted_tasks()]
