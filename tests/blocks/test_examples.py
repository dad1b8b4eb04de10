"""The loop block examples run as written: ``python examples/X.py``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("pagination_block.py", "7 pages, 35 items in 7 files"),
        ("training_block.py", "w=2.9"),
    ],
)
def test_example_runs(script, expected, tmp_path):
    env = {**os.environ, "ITERFLOW_HOME": str(tmp_path)}
    env.pop("ITERFLOW_STORE_URL", None)
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script)],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert expected in out.stdout
