"""The task-run id format: what the engine builds, the store reads back."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from iterflow.runids import (
    block_index_of,
    iteration_prefix,
    latest_attempt,
    scope_prefix,
    split_attempt,
    task_run_id,
)

slugs = st.from_regex(r"[a-z][a-z0-9_\-\[\]]{0,8}(-[0-9])?", fullmatch=True)
run_ids = st.from_regex(r"[0-9a-f]{6,12}", fullmatch=True)
map_indices = st.none() | st.integers(0, 10_000)
#: A path of nested block iterations: (block slug, k, attempt) from the outside in.
nesting = st.lists(st.tuples(slugs, st.integers(0, 500), st.integers(1, 5)), max_size=3)


@given(run_ids, nesting, slugs, map_indices)
def test_ids_round_trip(run_id, path, slug, map_index):
    prefix = run_id
    for block_slug, k, attempt in path:
        prefix = iteration_prefix(task_run_id(prefix, block_slug), k, attempt)
    tid = task_run_id(prefix, slug, map_index)

    assert scope_prefix(tid, slug, map_index) == prefix
    expected_k = path[-1][1] if path else None
    assert block_index_of(tid, slug, map_index, run_id) == expected_k
    if path:
        block_slug, k, attempt = path[-1]
        base, got_attempt = split_attempt(prefix)
        assert got_attempt == attempt
        assert base == iteration_prefix(base.rpartition("/")[0], k)


@given(run_ids, slugs, st.integers(0, 50), st.lists(st.integers(1, 9), min_size=1))
def test_latest_attempt_is_the_highest(run_id, block_slug, k, attempts):
    block = task_run_id(run_id, block_slug)
    prefixes = [iteration_prefix(block, k, a) for a in attempts]
    prefixes.append(iteration_prefix(block, k + 1, 99))  # another iteration: ignored
    best = max(attempts)
    assert latest_attempt(prefixes, iteration_prefix(block, k)) == (
        best, iteration_prefix(block, k, best)
    )
    assert latest_attempt(prefixes, iteration_prefix(block, k + 2)) is None


def test_an_id_of_another_shape_has_no_scope():
    assert scope_prefix("run/other", "fetch", None) is None
    assert scope_prefix("/fetch", "fetch", None) is None
    assert split_attempt("run") == ("run", 1)
