"""The flow runner: retries, timeouts, triggers, skips, handlers, errors, the flow's state."""

from __future__ import annotations

import datetime
import itertools
import time

import pytest

import iterflow
from iterflow import Flow, task, triggers
from iterflow.engine.runner import FlowRunner, task_run_id
from iterflow.executors import LocalExecutor, ThreadExecutor
from iterflow.signals import LOOP, SKIP
from iterflow.states import Failed, Mapped, Running, Skipped, Success, TimedOut, TriggerFailed


@task
def ok():
    return "ok"


@task
def boom():
    raise ValueError("boom")


@task
def passthrough(x=None):
    return x


def flaky(failures: int, **options):
    """A task that fails its first ``failures`` attempts, then returns how many it took."""
    calls = []

    def fn():
        calls.append(time.monotonic())
        if len(calls) <= failures:
            raise OSError(f"attempt {len(calls)} failed")
        return len(calls)

    return task(fn, name="flaky", **options), calls


# -- retries -------------------------------------------------------------------------
def test_retries_until_success(run, sink):
    flaky_task, calls = flaky(2, max_retries=2)
    with Flow("retries") as flow:
        t = flaky_task()
    state = run(flow).result[t]
    assert state.is_successful() and state.result == 3 and len(calls) == 3
    names = [s.name for s in sink.task_states("flaky")]
    assert names == ["Running", "Retrying", "Running", "Retrying", "Running", "Success"]
    retrying = [s for s in sink.task_states("flaky") if s.is_retrying()]
    assert [r.run_count for r in retrying] == [1, 2]
    assert "OSError: attempt 1 failed" in retrying[0].message


def test_retries_exhausted_fail_with_the_last_error(run):
    flaky_task, calls = flaky(5, max_retries=2)
    with Flow("exhausted") as flow:
        t = flaky_task()
    state = run(flow).result[t]
    assert isinstance(state, Failed) and len(calls) == 3
    assert "attempt 3 failed" in state.message


@pytest.mark.parametrize("delay", [0.15, datetime.timedelta(seconds=0.15)])
def test_retry_delay_waits_between_attempts(run, delay):
    flaky_task, calls = flaky(2, max_retries=2, retry_delay=delay)
    with Flow("delay") as flow:
        t = flaky_task()
    assert run(flow).result[t].is_successful()
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    assert all(gap >= 0.14 for gap in gaps), gaps


def test_task_run_count_counts_attempts(run):
    seen = []

    @task(max_retries=2)
    def count():
        seen.append(iterflow.context.task_run_count)
        if len(seen) < 3:
            raise OSError

    with Flow("count") as flow:
        count()
    run(flow)
    assert seen == [1, 2, 3]


# -- timeouts ------------------------------------------------------------------------
def test_a_hung_task_times_out_without_hanging_the_flow(run, release):
    @task(timeout=0.5)
    def hang():
        release.wait(30)  # stands in for time.sleep(30); released when the test ends

    with Flow("hung") as flow:
        h = hang()
        after = passthrough.copy(trigger=triggers.always_run)(h)
    started = time.monotonic()
    state = run(flow)
    assert time.monotonic() - started < 5
    assert isinstance(state.result[h], TimedOut)
    assert state.result[h].is_failed()
    assert "timeout of 0.5 s" in state.result[h].message
    assert state.result[after].is_successful()
    assert state.is_failed() is False or state.result[after].is_successful()


def test_a_sleeping_task_times_out(run):
    @task(timeout=0.2)
    def sleepy():
        time.sleep(6)  # left on its daemon thread; far longer than the run may take

    with Flow("sleepy") as flow:
        s = sleepy()
    started = time.monotonic()
    assert isinstance(run(flow).result[s], TimedOut)
    assert time.monotonic() - started < 5  # the 6 s sleep was not waited for


def test_a_timeout_is_retried_like_an_error(run, release):
    attempts = []

    @task(timeout=0.2, max_retries=1)
    def slow_first():
        attempts.append(1)
        if len(attempts) == 1:
            release.wait(30)
        return "second"

    with Flow("retry timeout") as flow:
        s = slow_first()
    assert run(flow).result[s].result == "second"


