"""The writer makes a task lane's compact records into the rows their TASK records make.

A task lane hands the writer a short task run's ``Running`` and plain
``Success`` as compact records (``STARTED``, ``SUCCEEDED``); the writer makes
their rows from them directly, and the TASK record each stands for
(``batch_rows.lane_task_record``) only for an uncommon one. Whatever the batches
— a task run's start and end in one or in two, a labelled result, a value in a
file, a loop's ``Looped`` between a block's body task runs — the rows, their
ids and the order ``task_runs`` rows are inserted in must be those the TASK
records make.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from iterflow.store import open_store
from iterflow.store.batch import FLOW, LOOPED, BatchRecorder
from iterflow.store.batch_rows import lane_task_record
from iterflow.store.record_layout import LS_STORED, S_PATH, STARTED, SUCCEEDED

OWNER = "a" * 32
RUN = "r" * 32


def head(slug: str, map_index: int | None = None) -> tuple:
    return (RUN, f"{RUN}/{slug}", slug, slug, map_index, None)


def started(h: tuple, at: float, block_index: int | None = None) -> tuple:
    return (STARTED, h, 0, at, block_index, None)


def succeeded(h: tuple, at: float, value: int, block_index: int | None = None,
              label: str | None = None, path: str | None = None, index: int = 0) -> tuple:
    data = None if path else bytes([128, 5, 75, value, 46])  # pickle of a small int
    return (SUCCEEDED, h, index, at, block_index, ("pickle", data, path, 5, str(value)),
            label, None)


def looped(h: tuple, index: int, value: int, at: float) -> tuple:
    return (LOOPED, RUN, h[1], h, index, value, at, None, None)


def records() -> list[tuple]:
    """A run with a loop block and the loop's end, a map, a labelled result, a file."""
    loop = head("loop")
    out: list[tuple] = [(FLOW, RUN, "f", "Running", 1.0, None, None, None, None, None, False,
                         None, None)]
    at = 2.0
    for i in range(3):  # a block of two body tasks, the loop's Looped after each iteration
        for slug in ("add", "same"):
            h = head(f"block/{i}/{slug}")
            out += [started(h, at, block_index=i), succeeded(h, at + 0.1, i, block_index=i)]
            at += 1.0
        out.append(looped(loop, i, i, at))
        at += 1.0
    out.append(succeeded(loop, at, 3, index=3))  # the loop's end, after its Looped
    at += 1.0
    for i in range(2):  # a map's children
        h = head(f"map[{i}]", map_index=i)
        out += [started(h, at), succeeded(h, at + 0.1, i)]
        at += 1.0
    labelled, in_file = head("labelled"), head("file")
    out += [started(labelled, at), succeeded(labelled, at + 0.1, 7, label="seven"),
            started(in_file, at + 1), succeeded(in_file, at + 1.1, 8, path="/tmp/x.pickle")]
    return out


def n_ids(batch: list[tuple]) -> int:
    """Ids the batch takes, as the writer thread counts them: a results row for a file."""
    return len(batch) + sum(1 for r in batch
                            if r[0] == SUCCEEDED and r[LS_STORED][S_PATH] is not None)


def rows(store) -> dict[str, list[tuple]]:
    with store.engine.connect() as conn:
        return {
            name: [tuple(r) for r in conn.execute(sa.text(
                f"SELECT {'rowid, ' if name == 'task_runs' else ''}* FROM {name} "
                f"ORDER BY {'rowid' if name == 'task_runs' else 'id'}"))]
            for name in ("task_runs", "state_transitions", "results")
        }


def written(path, batches: list[list[tuple]]) -> dict[str, list[tuple]]:
    store = open_store(f"sqlite:///{path}")
    try:
        recorder = BatchRecorder(store.write, 30.0, owner=OWNER)
        for batch in batches:
            recorder.commit(batch, n_ids(batch))
        return rows(store)
    finally:
        store.close()


@pytest.mark.parametrize("cut", [1, 2, 3, 6, 7, 8, 14, 15, 16, 17, 18, 20, 22, 24])
def test_lane_records_make_the_rows_of_the_task_records_they_stand_for(tmp_path, cut):
    """Two batches, cut at ``cut``: between a task run's start and end, or not."""
    lane = records()
    as_task = [lane_task_record(r) for r in lane]
    assert as_task != lane
    expected = written(tmp_path / "task.db", [as_task[:cut], as_task[cut:]])
    got = written(tmp_path / "lane.db", [lane[:cut], lane[cut:]])
    assert got == expected
    # The task run left open at the cut has its Running kept; one that ends in its
    # first batch has none (its task_runs row says when it started).
    assert len(got["task_runs"]) == 11
    assert len(got["results"]) == 1
