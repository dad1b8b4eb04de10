"""Property test of the writer: whatever the interleaving and the batch boundaries, the
store reads back exactly the events a reference model keeps.

Random task runs (plain, mapped children, inside a loop block; some loop, some retry an
iteration, some fail, some carry values the store keeps in other shapes: None, text, a
JSON serializer, a value big enough for a file) are interleaved with log lines across
one or two flow runs, and fed to a sink whose batches are a few events long, so rows of
every shape meet in one batch, keys are looked up and dropped, and ids run across
batches. The reference is what the module docstring of writer.py promises to record.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iterflow.states import Failed, Looped, Retrying, Running, Success
from iterflow.store import open_store
from iterflow.store.results import FILE_THRESHOLD

from .helpers import RunEvents

BIG = "b" * (FILE_THRESHOLD + 1)
VALUES = st.one_of(
    st.integers(-10**6, 10**6), st.text(max_size=8), st.none(),
    st.lists(st.integers(0, 9), max_size=4), st.just(BIG),
)


@dataclass
class Plan:
    """One task run: its iterations' values, a retried iteration, how it ends."""

    slug: str
    map_index: int | None
    block_index: int | None
    values: list[Any]
    retry_at: int | None
    fails: bool
    final: Any
    serializer: str | None
    events: list[tuple[str, Any]] = field(default_factory=list)


@st.composite
def plans(draw) -> list[Plan]:
    count = draw(st.integers(1, 5))
    out = []
    for n in range(count):
        shape = draw(st.sampled_from(["plain", "mapped", "block"]))
        values = draw(st.lists(VALUES, max_size=12))
        serializer = draw(st.sampled_from([None, "json"]))  # every VALUE is JSON too
        out.append(Plan(
            slug=f"t{n}",
            map_index=draw(st.integers(0, 3)) if shape == "mapped" else None,
            block_index=draw(st.integers(0, 3)) if shape == "block" else None,
            values=values,
            retry_at=draw(st.none() | st.integers(0, len(values))),
            fails=draw(st.booleans()),
            final=draw(VALUES),
            serializer=serializer,
        ))
    return out


def expected_history(plan: Plan) -> list[tuple[str, int, Any]]:
    """What iterations() must give: Looped, Retrying and the end, with their values."""
    rows: list[tuple[str, int, Any]] = []
    for i, value in enumerate(plan.values):
        if plan.retry_at == i:
            rows.append(("Retrying", i, None))
        rows.append(("Looped", i, value))
    last = len(plan.values)
    if plan.retry_at == last:
        rows.append(("Retrying", last, None))
    rows.append(("Failed", last, None) if plan.fails else ("Success", last, plan.final))
    return rows


def feed(run: RunEvents, plan: Plan) -> list[tuple[str, dict[str, Any]]]:
    """The calls to ``run.task`` for ``plan``, in order (not made yet)."""
    opts: dict[str, Any] = {"map_index": plan.map_index, "serializer": plan.serializer}
    if plan.block_index is not None:
        opts["prefix"] = f"{run.run_id}/block/{plan.block_index}"
        opts["block_index"] = plan.block_index
    calls = []
    for i, value in enumerate(plan.values):
        calls.append((Running(loop_index=i), i))
        if plan.retry_at == i:
            calls.append((Retrying("again", loop_index=i), i))
            calls.append((Running(loop_index=i), i))
        calls.append((Looped(result=value, loop_index=i), i))
    last = len(plan.values)
    calls.append((Running(loop_index=last), last))
    if plan.retry_at == last:
        calls.append((Retrying("again", loop_index=last), last))
        calls.append((Running(loop_index=last), last))
    end = (Failed("it broke", loop_count=last + 1) if plan.fails
           else Success(result=plan.final, loop_count=last + 1))
    calls.append((end, last))
    return [(plan.slug, {"state": s, "loop_index": i, **opts}) for s, i in calls]


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(plans(), st.integers(1, 12), st.randoms(use_true_random=False), st.booleans())
def test_the_store_reads_back_what_was_sent(tmp_path_factory, runs_plans, batch_size, rnd,
                                            two_runs):
    home = tmp_path_factory.mktemp("home")
    store = open_store(f"sqlite:///{home / 'store.db'}", home=home)
    sink = store.sink(batch_size=batch_size, batch_interval=0.005)
    try:
        runs = [RunEvents(sink)] + ([RunEvents(sink)] if two_runs else [])
        for run in runs:
            run.start(parameters={"n": len(runs_plans)})
        # Interleave every task run's calls (each in its own order) and log lines.
        queues = []
        for k, plan in enumerate(runs_plans):
            run = runs[k % len(runs)]
            queues.append((run, plan, feed(run, plan)))
        logs: dict[str, list[str]] = {run.run_id: [] for run in runs}
        while any(calls for _, _, calls in queues):
            run, plan, calls = rnd.choice([q for q in queues if q[2]])
            slug, call = calls.pop(0)
            run.task(slug, call.pop("state"), **call)
            if rnd.random() < 0.2:
                message = f"line {sum(map(len, logs.values()))}"
                run.log(message)
                logs[run.run_id].append(message)
        for run in runs:
            run.finish()
        sink.flush()

        for k, plan in enumerate(runs_plans):
            run = runs[k % len(runs)]
            got = [
                (h.state, h.loop_index,
                 store.load_result(h.result_id) if h.result_id is not None else None)
                for h in store.iterations(run.run_id, plan.slug, plan.map_index)
                if plan.block_index is None or h.block_index == plan.block_index
            ]
            want = expected_history(plan)
            # Failures keep their message, not a value.
            assert [(s, i) for s, i, _ in got] == [(s, i) for s, i, _ in want]
            for (state, _, value), (_, _, expected) in zip(got, want, strict=True):
                if state in ("Looped", "Success"):
                    assert value == expected
            (info,) = [
                t for t in store.task_runs(run.run_id)
                if (t.task_slug, t.map_index, t.block_index)
                == (plan.slug, plan.map_index, plan.block_index)
            ]
            assert info.state == ("Failed" if plan.fails else "Success")
            assert info.loop_count == len(plan.values) + 1
        for run in runs:
            assert [e.message for e in store.logs(run.run_id)] == logs[run.run_id]
        # Nothing kept after the runs.
        assert not sink._batches._task_keys and not sink._batches._run_keys
    finally:
        sink.close()
        store.close()