def test_a_hung_task_on_threads_does_not_hang_the_flow(run, release):
    @task(timeout=0.3)
    def hang():
        release.wait(30)

    with Flow("hung threads") as flow:
        h = hang()
        o = ok()
    state = run(flow, executor=ThreadExecutor(2))
    assert isinstance(state.result[h], TimedOut) and state.result[o].is_successful()


# -- triggers ------------------------------------------------------------------------
def trigger_flow(trigger, outcomes):
    with Flow(f"trigger {trigger.__name__}") as flow:
        ups = [ok() if good else boom() for good in outcomes]
        target = passthrough.copy(trigger=trigger, name="target")(upstream_tasks=ups)
    return flow, target


@pytest.mark.parametrize(
    "trigger, outcomes, runs",
    [
        (triggers.all_successful, [True, True], True),
        (triggers.all_successful, [True, False], False),
        (triggers.all_failed, [False, False], True),
        (triggers.all_failed, [True, False], False),
        (triggers.any_successful, [True, False], True),
        (triggers.any_successful, [False, False], False),
        (triggers.any_failed, [True, False], True),
        (triggers.any_failed, [True, True], False),
        (triggers.all_finished, [True, False], True),
        (triggers.all_finished, [False, False], True),
        (triggers.always_run, [False], True),
    ],
)
def test_every_trigger(run, trigger, outcomes, runs):
    flow, target = trigger_flow(trigger, outcomes)
    state = run(flow).result[target]
    if runs:
        assert isinstance(state, Success)
    else:
        assert isinstance(state, TriggerFailed)
        assert state.loop_count == 0


def test_trigger_failed_names_the_upstream_states(run):
    flow, target = trigger_flow(triggers.all_successful, [True, False])
    state = run(flow).result[target]
    assert "all_successful" in state.message and "'target'" in state.message
    assert "boom: Failed" in state.message
    flow, target = trigger_flow(triggers.all_failed, [True, False])
    assert "ok: Success" in run(flow).result[target].message


def test_a_trigger_failure_propagates_as_trigger_failed(run):
    with Flow("chain") as flow:
        b = boom()
        c = passthrough(b)
        d = passthrough(c)
    state = run(flow)
    assert isinstance(state.result[c], TriggerFailed)
    assert isinstance(state.result[d], TriggerFailed)
    assert "passthrough: TriggerFailed" in state.result[d].message


def test_a_custom_trigger_gets_upstream_tasks_and_their_states(run):
    seen = {}

    def only_if_ok_named(upstream):
        seen.update({t.name: s.name for t, s in upstream.items()})
        return all(t.name == "ok" for t in upstream)

    with Flow("custom trigger") as flow:
        a, b = ok(), boom()
        runs = passthrough.copy(trigger=only_if_ok_named)(upstream_tasks=[a])
        refused = passthrough.copy(trigger=only_if_ok_named)(upstream_tasks=[a, b])
    state = run(flow)
    assert state.result[runs].is_successful()
    assert isinstance(state.result[refused], TriggerFailed)
    assert "only_if_ok_named" in state.result[refused].message
    assert seen == {"ok": "Success", "boom": "Failed"}


# -- skips ---------------------------------------------------------------------------
@task
def skipper():
    raise SKIP("not today")


def test_skip_propagates_downstream(run):
    with Flow("skip") as flow:
        s = skipper()
        a = passthrough(s)
        b = passthrough(a)
    state = run(flow)
    assert isinstance(state.result[s], Skipped) and state.result[s].message == "not today"
    assert isinstance(state.result[a], Skipped) and isinstance(state.result[b], Skipped)
    assert "upstream task skipped: skipper" in state.result[a].message
    assert state.is_successful()  # skipped terminal tasks are fine


def test_skip_on_upstream_skip_false_runs_with_the_skipped_result(run):
    with Flow("no skip") as flow:
        s = skipper()
        a = passthrough.copy(skip_on_upstream_skip=False)(s)
        b = passthrough(a)
    state = run(flow)
    assert isinstance(state.result[a], Success) and state.result[a].result is None
    assert isinstance(state.result[b], Success)


