"""``iterflow run`` and ``iterflow resume``: load a flow from a file and run it.

Loading. ``FILE[:FLOW]`` names a Python file and, optionally, the module-level
variable holding the flow; without it the file must hold exactly one
:class:`~iterflow.Flow`. The file is imported under a name derived from its
stem (``iterflow_flowfile_<stem>``), not ``__main__``: its
``if __name__ == "__main__":`` block stays out of the way. What the file
defines (a class of a loop's result, say) is pickled by value
(:func:`iterflow.pickling.pickle_by_value`), so a recorded value loads in
``iterflow resume``, in ``python FILE`` (where the file is ``__main__``) and
on Dask workers alike. The file's directory goes first
on ``sys.path``, as with ``python FILE``, so its sibling modules import.

Recording. The run is told where its flow came from (``/abs/path.py:var``),
so ``iterflow resume RUN`` needs nothing but the run id: it reads the source
back from the store, loads the flow the same way and continues the run.

Output. Progress goes to stdout through :class:`~iterflow.progress.ProgressDisplay`
(live on a terminal, plain lines otherwise, none with ``--quiet``). Records of
``iterflow.context.logger`` go through the same console, tagged with the task,
map index and loop index, so they scroll above the live display instead of
tearing it. A failed run ends with one error line naming the task that failed
and how to look at it or resume it.
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import importlib.util
import json
import logging
import re
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from iterflow.cli.common import (
    DEBUG_KEY,
    EXIT_CANCELLED,
    EXIT_FAILED,
    EXIT_TERMINATED,
    EXIT_USAGE,
    CliError,
    debug_option,
    open_store,
    resolve_run,
    short_id,
    store_session,
)

__all__ = [
    "LoadedFlow",
    "load_flow",
    "make_executor",
    "parse_parameters",
    "resume_command",
    "run_command",
]


# -- loading a flow from a file ----------------------------------------------------
@dataclass(frozen=True)
class LoadedFlow:
    """A flow read from a file: the flow, the variable holding it, and the file."""

    flow: Any
    variable: str
    path: Path
    module: Any

    @property
    def source(self) -> str:
        """Where the flow came from, as the store records it: ``/abs/file.py:variable``."""
        return f"{self.path}:{self.variable}"


def _split_target(target: str) -> tuple[str, str | None]:
    """``"dir/f.py:flow"`` -> ``("dir/f.py", "flow")``; a path that exists is taken whole."""
    if Path(target).exists():
        return target, None
    path, sep, name = target.rpartition(":")
    if sep and path and name.isidentifier():
        return path, name
    return target, None


def load_flow(target: str) -> LoadedFlow:
    """Import the file ``FILE[:FLOW]`` names and pick its flow, or raise a :class:`CliError`."""
    from iterflow.core.flow import Flow

    path_text, variable = _split_target(target)
    path = Path(path_text).expanduser()
    if not path.exists():
        raise CliError(
            f"no such file: {path_text}",
            "give the path of a Python file that defines a Flow: iterflow run flows.py[:FLOW]",
            EXIT_USAGE,
        )
    if not path.is_file():
        raise CliError(
            f"{path_text} is a directory, not a Python file",
            "give the path of a Python file that defines a Flow: iterflow run flows.py[:FLOW]",
            EXIT_USAGE,
        )
    path = path.resolve()
    module = _import_file(path)
    found: dict[int, str] = {}  # id(flow) -> first variable holding it
    flows: dict[str, Any] = {}
    for name, value in vars(module).items():
        if isinstance(value, Flow) and not name.startswith("_") and id(value) not in found:
            found[id(value)] = name
            flows[name] = value
    listing = ", ".join(f"{name} (Flow {flow.name!r})" for name, flow in flows.items())
    if variable is not None:
        value = getattr(module, variable, None)
        if value is None:
            raise CliError(
                f"{path_text} has no variable {variable!r}",
                f"its flows are: {listing}" if flows else "it defines no module-level Flow",
                EXIT_USAGE,
            )
        if not isinstance(value, Flow):
            raise CliError(
                f"{variable!r} in {path_text} is a {type(value).__name__}, not a Flow",
                f"its flows are: {listing}" if flows else "it defines no module-level Flow",
                EXIT_USAGE,
            )
        return LoadedFlow(value, variable, path, module)
    if not flows:
        raise CliError(
            f"{path_text} defines no module-level Flow",
            'build one at module level (`with Flow("name") as flow: ...`), not only under '
            '`if __name__ == "__main__":`',
            EXIT_USAGE,
        )
    if len(flows) > 1:
        first = next(iter(flows))
        raise CliError(
            f"{path_text} defines {len(flows)} flows: {listing}",
            f"name the one to run: iterflow run {path_text}:{first}",
            EXIT_USAGE,
        )
    name, flow = next(iter(flows.items()))
    return LoadedFlow(flow, name, path, module)


def _import_file(path: Path) -> Any:
    # A name fixed by the file's stem, so that pickles of classes defined in the
    # file resolve when `iterflow resume` loads it again in another process.
    name = "iterflow_flowfile_" + re.sub(r"\W", "_", path.stem)
    loader = importlib.machinery.SourceFileLoader(name, str(path))
    spec = importlib.util.spec_from_loader(name, loader)
    assert spec is not None  # a SourceFileLoader always gives a spec
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    directory = str(path.parent)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    # What the file defines is recorded by value, so that `python FILE` (where it is
    # __main__) can load it too, and so can Dask workers, which cannot import it.
    from iterflow.pickling import pickle_by_value

    pickle_by_value(module)
    try:
        loader.exec_module(module)
    except SyntaxError as exc:
        del sys.modules[name]
        raise CliError(
            f"{exc.filename or path}:{exc.lineno}: syntax error: {exc.msg}",
            f"fix the file; `python -m py_compile {path}` shows the same error",
        ) from exc
    except Exception as exc:
        del sys.modules[name]
        raise CliError(
            f"importing {path} failed: {type(exc).__name__}: {exc}",
            "rerun with --debug for the traceback",
        ) from exc
    return module


# -- parameters and executors ----------------------------------------------------------
def parse_parameters(pairs: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """``["n=10", "name=ada"]`` -> ``{"n": 10, "name": "ada"}``: JSON where it parses, else text."""
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise click.BadParameter(
                f"{pair!r} is not KEY=VALUE (e.g. -p n=10 or -p 'items=[1, 2]')",
                param_hint="-p/--param",
            )
        if key in values:
            raise click.BadParameter(f"parameter {key!r} is given twice", param_hint="-p/--param")
        try:
            values[key] = json.loads(text)
        except ValueError:
            values[key] = text  # not JSON: the text itself, so -p name=ada needs no quotes
    return values


def make_executor(spec: str | None) -> Any:
    """The executor ``--executor`` names: ``local``, ``threads[=N]`` or ``dask[=ADDRESS]``."""
    if spec is None:
        return None
    kind, sep, arg = spec.partition("=")
    kind = kind.strip().lower()
    if kind == "local" and not sep:
        from iterflow.executors import LocalExecutor

        return LocalExecutor()
    if kind == "threads":
        from iterflow.executors import ThreadExecutor

        if not arg:
            return ThreadExecutor()
        if not arg.isdigit() or int(arg) < 1:
            raise click.BadParameter(
                f"threads={arg} needs a positive number of threads", param_hint="--executor"
            )
        return ThreadExecutor(int(arg))
    if kind == "dask":
        try:
            from iterflow.executors import DaskExecutor
        except ImportError as exc:
            raise CliError(
                f"the dask executor is not available ({exc})",
                "install it with: pip install 'iterflow[dask]'",
                EXIT_USAGE,
            ) from exc
        return DaskExecutor(address=arg or None)
    raise click.BadParameter(
        f"{spec!r} is not an executor; use local, threads[=N] or dask[=ADDRESS]",
        param_hint="--executor",
    )


# -- the terminal while a run goes on -------------------------------------------------
@contextlib.contextmanager
def _task_logging(console: Any, level: int) -> Iterator[None]:
    """Show ``iterflow`` log records (tasks' ``context.logger`` among them) on ``console``."""
    from iterflow.cli.logs import ConsoleLogHandler

    logger = logging.getLogger("iterflow")
    handler = ConsoleLogHandler(console, level)
    old_level, old_propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False  # we print them; the root logger would print them twice
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        logger.propagate = old_propagate


def execute(
    loaded: LoadedFlow,
    *,
    parameters: dict[str, Any] | None,
    executor: Any,
    store: Any,
    quiet: bool,
    debug: bool,
    resume: str | None = None,
    force: bool = False,
    run_id: str | None = None,
    from_iteration: int | None = None,
    task: str | None = None,
) -> None:
    """Run (or resume) a flow with progress and logs; a :class:`CliError` unless it succeeds.

    ``force``: resume the run even if it looks alive (see ``iterflow resume --force``).
    ``run_id``: the id chosen with ``iterflow run --run-id`` (idempotent, see
    :mod:`iterflow.store.idempotent`).
    """
    from rich.console import Console

    from iterflow.errors import RunCancelled
    from iterflow.progress import ProgressDisplay, quoted
    from iterflow.runtime import run_flow
    from iterflow.store.idempotent import RECORDED

    flow = loaded.flow
    # Bound to the real stdout now: a task with log_stdout=True swaps sys.stdout for
    # its logger, and a console that followed the swap would log its own lines forever.
    console = Console(file=sys.stdout, highlight=False)
    display = None if quiet else ProgressDisplay.for_flow(flow, console=console)
    chosen = run_id
    run_id = resume or chosen or uuid.uuid4().hex
    short = chosen or short_id(run_id)  # an id the user chose is shown as it is
    level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
    resume_hint = f"continue it with `iterflow resume {short}`" if store is not None else None
    with _task_logging(console, level):
        try:
            state = run_flow(
                flow,
                parameters=parameters,
                executor=executor,
                store=store,
                resume=resume,
                run_id=None if resume else run_id,
                source=loaded.source,
                sinks=[display] if display is not None else None,
                force=force,
                from_iteration=from_iteration,
                task=task,
            )
        except KeyboardInterrupt:
            raise CliError(
                f"run {short} of flow {quoted(flow.name)} cancelled (Ctrl-C)", resume_hint,
                EXIT_CANCELLED,
            ) from None
        except RunCancelled as exc:  # SIGTERM, turned into RunCancelled by the runtime
            raise CliError(
                f"run {short} of flow {quoted(flow.name)} {exc}", resume_hint, EXIT_TERMINATED
            ) from None
    if state.is_successful():
        if chosen is not None and state.message == RECORDED:
            click.echo(f"Run {short} of flow {quoted(flow.name)} already finished "
                       f"{state.name}: nothing ran (`iterflow show {short}` shows it)")
        elif quiet:
            click.echo(f"Flow {quoted(flow.name)} finished {state.name} (run {short})")
        return
    raise _run_failed(flow, state, short, recorded=store is not None, debug=debug)


def _run_failed(flow: Any, state: Any, short: str, *, recorded: bool, debug: bool) -> CliError:
    """The error for a run that ended badly: the first failure (a cause, not an effect)."""
    from iterflow.progress import quoted

    failures = _failures(flow, state)
    if debug:
        for _name, label, failed in failures:
            if failed.traceback:
                click.echo(f"--- {label}: {failed.name}\n{failed.traceback}", err=True)
    if failures:
        name, label, failed = failures[0]
        # The engine's messages name the task already ("task 'x' in flow 'f', iteration 3,
        # failed: ..."); say it ourselves only when the message does not.
        why = failed.message or failed.name
        if repr(name) not in why and quoted(name) not in why:
            why = f"task {quoted(label)} {failed.name}: {why}"
        if len(failures) > 1:
            more = len(failures) - 1
            why += f" (and {more} more failed task run{'s' if more > 1 else ''})"
        why = f": {why}"
    else:
        why = f": {state.message}" if state.message else ""
    if recorded:
        hint = (f"see every task run with `iterflow show {short}`; after a fix, continue "
                f"it with `iterflow resume {short}`")
    else:
        hint = "rerun with a run store (without --no-store) to inspect and resume failed runs"
    return CliError(f"run {short} of flow {quoted(flow.name)} {state.name}{why}", hint,
                    EXIT_FAILED)


def _failures(flow: Any, state: Any) -> list[tuple[str, str, Any]]:
    """The failed task runs as (task name, label, state), in flow order, causes first.

    A label is the name, with ``[map index]`` for a mapped child; a trigger
    failure is an effect, so it comes after every other failure.
    """
    results = state.result or {}
    failed: list[tuple[str, str, Any]] = []
    for task in flow.sorted_tasks():
        task_state = results.get(task)
        if task_state is None:
            continue
        if task_state.is_mapped():
            failed.extend(
                (task.name, f"{task.name}[{i}]", child)
                for i, child in enumerate(task_state.map_states)
                if child.is_failed() or child.is_cancelled()
            )
        elif task_state.is_failed() or task_state.is_cancelled():
            failed.append((task.name, task.name, task_state))
    failed.sort(key=lambda triple: triple[2].name == "TriggerFailed")  # stable: order kept
    return failed


# -- the commands ------------------------------------------------------------------------
_EXECUTOR_HELP = "Where tasks run: local (default), threads[=N] or dask[=ADDRESS]."


@click.command("run")
@click.argument("target", metavar="FILE[:FLOW]")
@click.option(
    "-p", "--param", "params", multiple=True, metavar="KEY=VALUE",
    help="A flow parameter; VALUE is read as JSON where it can be, else as text. Repeatable.",
)
@click.option("--executor", "executor_spec", metavar="NAME", help=_EXECUTOR_HELP)
@click.option("--no-store", is_flag=True, help="Do not record the run (it cannot be resumed).")
@click.option(
    "--run-id", "run_id", metavar="ID",
    help="Run under this id. Idempotent: if ID finished, nothing runs; if it failed, was "
    "cancelled or crashed, it resumes; if it is running, this is refused.",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress display; only warnings and errors.")
@debug_option
@click.pass_context
def run_command(
    ctx: click.Context,
    target: str,
    params: tuple[str, ...],
    executor_spec: str | None,
    no_store: bool,
    run_id: str | None,
    quiet: bool,
) -> None:
    """Run a flow from a Python file.

    FLOW is the module-level variable holding the flow; leave it out when the
    file holds only one. Exits 0 when the run succeeds, 1 when it fails.

    \b
      iterflow run flows.py
      iterflow run flows.py:etl -p day=2024-05-01 -p 'limits=[1, 2]'
      iterflow run flows.py --executor threads=8
      iterflow run flows.py --run-id sync-$(date +%F)   # run again: same run
    """
    parameters = parse_parameters(params)
    executor = make_executor(executor_spec)
    loaded = load_flow(target)
    store = None if no_store else open_store(required=False)
    try:
        execute(
            loaded,
            parameters=parameters,
            executor=executor,
            store=store,
            quiet=quiet,
            debug=bool(ctx.meta.get(DEBUG_KEY)),
            run_id=run_id,
        )
    finally:
        _close(store)


@click.command("resume")
@click.argument("run_ref", metavar="RUN")
@click.option("--executor", "executor_spec", metavar="NAME", help=_EXECUTOR_HELP)
@click.option("-q", "--quiet", is_flag=True, help="No progress display; only warnings and errors.")
@click.option(
    "--force", is_flag=True,
    help="Resume even if the run looks alive (its process stopped, say); that process, "
    "if it goes on, finds the run taken over and stops.",
)
@click.option(
    "--from-iteration", "from_iteration", type=click.IntRange(min=0), metavar="K",
    help="Rewind a loop to iteration K (0: start it over) and rerun what is downstream; "
    "the later iterations stay in the history, superseded. The run may have finished.",
)
@click.option("--task", "task_name", metavar="NAME",
              help="With --from-iteration: the looping task (needed when several loop).")
@debug_option
@click.pass_context
def resume_command(
    ctx: click.Context, run_ref: str, executor_spec: str | None, quiet: bool, force: bool,
    from_iteration: int | None, task_name: str | None,
) -> None:
    """Continue a failed, cancelled or crashed run where it stopped.

    RUN is a run id or a unique prefix of one. The flow is loaded again from
    the file it was run from; finished tasks are not run again, and a looping
    task continues after its last recorded iteration.

    \b
      iterflow resume 3f9a2c1b
      iterflow resume 3f9a2c1b --from-iteration 40 --task train
    """
    if task_name is not None and from_iteration is None:
        raise CliError("--task goes with --from-iteration K", exit_code=EXIT_USAGE)
    executor = make_executor(executor_spec)
    with store_session() as store:
        run = resolve_run(store, run_ref)
        run_id, source = run["run_id"], run.get("source")
        if not source:
            raise CliError(
                f"run {short_id(run_id)} has no recorded source file (it was started from Python)",
                f"resume it from Python: flow.run(resume={run_id!r})",
                EXIT_USAGE,
            )
        path_text = source.rpartition(":")[0]
        if not Path(path_text).is_file():
            raise CliError(
                f"run {short_id(run_id)} was started from {path_text}, which no longer exists",
                f"put the file back, or resume from Python: flow.run(resume={run_id!r})",
                EXIT_USAGE,
            )
        loaded = load_flow(source)
        if loaded.flow.name != run.get("flow_name", loaded.flow.name):
            click.echo(
                f"warning: run {short_id(run_id)} was of flow {run['flow_name']!r}; "
                f"{source} now holds flow {loaded.flow.name!r}",
                err=True,
            )
        execute(
            loaded,
            parameters=None,  # the run's own parameters, from the store
            executor=executor,
            store=store,
            quiet=quiet,
            debug=bool(ctx.meta.get(DEBUG_KEY)),
            resume=run_id,
            force=force,
            from_iteration=from_iteration,
            task=task_name,
        )


def _close(store: Any) -> None:
    close = getattr(store, "close", None)
    if close is not None:
        close()
