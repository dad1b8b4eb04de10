"""``iterflow.context``: what a running task can know about its run.

The engine keeps its own run context explicit (passed as arguments); only at
the boundary where user code reads it does it live in a :class:`ContextVar`,
so it is correct per thread, per asyncio task and per Dask worker. The runner
sets it for each task run and updates the loop keys in place on each
iteration, which keeps the loop's hot path cheap.

Keys while a task runs: ``flow_name``, ``flow_run_id``, ``task_name``,
``task_slug``, ``task_run_id``, ``map_index``, ``loop_index``,
``loop_result`` (absent on iteration 0), ``task_run_count``, ``parameters``,
``logger``, ``task_run_name`` (the run's name, see ``@task(task_run_name=...)``;
the task's name when it has none), and the Prefect Core aliases ``task_loop_count``
(= ``loop_index + 1``) and ``task_loop_result``. Inside a loop block
(``iterflow.loop``) tasks also see ``block_index`` (the block's iteration),
``block_indices`` (those of every enclosing block, outermost first) and
``block_run_count`` (the attempt of that iteration); ``loop_index`` stays the
task's own, so a task that raises ``LOOP`` behaves the same inside a block.

>>> import iterflow
>>> with iterflow.context(tenant="acme"):
...     iterflow.context.tenant
'acme'
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from typing import Any

__all__ = ["Context", "context", "current"]

_current: ContextVar[dict[str, Any]] = ContextVar("iterflow_context", default={})  # noqa: B039


def current() -> dict[str, Any]:
    """The live context mapping of this thread (the engine's handle; do not mutate)."""
    return _current.get()


def _set(mapping: dict[str, Any]):
    return _current.set(mapping)


def _reset(token) -> None:
    _current.reset(token)


def _key(name: str) -> property:
    """An engine key read as an attribute without a failed lookup first.

    ``__getattr__`` runs only after Python's normal lookup has failed (an
    exception made and dropped): for ``context.loop_index``, read every
    iteration, that was ~0.5 µs, most of an iteration's overhead. A property
    is found at once; a key that is not set falls through to ``__getattr__``
    and its message.
    """

    def read(self: Context) -> Any:
        try:
            return _current.get()[name]
        except KeyError:
            raise AttributeError(name) from None

    return property(read, doc=f"The context's ``{name}`` (see the module docstring).")


class Context(Mapping[str, Any]):
    """A read-mostly mapping over the current run's context, with attribute access.

    Read ``context.loop_index`` or ``context.get("loop_result", 0)``; add keys
    for a block with ``with context(key=value):``.
    """

    __slots__ = ()

    # The keys the engine sets (the module docstring), each a property; others are
    # read through __getattr__.
    flow_name = _key("flow_name")
    flow_run_id = _key("flow_run_id")
    task_name = _key("task_name")
    task_slug = _key("task_slug")
    task_run_id = _key("task_run_id")
    task_run_name = _key("task_run_name")
    map_index = _key("map_index")
    loop_index = _key("loop_index")
    loop_result = _key("loop_result")
    task_run_count = _key("task_run_count")
    task_loop_count = _key("task_loop_count")
    task_loop_result = _key("task_loop_result")
    parameters = _key("parameters")
    logger = _key("logger")
    block_index = _key("block_index")
    block_indices = _key("block_indices")
    block_run_count = _key("block_run_count")

    def __getattr__(self, name: str) -> Any:
        try:
            return _current.get()[name]
        except KeyError:
            raise AttributeError(
                f"iterflow.context has no key {name!r}; keys are set while a task runs "
                f"(use context.get({name!r}, default) to read an optional key)"
            ) from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(
            "iterflow.context is read-only; use `with iterflow.context(key=value):` "
            "or flow.run(context={...}) to add keys"
        )

    def __getitem__(self, key: str) -> Any:
        return _current.get()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(dict(_current.get()))

    def __len__(self) -> int:
        return len(_current.get())

    def __contains__(self, key: object) -> bool:
        return key in _current.get()

    def get(self, key: str, default: Any = None) -> Any:
        return _current.get().get(key, default)

    @contextlib.contextmanager
    def __call__(self, **values: Any) -> Iterator[Context]:
        token = _current.set({**_current.get(), **values})
        try:
            yield self
        finally:
            _current.reset(token)

    def log_metric(self, name: str, value: float) -> None:
        """Record a metric for the current iteration: :func:`iterflow.log_metric`."""
        from iterflow.metrics import log_metric  # metrics reads this module's context

        log_metric(name, value)

    def set_iteration_label(self, label: str) -> None:
        """Label the current iteration: :func:`iterflow.set_iteration_label`."""
        from iterflow.naming import set_iteration_label  # naming reads this module's context

        set_iteration_label(label)

    def to_dict(self) -> dict[str, Any]:
        """A snapshot of the current context as a plain dict."""
        return dict(_current.get())

    def __repr__(self) -> str:
        return f"<iterflow.context {dict(_current.get())!r}>"


context = Context()