def test_a_skipped_upstream_counts_as_successful_for_triggers(run):
    with Flow("skip trigger") as flow:
        s = skipper()
        a = passthrough.copy(skip_on_upstream_skip=False, trigger=triggers.all_successful)(s)
        f = passthrough.copy(skip_on_upstream_skip=False, trigger=triggers.any_failed)(s)
    state = run(flow)
    assert state.result[a].is_successful()
    assert isinstance(state.result[f], TriggerFailed)


# -- state handlers ------------------------------------------------------------------
def test_task_state_handlers_see_every_move_and_may_replace_the_state(run):
    seen = []

    def record(t, old, new):
        seen.append((t.name, old.name, new.name))

    def rescue(t, old, new):
        if new.is_failed():
            return Success("rescued", result="fallback")
        return new

    with Flow("handlers") as flow:
        b = boom.copy(state_handlers=[record, rescue])()
    state = run(flow)
    assert seen == [("boom", "Pending", "Running"), ("boom", "Running", "Failed")]
    assert state.result[b].result == "fallback" and state.result[b].message == "rescued"
    assert state.is_successful()


def test_handlers_run_in_order_each_seeing_the_previous_ones_state(run):
    seen = []

    def first(t, old, new):
        return Success(result="from first") if new.is_finished() else new

    def second(t, old, new):
        seen.append(new.result)
        return new

    with Flow("order") as flow:
        o = ok.copy(state_handlers=[first, second])()
    assert run(flow).result[o].result == "from first"
    assert seen[-1] == "from first"


def test_a_handler_returning_an_illegal_state_fails_the_task_run(run):
    def backwards(t, old, new):
        return Running() if new.is_finished() else new

    with Flow("illegal") as flow:
        o = ok.copy(state_handlers=[backwards])()
    state = run(flow).result[o]
    assert isinstance(state, Failed)
    assert "backwards" in state.message and "cannot move from Running to Running" in state.message


def test_a_handler_that_raises_fails_the_task_run(run):
    def broken(t, old, new):
        raise RuntimeError("handler bug")

    with Flow("broken handler") as flow:
        o = ok.copy(state_handlers=[broken])()
    state = run(flow).result[o]
    assert isinstance(state, Failed) and "handler bug" in state.message


def test_flow_state_handlers_see_the_flows_moves_and_may_replace_them(run, sink):
    seen = []

    def record(flow, old, new):
        seen.append((flow.name, old.name, new.name))

    def fail_it(flow, old, new):
        if new.is_finished():
            return Failed("overruled")
        return new

    with Flow("flow handlers", state_handlers=[record, fail_it]) as flow:
        ok()
    state = run(flow)
    assert seen == [("flow handlers", "Pending", "Running"),
                    ("flow handlers", "Running", "Success")]
    assert isinstance(state, Failed) and state.message == "overruled"
    (events,) = sink.flow_runs.values()
    assert [e.state.name for e in events] == ["Running", "Failed"]


def test_a_flow_handler_can_end_the_run_before_it_starts(sink):
    ran = []
    seen = []

    def cancel(flow, old, new):
        seen.append((old.name, new.name))
        return Skipped("not now") if new.is_running() else new

    with Flow("early end", state_handlers=[cancel]) as flow:
        task(lambda: ran.append(1), name="never")()
    state = iterflow.runtime.run_flow(flow, store=None, sinks=[sink])
    assert isinstance(state, Skipped) and state.message == "not now"
    assert ran == [] and state.result == {}
    assert seen == [("Pending", "Running")]
    (events,) = sink.flow_runs.values()
    assert [e.state.name for e in events] == ["Skipped"]


# -- errors and the flow's state ---------------------------------------------------------
def test_every_exception_is_kept_with_its_traceback(run):
    with Flow("errors") as flow:
        b = boom()
    state = run(flow).result[b]
    assert isinstance(state, Failed)
    assert isinstance(state.result, ValueError) and str(state.result) == "boom"
    assert "Traceback (most recent call last)" in state.traceback
    assert 'raise ValueError("boom")' in state.traceback
    assert state.message == "task 'boom' in flow 'errors', iteration 0, failed: ValueError: boom"


