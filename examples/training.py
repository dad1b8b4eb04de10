"""Train a small model until its loss stops improving — a loop with an unknown end.

Pure Python gradient descent on a linear model ``y = w * x + b``. Each
iteration of ``train`` is one epoch; it loops while the validation loss keeps
improving by more than ``tolerance``, carrying the weights and the best loss
in ``loop_result``. ``max_loops`` guards against a run that never converges.
Each epoch logs its loss and gradient norm with ``iterflow.log_metric``: the
dashboard charts them against the epoch, ``iterflow show RUN --metrics`` sums
them up.
"""

import random

import iterflow
from iterflow import LOOP, Flow, Parameter, task


@task
def make_data(n, seed):
    rng = random.Random(seed)
    xs = [rng.uniform(-1, 1) for _ in range(n)]
    return [(x, 3.0 * x - 0.5 + rng.gauss(0, 0.05)) for x in xs]


def loss(w: float, b: float, data) -> float:
    return sum((w * x + b - y) ** 2 for x, y in data) / len(data)


@task(max_loops=5_000)
def train(data, learning_rate, tolerance):
    """One epoch per iteration; stop when the loss improves by less than ``tolerance``."""
    state = iterflow.context.get("loop_result", {"w": 0.0, "b": 0.0, "loss": float("inf")})
    w, b = state["w"], state["b"]
    n = len(data)
    grad_w = sum(2 * (w * x + b - y) * x for x, y in data) / n
    grad_b = sum(2 * (w * x + b - y) for x, y in data) / n
    w, b = w - learning_rate * grad_w, b - learning_rate * grad_b
    current = loss(w, b, data)
    # Charted per epoch on the dashboard; `iterflow show RUN --metrics` summarises it.
    iterflow.log_metric("loss", current)
    iterflow.log_metric("grad_norm", (grad_w**2 + grad_b**2) ** 0.5)
    if state["loss"] - current > tolerance:
        raise LOOP(message=f"loss {current:.5f}", result={"w": w, "b": b, "loss": current})
    return {"w": w, "b": b, "loss": current, "epochs": iterflow.context.loop_index + 1}


with Flow("training") as flow:
    data = make_data(n=Parameter("n", default=200), seed=Parameter("seed", default=7))
    model = train(data, learning_rate=0.1, tolerance=1e-7)


if __name__ == "__main__":
    state = flow.run()
    result = state.result[model].result
    print(f"w={result['w']:.3f} b={result['b']:.3f} loss={result['loss']:.5f} "
          f"after {result['epochs']} epochs")
