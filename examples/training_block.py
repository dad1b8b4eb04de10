"""Train until the validation loss stops improving: train -> evaluate -> checkpoint -> decide.

``examples/training.py`` does a whole epoch in one looping task. Here an
epoch is a loop block of four tasks, so training, evaluation and
checkpointing are separate steps: each is recorded with the epoch it belongs
to, a failed checkpoint write is retried on its own, and the loop carries
just the model and the best loss so far. Pure Python: gradient descent on
``y = w * x + b`` with a held-out validation set.

    python examples/training_block.py
"""

import random

import iterflow
from iterflow import Flow, Parameter, loop, task


@task(nout=2)
def make_data(n, seed):
    """Noisy samples of y = 3x - 0.5, split into training and validation sets."""
    rng = random.Random(seed)
    xs = [rng.uniform(-1, 1) for _ in range(n)]
    points = [(x, 3.0 * x - 0.5 + rng.gauss(0, 0.05)) for x in xs]
    cut = int(0.8 * n)
    return points[:cut], points[cut:]


def mse(model, data):
    return sum((model["w"] * x + model["b"] - y) ** 2 for x, y in data) / len(data)


@task
def train_epoch(state, data, learning_rate):
    """One epoch of full-batch gradient descent from the carried model."""
    w, b = state["model"]["w"], state["model"]["b"]
    n = len(data)
    grad_w = sum(2 * (w * x + b - y) * x for x, y in data) / n
    grad_b = sum(2 * (w * x + b - y) for x, y in data) / n
    return {"w": w - learning_rate * grad_w, "b": b - learning_rate * grad_b}


@task
def evaluate(model, data):
    loss = mse(model, data)
    iterflow.log_metric("val_loss", loss)  # charted per epoch (the block's iteration)
    return loss


@task
def checkpoint(model, loss, state):
    """Keep the best model so far (a real flow would write it to disk here)."""
    if loss < state["best_loss"]:
        epoch = iterflow.context.block_index
        iterflow.context.logger.info("epoch %d: new best loss %.6f", epoch, loss)
        return {"model": model, "loss": loss, "epoch": epoch}
    return state["best"]


@task
def carry(model, loss, best, state):
    return {"model": model, "best_loss": min(loss, state["best_loss"]), "best": best,
            "previous_loss": loss}


@task
def converged(loss, state, tolerance):
    """Stop once an epoch improves the validation loss by less than ``tolerance``."""
    return state["previous_loss"] - loss < tolerance


@task
def summary(state):
    best = state["best"]
    return (f"w={best['model']['w']:.3f} b={best['model']['b']:.3f} "
            f"val_loss={best['loss']:.5f} (best at epoch {best['epoch']})")


START = {
    "model": {"w": 0.0, "b": 0.0},
    "best_loss": float("inf"),
    "best": None,
    "previous_loss": float("inf"),
}

with Flow("training block") as flow:
    train, valid = make_data(n=Parameter("n", default=200), seed=Parameter("seed", default=7))
    with loop(initial=START, max_loops=5_000, name="epochs") as it:
        model = train_epoch(it.result, train, learning_rate=0.1)
        loss = evaluate(model, valid)
        best = checkpoint(model, loss, it.result)
        it.next(result=carry(model, loss, best, it.result),
                until=converged(loss, it.result, tolerance=1e-7))
    report = summary(it.final)


if __name__ == "__main__":
    state = flow.run()
    print(state.result[report].result)
    print(f"{state.result[it.final].loop_count} epochs; run id {state.run_id}")
