"""``iterflow logs``, and how log records look on the terminal.

A task's ``iterflow.context.logger`` sends each record two ways: to Python
logging (the ``iterflow.task`` logger), and as a ``LogEvent`` to the run's
sinks, which is how the run store keeps it. During ``iterflow run``,
:class:`ConsoleLogHandler` prints the first kind; ``iterflow logs`` prints
the stored kind. Both use :func:`log_line`, so a record looks the same live
and afterwards::

    12:03:04 INFO    accumulate[2] #5: loss 0.031
                     task[map index] #loop index
"""

from __future__ import annotations

import logging
import time
from typing import Any

import click

from iterflow.cli.common import debug_option, resolve_run, store_session

__all__ = ["ConsoleLogHandler", "log_line", "logs_command"]

#: How often ``--follow`` asks the store for new lines.
FOLLOW_INTERVAL = 0.5

_LEVEL_STYLES = {"DEBUG": "dim", "WARNING": "yellow", "ERROR": "red", "CRITICAL": "bold red"}


def log_line(
    when: float,
    level_name: str,
    task: str | None,
    map_index: int | None,
    loop_index: int | None,
    message: str,
    logger_name: str = "iterflow",
) -> Any:
    """One record as a rich ``Text``: time, level, where (task[map] #loop), message."""
    from rich.text import Text

    if task is not None:
        where = task if map_index is None else f"{task}[{map_index}]"
        if loop_index is not None:
            where += f" #{loop_index}"
    else:
        where = logger_name
    return Text.assemble(
        (time.strftime("%H:%M:%S", time.localtime(when)), "dim"),
        " ",
        (f"{level_name:<7}", _LEVEL_STYLES.get(level_name, "")),
        " ",
        (where, "bold"),
        ": ",
        message,
    )


class ConsoleLogHandler(logging.Handler):
    """Prints log records on a rich console, tagged with task, map index and iteration.

    Printing through the console (rather than to a stream of its own) lets a
    live progress display on the same console keep itself below the lines.
    """

    def __init__(self, console: Any, level: int = logging.INFO) -> None:
        super().__init__(level)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        """Print one record; a record made outside a task shows its logger's name."""
        try:
            line = log_line(
                record.created,
                record.levelname,
                # The task run's name (task_run_name=...) when it has one.
                getattr(record, "task_run_name", None) or getattr(record, "task_name", None),
                getattr(record, "map_index", None),
                getattr(record, "loop_index", None),
                record.getMessage(),
                record.name,
            )
            self.console.print(line, soft_wrap=True, highlight=False)
        except Exception:
            self.handleError(record)


@click.command("logs")
@click.argument("run_ref", metavar="RUN")
@click.option("--task", metavar="NAME", help="Only this task's lines (task name or slug).")
@click.option("-f", "--follow", is_flag=True,
              help="Keep printing new lines until the run ends (Ctrl-C stops).")
@debug_option
def logs_command(run_ref: str, task: str | None, follow: bool) -> None:
    """Print the log lines a run recorded (context.logger, and print with log_stdout=True).

    RUN is a run id or a unique prefix of one.
    """
    from rich.console import Console

    console = Console(highlight=False)
    with store_session(read_only=None) as store:
        run = resolve_run(store, run_ref)
        run_id = run["run_id"]
        names: dict[str, str] = {}
        last_id: int | None = None
        try:
            while True:
                # Ask whether the run has ended *before* reading: the writer commits a
                # run's last lines no later than its final state, so none can be missed.
                ended = not follow or store.get_run(run_id).state not in ("Running", "Pending")
                # Only the lines after the last one printed: each is read once.
                fresh = store.logs(run_id, task=task, after=last_id)
                if any(e.task_run_id not in names for e in fresh):
                    # Each line is named after its task run: its task_run_name, if any.
                    names = {t.task_run_id: t.display_name for t in store.task_runs(run_id)}
                for entry in fresh:
                    console.print(_entry_line(entry, names), soft_wrap=True, highlight=False)
                if fresh:
                    last_id = fresh[-1].id
                if ended:
                    break
                time.sleep(FOLLOW_INTERVAL)
        except KeyboardInterrupt:
            return  # the user stopped following: not an error


def _entry_line(entry: Any, names: dict[str, str]) -> Any:
    slug = entry.task_slug
    return log_line(
        entry.time,
        entry.level_name,
        names.get(entry.task_run_id, slug) if slug is not None else None,
        entry.map_index,
        entry.loop_index,
        entry.message,
        "iterflow",
    )
