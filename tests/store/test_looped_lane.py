"""The loop driver's lane into the store: what it records is what the usual way records.

A loop whose task has no state handlers hands its plain ``Looped`` states to the
store sink as values (``StoreSink.record_looped``) instead of making a state and
an event; a task with a state handler goes the usual way (an event per state).
For random loops — numbers, text, None, containers, very long integers, labels,
messages — both flows must leave the same history in the store, and a resume
must continue from it alike. An ``async def`` task's loop takes the same lane
(``engine.aio.drive_async``) and must leave the same history too.
"""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import iterflow
from iterflow import LOOP, Flow, task
from iterflow.engine.transitions import task_run_event
from iterflow.events import EventBus
from iterflow.progress import ProgressDisplay
from iterflow.states import Running
from iterflow.store import iterations, load_result, open_store

# What a loop may carry: the lane takes small numbers, the rest it declines.
VALUES = st.one_of(
    st.integers(-10**9, 10**9), st.floats(allow_nan=False), st.booleans(),
    st.integers(10**200, 10**201), st.text(max_size=6), st.none(),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=3),
)
# Labels and messages with what a COPY or a quoted literal must carry through.
ITERATION = st.tuples(VALUES, st.sampled_from([None, None, "page {i}", "p\t{i}\\N 50% 'q' ü"]),
                      st.sampled_from([None, None, None, "note {i}\nline two %s"]))


def _loop_flow(plan: list[tuple], with_handler: bool, is_async: bool = False
               ) -> tuple[Flow, str]:
    """A loop walking ``plan``: a plain or an ``async def`` task, with a handler or none."""
    handlers = [lambda task, old, new: new] if with_handler else []

    def step():
        i = iterflow.context.loop_index
        if i < len(plan):
            value, label, message = plan[i]
            raise LOOP(
                message=message and message.format(i=i),
                result=value,
                label=label and label.format(i=i),
            )
        return i

    async def walk_async():
        return step()

    fn = walk_async if is_async else step
    walk = task(fn, name="walk", state_handlers=handlers)
    with Flow("lane") as flow:
        walk()
    return flow, "walk"


def _history(run_id: str, store) -> list[tuple]:
    out = []
    for record in iterations(run_id, "walk", store=store):
        value = load_result(record.result_id, store=store) if record.result_id else None
        out.append((record.loop_index, record.state, record.message, record.preview,
                    record.label, record.serializer, repr(value)))
    return out


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=st.lists(ITERATION, max_size=12))
def test_lane_records_what_the_usual_way_records(store_url, plan):
    """On SQLite and PostgreSQL (whose rows go in by COPY)."""
    with open_store(store_url) as store:
        fast, _ = _loop_flow(plan, with_handler=False)
        slow, _ = _loop_flow(plan, with_handler=True)
        fast_state = fast.run(store=store)
        slow_state = slow.run(store=store)
        assert fast_state.is_successful() and slow_state.is_successful()
        fast_rows = _history(fast_state.run_id, store)
        assert fast_rows == _history(slow_state.run_id, store)
        # And that history is the plan: one Looped per iteration, then the end.
        assert [r[:2] for r in fast_rows] == (
            [(i, "Looped") for i in range(len(plan))] + [(len(plan), "Success")]
        )
        for (index, _, message, _, label, _, value), (planned, lab, msg) in zip(
            fast_rows, plan, strict=False
        ):
            assert value == repr(planned)
            assert label == (lab and lab.format(i=index))
            assert message == (msg and msg.format(i=index))
        [row] = [t for t in store.task_runs(fast_state.run_id) if t.task_name == "walk"]
        assert row.loop_count == len(plan) + 1


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=st.lists(ITERATION, max_size=12))
def test_an_async_loop_records_through_the_lane_what_the_usual_way_records(store_url, plan):
    """An ``async def`` loop: through the lane, the usual way, and as a sync loop, alike."""
    with open_store(store_url) as store:
        histories = []
        for is_async, with_handler in ((True, False), (True, True), (False, False)):
            flow, _ = _loop_flow(plan, with_handler, is_async)
            state = flow.run(store=store)
            assert state.is_successful(), state
            histories.append(_history(state.run_id, store))
        assert histories[0] == histories[1] == histories[2]
        assert [r[:2] for r in histories[0]] == (
            [(i, "Looped") for i in range(len(plan))] + [(len(plan), "Success")]
        )


