"""The runner's inline path: on the LocalExecutor it runs each job itself, at once.

A chain's link is a task run acted on as soon as it ends (no future, no
``executor.wait``). These tests pin what must not change with it: the order and
results of a chain, a crash outside the task, a subclass that counts its jobs,
and ``stop()`` from inside a chain, which must stop it before the next link.
"""

from __future__ import annotations

import pytest

from iterflow import Flow, task
from iterflow.engine.runner import FlowRunner
from iterflow.errors import RunCancelled
from iterflow.executors import LocalExecutor


def chain(n: int, fn) -> tuple[Flow, list]:
    step = task(fn)
    links = []
    with Flow("chain") as flow:
        last = step(0)
        links.append(last)
        for _ in range(n - 1):
            last = step(last)
            links.append(last)
    return flow, links


def test_a_chain_runs_in_order_on_the_local_executor():
    seen: list[int] = []

    def inc(x):
        seen.append(x)
        return x + 1

    flow, links = chain(50, inc)
    state = flow.run(store=None)
    assert state.is_successful()
    assert seen == list(range(50))
    assert [state.result[t].result for t in links] == list(range(1, 51))


class CountingExecutor(LocalExecutor):
    """Does not say runs_inline: it must be handed every job through submit."""

    def __init__(self) -> None:
        self.jobs = 0

    def submit(self, fn, *args, key=None, shared=None):
        self.jobs += 1
        return super().submit(fn, *args, key=key, shared=shared)


def test_a_subclass_that_does_not_say_runs_inline_still_gets_every_job():
    executor = CountingExecutor()
    flow, links = chain(20, lambda x: x + 1)
    state = flow.run(executor=executor, store=None)
    assert state.is_successful()
    assert state.result[links[-1]].result == 20
    assert executor.jobs == 20


def test_a_failing_link_fails_the_flow_and_skips_nothing_else_by_accident():
    def inc(x):
        if x == 3:
            raise ValueError("three")
        return x + 1

    flow, links = chain(6, inc)
    state = flow.run(store=None)
    assert state.is_failed()
    assert [state.result[t].name for t in links] == [
        "Success", "Success", "Success", "Failed", "TriggerFailed", "TriggerFailed",
    ]
    assert "ValueError: three" in state.result[links[3]].message


def test_stop_from_inside_a_chain_stops_it_before_the_next_link():
    ran: list[int] = []
    holder: dict[str, FlowRunner] = {}

    def inc(x):
        ran.append(x)
        if x == 2:
            holder["runner"].stop("stopped at link 2")
        return x + 1

    flow, _ = chain(6, inc)
    runner = holder["runner"] = FlowRunner(flow, LocalExecutor())
    with pytest.raises(RunCancelled, match="stopped at link 2"):
        runner.run()
    assert ran == [0, 1, 2]  # link 3 never started
