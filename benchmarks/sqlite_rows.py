"""What SQLite alone charges for the rows a loop block writes, and what a packed row would.

The store's writer is bound, behind a loop block, a map or a chain, by the
rows it writes: per short task run a ``task_runs`` row (four b-trees: the
table, its text primary key, ``ux_task_runs_id``, ``ix_task_runs_flow_run``)
and a ``Success`` state row (three). This script leaves iterflow's Python out
and times SQLite itself: a store made by ``open_store`` (the real schema),
then rows shaped as the writer makes them (made beforehand, not timed),
inserted with ``executemany`` on a plain ``sqlite3`` connection, ``--batch``
block iterations per transaction (WAL, ``synchronous=NORMAL``, as the store runs).

Three ways to record an iteration of a block of ``--tasks`` body tasks:

- ``rows``: today's, a ``task_runs`` row and a ``Success`` row per body task
  run, and the block's ``Looped`` row;
- ``rows, one index less``: the same without ``ix_state_transitions_task_run``,
  whose column is the first of ``ix_state_transitions_iteration``;
- ``packed``: one row per iteration holding its body task runs (names, times,
  pickled results) in one blob, in a table made here, and the ``Looped`` row.

It answers one question before a schema change: how far each shape is from
the block's goal (≤ 20 µs per iteration, Python included).

    python benchmarks/sqlite_rows.py
    python benchmarks/sqlite_rows.py -n 20000 --tasks 5 --batch 1024
"""

from __future__ import annotations

import argparse
import pickle
import sqlite3
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from iterflow.store import open_store

_PACKED_TABLE = """
CREATE TABLE block_iterations (
    id INTEGER PRIMARY KEY,
    flow_run BIGINT NOT NULL,
    block_run BIGINT NOT NULL,
    block_index INTEGER NOT NULL,
    started DOUBLE,
    ended DOUBLE,
    body BLOB
)"""
_PACKED_INDEX = "CREATE INDEX ix_block_iterations ON block_iterations (block_run, block_index)"
_TASK_RUN = "INSERT INTO task_runs VALUES (" + ", ".join("?" * 17) + ")"
_STATE = "INSERT INTO state_transitions VALUES (" + ", ".join("?" * 14) + ")"
_PACKED = "INSERT INTO block_iterations VALUES (?, ?, ?, ?, ?, ?, ?)"


def new_store(directory: Path, *, packed: bool, lean: bool) -> sqlite3.Connection:
    """A store file with iterflow's schema, opened as the writer opens it."""
    path = directory / f"{uuid.uuid4().hex}.db"
    with open_store(f"sqlite:///{path}"):
        pass  # creates the schema at its newest version
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    if packed:
        conn.execute(_PACKED_TABLE)
        conn.execute(_PACKED_INDEX)
    if lean:
        conn.execute("DROP INDEX ix_state_transitions_task_run")
    return conn


class Iterations:
    """Rows for block iterations, shaped as the writer makes them (ids from one counter)."""

    def __init__(self, tasks: int) -> None:
        self.run_id = uuid.uuid4().hex
        self.slugs = [f"task{j}" for j in range(tasks)]
        self.identity = uuid.uuid4().hex  # a task's fingerprint: 32 hex digits
        self.next_id = 100
        self.block_run = 1

    def _ids(self, n: int) -> int:
        first = self.next_id
        self.next_id += n
        return first

    def rows(self, k: int, now: float) -> tuple[list[tuple], list[tuple]]:
        """Iteration ``k``: its task_runs rows and its state rows (Success each, Looped)."""
        task_runs, states = [], []
        for slug in self.slugs:
            run_key, state_id = self._ids(1), self._ids(1)
            task_runs.append((
                f"{self.run_id}/block/{k}/{slug}", run_key, self.run_id, slug, slug, None,
                "Success", 1, 0, None, None, state_id, now, now, None, self.identity, None,
            ))
            states.append((state_id, 1, run_key, "Success", 0, k, None, None, now, "pickle",
                           pickle.dumps(k, 5), str(k), None, None))
        states.append(self.looped(k, now))
        return task_runs, states

    def looped(self, k: int, now: float) -> tuple:
        return (self._ids(1), 1, self.block_run, "Looped", k, None, None, None, now, "pickle",
                pickle.dumps(k, 5), str(k), None, None)

    def packed(self, k: int, now: float) -> tuple[list[tuple], list[tuple]]:
        """Iteration ``k`` as one packed row, and its Looped row."""
        body = pickle.dumps([(slug, now, now, pickle.dumps(k, 5), str(k)) for slug in self.slugs],
                            5)
        return [(self._ids(1), 1, self.block_run, k, now, now, body)], [self.looped(k, now)]


def batches(n: int, batch: int, tasks: int, *, packed: bool) -> list[tuple[list, list]]:
    """The rows of ``n`` iterations, per transaction: (task_runs or packed rows, state rows)."""
    make = Iterations(tasks)
    iteration = make.packed if packed else make.rows
    made = []
    for first in range(0, n, batch):
        now = time.time()
        rows: list[tuple] = []
        states: list[tuple] = []
        for k in range(first, min(first + batch, n)):
            its_rows, its_states = iteration(k, now)
            rows += its_rows
            states += its_states
        made.append((rows, states))
    return made


def insert(conn: sqlite3.Connection, first: str, batches: list[tuple[list, list]],
           n: int) -> float:
    """µs per iteration to insert ``batches`` (rows made beforehand: SQLite's time alone)."""
    start = time.perf_counter()
    for rows, states in batches:
        conn.execute("BEGIN")
        conn.executemany(first, rows)
        conn.executemany(_STATE, states)
        conn.execute("COMMIT")
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10_000, help="block iterations (default 10,000)")
    parser.add_argument("--tasks", type=int, default=3, help="body tasks per iteration")
    parser.add_argument("--batch", type=int, default=256, help="iterations per transaction")
    parser.add_argument("--repeat", type=int, default=5, help="rounds, taken in turns")
    args = parser.parse_args()
    rows = batches(args.n, args.batch, args.tasks, packed=False)
    packed = batches(args.n, args.batch, args.tasks, packed=True)
    ways = {
        "rows": lambda d: insert(new_store(d, packed=False, lean=False), _TASK_RUN, rows,
                                 args.n),
        "rows, one index less": lambda d: insert(new_store(d, packed=False, lean=True),
                                                 _TASK_RUN, rows, args.n),
        "packed": lambda d: insert(new_store(d, packed=True, lean=False), _PACKED, packed,
                                   args.n),
    }
    figures: dict[str, list[float]] = {name: [] for name in ways}
    with tempfile.TemporaryDirectory() as directory:
        for _ in range(args.repeat):
            for name, way in ways.items():
                figures[name].append(way(Path(directory)))
    print(f"SQLite alone, block of {args.tasks} tasks, N={args.n:,}, "
          f"{args.batch} iterations per transaction (µs per iteration, median and range)")
    for name, values in figures.items():
        print(f"  {name:22s} {statistics.median(values):6.1f}   "
              f"({min(values):.1f} to {max(values):.1f})")


if __name__ == "__main__":
    main()
