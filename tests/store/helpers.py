"""Building synthetic event sequences for the store tests, as the runner would emit them."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa

from iterflow.events import FlowRunEvent, LogEvent, TaskRunEvent
from iterflow.states import Looped, Running, State, Success


class RunEvents:
    """Feeds one flow run's events to a sink; task run ids have the runner's shape.

    >>> run = RunEvents(sink)                       # doctest: +SKIP
    >>> run.start(parameters={"n": 3})
    >>> run.loop("acc", [1, 3, 6], final=10)        # Running/Looped x3, Running, Success
    >>> run.finish()
    """

    def __init__(self, sink: Any, run_id: str | None = None, flow_name: str = "flow") -> None:
        self.sink = sink
        self.run_id = run_id or uuid.uuid4().hex
        self.flow_name = flow_name

    def start(
        self,
        parameters: dict[str, Any] | None = None,
        tasks: tuple[tuple[str, str], ...] = (),
        resumed: bool = False,
        source: str | None = None,
    ) -> None:
        self.sink.handle(
            FlowRunEvent(
                self.run_id, self.flow_name, Running("running"),
                parameters={} if parameters is None else parameters,
                tasks=tasks, source=source, resumed=resumed,
            )
        )

    def finish(self, state: State | None = None) -> None:
        self.sink.handle(FlowRunEvent(self.run_id, self.flow_name, state or Success("done")))

    def task_run_id(
        self, slug: str, map_index: int | None = None, prefix: str | None = None
    ) -> str:
        base = f"{prefix or self.run_id}/{slug}"
        return base if map_index is None else f"{base}/{map_index}"

    def task(
        self,
        slug: str,
        state: State,
        *,
        loop_index: int = 0,
        map_index: int | None = None,
        name: str | None = None,
        sync: bool = False,
        serializer: str | None = None,
        prefix: str | None = None,
        block_index: int | None = None,
    ) -> None:
        self.sink.handle(
            TaskRunEvent(
                self.run_id, self.task_run_id(slug, map_index, prefix), slug, name or slug,
                map_index, loop_index, state, sync, serializer, block_index,
            )
        )

    def loop(
        self,
        slug: str,
        results: list[Any],
        *,
        final: Any = None,
        end: State | None = None,
        start: int = 0,
        **options: Any,
    ) -> None:
        """``Running, Looped(i)`` for each result, then ``Running`` and ``end``.

        ``end`` defaults to ``Success(result=final)``; pass another state to
        end the task run otherwise (``Failed``, say).
        """
        i = start
        for i, value in enumerate(results, start=start):
            self.task(slug, Running(loop_index=i), loop_index=i, **options)
            self.task(slug, Looped(result=value, loop_index=i), loop_index=i, **options)
        last = start + len(results)
        self.task(slug, Running(loop_index=last), loop_index=last, **options)
        if end is None:
            end = Success(result=final, loop_count=last + 1)
        self.task(slug, end, loop_index=last, **options)

    def log(self, message: str, slug: str | None = None, level: int = 20,
            loop_index: int | None = None) -> None:
        self.sink.handle(
            LogEvent(
                self.run_id, self.task_run_id(slug) if slug else None, slug, None, loop_index,
                level, message, 0.0,
            )
        )


def run_rows(store, run_id: str, *,
             data: bool = True) -> tuple[list[tuple], list[tuple], list[tuple]]:
    """A run's task runs, its state rows but Running (which batches may drop), and those.

    Task run ids lose the run id's prefix, so two runs of one flow compare equal;
    the rows are what a lane and the usual way of recording must both leave. With
    ``data=False`` a state row says only whether it holds data: a pickled exception
    carries its traceback, which differs with the path that raised it.
    """
    prefix = len(run_id)

    def query(conn):
        tasks = conn.execute(sa.text(
            "SELECT task_run_id, state, loop_count, loop_index, looped_index, message, "
            "task_run_name, result_transition IS NOT NULL, started IS NOT NULL, "
            "ended IS NOT NULL FROM task_runs WHERE flow_run_id = :r ORDER BY task_run_id"
        ), {"r": run_id}).all()
        states = conn.execute(sa.text(
            "SELECT t.task_run_id, s.kind, s.loop_index, s.block_index, s.message, s.preview, "
            "s.label, s.serializer, s.data, s.result_id IS NOT NULL "
            "FROM state_transitions s JOIN task_runs t ON s.task_run = t.id "
            "WHERE t.flow_run_id = :r"
        ), {"r": run_id}).all()
        rows = sorted((r[0][prefix:], *r[1:8],
                       (bytes(r[8]) if r[8] else None) if data else r[8] is not None, r[9])
                      for r in states)
        return ([(r[0][prefix:], *r[1:]) for r in tasks],
                [r for r in rows if r[1] != "Running"],
                [r for r in rows if r[1] == "Running"])

    return store.read(query)
