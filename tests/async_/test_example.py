"""``python examples/pagination_async.py`` runs as written, against its real local API."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from iterflow.store import iterations, list_runs

ROOT = Path(__file__).resolve().parents[2]


def test_the_async_pagination_example_pages_and_fans_out_within_its_limit(tmp_path):
    pytest.importorskip("httpx")
    env = {**os.environ, "ITERFLOW_HOME": str(tmp_path)}
    env.pop("ITERFLOW_STORE_URL", None)
    out = subprocess.run(
        [sys.executable, "-W", "error", str(ROOT / "examples" / "pagination_async.py")],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert " alpha: 3 pages, 12 ids" in out.stdout
    assert "  beta: 5 pages, 20 ids" in out.stdout
    assert "summary: {'items': 36, 'characters': 304}" in out.stdout
    most = re.search(r"item requests: 36, at most (\d+) at once \(max_concurrency=4\)",
                     out.stdout)
    assert most is not None, out.stdout
    assert 2 <= int(most.group(1)) <= 4  # side by side, never beyond the limit
    # Every page was recorded, one Looped state per page but the last.
    (run,) = list_runs(store=f"sqlite:///{tmp_path / 'iterflow.db'}")
    beta = iterations(run.run_id, "paginate", 1, store=f"sqlite:///{tmp_path / 'iterflow.db'}")
    assert [h.state for h in beta] == ["Looped"] * 4 + ["Success"]
