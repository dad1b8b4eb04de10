"""Running ``examples/X.py`` as a user does: a fresh process on the default SQLite store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_example(script: str, home: Path) -> str:
    """``python examples/<script>`` with ``ITERFLOW_HOME=home`` (its store there); its stdout.

    Fails the test, with the script's stderr, when it exits non-zero.
    """
    env = {**os.environ, "ITERFLOW_HOME": str(home)}
    env.pop("ITERFLOW_STORE_URL", None)
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script)],
        env=env, cwd=home, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout
