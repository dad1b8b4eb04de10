"""Stores with big runs in them, written fast: events straight into the store's sink.

Running real flows of 100,000 iterations would take minutes; handing the same
events to :class:`~iterflow.store.StoreSink` records exactly what a run would
(the sink is the only writer), in seconds. Times are made up and evenly spaced
so durations and rates are predictable.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from iterflow.core.state import Failed, Looped, Mapped, Retrying, Running, Success
from iterflow.events import FlowRunEvent, LogEvent, TaskRunEvent
from iterflow.runids import iteration_prefix, task_run_id
from iterflow.store import RunStore

T0 = 1_700_000_000.0
STEP = 0.01  # seconds per iteration


@dataclass
class BigRun:
    """What :func:`write_big_run` wrote: the run id and where things are."""

    run_id: str
    loop_slug: str = "grind"
    block_slug: str = "epochs"
    map_slug: str = "fetch"
    failing: tuple[int, ...] = ()


def _task(sink, run_id, tid, slug, state, loop_index=0, map_index=None, block_index=None):
    sink.handle(TaskRunEvent(run_id, tid, slug, slug, map_index, loop_index, state,
                             block_index=block_index))


def write_big_run(
    store: RunStore,
    *,
    loops: int = 1000,
    block: int = 100,
    width: int = 100,
    fail_every: int = 250,
    flow_name: str = "big",
    finish: bool = True,
    run_id: str | None = None,
) -> BigRun:
    """One run: a task looping ``loops`` times (an attempt failing and retried every
    ``fail_every`` iterations, with a log line), a loop block of ``block``
    iterations (body: ``train`` then ``check``), and a map of ``width`` children."""
    run_id = run_id or uuid.uuid4().hex
    sink = store.sink(max_pending=50_000, max_batch=20_000)
    slugs = (("grind", "grind"), ("epochs", "epochs"), ("train", "train"),
             ("check", "check"), ("fetch", "fetch"))
    now = T0
    sink.handle(FlowRunEvent(run_id, flow_name, Running(timestamp=now),
                             parameters={"n": loops, "label": "demo"}, tasks=slugs,
                             source="examples/big.py:flow"))
    failing = []
    tid = task_run_id(run_id, "grind")
    _task(sink, run_id, tid, "grind", Running(loop_index=0, timestamp=now))
    for i in range(loops):
        if fail_every and i % fail_every == fail_every - 1:
            failing.append(i)
            now += STEP
            _task(sink, run_id, tid, "grind", Retrying(
                f"attempt at {i} failed", loop_index=i, timestamp=now,
                traceback="Traceback (most recent call last):\n  ValueError: flaky"), i)
            sink.handle(LogEvent(run_id, tid, "grind", None, i, 40, f"iteration {i} failed", now))
            _task(sink, run_id, tid, "grind", Running(loop_index=i, timestamp=now + STEP), i)
            now += STEP
        now += STEP * (1 + (i % 7) / 7)
        if i == loops - 1:
            _task(sink, run_id, tid, "grind", Success(result=i, loop_count=loops, timestamp=now), i)
        else:
            _task(sink, run_id, tid, "grind", Looped(result=i * 2, loop_index=i, timestamp=now), i)
        if i % 100 == 0:
            sink.handle(LogEvent(run_id, tid, "grind", None, i, 20, f"at iteration {i}", now))

    bid = task_run_id(run_id, "epochs")
    _task(sink, run_id, bid, "epochs", Running(loop_index=0, timestamp=now))
    for k in range(block):
        prefix = iteration_prefix(bid, k)
        for slug in ("train", "check"):
            body = task_run_id(prefix, slug)
            _task(sink, run_id, body, slug, Running(timestamp=now), block_index=k)
            now += STEP
            _task(sink, run_id, body, slug, Success(result=k, loop_count=1, timestamp=now),
                  block_index=k)
        if k == block - 1:
            done = Success(result=k, loop_count=block, timestamp=now)
            _task(sink, run_id, bid, "epochs", done, k)
        else:
            _task(sink, run_id, bid, "epochs", Looped(result=k, loop_index=k, timestamp=now), k)

    mid = task_run_id(run_id, "fetch")
    _task(sink, run_id, mid, "fetch", Running(timestamp=now))
    for j in range(width):
        child = task_run_id(run_id, "fetch", j)
        _task(sink, run_id, child, "fetch", Running(timestamp=now), map_index=j)
        if j % 50 == 49:
            _task(sink, run_id, child, "fetch", Failed("no page", timestamp=now + STEP,
                                                       loop_count=1), map_index=j)
        else:
            _task(sink, run_id, child, "fetch", Success(result=j, loop_count=1,
                                                        timestamp=now + STEP), map_index=j)
    now += STEP
    _task(sink, run_id, mid, "fetch", Mapped(result=[], timestamp=now))
    if finish:
        sink.handle(FlowRunEvent(run_id, flow_name, Success("done", timestamp=now)))
    sink.close()
    return BigRun(run_id, failing=tuple(failing))


def write_small_runs(store: RunStore, n: int, *, flow_name: str = "small") -> list[str]:
    """``n`` short finished runs of a one-task flow, a second apart."""
    sink = store.sink(max_pending=50_000, max_batch=20_000)
    ids = []
    for i in range(n):
        run_id = uuid.uuid4().hex
        ids.append(run_id)
        start = T0 - 100_000 + i
        sink.handle(FlowRunEvent(run_id, flow_name, Running(timestamp=start),
                                 parameters={"i": i}, tasks=(("step", "step"),)))
        tid = task_run_id(run_id, "step")
        _task(sink, run_id, tid, "step", Running(timestamp=start))
        _task(sink, run_id, tid, "step", Success(result=i, loop_count=1, timestamp=start + 0.5))
        end = start + 0.5
        state = Failed("bad", timestamp=end) if i % 10 == 3 else Success(timestamp=end)
        sink.handle(FlowRunEvent(run_id, flow_name, state))
    sink.close()
    return ids
