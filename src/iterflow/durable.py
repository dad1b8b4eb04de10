"""``iterflow.sleep(seconds)``: a wait inside a task that survives the process.

Before waiting, the wake-up time is recorded with the task run and the
iteration (a log line through the run's sinks: the store keeps it with the
task run, ``iterflow logs`` and ``iterflow show`` show it). When the run is
resumed after a crash, the iteration runs again and reaches the same
``iterflow.sleep`` call: it finds the recorded wake-up time and waits only what
is left of it, or not at all once that time has passed. A cancelled run
(Ctrl-C, SIGTERM, the runner's cancel flag) stops waiting at once.

>>> import iterflow
>>> @iterflow.task
... def poll():
...     if not job_done():                      # doctest: +SKIP
...         iterflow.sleep(300)                 # check again in 5 minutes
...         raise iterflow.LOOP()
"""

from __future__ import annotations

import re
import time
from datetime import datetime
from typing import Any

from iterflow.context import current
from iterflow.errors import RunCancelled

__all__ = ["SLEEPS_KEY", "SLEEP_PREFIX", "parse_sleep", "sleep", "sleep_key"]

#: The context key holding the wake-up times a resumed run found recorded.
SLEEPS_KEY = "_iterflow_sleeps"
#: How a recorded wake-up reads in the logs (``parse_sleep`` reads it back).
_LINE = "sleeping until {clock} [wake={wake:.6f} call={call}]"
#: How every such line starts (the progress display looks for it).
SLEEP_PREFIX = "sleeping until "
_ATTEMPT = re.compile(r"/attempt\d+(?=/)")
_PARSE = re.compile(r"^sleeping until \S+ \[wake=([0-9.]+) call=(\d+)\]$")
# Counts the sleep calls of the current iteration: the key that finds a call's record.
_CALLS_KEY = "_iterflow_sleep_calls"
# A cancel flag without wait() is polled this often.
_POLL = 0.05


def sleep_key(task_run_id: str, loop_index: int | None, call: int) -> str:
    """The key of one ``sleep`` call: task run, iteration, and its order in that iteration.

    A loop block's iteration run again after a failure is a new attempt (its
    task run ids gain ``/attemptN``): it is the same iteration, so the key
    leaves the attempt out.
    """
    return f"{_ATTEMPT.sub('', task_run_id)}|{loop_index}|{call}"


def parse_sleep(message: str) -> tuple[float, int] | None:
    """``(wake, call)`` from a log line ``sleep`` recorded, or None for any other line."""
    match = _PARSE.match(message)
    if match is None:
        return None
    return float(match.group(1)), int(match.group(2))


def sleep(seconds: float) -> None:
    """Wait ``seconds`` durably: after a crash and resume, only the time left is waited.

    Inside a task (a loop block's tasks included) the wake-up time is recorded
    with the iteration before waiting; outside a run this is ``time.sleep``.
    A cancelled run interrupts the wait (the task run is recorded Cancelled and
    can be resumed, still waiting only what is left).

    >>> import iterflow
    >>> iterflow.sleep(0.01)   # outside a task: a plain wait
    """
    if seconds < 0:
        raise ValueError(f"iterflow.sleep needs seconds >= 0, got {seconds!r}")
    ctx = current()
    task_run_id = ctx.get("task_run_id")
    if task_run_id is None:
        time.sleep(seconds)
        return
    loop_index = ctx.get("loop_index")
    # Which sleep of this iteration this is (a task may sleep more than once).
    calls: dict[Any, int] = ctx.setdefault(_CALLS_KEY, {})
    where = (task_run_id, loop_index, ctx.get("task_run_count"))
    if calls.get("at") != where:
        calls.clear()
        calls["at"] = where  # type: ignore[assignment]
    call = calls.get("n", 0)
    calls["n"] = call + 1
    recorded: dict[str, float] | None = ctx.get(SLEEPS_KEY)
    wake = None
    if recorded:
        # Used once: a retry of the iteration in this process sleeps afresh.
        wake = recorded.pop(sleep_key(task_run_id, loop_index, call), None)
    if wake is None:
        wake = time.time() + seconds
    if wake > time.time():
        # Recorded (again, after a resume: the same call and wake-up time, so a later
        # resume reads the same thing) and shown by `show` and the progress display.
        clock = datetime.fromtimestamp(wake).strftime("%H:%M:%S")
        logger = ctx.get("logger")
        if logger is not None:
            logger.info(_LINE.format(clock=clock, wake=wake, call=call))
    _wait_until(wake, ctx.get("_iterflow_cancel"))


def _wait_until(wake: float, cancel: Any) -> None:
    while True:
        left = wake - time.time()
        if left <= 0:
            return
        if cancel is None:
            time.sleep(min(left, 1.0))  # a signal (Ctrl-C, SIGTERM) interrupts it
            continue
        wait = getattr(cancel, "wait", None)
        if wait is not None:
            if wait(min(left, 1.0)):
                raise RunCancelled("cancelled during iterflow.sleep")
        elif cancel.is_set():
            raise RunCancelled("cancelled during iterflow.sleep")
        else:
            time.sleep(min(left, _POLL))
