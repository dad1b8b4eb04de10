"""Tasks: frozen descriptions of a unit of work.

A :class:`Task` says *what* to run and *how* (retries, timeout, loop limit,
trigger, caching). It never holds run-time data: a task *run* is keyed by
(task, map_index) and lives in the engine. Calling a task inside
``with Flow(...)`` adds a **copy** of it to the flow, wired to its arguments,
and returns that copy — so one ``@task`` function can appear many times in a
flow, each call its own node.

>>> from iterflow import task, Flow
>>> @task(max_retries=2, retry_delay=0.5)
... def fetch(url):
...     return url.upper()
>>> with Flow("demo") as flow:
...     page = fetch("a")
"""

from __future__ import annotations

import copy
import datetime
import functools
import inspect
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from iterflow.errors import ArgumentError, OptionError, OutsideFlowError, UnsupportedTaskError
from iterflow.naming import check_run_name, check_run_name_option

if TYPE_CHECKING:
    from iterflow.core.flow import Flow

__all__ = ["FunctionTask", "Task", "flatten", "task", "unmapped"]

_CHECKPOINT_MODES = (None, False, "batched", "every")
_SERIALIZERS = (None, "pickle", "json")


def _seconds(value: Any, option: str, owner: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime.timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise OptionError(
            f"Task {owner!r}: {option} must be a number of seconds or a timedelta >= 0, "
            f"got {value!r}"
        )
    return float(value)


def _is_async(name: str, fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` is an ``async def`` (awaited by the engine); refuse async generators."""
    if not inspect.isroutine(fn) and not isinstance(fn, functools.partial):
        fn = type(fn).__call__  # an object whose __call__ is the function
    if inspect.isasyncgenfunction(fn):
        raise UnsupportedTaskError(
            f"Task {name!r} is an async generator (an `async def` that yields), which "
            f"iterflow cannot run as a task. To produce one item per iteration, make it a "
            f"plain `async def` that raises LOOP(result=item) and returns at the end; to "
            f"produce them all at once, collect them in a list and return it."
        )
    return inspect.iscoroutinefunction(fn)


class Task:
    """A unit of work. Subclass it and override :meth:`run`, or use :func:`task`.

    All options are keyword-only:

    - ``name``: shown in logs, the store and the CLI (default: the class or
      function name).
    - ``max_retries`` / ``retry_delay``: retries *per iteration*; a retry
      resumes the same iteration with the same ``loop_result``.
    - ``timeout``: seconds allowed for each run of the function (each iteration).
    - ``max_loops``: iterations 0..max_loops-1 may run; a ``LOOP`` on the last
      one fails the task.
    - ``trigger``: a function of the upstream states (``iterflow.triggers``).
    - ``skip_on_upstream_skip``: skip when any upstream was skipped (default True).
    - ``cache_for`` / ``cache_key``: reuse the final value for this long; tasks
      sharing a ``cache_key`` share the cache.
    - ``checkpoint``: ``"every"`` commits each iteration before the next starts;
      ``False`` records states but not results.
    - ``serializer``: ``"pickle"`` (default) or ``"json"`` for stored results.
    - ``state_handlers``: callables ``(task, old_state, new_state) -> state``.
    - ``tags``, ``nout`` (iterate the result into ``nout`` items), ``log_stdout``.
    - ``task_run_name``: the name of each run of the task, shown in the
      progress display, the CLI and the dashboard: a format string over its
      inputs (``"fetch {url}"``) or a callable taking them as keyword
      arguments (see :mod:`iterflow.naming`).

    >>> class Double(Task):
    ...     def run(self, x):
    ...         return 2 * x
    """

    slug: str | None = None
    #: How each run of the task is named (see ``task_run_name`` above; set in ``__init__``).
    task_run_name: str | Callable[..., str] | None = None
    #: True when the work is an ``async def``: the engine awaits it (set in ``__init__``).
    is_async: bool = False
    #: When True the runner passes upstream *states* instead of their results
    #: (what ``merge`` needs to tell a skipped branch from a ``None`` result).
    receives_states: bool = False
    #: What the work accepts, once asked (:meth:`_call_shape`): shared by the task's copies.
    _shape: _CallShape | None = None

    def __init__(
        self,
        name: str | None = None,
        *,
        max_retries: int = 0,
        retry_delay: float | datetime.timedelta | None = None,
        timeout: float | datetime.timedelta | None = None,
        cache_for: float | datetime.timedelta | None = None,
        max_loops: int | None = None,
        trigger: Callable[[dict], bool] | None = None,
        skip_on_upstream_skip: bool = True,
        cache_key: str | None = None,
        checkpoint: str | bool | None = None,
        state_handlers: Iterable[Callable] | None = None,
        tags: Iterable[str] | None = None,
        nout: int | None = None,
        log_stdout: bool = False,
        serializer: str | None = None,
        task_run_name: str | Callable[..., str] | None = None,
    ) -> None:
        self.name = name or type(self).__name__
        self.task_run_name = check_run_name_option(task_run_name, self.name)
        if not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 0:
            raise OptionError(
                f"Task {self.name!r}: max_retries must be an int >= 0, got {max_retries!r}"
            )
        if max_loops is not None and (
            not isinstance(max_loops, int) or isinstance(max_loops, bool) or max_loops < 1
        ):
            raise OptionError(
                f"Task {self.name!r}: max_loops must be an int >= 1, got {max_loops!r}"
            )
        if checkpoint is True:
            checkpoint = "batched"
        if checkpoint not in _CHECKPOINT_MODES:
            raise OptionError(
                f"Task {self.name!r}: checkpoint must be one of 'every', 'batched' or False, "
                f"got {checkpoint!r}"
            )
        if serializer not in _SERIALIZERS:
            raise OptionError(
                f"Task {self.name!r}: serializer must be 'pickle' or 'json', got {serializer!r}"
            )
        if nout is not None and (not isinstance(nout, int) or nout < 0):
            raise OptionError(f"Task {self.name!r}: nout must be an int >= 0, got {nout!r}")
        self.max_retries = max_retries
        self.retry_delay = _seconds(retry_delay, "retry_delay", self.name) or 0.0
        self.timeout = _seconds(timeout, "timeout", self.name)
        if self.timeout == 0:
            raise OptionError(
                f"Task {self.name!r}: timeout must be > 0 seconds; leave it None for no limit"
            )
        self.cache_for = _seconds(cache_for, "cache_for", self.name)
        self.cache_key = cache_key
        self.max_loops = max_loops
        if trigger is None:
            from iterflow.core.triggers import all_successful

            trigger = all_successful
        self.trigger = trigger
        self.skip_on_upstream_skip = skip_on_upstream_skip
        self.checkpoint = checkpoint
        self.serializer = serializer
        self.state_handlers = list(state_handlers or [])
        self.tags = frozenset(tags or ())
        self.nout = nout
        self.log_stdout = log_stdout
        self.is_async = _is_async(self.name, self._work())
        # Its attributes in a plain dict, not the split table Python 3.11 keeps for
        # instances of a class (and copy.copy gives a copy): 3.11 cannot specialize
        # attribute look-ups on that table once it is read as __dict__ (copy.copy does),
        # and the engine reads a dozen of a task's options per task run. A copy of this
        # task (each call in a flow) clones this dict, whole, into one like it.
        self.__dict__ = dict(self.__dict__)

    # -- the work -------------------------------------------------------------
    def run(self, *args: Any, **kwargs: Any) -> Any:
        """The work itself; override in subclasses."""
        raise NotImplementedError(
            f"Task {self.name!r} does not implement run(): override run() in the Task "
            f"subclass, or put @task on a function instead"
        )

    def _signature(self) -> inspect.Signature:
        """The signature of the work; override where :meth:`run` wraps another callable."""
        return inspect.signature(self.run)

    def _work(self) -> Callable[..., Any]:
        """The function the engine calls: ``run`` here, the wrapped function for ``@task``."""
        return self.run

    def _call_shape(self) -> _CallShape:
        # Computed once for the task made by @task (or a subclass's constructor) and shared
        # by every copy, since copy() is shallow: a flow of N calls of one function
        # inspects it once, not N times (inspect.signature was a third of a chain's run).
        shape = self._shape
        if shape is None:
            shape = self._shape = _CallShape(self._signature())
        return shape

    # -- building flows -----------------------------------------------------
    def copy(self, **options: Any) -> Task:
        """A fresh copy of this task, not in any flow, with some options changed."""
        new = copy.copy(self)  # a plain dict like this task's, cloned (see __init__)
        new.slug = None
        new.state_handlers = list(self.state_handlers)
        if options:  # an option may replace the work (``fn``, ``run``): inspect it afresh
            new.__dict__.pop("_shape", None)
        for key, value in options.items():
            if not hasattr(new, key):
                raise ArgumentError(
                    f"Task {self.name!r} has no option {key!r}; the options are the "
                    f"keyword arguments of Task (see help(iterflow.Task))"
                )
            if key == "task_run_name":
                value = check_run_name_option(value, new.name)
            setattr(new, key, value)
        return new

    def _bind_arguments(self, args: tuple, kwargs: dict, flow: Flow) -> dict[str, Any]:
        """A call's arguments as keyword arguments, or ArgumentError naming the task."""
        sig = self._call_shape().signature
        try:
            bound = sig.bind(*args, **kwargs)
        except TypeError as exc:
            accepted = ", ".join(sig.parameters) or "no arguments"
            raise ArgumentError(
                f"Task {self.name!r} in flow {flow.name!r} cannot be called this way: {exc}. "
                f"Its function accepts: {accepted}."
            ) from None
        result: dict[str, Any] = {}
        for name, value in bound.arguments.items():
            kind = sig.parameters[name].kind
            if kind is inspect.Parameter.VAR_KEYWORD:
                result.update(value)
            elif kind is inspect.Parameter.VAR_POSITIONAL:
                # Inputs reach the function by keyword, which cannot fill *args.
                raise ArgumentError(
                    f"Task {self.name!r} in flow {flow.name!r} cannot take {len(value)} "
                    f"argument(s) through *{name}: tasks get their inputs by keyword. Pass "
                    f"them as one list argument or by name (**kwargs)."
                )
            else:
                result[name] = value
        return result

    def __call__(
        self,
        *args: Any,
        upstream_tasks: Iterable[Any] | None = None,
        flow: Flow | None = None,
        **kwargs: Any,
    ) -> Task:
        """Add a copy of this task to the active flow, wired to these arguments."""
        return self._add_call(args, kwargs, upstream_tasks, flow, mapped=False)

    def map(
        self,
        *args: Any,
        upstream_tasks: Iterable[Any] | None = None,
        flow: Flow | None = None,
        **kwargs: Any,
    ) -> Task:
        """Add a mapped copy: one child run per element of the iterable arguments.

        Several mapped arguments are zipped (the shortest decides the length);
        wrap an argument in :class:`unmapped` to pass it whole to every child,
        or in :class:`flatten` to map over a list of lists.

        >>> from iterflow import Flow, task
        >>> @task
        ... def square(x):
        ...     return x * x
        >>> with Flow("m") as flow:
        ...     squares = square.map([1, 2, 3])
        >>> flow.run(store=None).result[squares].result
        [1, 4, 9]
        """
        return self._add_call(args, kwargs, upstream_tasks, flow, mapped=True)

    def _add_call(self, args, kwargs, upstream_tasks, flow, mapped: bool) -> Task:
        from iterflow.core.flow import Flow

        flow = flow or Flow.active()
        if flow is None:
            raise OutsideFlowError(
                f"Task {self.name!r} was called outside a flow. Call it inside "
                f"`with Flow(...):` to add it to the flow, or call {self.name}.run(...) "
                f"to run the function directly."
            )
        arguments = self._bind_arguments(args, kwargs, flow)
        if self.task_run_name is not None:
            check_run_name(self, flow.name)
        new = self.copy()
        flow.set_dependencies(
            new,
            upstream_tasks=upstream_tasks,
            keyword_tasks=arguments,
            mapped=mapped,
        )
        return new

    def set_upstream(self, task: Any, key: str | None = None, mapped: bool = False,
                     flow: Flow | None = None) -> None:
        """Make ``task`` an upstream of this one (a data edge when ``key`` is given)."""
        from iterflow.core.flow import Flow

        flow = self._require_flow(flow or Flow.active(), "set_upstream")
        if key is None:
            flow.set_dependencies(self, upstream_tasks=[task])
        else:
            flow.set_dependencies(self, keyword_tasks={key: task}, mapped=mapped)

    def set_downstream(self, task: Task, key: str | None = None, mapped: bool = False,
                       flow: Flow | None = None) -> None:
        """Make ``task`` a downstream of this one."""
        task.set_upstream(self, key=key, mapped=mapped, flow=flow)

    def _require_flow(self, flow, what: str):
        if flow is None:
            raise OutsideFlowError(
                f"Task {self.name!r}: {what}() needs an active flow: use it inside "
                f"`with Flow(...):` or pass flow=..."
            )
        return flow

    def __getitem__(self, key: Any) -> Task:
        """``t[k]`` inside a flow: a small task that returns ``t``'s result ``[k]``."""
        from iterflow.core.flow import Flow
        from iterflow.core.helpers import GetItem

        flow = self._require_flow(Flow.active(), "__getitem__")
        return GetItem(name=f"{self.name}[{key!r}]")(self, key, flow=flow)

    def __iter__(self) -> Iterator[Task]:
        if self.nout is None:
            raise ArgumentError(
                f"Task {self.name!r} is not iterable: give it nout=N (the number of "
                f"items its result has) to unpack its result into N tasks"
            )
        return (self[i] for i in range(self.nout))

    def __repr__(self) -> str:
        slug = f" ({self.slug})" if self.slug and self.slug != self.name else ""
        return f"<Task: {self.name}{slug}>"


class _CallShape:
    """What a task's work accepts: its signature, and the sets of input names known to fit.

    Shared by a task and its copies (see :meth:`Task._call_shape`), so that
    ``flow.validate()`` binds each distinct set of input names once per function.
    """

    __slots__ = ("fitting", "signature", "single")

    def __init__(self, signature: inspect.Signature) -> None:
        self.signature = signature
        self.fitting: set[frozenset[str]] = set()
        #: The same for sets of one name or none, by that name (None for none): asked
        #: of the usual task copy, with one input, without a set made for the question.
        self.single: set[str | None] = set()

    def misfit(self, names: frozenset[str]) -> TypeError | None:
        """None when the work can take inputs called ``names``; else the reason it cannot."""
        if names in self.fitting:
            return None
        try:
            self.signature.bind(**dict.fromkeys(names))
        except TypeError as exc:
            return exc
        self.fitting.add(names)
        if len(names) < 2:
            self.single.add(next(iter(names), None))
        return None

    def __reduce__(self) -> tuple[Any, ...]:
        # Not sent along with a pickled task (to a Dask worker, into the store): the
        # signature holds the function's defaults and annotations, which need not pickle.
        # Unpickled it is None, and the task inspects its function again if asked.
        return (_no_shape, ())


def _no_shape() -> None:
    return None


class FunctionTask(Task):
    """A task whose work is a plain function; made by :func:`task`."""

    def __init__(self, fn: Callable[..., Any], name: str | None = None, **options: Any) -> None:
        if not callable(fn):
            raise ArgumentError(
                f"@task needs a function, got {type(fn).__name__} {fn!r}: put @task right "
                f"above a `def`, or call task(function)"
            )
        self.fn = fn
        super().__init__(name=name or getattr(fn, "__name__", None) or "task", **options)
        self.__doc__ = getattr(fn, "__doc__", None)
        self.__wrapped__ = fn

    def run(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def _signature(self) -> inspect.Signature:
        return inspect.signature(self.fn)

    def _work(self) -> Callable[..., Any]:
        return self.fn


def task(fn: Callable[..., Any] | None = None, **options: Any) -> Any:
    """Turn a function into a :class:`Task`; use bare (``@task``) or with options.

    >>> from iterflow import task
    >>> @task
    ... def add(x, y):
    ...     return x + y
    >>> @task(max_loops=100, checkpoint="every")
    ... def step(x):
    ...     return x
    """
    if fn is None:
        return lambda f: FunctionTask(f, **options)
    return FunctionTask(fn, **options)


class unmapped:  # noqa: N801 - lower-case like the function it reads as
    """Pass ``value`` whole to every child of a mapped task: ``t.map(xs, unmapped(k))``."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"unmapped({self.value!r})"


class flatten:  # noqa: N801
    """Map over the items of a list of lists: ``t.map(flatten(list_of_lists))``."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"flatten({self.value!r})"
