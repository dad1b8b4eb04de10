"""The training examples log a metric per epoch, and the store gives it back per epoch.

Run as a user runs them (``python examples/X.py``, the default SQLite store
under ``ITERFLOW_HOME``), then read with ``iterflow.store``: one value per
iteration, in iteration order, against the task that logged it.
"""

from __future__ import annotations

import itertools
import math
import re

from iterflow import store
from tests.examples import run_example


def test_a_looping_task_logs_its_loss_and_gradient_every_epoch(tmp_path):
    printed = run_example("training.py", tmp_path)
    epochs = int(re.search(r"after (\d+) epochs", printed).group(1))
    final_loss = float(re.search(r"loss=([0-9.]+)", printed).group(1))
    url = f"sqlite:///{tmp_path / 'iterflow.db'}"
    [run] = store.list_runs(store=url)

    losses = store.metrics(run.run_id, name="loss", store=url)
    assert [m.loop_index for m in losses] == list(range(epochs))
    assert {(m.task_name, m.block_index) for m in losses} == {("train", None)}
    values = [m.value for m in losses]
    # The loop goes on only while the loss improves by more than its tolerance.
    assert all(later < earlier for earlier, later in itertools.pairwise(values[:-1]))
    assert math.isclose(values[-1], final_loss, abs_tol=1e-5)

    grads = store.metrics(run.run_id, task="train", name="grad_norm", store=url)
    assert [m.loop_index for m in grads] == list(range(epochs))
    assert all(g.value >= 0 for g in grads)
    [summary] = [s for s in store.metric_summary(run.run_id, store=url) if s.name == "loss"]
    assert (summary.count, summary.last) == (epochs, values[-1])


def test_a_loop_block_logs_its_validation_loss_against_the_epoch(tmp_path):
    printed = run_example("training_block.py", tmp_path)
    epochs = int(re.search(r"^(\d+) epochs", printed, re.MULTILINE).group(1))
    url = f"sqlite:///{tmp_path / 'iterflow.db'}"
    [run] = store.list_runs(store=url)

    val = store.metrics(run.run_id, name="val_loss", store=url)
    assert [m.block_index for m in val] == list(range(epochs))
    assert {m.task_name for m in val} == {"evaluate"}
    best_epoch = int(re.search(r"best at epoch (\d+)", printed).group(1))
    assert min(val, key=lambda m: m.value).block_index == best_epoch
