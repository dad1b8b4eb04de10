"""A flow with a long loop, run as a script by the cancel tests (not imported by pytest).

    python looper.py RUN_ID EXECUTOR [ADDRESS]

EXECUTOR is ``local``, ``threads`` or ``dask`` (joining the cluster at
ADDRESS). The loop runs ``LOOPER_ITERATIONS`` iterations (400 by default) of
``LOOPER_PAUSE`` seconds each (0.05), or sleeps durably ``LOOPER_SLEEP``
seconds per iteration when that is set. The store is ``ITERFLOW_STORE_URL``.
"""

from __future__ import annotations

import os
import sys
import time

import iterflow
from iterflow import LOOP, Flow, task

ITERATIONS = int(os.environ.get("LOOPER_ITERATIONS", "400"))
PAUSE = float(os.environ.get("LOOPER_PAUSE", "0.05"))
SLEEP = float(os.environ.get("LOOPER_SLEEP", "0"))


@task
def count() -> int:
    i = iterflow.context.loop_index
    if SLEEP:
        iterflow.sleep(SLEEP)
    else:
        time.sleep(PAUSE)
    if i + 1 < ITERATIONS:
        raise LOOP(result=i)
    return i


with Flow("looper") as flow:
    count()


def make_executor(kind: str, address: str | None) -> object:
    if kind == "threads":
        from iterflow.executors import ThreadExecutor

        return ThreadExecutor(max_workers=2)
    if kind == "dask":
        from iterflow.executors import DaskExecutor

        return DaskExecutor(address=address)
    from iterflow.executors import LocalExecutor

    return LocalExecutor()


if __name__ == "__main__":
    run_id, kind = sys.argv[1], sys.argv[2]
    address = sys.argv[3] if len(sys.argv) > 3 else None
    state = flow.run(run_id=run_id, executor=make_executor(kind, address))
    print(type(state).__name__, flush=True)