@pytest.mark.parametrize("with_handler", [False, True])
def test_an_async_loop_takes_the_lane_unless_it_has_state_handlers(
    tmp_path, monkeypatch, with_handler
):
    from iterflow.store.writer import StoreSink

    taken = []
    record_looped = StoreSink.record_looped

    def spy(self, head, loop_index, value, label):
        taken.append(loop_index)
        return record_looped(self, head, loop_index, value, label)

    monkeypatch.setattr(StoreSink, "record_looped", spy)
    flow, _ = _loop_flow([(i, None, None) for i in range(5)], with_handler, is_async=True)
    with open_store(f"sqlite:///{tmp_path}/async.db") as store:
        state = flow.run(store=store)
        assert state.is_successful(), state
        assert [r.state for r in iterations(state.run_id, "walk", store=store)] == (
            ["Looped"] * 5 + ["Success"]
        )
    assert taken == ([] if with_handler else list(range(5)))


def test_a_crashed_lane_loop_resumes_at_its_last_iteration(tmp_path):
    """The rows the lane wrote are the ones a resume continues from."""
    seen = []

    @task
    def count():
        i = iterflow.context.loop_index
        seen.append(i)
        if i == 7 and len(seen) == 8:
            raise RuntimeError("the first run fails at iteration 7")
        if i < 10:
            raise LOOP(result=iterflow.context.get("loop_result", 0) + i)
        return iterflow.context.loop_result

    with Flow("lane resume") as flow:
        count()
    url = f"sqlite:///{tmp_path}/resume.db"
    first = flow.run(store=url)
    assert first.is_failed(), first
    final = flow.run(store=url, resume=first.run_id)
    assert final.is_successful(), final
    assert seen[8] == 7  # the resume starts at the iteration that did not finish
    [walked] = final.result.values()
    assert walked.result == sum(range(10))


def test_the_lane_declines_a_task_run_already_finished(tmp_path):
    with open_store(f"sqlite:///{tmp_path}/done.db") as store:
        sink = store.sink()
        lane = sink.looped_lane("t", None)
        head = ("run", "run/t", "t", "t", None, None)
        assert lane(head, 0, 1, None) is True
        assert lane(head, 1, 2, "a label") is True  # labels go in the general row
        assert lane(head, 2, [2], None) is False  # not a number: the usual way
        sink._done.add("run/t")  # its Success is recorded: no later Looped is
        assert lane(head, 2, 2, None) is False
        sink.close()


def test_no_lane_for_previews_only_or_other_serializers(tmp_path):
    with open_store(f"sqlite:///{tmp_path}/none.db") as store:
        sink = store.sink(previews_only=frozenset({"secret"}))
        assert sink.looped_lane("secret", None) is None
        assert sink.looped_lane("t", "json") is None
        assert sink.looped_lane("t", "pickle") is not None
        sink.close()


class _Declining:
    """A sink whose lane may decline (no ``lane_always_takes``)."""

    implied_running = True

    def __init__(self):
        self.taken = []
        self.events = []

    def handle(self, event):
        self.events.append(event)

    def looped_lane(self, slug, serializer):
        def lane(head, loop_index, value, label):
            if value is None:
                return False
            self.taken.append((loop_index, value))
            return True
        return lane


