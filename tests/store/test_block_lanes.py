"""A loop block's states through the store's lanes: recorded as their events would be.

With the store as a run's only sink, a block body's plain task runs hand
their ``Running`` and ``Success`` to the sink's task lane (inline, without
the loop driver) and the block node hands each plain ``Looped`` to its
looped lane; the ``Running`` after each ``Looped`` is not made at all (the
store does not record it). The same flow run with the lanes refused must
leave the same rows, and a sink that wants every ``Running`` still gets it.
"""

from __future__ import annotations

import pytest

import iterflow
from iterflow import Flow, loop, task
from iterflow.core.state import Kind
from iterflow.events import TaskRunEvent
from iterflow.runtime import run_flow
from iterflow.store import open_store
from iterflow.store.writer import StoreSink
from tests.store.helpers import run_rows


def _add(total, i):
    return total + i


def _as_list(total, i):
    return [total[0] + i] if isinstance(total, list) else [total + i]


def _done(i, n):
    return i >= n - 1


def _labelled(x, i):
    iterflow.set_iteration_label(f"step {i}")
    return x


def _block_flow(shape: str) -> Flow:
    """A block of three tasks (as benchmarks/block_overhead.py), in one of a few shapes."""
    add = task(_as_list if shape == "list" else _add, name="add")
    same = task(_labelled if shape == "labelled" else (lambda x, i: x), name="same")
    done = task(_done, name="done")
    with Flow(f"block {shape}") as flow:
        if shape == "nested":
            with loop(initial=0, name="outer") as outer:
                with loop(initial=outer.result, name="inner") as it:
                    total = add(it.result, it.index)
                    it.next(result=same(total, it.index), until=done(it.index, 3))
                outer.next(result=it.final, until=done(outer.index, 2))
        else:
            label = "iteration {index}" if shape == "labelled" else None
            with loop(initial=0, name="block") as it:
                total = add(it.result, it.index)
                it.next(result=same(total, it.index), until=done(it.index, 5), label=label)
    return flow


@pytest.mark.parametrize("shape", ["plain", "list", "labelled", "nested"])
def test_a_block_through_the_lanes_records_what_its_events_record(store_url, shape,
                                                                   monkeypatch):
    """On SQLite and PostgreSQL: a number, a list (the looped lane declines), labels, nesting."""
    with open_store(store_url) as store:
        fast = _block_flow(shape).run(store=store)
        with monkeypatch.context() as m:  # the usual way: no lane offered
            m.setattr(StoreSink, "looped_lane", lambda self, slug, serializer: None)
            m.setattr(StoreSink, "task_lane", lambda self, slug, serializer: None)
            slow = _block_flow(shape).run(store=store)
        assert fast.is_successful() and slow.is_successful(), (fast, slow)
        fast_tasks, fast_states, fast_running = run_rows(store, fast.run_id)
        slow_tasks, slow_states, _ = run_rows(store, slow.run_id)
        assert fast_tasks == slow_tasks
        assert fast_states == slow_states
        # A block node's only Running is its first iteration's: the others are implied.
        for block in ("block", "outer", "inner"):
            kept = [r for r in fast_running if r[0].rsplit("/", 1)[-1] == block]
            assert all(r[2] == 0 for r in kept), kept


def test_the_lanes_are_taken_with_the_store_as_the_only_sink(tmp_path, monkeypatch):
    looped: list[str] = []
    succeeded: list[str] = []
    record_looped, record_success = StoreSink.record_looped, StoreSink.record_success

    def spy_looped(self, head, loop_index, value, label):
        looped.append(head[2])
        return record_looped(self, head, loop_index, value, label)

    def spy_success(self, head, loop_index, block_index, value, label):
        succeeded.append((head[2], block_index))
        return record_success(self, head, loop_index, block_index, value, label)

    monkeypatch.setattr(StoreSink, "record_looped", spy_looped)
    monkeypatch.setattr(StoreSink, "record_success", spy_success)
    state = _block_flow("plain").run(store=f"sqlite:///{tmp_path}/lanes.db")
    assert state.is_successful(), state
    assert looped == ["block"] * 4  # iterations 0..3 looped, 4 ended it
    assert [b for s, b in succeeded if s == "add"] == [0, 1, 2, 3, 4]


def test_a_sink_that_wants_every_running_still_gets_one_per_iteration():
    class EverySink:
        implied_running = False

        def __init__(self) -> None:
            self.kinds: list[tuple[int, Kind]] = []

        def handle(self, event) -> None:
            if type(event) is TaskRunEvent and event.task_slug == "block":
                self.kinds.append((event.loop_index, event.state.kind))

    sink = EverySink()
    state = run_flow(_block_flow("plain"), store=None, sinks=[sink])
    assert state.is_successful(), state
    running = [k for k, kind in sink.kinds if kind is Kind.RUNNING]
    assert running == [0, 1, 2, 3, 4]
    assert [k for k, kind in sink.kinds if kind is Kind.LOOPED] == [0, 1, 2, 3]


def test_big_values_through_the_task_lane_free_the_byte_budget(tmp_path, monkeypatch):
    """A lane's Success with a value over the budget's notice counts until committed."""
    left: list[int] = []
    close = StoreSink.close

    def spy(self):
        close(self)
        left.append(self._big_bytes)

    monkeypatch.setattr(StoreSink, "close", spy)
    big = task(lambda x, i: b"x" * 100_000 + bytes([i % 256]), name="big")
    done = task(_done, name="done")
    with Flow("big values") as flow, loop(initial=0, name="block") as it:
        it.next(result=big(it.result, it.index), until=done(it.index, 50))
    state = flow.run(store=f"sqlite:///{tmp_path}/big.db")
    assert state.is_successful(), state
    assert left == [0]
