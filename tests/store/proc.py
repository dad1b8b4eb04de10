"""A separate process that records a run, for the multi-process store tests.

    python proc.py write URL RUN_ID N    record a run of N loop iterations, then exit
    python proc.py hold URL RUN_ID       start a run, loop 3 times, print "ready", sleep

Run as a script (not imported by pytest), so it uses only iterflow.
"""

from __future__ import annotations

import sys
import time

from iterflow.events import FlowRunEvent, LogEvent, TaskRunEvent
from iterflow.states import Looped, Running, Success
from iterflow.store import open_store


def main(mode: str, url: str, run_id: str, n: int = 3) -> None:
    store = open_store(url)
    sink = store.sink(batch_size=50) if mode == "write" else store.sink()
    slug = "work-1"
    task_run_id = f"{run_id}/{slug}"
    sink.handle(FlowRunEvent(run_id, "proc", Running("running"), parameters={"n": n},
                             tasks=((slug, "work"),)))
    for i in range(n):
        sink.handle(TaskRunEvent(run_id, task_run_id, slug, "work", None, i,
                                 Running(loop_index=i)))
        sink.handle(TaskRunEvent(run_id, task_run_id, slug, "work", None, i,
                                 Looped(result=[i] * 10, loop_index=i)))
        if i % 100 == 0:
            sink.handle(LogEvent(run_id, task_run_id, slug, None, i, 20, f"at {i}", time.time()))
    if mode == "hold":
        sink.flush()
        print("ready", flush=True)
        time.sleep(120)
        return
    sink.handle(TaskRunEvent(run_id, task_run_id, slug, "work", None, n,
                             Running(loop_index=n)))
    sink.handle(TaskRunEvent(run_id, task_run_id, slug, "work", None, n,
                             Success(result=n, loop_count=n + 1)))
    sink.handle(FlowRunEvent(run_id, "proc", Success("done")))
    sink.close()
    store.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], *(int(a) for a in sys.argv[4:]))
