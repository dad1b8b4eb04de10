"""Paged reading of iteration histories (iterflow.store.paging) against iterations()."""

from __future__ import annotations

import pytest

import iterflow
from iterflow import LOOP, Flow, loop, task
from iterflow.errors import StoreError
from iterflow.store import (
    count_iterations,
    iter_iteration_dicts,
    iter_iterations,
    iterations,
    last_iterations,
)


@task
def spin(n):
    if iterflow.context.loop_index < n:
        raise LOOP(result=iterflow.context.loop_index * 10)
    return n


@task
def step(x):
    if iterflow.context.loop_index < x:
        raise LOOP(result=x)
    return x + 1


@task
def stop_at(i, last):
    return i >= last


def _same(a, b) -> None:
    assert [r.as_dict() for r in a] == [r.as_dict() for r in b]


def test_pages_of_a_loop_match_the_full_history(store):
    with Flow("paged") as flow:
        spin(53)
    run_id = flow.run(store=store).run_id
    everything = iterations(run_id, "spin", store=store)
    assert len(everything) == 54
    assert count_iterations(run_id, "spin", store=store) == 54
    # Batches smaller than the history, and limits and offsets across their edges.
    _same(iter_iterations(run_id, "spin", store=store, batch_size=7), everything)
    _same(iter_iterations(run_id, "spin", store=store, offset=5, limit=20, batch_size=7),
          everything[5:25])
    _same(iter_iterations(run_id, "spin", store=store, offset=50, batch_size=7), everything[50:])
    assert list(iter_iterations(run_id, "spin", store=store, offset=54)) == []
    assert list(iter_iterations(run_id, "spin", store=store, limit=0)) == []
    _same(last_iterations(run_id, "spin", 3, store=store), everything[-3:])
    _same(last_iterations(run_id, "spin", 100, store=store), everything)


def test_a_task_inside_a_loop_block_pages_over_every_block_iteration(store):
    with Flow("blocks") as flow, loop(initial=0) as it:
        total = step(it.result)
        it.next(result=total, until=stop_at(it.index, 4))
    run_id = flow.run(store=store).run_id
    everything = iterations(run_id, "step", store=store)
    assert len({r.block_index for r in everything}) == 5
    assert count_iterations(run_id, "step", store=store) == len(everything)
    _same(iter_iterations(run_id, "step", store=store, batch_size=2), everything)
    _same(iter_iterations(run_id, "step", store=store, offset=3, limit=6, batch_size=2),
          everything[3:9])
    _same(last_iterations(run_id, "step", 4, store=store), everything[-4:])


def test_unknown_tasks_are_refused_and_mapped_tasks_read_like_iterations(store):
    with Flow("mapped") as flow:
        spin.map([1, 2])
    run_id = flow.run(store=store).run_id
    with pytest.raises(StoreError, match="no task run of a task named 'nope'"):
        next(iter_iterations(run_id, "nope", store=store))
    with pytest.raises(StoreError, match="no task run of a task named 'nope'"):
        count_iterations(run_id, "nope", store=store)
    parent = iterations(run_id, "spin", store=store)
    assert [r.state for r in parent] == ["Mapped"]
    _same(iter_iterations(run_id, "spin", store=store), parent)
    _same(iter_iterations(run_id, "spin", 1, store=store),
          iterations(run_id, "spin", 1, store=store))


def test_dicts_are_the_records_as_dicts(store):
    with Flow("dicts") as flow:
        spin(12)
    run_id = flow.run(store=store).run_id
    expected = [r.as_dict() for r in iterations(run_id, "spin", store=store)]
    assert list(iter_iteration_dicts(run_id, "spin", store=store, batch_size=5)) == expected
    assert list(iter_iteration_dicts(run_id, "spin", store=store, offset=11)) == expected[11:]
