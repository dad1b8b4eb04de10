"""The task lane into the store: what it records is what the usual way records.

A short task run with no state handler hands its plain ``Running`` and
``Success`` to the store sink as values (``StoreSink.record_started`` and
``record_success``, through ``transitions.task_lane``) instead of making two
states and two events: a chain's every link, a map's children, a loop block's
body tasks. For random flows of such tasks — returning numbers, text, None,
containers, values too big for the database, values that cannot be pickled,
labelled or not, failing or not — the flow run with the store as its only
sink (the lane) and the same flow whose tasks have a state handler (the usual
way) must leave the same rows.
"""

from __future__ import annotations

import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import iterflow
from iterflow import Flow, loop, task
from iterflow.store import open_store
from tests.store.helpers import run_rows

BIG = b"x" * (2 * 1024 * 1024)  # over the size kept in the database: a results file

# What a task may return; a lock cannot be pickled: its task run fails, recorded.
VALUES = st.one_of(
    st.integers(-10**9, 10**9), st.floats(allow_nan=False), st.booleans(), st.none(),
    st.integers(10**200, 10**201), st.text(max_size=6),
    st.lists(st.integers(), max_size=3), st.just("BIG"), st.just("LOCK"), st.just("RAISE"),
)
STEP = st.tuples(st.sampled_from(["chain", "map", "block"]), st.lists(VALUES, min_size=1,
                                                                     max_size=4),
                 st.sampled_from([None, "label {x}"]))


def _returns(value, label):
    def fn(x):
        if label:
            iterflow.set_iteration_label(label.format(x=x))
        if value == "RAISE":
            raise ValueError(f"no {x}")
        if value == "LOCK":
            return threading.Lock()
        return BIG if value == "BIG" else value

    return fn


def _at_least(limit):
    def fn(i):
        return i >= limit

    return fn


def _flow(plan: list[tuple], with_handler: bool) -> Flow:
    handlers = [lambda task, old, new: new] if with_handler else []
    with Flow("lane") as flow:
        for n, (shape, values, label) in enumerate(plan):
            if shape == "chain":
                last = None
                for k, value in enumerate(values):
                    step = task(_returns(value, label), name=f"s{n}-{k}", state_handlers=handlers)
                    last = step(k if last is None else last)
            elif shape == "map":
                step = task(_returns(values[0], label), name=f"m{n}", state_handlers=handlers)
                step.map(list(range(len(values))))
            else:  # a block of two tasks, as many iterations as values
                count = task(lambda i: i + 1, name=f"c{n}", state_handlers=handlers)
                body = task(_returns(values[-1], label), name=f"b{n}", state_handlers=handlers)
                stop = task(_at_least(len(values)), name=f"u{n}", state_handlers=handlers)
                with loop(initial=0) as it:
                    nxt = count(it.result)
                    body(nxt)
                    it.next(result=nxt, until=stop(nxt))
    return flow


@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=st.lists(STEP, min_size=1, max_size=4))
def test_the_task_lane_records_what_the_usual_way_records(store_url, plan):
    """On SQLite and PostgreSQL."""
    with open_store(store_url) as store:
        fast = _flow(plan, with_handler=False).run(store=store)
        slow = _flow(plan, with_handler=True).run(store=store)
        assert type(fast) is type(slow), (fast, slow)
        fast_tasks, fast_states, _ = run_rows(store, fast.run_id, data=False)
        slow_tasks, slow_states, _ = run_rows(store, slow.run_id, data=False)
        assert fast_tasks == slow_tasks
        assert fast_states == slow_states
        # Every task run that ran is recorded as started, and every one ended as ended.
        assert all(t[8] for t in fast_tasks if t[1] not in ("Pending", "Skipped",
                                                             "TriggerFailed"))


def test_the_runner_takes_the_lane_for_plain_tasks_only(tmp_path, monkeypatch):
    from iterflow.store.writer import StoreSink

    taken: list[str] = []
    record_success = StoreSink.record_success

    def spy(self, head, loop_index, block_index, value, label):
        taken.append(head[2])
        return record_success(self, head, loop_index, block_index, value, label)

    monkeypatch.setattr(StoreSink, "record_success", spy)
    plain = task(lambda x: x + 1, name="plain")
    handled = task(lambda x: x + 1, name="handled", state_handlers=[lambda t, o, n: n])
    every = task(lambda x: x + 1, name="every", checkpoint="every")
    with Flow("some") as flow:
        every(handled(plain(1)))
    state = flow.run(store=f"sqlite:///{tmp_path}/lane.db")
    assert state.is_successful(), state
    assert taken == ["plain"]


def test_a_store_that_failed_is_not_written_through_the_lane(tmp_path):
    with open_store(f"sqlite:///{tmp_path}/lane.db") as store:
        sink = store.sink()
        started, succeeded, block_index = sink.task_lane("t", None)
        assert block_index is None
        head = ("run", "run/t", "t", "t", None, None)
        sink._unusable = True  # as after a failed write: the usual way says why
        assert started(head, 0, None) is False
        assert succeeded(head, 0, None, 1, None) is False
        sink._unusable = False
        sink._done.add("run/t")  # finished already: a late state is refused the usual way
        assert started(head, 0, None) is False
        assert succeeded(head, 0, None, 1, None) is False
        sink.close()


@pytest.mark.parametrize("serializer", ["json", "preview-only"])
def test_no_task_lane_for_previews_only_or_other_serializers(tmp_path, serializer):
    with open_store(f"sqlite:///{tmp_path}/none.db") as store:
        sink = store.sink(previews_only=frozenset({"secret"}))
        assert sink.task_lane("secret", None) is None
        assert sink.task_lane("t", serializer) is None
        assert sink.task_lane("t", "pickle") is not None
        sink.close()
