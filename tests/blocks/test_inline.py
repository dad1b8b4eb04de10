"""The LocalExecutor's inline path: same results and events as the machine path.

The property test compares both paths against a reference; these tests pin
down when the inline path is taken and how it hands an iteration over to the
machine when a task's upstream did not simply succeed.
"""

from __future__ import annotations

import iterflow
from iterflow import SKIP, Flow, loop, task
from iterflow.executors import LocalExecutor
from iterflow.runtime import run_flow
from tests.blocks.conftest import BlockSink
from tests.blocks.tasks import add, at_least


class CountingExecutor(LocalExecutor):
    """A LocalExecutor subclass: it must see every job, so no inline path for it."""

    def __init__(self) -> None:
        self.jobs = 0

    def submit(self, fn, *args, key=None, shared=None):
        self.jobs += 1
        return super().submit(fn, *args, key=key, shared=shared)


def counting_flow():
    with Flow("count") as flow, loop(initial=0) as it:
        a = add(it.result, 1)
        it.next(result=a, until=at_least(a, 4))
    return flow, it


def test_a_plain_local_executor_runs_simple_bodies_without_jobs():
    flow, it = counting_flow()
    counting = CountingExecutor()
    inline = run_flow(flow, store=None, executor=LocalExecutor())
    machine = run_flow(flow, store=None, executor=counting)
    assert inline.result[it.final].result == machine.result[it.final].result == 4
    assert counting.jobs == 4 * 2       # two task runs per iteration, one job each


def test_both_paths_emit_the_same_events():
    def events(executor):
        flow, _ = counting_flow()
        sink = BlockSink()
        state = run_flow(flow, store=None, executor=executor, sinks=[sink])
        sink.assert_ok()
        prefix = len(state.run_id)
        return sorted(
            (e.task_run_id[prefix:], e.block_index, e.loop_index, e.state.name, e.state.result)
            for e in sink.events if hasattr(e, "task_run_id") and hasattr(e, "block_index")
        )

    assert events(LocalExecutor()) == events(CountingExecutor())


def test_an_iteration_hands_over_to_the_machine_at_a_skip():
    @task
    def maybe_skip(x):
        if iterflow.context.block_index % 2:
            raise SKIP("odd iteration")
        return x

    @task(skip_on_upstream_skip=False)
    def keep(total, extra):
        return total + (0 if extra is None else extra)

    with Flow("skips") as flow, loop(initial=0) as it:
        s = maybe_skip(10)
        after_skip = add(s, 1)                 # skipped with it on odd iterations
        total = keep(it.result, after_skip)
        it.next(result=total, until=at_least(it.index, 3))
    sink = BlockSink()
    state = run_flow(flow, store=None, executor=LocalExecutor(), sinks=[sink])
    sink.assert_ok()
    assert state.result[it.final].result == 11 + 0 + 11 + 0
    assert [e.state.name for e in sink.finals(after_skip.slug)] == [
        "Success", "Skipped", "Success", "Skipped",
    ]
    # the first task of each iteration ran once: nothing is run twice by the hand-over
    assert len(sink.finals(s.slug)) == 4


def test_the_executor_says_whether_it_runs_jobs_inline():
    from iterflow.executors import ThreadExecutor

    class OptedIn(LocalExecutor):
        runs_inline = True

    assert LocalExecutor().runs_inline is True
    assert CountingExecutor().runs_inline is False  # a subclass must see its jobs...
    assert OptedIn().runs_inline is True  # ...unless it says otherwise
    assert ThreadExecutor().runs_inline is False


def test_a_subclass_that_opts_in_runs_simple_bodies_inline():
    class OptedIn(CountingExecutor):
        runs_inline = True

    flow, it = counting_flow()
    opted = OptedIn()
    assert run_flow(flow, store=None, executor=opted).result[it.final].result == 4
    assert opted.jobs == 0


def test_a_body_task_sees_the_same_context_on_every_path():
    # The inline path calls a plain body task itself, filling its context keys as the
    # loop driver does: the task must not be able to tell which path ran it.
    def contexts(executor, **options):
        seen = []

        @task(name="look", **options)
        def look(x):
            ctx = iterflow.context.to_dict()
            seen.append({
                key: value for key, value in ctx.items()
                if key not in ("logger", "flow_run_id", "task_run_id", "_iterflow_cancel")
            } | {"keys": sorted(ctx)})
            return x + 1

        with Flow("look") as flow, loop(initial=0) as it:
            a = look(it.result)
            it.next(result=a, until=at_least(a, 3))
        assert run_flow(flow, store=None, executor=executor).is_successful()
        return seen

    plain = contexts(LocalExecutor())
    assert len(plain) == 3
    assert plain == contexts(CountingExecutor())                 # the machine's jobs
    assert plain == contexts(LocalExecutor(), timeout=60)        # inline, through drive
