"""The examples in the docs run as written: every ```python block is executed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def blocks(path: Path) -> list[tuple[str, str]]:
    text = path.read_text()
    return [(f"{path.name}#{i}", code) for i, code in enumerate(BLOCK.findall(text))]


DOC_BLOCKS = (
    blocks(ROOT / "docs" / "loops.md")
    + blocks(ROOT / "docs" / "subflows.md")
    + blocks(ROOT / "README.md")
)


@pytest.mark.parametrize(("where", "code"), DOC_BLOCKS, ids=[w for w, _ in DOC_BLOCKS])
def test_doc_example_runs(where: str, code: str, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("ITERFLOW_HOME", str(tmp_path))
    monkeypatch.delenv("ITERFLOW_STORE_URL", raising=False)
    exec(compile(code, where, "exec"), {"__name__": f"doc_{where}"})


def test_docs_have_examples() -> None:
    assert len(DOC_BLOCKS) >= 10
