"""Fibonacci numbers below a bound, by a task that carries a pair through its loop.

Each iteration is one step of the recurrence; the loop's result carries the
whole sequence so far. A mapped task then computes several bounds at once,
each child looping on its own.
"""

import iterflow
from iterflow import LOOP, Flow, Parameter, task


@task(max_loops=10_000)
def fibonacci(limit):
    """All Fibonacci numbers below ``limit``."""
    seq = iterflow.context.get("loop_result", [0, 1])
    nxt = seq[-1] + seq[-2]
    if nxt < limit:
        raise LOOP(message=f"{nxt} < {limit}", result=[*seq, nxt])
    return seq


@task
def summarise(sequences):
    return {len(seq): seq[-1] for seq in sequences}


with Flow("fibonacci") as flow:
    limit = Parameter("limit", default=100)
    below = fibonacci(limit)
    several = fibonacci.map([10, 1_000, 1_000_000])
    summary = summarise(several)


if __name__ == "__main__":
    state = flow.run(parameters={"limit": 1_000})
    print("below 1000:", state.result[below].result)
    print("loops per child:", [s.loop_count for s in state.result[several].map_states])
    print("summary:", state.result[summary].result)
