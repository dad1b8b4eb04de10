"""Names for task runs and labels for iterations: text people read in the CLI and dashboard.

Task run names
    ``@task(task_run_name="fetch {url}")`` names each run of a task from its
    inputs: a format string over the inputs by parameter name (a mapped
    task's child sees its own element), or a callable taking the inputs as
    keyword arguments and returning the name. Parameters the call left at
    their default are inputs too. :func:`check_run_name` refuses, when the
    flow is built, a format string that names something the task has no
    parameter for; :func:`render_run_name` computes the name once per task
    run, before its first iteration. A callable that raises, or formatting
    that fails at run time, does not fail the task: the run is named after
    the task, and a warning is logged with the task run.

Iteration labels
    :func:`set_iteration_label` labels the iteration the calling task is in
    (the last call in an iteration wins); ``LOOP(label=...)`` labels the
    iteration it ends, and wins over an earlier ``set_iteration_label``. The
    label travels on the event of the state that ends the iteration
    (``Looped``, or the final state), so a store records it in that state's
    row and a sink sees it with ``store=None`` too. Outside a task run
    ``set_iteration_label`` does nothing, as ``log_metric`` keeps nothing
    there: a task's function can be called directly in a unit test.

Both are cut to :data:`MAX_LENGTH` characters (the last one then an ellipsis).

>>> import iterflow
>>> from iterflow import LOOP, Flow, task
>>> @task(task_run_name="page walker from {start}")
... def walk(start):
...     page = start + iterflow.context.loop_index
...     iterflow.set_iteration_label(f"page {page}")
...     if page < start + 2:
...         raise LOOP()
...     return page
>>> with Flow("pages") as flow:
...     _ = walk(5)
>>> flow.run(store=None).is_successful()
True
"""

from __future__ import annotations

import logging
import string
from collections.abc import Callable, Mapping
from typing import Any

from iterflow.context import _current
from iterflow.errors import OptionError, TaskRunNameError

__all__ = [
    "LABEL_KEY",
    "MAX_LENGTH",
    "check_run_name",
    "check_run_name_option",
    "clean_text",
    "render_run_name",
    "set_iteration_label",
]

#: Names and labels longer than this are cut to it (the last character an ellipsis).
MAX_LENGTH = 200

#: Where :func:`set_iteration_label` leaves the label in the task run's context dict.
LABEL_KEY = "_iterflow_iteration_label"

_log = logging.getLogger("iterflow.task")


def clean_text(text: Any) -> str | None:
    """``text`` as a label: ``str()`` of it, cut to :data:`MAX_LENGTH`; None for None or ``""``."""
    if text is None:
        return None
    if type(text) is not str:
        text = str(text)
    if len(text) > MAX_LENGTH:
        return text[: MAX_LENGTH - 1] + "…"
    return text or None


def set_iteration_label(label: str) -> None:
    """Label the current iteration of the running task, e.g. ``"page 7 (cursor=abc)"``.

    The last call in an iteration wins; ``LOOP(label=...)`` wins over it. The
    label is recorded with the state that ends the iteration and shown by
    ``iterflow show RUN --iterations`` and the dashboard's iteration table.
    Longer than :data:`MAX_LENGTH` characters, it is cut. Outside a task run
    it does nothing.

    >>> import iterflow
    >>> iterflow.set_iteration_label("outside a run: nothing happens")
    """
    ctx = _current.get()
    if "task_run_id" in ctx:  # the default context is shared: never write into it
        ctx[LABEL_KEY] = clean_text(label)


def check_run_name_option(value: Any, task_name: str) -> Any:
    """``value`` if it can be a ``task_run_name`` (None, a str, a callable); else OptionError."""
    if value is None or isinstance(value, str) or callable(value):
        return value
    raise OptionError(
        f"Task {task_name!r}: task_run_name must be a format string over the task's "
        f"inputs (like 'fetch {{url}}') or a callable taking them as keyword arguments, "
        f"got {type(value).__name__} {value!r}"
    )


def _fields(template: str) -> list[str]:
    """The input names ``template`` refers to (``"{a.b} {c[0]}"`` -> ``["a", "c"]``)."""
    names = []
    for _text, field, _spec, _conv in string.Formatter().parse(template):
        if field is None:
            continue
        root = field.split(".", 1)[0].split("[", 1)[0]
        names.append(root)
    return names


def check_run_name(task: Any, flow_name: str) -> None:
    """Refuse a ``task_run_name`` format string naming something ``task`` has no input for.

    Raises :class:`~iterflow.errors.TaskRunNameError` (a ``FlowDefinitionError``
    and an ``OptionError``) naming the task, the
    flow and the inputs there are. A callable is checked when it runs.
    """
    template = getattr(task, "task_run_name", None)
    if not isinstance(template, str):
        return
    where = f"task {task.name!r} in flow {flow_name!r}"
    try:
        fields = _fields(template)
    except ValueError as exc:
        raise TaskRunNameError(
            f"{where}: task_run_name {template!r} is not a valid format string ({exc}); "
            f"write inputs as {{name}} and a literal brace as {{{{ or }}}}"
        ) from None
    params = task._call_shape().signature.parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        accepted = None  # **kwargs takes any name: checked when the name is made
    else:
        accepted = [n for n, p in params.items() if p.kind is not p.VAR_POSITIONAL]
    for name in fields:
        if name == "" or name.isdigit():
            raise TaskRunNameError(
                f"{where}: task_run_name {template!r} uses a positional field "
                f"{{{name}}}; name the input instead, like {{{next(iter(accepted or ['x']))}}}"
            )
        if accepted is not None and name not in accepted:
            have = ", ".join(accepted) or "none"
            raise TaskRunNameError(
                f"{where}: task_run_name {template!r} refers to {{{name}}}, but the task "
                f"has no input {name!r} (its inputs: {have}); use one of those names"
            )


def render_run_name(task: Any, inputs: Mapping[str, Any],
                    warn: Callable[[str], None] | None = None) -> str:
    """The name of a run of ``task`` with ``inputs`` (see the module docstring).

    A failure is not the task's: it gives the task's name, and ``warn`` (the
    task run's logger, by default this module's) hears why.
    """
    spec = task.task_run_name
    values = dict(inputs)
    try:
        for name, param in task._call_shape().signature.parameters.items():
            if name not in values and param.default is not param.empty:
                values[name] = param.default
        name = spec.format(**values) if isinstance(spec, str) else spec(**values)
        return clean_text(name) or task.name
    except Exception as exc:
        message = (
            f"task {task.name!r}: its task_run_name could not be made "
            f"({type(exc).__name__}: {exc}); the run is named {task.name!r} instead"
        )
        (warn or _log.warning)(message)
        return task.name
