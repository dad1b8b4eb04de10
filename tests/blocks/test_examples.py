"""The loop block examples run as written: ``python examples/X.py``."""

from __future__ import annotations

import pytest

from tests.examples import run_example


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("pagination_block.py", "7 pages, 35 items in 7 files"),
        ("training_block.py", "w=2.9"),
    ],
)
def test_example_runs(script, expected, tmp_path):
    assert expected in run_example(script, tmp_path)
