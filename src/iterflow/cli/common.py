"""What the command modules share: errors, the run store, and formatting.

Errors. A command reports a problem by raising :class:`CliError` (one line,
an optional hint, an exit code); :func:`translate` turns iterflow's own errors
into one. Exit codes: 0 success, 1 a failed run or an error along the way,
2 a usage error (bad arguments, a missing file, an unknown run id), 130 and
143 a run cancelled by Ctrl-C or SIGTERM.

The store. ``iterflow.store`` (SQLAlchemy) is imported only inside the
commands that read it, so ``iterflow --help`` stays fast. Commands call the
:class:`~iterflow.store.RunStore` query methods; their records' ``as_dict()``
is what ``--json`` prints, with times made readable.

JSON. Every ``--json`` is strict JSON (RFC 8259), which any parser reads: a
float that JSON cannot write (NaN, Infinity) is printed as the string
``"NaN"``, ``"Infinity"`` or ``"-Infinity"`` (Python's ``float()`` reads them
back), never as the bare token Python's ``json`` would write by default.

Times. The store keeps epoch seconds. Tables show local times; ``--json``
gives ISO 8601 in UTC, which any tool parses without knowing our time zone.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import click

__all__ = [
    "DEBUG_KEY",
    "EXIT_CANCELLED",
    "EXIT_FAILED",
    "EXIT_TERMINATED",
    "EXIT_USAGE",
    "CliError",
    "debug_option",
    "duration",
    "format_time",
    "iso_time",
    "json_row",
    "json_safe",
    "json_text",
    "open_store",
    "resolve_run",
    "short_id",
    "state_style",
    "store_session",
    "translate",
]

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_CANCELLED = 130  # 128 + SIGINT, what shells report for Ctrl-C
EXIT_TERMINATED = 143  # 128 + SIGTERM

#: Where ``--debug`` is remembered; ``ctx.meta`` is shared by nested contexts,
#: so the group sees what a subcommand's option set.
DEBUG_KEY = "iterflow.debug"


class CliError(click.ClickException):
    """A problem to report as one line (and a hint), then exit with ``exit_code``."""

    def __init__(self, message: str, hint: str | None = None, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        # The store's messages often end with the same advice: say it once.
        self.hint = None if hint and hint in message else hint
        self.exit_code = exit_code

    def show(self, file: Any = None) -> None:
        """Print ``error: ...`` and ``hint: ...`` to stderr."""
        with contextlib.suppress(Exception):
            sys.stdout.flush()  # what the run printed comes first on a shared terminal
        click.echo(click.style("error: ", fg="red", bold=True) + self.message, err=True)
        if self.hint:
            click.echo(click.style("hint: ", fg="yellow") + self.hint, err=True)


def debug_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--debug`` to a command: show tracebacks instead of one-line errors."""

    def remember(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
        if value:
            ctx.meta[DEBUG_KEY] = True

    return click.option(
        "--debug",
        is_flag=True,
        expose_value=False,
        is_eager=True,
        envvar="ITERFLOW_DEBUG",
        callback=remember,
        help="Show full tracebacks (and debug logs) instead of one-line errors.",
    )(fn)


_STORE_HINT = (
    "check ITERFLOW_STORE_URL and ITERFLOW_HOME (the default store is "
    "$ITERFLOW_HOME/iterflow.db); `iterflow run --no-store` runs without one"
)


def translate(exc: BaseException) -> CliError:
    """The :class:`CliError` to show for an exception a command did not handle itself."""
    from iterflow.errors import (
        ExecutorError,
        IterflowError,
        ParameterError,
        RunNotResumable,
        StoreError,
    )

    if isinstance(exc, CliError):
        return exc
    message = str(exc) or type(exc).__name__
    if isinstance(exc, ParameterError):
        return CliError(message, "pass parameters as -p NAME=VALUE", EXIT_USAGE)
    if isinstance(exc, RunNotResumable):
        return CliError(message, "`iterflow runs` shows every run and its state", EXIT_USAGE)
    if isinstance(exc, StoreError):
        return CliError(message, _STORE_HINT)
    if isinstance(exc, ExecutorError):
        return CliError(message, "try `--executor local` to rule the executor out")
    if isinstance(exc, IterflowError):
        return CliError(message, "rerun with --debug for the traceback")
    if isinstance(exc, OSError):
        return CliError(f"{type(exc).__name__}: {message}", "rerun with --debug for the traceback")
    return CliError(
        f"unexpected {type(exc).__name__}: {message}",
        "rerun with --debug for the traceback; if it points into iterflow, please report it",
    )


# -- the run store ---------------------------------------------------------------
def open_store(required: bool = True, read_only: bool | None = False) -> Any:
    """The run store named by ``ITERFLOW_STORE_URL`` (or the default file).

    When ``iterflow.store`` is not installed: a :class:`CliError` if the
    command needs the store, else ``None`` (the run goes unrecorded).
    ``read_only=None``: for commands that only read, which then work on a
    store this process cannot write (see :class:`~iterflow.store.RunStore`).
    """
    try:
        from iterflow.store import open_store as _open
    except ImportError as exc:
        if not required:
            return None
        raise CliError(
            f"the run store is not available in this installation ({exc})",
            "reinstall iterflow with its dependencies: pip install iterflow",
        ) from exc
    return _open(os.environ.get("ITERFLOW_STORE_URL"), read_only=read_only)


@contextlib.contextmanager
def store_session(read_only: bool | None = False) -> Iterator[Any]:
    """Open the run store for one command and close it afterwards.

    Commands that only read pass ``read_only=None``: they work on a store
    they cannot write (read-only media, another user's home).
    """
    store = open_store(read_only=read_only)
    try:
        yield store
    finally:
        close = getattr(store, "close", None)
        if close is not None:
            close()


def resolve_run(store: Any, run_ref: str) -> dict[str, Any]:
    """The run whose id is ``run_ref`` or starts with it, as a dict; else a usage error."""
    from iterflow.errors import StoreError

    try:
        return store.get_run(run_ref).as_dict()
    except StoreError as exc:
        # Unknown or ambiguous ids are the user's to fix, hence a usage error.
        raise CliError(str(exc), "`iterflow runs` lists the recorded runs", EXIT_USAGE) from exc


# -- formatting ---------------------------------------------------------------------
_TIME_KEYS = frozenset({"started", "ended", "time", "heartbeat", "created", "updated"})


def format_time(value: float | None) -> str:
    """A time (epoch seconds) for a table: local, to the second."""
    if value is None:
        return ""
    return dt.datetime.fromtimestamp(value).strftime("%Y-%m-%d %H:%M:%S")


def iso_time(value: float | None) -> str | None:
    """A time (epoch seconds) for JSON: ISO 8601 in UTC."""
    return None if value is None else dt.datetime.fromtimestamp(value, dt.UTC).isoformat()


def duration(row: Mapping[str, Any]) -> float | None:
    """Seconds from ``started`` to ``ended`` (None while either is missing)."""
    started, ended = row.get("started"), row.get("ended")
    if started is None or ended is None:
        return None
    return max(ended - started, 0.0)


def json_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row ready for ``json.dumps``: times as ISO strings, plus ``duration`` in seconds."""
    out = {key: (iso_time(value) if key in _TIME_KEYS else value) for key, value in row.items()}
    if "started" in row:
        out["duration"] = duration(row)
    return out


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float (at any depth) as a string: strict JSON.

    >>> json_safe({"lr": float("nan"), "steps": [1.5, float("-inf")]})
    {'lr': 'NaN', 'steps': [1.5, '-Infinity']}
    """
    kind = type(value)
    # Exact types first: --json streams a million rows through here.
    if kind is str or kind is int or value is None or kind is bool:
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if kind is dict or isinstance(value, Mapping):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return value


def json_text(value: Any, indent: int | None = 2) -> str:
    """``value`` as strict JSON text (see the module docstring); other objects as ``str``."""
    # allow_nan=False: if a NaN ever slipped past json_safe, fail loudly rather than
    # print what strict parsers reject.
    return json.dumps(json_safe(value), indent=indent, default=str, allow_nan=False)


def short_id(run_id: str) -> str:
    """The first 8 characters of a run id: unique in practice, and short to type."""
    return run_id[:8]


def state_style(state: str | None) -> str:
    """The rich style for a state's name."""
    if state in ("Success", "Cached", "Mapped"):
        return "green"
    if state in ("Failed", "TriggerFailed", "TimedOut", "Crashed"):
        return "bold red"
    if state in ("Cancelled", "Skipped", "Retrying"):
        return "yellow"
    if state in ("Running", "Looped", "Pending"):
        return "cyan"
    return ""
