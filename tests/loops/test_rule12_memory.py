"""DESIGN §7.12: memory does not grow with the number of iterations — the runner keeps
the last loop result, not the history."""

from __future__ import annotations

import gc
import tracemalloc

import iterflow
from iterflow import Flow, task
from iterflow.runtime import run_flow
from iterflow.signals import LOOP


@task
def accumulate(n):
    # A fresh int object each iteration (> 256, so not a cached small int): keeping
    # the history of N of them would cost at least 36 bytes each.
    acc = iterflow.context.get("loop_result", 1000) + 1
    if iterflow.context.loop_index < n - 1:
        raise LOOP(result=acc)
    return acc - 1000


def peak_bytes(n: int) -> int:
    with Flow("memory") as flow:
        a = accumulate(n)
    gc.collect()
    tracemalloc.start()
    try:
        state = run_flow(flow, store=None)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert state.result[a].result == n
    assert state.result[a].loop_count == n
    return peak


def test_peak_memory_does_not_grow_with_iterations():
    peak_bytes(1_000)  # warm-up: first-use imports and caches
    small = peak_bytes(20_000)
    large = peak_bytes(200_000)
    growth = large - small
    # Keeping 180,000 more loop results would add more than 6 MB.
    assert growth < 1_000_000, f"peak grew by {growth} bytes from 20k to 200k iterations"
