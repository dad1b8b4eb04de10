"""run_plain, the runner's short way for the usual task run, does what run_task_run does.

Each task below is run both ways on the same inputs and base context: the final
state, every context a call of the task saw (keys, their order and values) and
what it returned or raised must be the same.
"""

from __future__ import annotations

import threading

import pytest

import iterflow
from iterflow import Flow, task
from iterflow.engine.expand import TaskRunSpec, plain_context, run_plain, run_task_run
from iterflow.engine.tasklog import TaskLogger, task_logger
from iterflow.errors import RunCancelled
from iterflow.events import TaskRunEvent
from iterflow.executors import LocalExecutor
from iterflow.naming import LABEL_KEY
from iterflow.signals import FAIL, LOOP, RETRY, SKIP, SUCCESS


def returns(x):
    return x + 1


def raises(x):
    raise ValueError(f"bad {x}")


def loops(x):
    i = iterflow.context.loop_index
    if i < 3:
        iterflow.set_iteration_label(f"step {i}")
        raise LOOP(result=iterflow.context.get("loop_result", x) + i)
    return iterflow.context.loop_result


def labels_then_fails(x):
    iterflow.set_iteration_label("before the error")
    raise RuntimeError("after a label")


def retries_once(x):
    if iterflow.context.task_run_count == 1:
        raise RETRY("again")
    return x


def skips(x):
    raise SKIP("not today")


def fails(x):
    raise FAIL("on purpose")


def succeeds(x):
    raise SUCCESS("early", result=x * 2)


def errs_then_succeeds(x):
    if iterflow.context.task_run_count == 1:
        raise KeyError(x)
    return x


CASES = [
    (returns, {}),
    (raises, {}),
    (loops, {}),
    (labels_then_fails, {}),
    (labels_then_fails, {"max_retries": 1}),  # the retry sees the label, both ways
    (retries_once, {}),
    (skips, {}),
    (fails, {}),
    (succeeds, {}),
    (errs_then_succeeds, {"max_retries": 1}),
    (loops, {"max_loops": 2}),
]

# A flow run's base context, and one started inside a task: that task's keys come along.
PLAIN_BASE = {"flow_name": "f", "flow_run_id": "run", "parameters": {}}
INNER_BASE = {
    **PLAIN_BASE,
    "loop_result": 5, "task_loop_result": 5, LABEL_KEY: "outer", "task_name": "outer",
}


def seen_by(fn):
    """``fn`` wrapped to keep a copy of every context it ran in."""
    contexts = []

    def wrapper(x):
        ctx = iterflow.context.to_dict()
        ctx["logger"] = type(ctx["logger"])  # a new logger per task run either way
        ctx["_iterflow_cancel"] = type(ctx["_iterflow_cancel"])  # each way's own flag
        contexts.append(list(ctx.items()))
        return fn(x)

    wrapper.__name__ = fn.__name__
    return wrapper, contexts


def make_spec(t, cancel, map_index, base):
    return TaskRunSpec(t, map_index, "run", "run/t", {"x": 1}, dict(base), cancel=cancel)


def both_ways(fn, options, map_index=None, cancelled=False, base=PLAIN_BASE):
    results = []
    for way in ("run_task_run", "run_plain"):
        wrapped, contexts = seen_by(fn)
        t = task(wrapped, name="t", **options)
        t.slug = "t"
        cancel = threading.Event()
        if cancelled:
            cancel.set()
        if way == "run_task_run":
            state = run_task_run(make_spec(t, cancel, map_index, base))
        else:
            state = run_plain(
                t, {"x": 1}, plain_context(dict(base)), "run/t", map_index, cancel, None, None,
                lambda inline, t=t, cancel=cancel: make_spec(t, cancel, map_index, base),
            )
        results.append((state, contexts))
    return results


def summary(state):
    return (type(state).__name__, state.message, repr(state.result), state.loop_count)


@pytest.mark.parametrize(("fn", "options"), CASES, ids=lambda v: getattr(v, "__name__", ""))
@pytest.mark.parametrize(("map_index", "base"), [(None, PLAIN_BASE), (3, INNER_BASE)])
def test_run_plain_gives_the_state_and_contexts_run_task_run_gives(fn, options, map_index, base):
    (usual, usual_contexts), (plain, plain_contexts) = both_ways(fn, options, map_index, base=base)
    assert summary(plain) == summary(usual)
    assert plain_contexts == usual_contexts
    assert (plain.traceback is None) == (usual.traceback is None)
    if usual.traceback is not None:  # the user's frames, the same; the engine's may differ
        assert usual.traceback.splitlines()[-3:] == plain.traceback.splitlines()[-3:]


def test_a_cancelled_run_stops_run_plain_before_the_call_as_it_stops_the_driver():
    (usual, usual_contexts), (plain, plain_contexts) = both_ways(returns, {}, cancelled=True)
    assert summary(plain) == summary(usual) == (
        "Cancelled", "cancelled before this iteration started", "None", 0,
    )
    assert plain_contexts == usual_contexts == []


@pytest.mark.parametrize("not_plain", [
    task(returns, timeout=5),
    task(returns, log_stdout=True),
    task(returns, task_run_name="r-{x}"),
    task(returns, state_handlers=[lambda t, old, new: new]),
    task(returns).copy(run=lambda x: x),
], ids=["timeout", "log_stdout", "task_run_name", "state_handlers", "run"])
def test_run_plain_leaves_other_tasks_alone(not_plain):
    called = []
    state = run_plain(not_plain, {"x": 1}, plain_context(dict(PLAIN_BASE)), "run/t", None,
                      None, None, None, lambda *args: called.append(args))
    assert state is None and not called
    assert iterflow.context.to_dict() == {}