@pytest.mark.parametrize(
    "terminal_outcomes, successful",
    [
        (["ok", "ok"], True),
        (["ok", "skip"], True),
        (["ok", "boom"], False),
        (["skip", "skip"], True),
    ],
)
def test_flow_is_successful_iff_every_terminal_task_succeeded_or_skipped(
    run, terminal_outcomes, successful
):
    makers = {"ok": ok, "boom": boom, "skip": skipper}
    with Flow("terminal") as flow:
        for outcome in terminal_outcomes:
            makers[outcome]()
    state = run(flow)
    assert state.is_successful() is successful
    assert isinstance(state, Success if successful else Failed)


def test_a_failed_inner_task_does_not_fail_the_flow_when_the_terminal_task_succeeds(run):
    with Flow("inner failure") as flow:
        b = boom()
        passthrough.copy(trigger=triggers.always_run)(b)
    state = run(flow)
    assert state.result[b].is_failed()
    assert isinstance(state, Success)


def test_a_failed_mapped_child_fails_the_flow_when_the_mapped_task_is_terminal(run):
    @task
    def maybe(x):
        if x == 2:
            raise ValueError(x)
        return x

    with Flow("terminal map") as flow:
        m = maybe.map([1, 2, 3])
    state = run(flow)
    assert isinstance(state.result[m], Mapped)
    assert state.is_failed()
    assert "maybe (Mapped)" in state.message


def test_failed_flow_message_names_the_failed_terminal_tasks(run):
    with Flow("named") as flow:
        boom()
        ok()
    state = run(flow)
    assert "boom (Failed)" in state.message and "ok" not in state.message.split(":", 1)[1]


# -- executor failures -----------------------------------------------------------------
class RefusingExecutor(LocalExecutor):
    def submit(self, fn, *args, key=None, shared=None):
        raise RuntimeError("no room")


def test_a_job_that_cannot_be_sent_fails_its_task_run(run):
    with Flow("refused") as flow:
        o = ok()
    state = run(flow, executor=RefusingExecutor())
    assert isinstance(state.result[o], Failed)
    assert "could not be sent" in state.result[o].message
    assert "RuntimeError: no room" in state.result[o].message


class CrashingExecutor(LocalExecutor):
    def submit(self, fn, *args, key=None, shared=None):
        from concurrent.futures import Future

        future = Future()
        future.set_exception(ConnectionError("worker lost"))
        return future


def test_a_job_that_crashes_outside_the_task_fails_its_task_run(run):
    with Flow("crashed") as flow:
        o = ok()
    state = run(flow, executor=CrashingExecutor())
    assert isinstance(state.result[o], Failed)
    assert "did not finish" in state.result[o].message and "worker lost" in state.result[o].message


def test_ctrl_c_cancels_the_run_at_the_current_iteration_and_is_re_raised(sink):
    @task
    def interrupt():
        if iterflow.context.loop_index < 2:
            raise LOOP()
        raise KeyboardInterrupt

    with Flow("interrupted") as flow:
        i = interrupt()
        passthrough(i)
    with pytest.raises(KeyboardInterrupt):
        iterflow.runtime.run_flow(flow, store=None, sinks=[sink])
    (events,) = sink.flow_runs.values()
    assert [e.state.name for e in events] == ["Running", "Cancelled"]
    assert [s.name for s in sink.task_states("interrupt")] == [
        "Running", "Looped", "Running", "Looped", "Running", "Cancelled"
    ]
    assert sink.task_states("passthrough") == []  # never started


def test_runner_can_be_driven_directly():
    with Flow("direct") as flow:
        a = ok()
        b = passthrough(a)
    runner = FlowRunner(flow, LocalExecutor(), run_id="fixed-id")
    state = runner.run()
    assert state.run_id == "fixed-id"
    assert state.result[b].result == "ok"
    assert task_run_id("r", "slug", None) == "r/slug"
    assert task_run_id("r", "slug", 3) == "r/slug/3"


def test_each_run_gets_a_new_run_id(run):
    with Flow("ids") as flow:
        ok()
    assert run(flow).run_id != run(flow).run_id
