"""The headline example: a task that loops, accumulating a value.

Run it with ``make run`` (or ``python examples/accumulate.py``). It records the
run in the embedded SQLite store under ``$ITERFLOW_HOME`` (``make run`` uses
``./.iterflow``), so ``iterflow runs`` and ``iterflow show`` can show it after.
"""

import iterflow
from iterflow import Flow, task
from iterflow.signals import LOOP  # also importable as iterflow.LOOP


@task
def accumulate(x, iterations):
    result = x + iterflow.context.get("loop_result", 0)
    if iterflow.context.loop_index < iterations:
        raise LOOP(result=result)
    return result


with Flow("looping accumulator") as flow:
    y = accumulate(x=1, iterations=5)


if __name__ == "__main__":
    state = flow.run()
    assert state.is_successful()
    assert state.result[y].result == 6  # iterations 0..5, so 6 runs of the task
    final = state.result[y]
    print(f"{flow.name}: {state.name}, result {final.result} after {final.loop_count} iterations")
    print(f"run id {state.run_id}")
