"""Small tasks the graph builder adds for you: constants and item getters."""

from __future__ import annotations

from typing import Any

from iterflow.core.task import Task

__all__ = ["Constant", "GetItem"]


class Constant(Task):
    """A task that returns a fixed value (used to map over a literal iterable)."""

    def __init__(self, value: Any, name: str | None = None, **options: Any) -> None:
        self.value = value
        super().__init__(name=name or f"Constant[{type(value).__name__}]", **options)

    def run(self) -> Any:
        return self.value


class GetItem(Task):
    """``value[key]``: what ``task[key]`` adds to the flow."""

    def run(self, value: Any, key: Any) -> Any:
        try:
            return value[key]
        except (KeyError, IndexError, TypeError) as exc:
            raise type(exc)(
                f"{self.name}: cannot index a {type(value).__name__} with {key!r}: {exc}"
            ) from exc