def test_bus_lane_asks_the_sink_that_may_decline_first(tmp_path):
    progress = ProgressDisplay(1, live=False)
    declining = _Declining()
    bus = EventBus([progress, declining])
    lane = bus.looped_lane("t", None)
    head = ("run", "run/t", "t", "t", None, None)
    progress.handle(task_run_event(*head[:5], 0, Running(loop_index=0)))  # its first state
    assert lane(head, 0, 5, None) is True
    assert declining.taken == [(0, 5)]
    assert progress._running["run/t"].loop_index == 1  # the display counted it too
    assert lane(head, 1, None, None) is False  # declined: the driver emits the event
    assert progress._running["run/t"].loop_index == 1  # ...which the display then sees
    # Two sinks that may decline: no lane at all, every state is an event.
    assert EventBus([_Declining(), _Declining()]).looped_lane("t", None) is None
    # A sink without a lane: none either.
    assert EventBus([progress, object()]).looped_lane("t", None) is None


def test_progress_and_store_both_follow_a_lane_loop(tmp_path):
    """The CLI's pair of sinks: the display counts iterations the store records."""

    @task
    def spin():
        i = iterflow.context.loop_index
        if i < 50:
            raise LOOP(result=i)
        return i

    with Flow("pair") as flow:
        spin()
    with open_store(f"sqlite:///{tmp_path}/pair.db") as store:
        state = flow.run(store=store, progress=True)
        assert state.is_successful()
        rows = iterations(state.run_id, "spin", store=store)
        assert [r.loop_index for r in rows if r.state == "Looped"] == list(range(50))
        assert rows[-1].state == "Success"


@pytest.mark.parametrize("value", [3, 2.5, True])
def test_lane_rows_keep_their_time(tmp_path, value):
    before = time.time()

    @task
    def once():
        if iterflow.context.loop_index == 0:
            raise LOOP(result=value)
        return 0

    with Flow("time") as flow:
        once()
    with open_store(f"sqlite:///{tmp_path}/t.db") as store:
        state = flow.run(store=store)
        [looped, done] = iterations(state.run_id, "once", store=store)
        assert before <= looped.time <= done.time <= time.time()
        assert looped.preview == repr(value)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.tuples(st.integers(0, 2), st.integers(-5, 5),
                                st.sampled_from([None, None, None, "lab"])), max_size=40),
       batch_size=st.sampled_from([1, 3, 500]))
def test_interleaved_lane_loops_keep_each_task_runs_iterations(tmp_path_factory, steps,
                                                                batch_size):
    # The writer makes the rows of consecutive Looped records of one task run
    # column by column: records of other task runs and labelled ones cut the spans.
    import sqlalchemy as sa

    url = f"sqlite:///{tmp_path_factory.mktemp('lanes')}/s.db"
    with open_store(url) as store:
        sink = store.sink(batch_size=batch_size)
        lane = sink.looped_lane("t", None)
        heads = [("run", f"run/t/{k}", "t", "t", k, None) for k in range(3)]
        expected: list[list[tuple]] = [[], [], []]
        for k, value, label in steps:
            index = len(expected[k])
            assert lane(heads[k], index, value, label) is True
            expected[k].append(("Looped", index, repr(value), label, value))
        sink.close()

        def query(conn):
            return conn.execute(sa.text(
                "SELECT t.map_index, s.kind, s.loop_index, s.preview, s.label, s.data, s.id "
                "FROM state_transitions s JOIN task_runs t ON s.task_run = t.id "
                "WHERE s.kind = 'Looped' ORDER BY s.id"
            )).all()

        rows = store.read(query)
    import pickle

    got: list[list[tuple]] = [[], [], []]
    for map_index, kind, index, preview, label, data, _ in rows:
        got[map_index].append((kind, index, preview, label, pickle.loads(data)))
    assert got == expected
    # Ids follow the order the iterations were handed over, across task runs.
    order = [(k, len([s for s in steps[:n] if s[0] == k])) for n, (k, *_) in enumerate(steps)]
    assert [(r[0], r[2]) for r in rows] == order