class CountingExecutor(LocalExecutor):
    """Not runs_inline (a subclass): every task run goes the usual way, as a job."""

    runs_inline = False


@pytest.mark.parametrize(("fn", "options"), CASES, ids=lambda v: getattr(v, "__name__", ""))
def test_a_flow_of_plain_tasks_ends_as_it_does_through_jobs(fn, options):
    def run(executor):
        seen = []

        @task
        def first():
            seen.append(iterflow.context.to_dict())
            return 1

        step = task(fn, **options)
        with Flow("plain") as flow:
            last = step(first())
        state = flow.run(store=None, executor=executor)
        return summary(state.result[last]), [sorted(c) for c in seen]

    assert run(LocalExecutor()) == run(CountingExecutor())


@pytest.mark.parametrize("stop", [KeyboardInterrupt, RunCancelled])
def test_a_stop_inside_the_call_goes_through_run_plain_as_through_the_driver(stop):
    def stopped(x):
        raise stop("stop")

    for way in ("run_task_run", "run_plain"):
        t = task(stopped, name="t")
        t.slug = "t"
        with pytest.raises(stop):
            if way == "run_task_run":
                run_task_run(make_spec(t, None, None, PLAIN_BASE))
            else:
                run_plain(t, {"x": 1}, plain_context(dict(PLAIN_BASE)), "run/t", None, None,
                          None, None, lambda inline, t=t: make_spec(t, None, None, PLAIN_BASE))
        assert iterflow.context.to_dict() == {}  # the context variable was reset


class Recorder:
    """A sink that writes down each task state it is given: (kind, iteration, label, result).

    With ``lane`` it offers a task lane (see ``transitions.task_lane``), which
    takes a plain Running and Success as values, or declines them all
    (``decline``): what it writes down must not tell the ways apart.
    """

    def __init__(self, lane=False, decline=False):
        self.seen = []
        self.heads = set()
        self.lane = lane
        self.decline = decline

    def handle(self, event):
        if isinstance(event, TaskRunEvent):
            state = event.state
            self.seen.append((state.kind.value, event.loop_index, event.label,
                              repr(state.result) if state.kind.value in ("Success", "Looped")
                              else None, state.message))

    def task_lane(self, slug, serializer):
        return (self.started, self.succeeded, None) if self.lane else None

    def started(self, head, loop_index, block_index):
        if self.decline:
            return False
        self.heads.add(head)
        self.seen.append(("Running", loop_index, None, None, None))
        return True

    def succeeded(self, head, loop_index, block_index, value, label):
        if self.decline:
            return False
        self.heads.add(head)
        self.seen.append(("Success", loop_index, label, repr(value), None))
        return True


def run_with(fn, options, way, sink, map_index):
    t = task(fn, name="t", **options)
    t.slug = "t"
    cancel = threading.Event()
    if way == "run_task_run":
        return run_task_run(make_spec(t, cancel, map_index, PLAIN_BASE), sink.handle)
    lane = sink.task_lane("t", None)
    return run_plain(
        t, {"x": 1}, plain_context(dict(PLAIN_BASE)), "run/t", map_index, cancel, sink.handle, lane,
        lambda inline: make_spec(t, cancel, map_index, PLAIN_BASE),
    )


def labels_and_returns(x):
    iterflow.set_iteration_label("done")
    return x


@pytest.mark.parametrize(("fn", "options"), [*CASES, (labels_and_returns, {})],
                         ids=lambda v: getattr(v, "__name__", ""))
@pytest.mark.parametrize("map_index", [None, 2])
def test_a_task_lane_records_what_the_events_record(fn, options, map_index):
    usual = Recorder()
    usual_state = run_with(fn, options, "run_task_run", usual, map_index)
    assert usual.seen and usual.seen[0][0] == "Running"
    for way in ("run_task_run", "run_plain"):
        for decline in (False, True):
            sink = Recorder(lane=True, decline=decline)
            state = run_with(fn, options, way, sink, map_index)
            assert summary(state) == summary(usual_state), (way, decline)
            assert sink.seen == usual.seen, (way, decline)
            # The lane is told which task run: the looped lane's head.
            assert sink.heads <= {("run", "run/t", "t", "t", map_index, None)}


def loops_then_fails(x):
    if iterflow.context.loop_index == 0:
        raise LOOP(result=b"a loop result")
    raise ValueError("at the second iteration")


def test_an_error_of_a_later_iteration_is_not_chained_to_the_first_iterations_loop():
    (usual, _), (plain, _) = both_ways(loops_then_fails, {})
    assert summary(plain) == summary(usual)
    assert isinstance(plain.result, ValueError)
    # Not raised while run_plain handled the LOOP: it would carry that LOOP (and its
    # result) in every traceback and pickle of it.
    assert plain.result.__context__ is None and usual.result.__context__ is None
    assert "LOOP" not in plain.traceback


@pytest.mark.parametrize("stop", [KeyboardInterrupt, RunCancelled])
def test_a_stop_inside_the_call_is_recorded_through_a_task_lane_as_through_events(stop):
    def stopped(x):
        raise stop("stop")

    seen = []
    for way, sink in (("run_task_run", Recorder()), ("run_task_run", Recorder(lane=True)),
                      ("run_plain", Recorder(lane=True))):
        with pytest.raises(stop):
            run_with(stopped, {}, way, sink, None)
        seen.append(sink.seen)
    assert seen[0][-1][0] == "Cancelled"
    assert seen[0] == seen[1] == seen[2]


def test_task_logger_is_made_as_the_class_makes_it():
    ctx, emit = {"flow_run_id": "run"}, print
    made = task_logger(ctx, emit)
    assert type(made) is TaskLogger
    assert vars(made) == vars(TaskLogger(ctx, emit))
    assert made._ctx is ctx and made._emit is emit

