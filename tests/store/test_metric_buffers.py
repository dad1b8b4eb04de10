"""Metrics buffered per task run as they are logged, and the rows the writer makes of them."""

from __future__ import annotations

import gc
import threading
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iterflow.core.state import Running
from iterflow.errors import StoreError
from iterflow.events import FlowRunEvent, TaskRunEvent
from iterflow.store import metrics, open_store
from iterflow.store.metric_buffers import VALUES_PER_RECORD, MetricBuffers
from iterflow.store.metric_packing import (
    COLUMNS,
    Values,
    chunk_row,
    metric_rows,
    number_span,
    values,
)

_index = st.one_of(st.none(), st.integers(min_value=0, max_value=2**31 - 1))
_value = st.tuples(
    _index, _index, st.sampled_from(["loss", "acc", "λ", "a b"]),
    st.floats(allow_nan=False, allow_infinity=False), st.floats(min_value=0, max_value=2e9),
)
RUN = "e" * 32


@settings(max_examples=200, deadline=None)
@given(st.lists(_value, min_size=1, max_size=60), st.integers(min_value=-(2**40), max_value=2**40),
       st.integers(min_value=0, max_value=3))
def test_a_buffers_row_is_the_row_its_values_make(logged, offset, skipped):
    buffers = MetricBuffers()
    for _ in range(skipped):  # numbers taken by values still on their way: gaps
        buffers.count()
    for loop_index, block_index, name, value, at in logged:
        buffers.add(RUN, "t", loop_index, block_index, name, value, at)
    [taken] = buffers.take()
    got = Values(taken).row(7, 9, offset)
    seq = [offset + skipped + k + 1 for k in range(len(logged))]
    loops, blocks, names, numbers, times = (list(column) for column in zip(*logged))
    assert got == chunk_row(7, 9, seq, loops, blocks, names, numbers, times)
    back = list(values(SimpleNamespace(**dict(zip(COLUMNS, got)))))
    assert back == [(s, *v) for s, v in zip(seq, logged)]


def test_ids_keep_the_order_across_task_runs_and_skip_numbers_not_taken():
    buffers = MetricBuffers()
    buffers.add(RUN, "a", 0, None, "x", 1.0, 0.0)  # 1
    buffers.add(RUN, "b", 0, None, "x", 2.0, 0.0)  # 2
    buffers.count()  # 3: a value not appended yet when the writer takes
    buffers.add(RUN, "a", 1, None, "x", 3.0, 0.0)  # 4
    taken = buffers.take()
    columns = [Values(take) for take in taken]
    assert number_span(columns) == (1, 4)
    rows = metric_rows(taken, columns, 100 - 1, {RUN: 1}, {"a": 2, "b": 3})
    seqs = {row[2]: [v[0] for v in values(SimpleNamespace(**dict(zip(COLUMNS, row))))]
            for row in rows}
    assert seqs == {2: [100, 103], 3: [101]}
    assert [row[0] for row in rows] == [100, 101]  # a row's id: its first value's


def test_a_buffer_is_dropped_once_empty_and_its_lane_gone():
    buffers = MetricBuffers()

    def lane() -> None:
        pass

    assert buffers.for_lane(RUN, "t", lane) is buffers.for_lane(RUN, "t", lane)
    buffers.add(RUN, "t", 0, None, "x", 1.0, 0.0)
    buffers.add(RUN, None, None, None, "y", 1.0, 0.0)  # the run's own: no lane
    assert len(buffers.take()) == 2
    assert buffers.take() == []
    assert list(buffers._owners) == ["t"]  # the lane may still log
    del lane
    gc.collect()
    assert buffers.take() == [] and not buffers._owners


def test_values_count_for_a_fraction_of_a_record_against_back_pressure():
    buffers = MetricBuffers()
    assert not buffers and len(buffers) == 0
    for k in range(VALUES_PER_RECORD + 1):
        buffers.add(RUN, "t", k, None, "x", 1.0, 0.0)
    assert buffers and buffers.waiting() == VALUES_PER_RECORD + 1 and len(buffers) == 2
    buffers.take()
    assert not buffers and len(buffers) == 0


def _sink(store, task_runs):
    sink = store.sink()
    sink.handle(FlowRunEvent(RUN, "fitting", Running(), tasks=(("fit", "fit"),)))
    for tid in task_runs:
        sink.handle(TaskRunEvent(RUN, tid, "fit", "fit", None, 0, Running()))
    return sink


def test_threads_logging_through_one_lane_keep_each_value_whole(tmp_path):
    tid = f"{RUN}/fit"
    with open_store(f"sqlite:///{tmp_path}/iterflow.db", home=tmp_path) as store:
        sink = _sink(store, [tid])
        context = {"loop_index": 3}
        record = sink.metric_lane(RUN, tid, context.get)
        start = threading.Barrier(4)

        def log(thread: int) -> None:
            start.wait()
            for k in range(3000):
                record(f"m{thread}-{k % 7}", thread * 10_000 + k)

        threads = [threading.Thread(target=log, args=(t,)) for t in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        sink.flush()
        got = metrics(RUN, store=store)
        sink.close()
    assert sorted(int(m.value) for m in got) == sorted(
        t * 10_000 + k for t in range(4) for k in range(3000))
    for m in got:
        thread, k = divmod(int(m.value), 10_000)
        assert m.name == f"m{thread}-{k % 7}" and m.loop_index == 3
    for t in range(4):  # each thread's values in the order it logged them
        mine = [int(m.value) for m in got if int(m.value) // 10_000 == t]
        assert mine == sorted(mine)


def test_task_runs_logging_in_turn_read_back_in_that_order(tmp_path):
    a, b = f"{RUN}/a", f"{RUN}/b"
    with open_store(f"sqlite:///{tmp_path}/iterflow.db", home=tmp_path) as store:
        sink = _sink(store, [a, b])
        lanes = [sink.metric_lane(RUN, a, {"loop_index": 0}.get),
                 sink.metric_lane(RUN, b, {"loop_index": 0}.get)]
        for k in range(2500):  # several batches
            lanes[k % 2]("k", float(k))
            if k % 1000 == 999:
                sink.flush()
        sink.record_metric(RUN, b, 1, None, "k", 2500.0, 0.0)  # an event's, same order
        sink.flush()
        assert [m.value for m in metrics(RUN, store=store)] == [float(k) for k in range(2501)]
        sink.close()


def test_a_lane_of_a_closed_sink_raises_by_its_next_wake_and_writes_nothing(tmp_path):
    tid = f"{RUN}/fit"
    with open_store(f"sqlite:///{tmp_path}/iterflow.db", home=tmp_path) as store:
        sink = _sink(store, [tid])
        record = sink.metric_lane(RUN, tid, {"loop_index": 0}.get)
        record("loss", 1.0)
        sink.flush()
        sink.close()
        # The lane looks at the sink once per wake-up, not per value: the error comes
        # within that many values, and none of them reaches the store.
        with pytest.raises(StoreError, match="closed"):
            for _ in range(sink._metric_wake + 1):
                record("loss", 2.0)
        assert [m.value for m in metrics(RUN, store=store)] == [1.0]
