"""Parameters: tasks whose value comes from ``flow.run(parameters={...})``."""

from __future__ import annotations

from typing import Any

from iterflow.core.task import Task
from iterflow.errors import ArgumentError, ParameterError

__all__ = ["NO_DEFAULT", "Parameter"]


class _NoDefault:
    def __repr__(self) -> str:
        return "NO_DEFAULT"


NO_DEFAULT: Any = _NoDefault()


class Parameter(Task):
    """A named input of a flow. One without a default is required.

    A missing required parameter, or an unknown one, makes ``flow.run()``
    raise :class:`~iterflow.errors.ParameterError` before any task runs.

    >>> from iterflow import Flow, Parameter
    >>> with Flow("greet") as flow:
    ...     who = Parameter("who", default="world")
    """

    def __init__(
        self, name: str, default: Any = NO_DEFAULT, required: bool | None = None, **options: Any
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ParameterError(
                f"a Parameter needs a non-empty name, got {name!r}: Parameter(\"n\", default=10)"
            )
        super().__init__(name=name, **options)
        self.default = None if default is NO_DEFAULT else default
        self.required = (default is NO_DEFAULT) if required is None else bool(required)
        from iterflow.core.flow import Flow

        flow = Flow.active()
        if flow is not None:
            flow.add_task(self)

    def __call__(self, *args: Any, **kwargs: Any) -> Task:
        raise ArgumentError(
            f"Parameter {self.name!r} is not called: pass it to tasks as an argument"
        )

    def run(self) -> Any:
        from iterflow.context import context

        return context.parameters[self.name]

    def __repr__(self) -> str:
        return f"<Parameter: {self.name}>"
