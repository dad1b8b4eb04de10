"""Subflows on Dask: children run on the same cluster, and a big map of them cannot deadlock.

A subflow task runs on a worker like any task; its child run's tasks run in
that worker's thread, recording to the same store, so a child never waits for
a worker slot that its parent (or a sibling) holds.
"""

from __future__ import annotations

import logging

import pytest

import iterflow
from iterflow import Flow, Parameter, loop, task
from iterflow.store.children import child_runs, list_runs

distributed = pytest.importorskip("distributed")
from iterflow.executors import DaskExecutor  # noqa: E402  (needs distributed)

pytestmark = pytest.mark.dask


@pytest.fixture(scope="module")
def dask_cluster():
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
        silence_logs=logging.ERROR,
    ) as cluster:
        yield cluster


@task
def square(x):
    return x * x


@task
def total(xs):
    return sum(xs)


@task
def at_least(x, n):
    return x >= n


@task
def where():
    return iterflow.context.flow_name


def fan_out() -> Flow:
    with Flow("fan out") as child:
        n = Parameter("n")
        total(square.map(n))
    return child


def run_map_of_maps(cluster, url: str, children: int, each: int):
    child = fan_out()
    with Flow("many children") as parent:
        sums = child.map(n=[list(range(each))] * children)
    state = parent.run(store=url, executor=DaskExecutor(address=cluster.scheduler_address))
    assert state.is_successful(), state
    expected = sum(i * i for i in range(each))
    assert state.result[sums].result == [expected] * children
    assert len(child_runs(state.run_id, store=url)) == children
    assert {c.state for c in child_runs(state.run_id, store=url)} == {"Success"}
    return state


def test_a_map_of_children_that_each_map_runs_on_a_two_worker_cluster(dask_cluster, tmp_path):
    run_map_of_maps(dask_cluster, f"sqlite:///{tmp_path / 'runs.db'}", children=12, each=10)


@pytest.mark.slow
def test_a_hundred_children_each_mapping_a_hundred_tasks_do_not_deadlock(dask_cluster, tmp_path):
    run_map_of_maps(dask_cluster, f"sqlite:///{tmp_path / 'runs.db'}", children=100, each=100)


def test_children_in_a_loop_block_on_dask_are_linked_and_give_the_same_values(
    dask_cluster, tmp_path
):
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    child = fan_out()
    with Flow("looping parent") as parent:
        with loop(initial=0, max_loops=5) as it:
            value = child(n=[1, 2])
            it.next(result=value, until=at_least(it.index, 2))
        name = where()
    state = parent.run(store=url, executor=DaskExecutor(address=dask_cluster.scheduler_address))
    assert state.is_successful(), state
    assert state.result[name].result == "looping parent"
    kids = child_runs(state.run_id, store=url)
    assert sorted(k.block_index for k in kids) == [0, 1, 2]
    assert [r.run_id for r in list_runs(store=url)] == [state.run_id]
