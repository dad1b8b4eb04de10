"""Live progress of a flow run on the terminal: an event sink.

:class:`ProgressDisplay` reads the same events as the run store. It has two
faces:

- **live**, when stdout is a terminal: a small table, redrawn a few times a
  second, with the tasks finished out of the total, the task runs running now,
  and for each looping one its current iteration and its rate in iterations
  per second. Finished tasks scroll above it as plain lines.
- **plain**, when stdout is not a terminal (a pipe, a log file, CI) or when
  asked to be quiet: one line when the run starts, one per finished task (not
  one per iteration) and one when it ends.

Why it is cheap on a loop's hot path: a looping task emits a ``Running`` and a
``Looped`` event on every iteration, possibly a million times a second, so
:meth:`ProgressDisplay.handle` does O(1) work for them — one dict lookup and
two attribute stores on the task run's view — and draws nothing. Drawing
happens on rich's refresh thread at :data:`REFRESH_PER_SECOND`, which reads
those views; rates are computed there, from how far the iteration moved since
the last sample, so the hot path never looks at a clock.

Thread safety: executors call ``handle`` from several threads at once. The
hot path only writes attributes of an existing view (atomic under the GIL, and
a reader seeing the previous iteration for a moment is harmless); everything
that adds or removes views, counts or prints takes ``_lock``, as does drawing.

>>> flow.run(progress=True)                                  # doctest: +SKIP
>>> from iterflow.runtime import run_flow                    # the same, by hand:
>>> run_flow(flow, sinks=[ProgressDisplay.for_flow(flow)])   # doctest: +SKIP
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from iterflow.core.state import Kind, Looped
from iterflow.durable import SLEEP_PREFIX, parse_sleep
from iterflow.engine.transitions import task_run_event
from iterflow.events import FlowRunEvent, LogEvent, TaskRunEvent

__all__ = ["REFRESH_PER_SECOND", "ProgressDisplay", "format_duration", "quoted"]

#: How often the live display is redrawn. Low on purpose: a redraw holds the
#: GIL for a moment, and the loop it watches is running in the same process.
REFRESH_PER_SECOND = 4.0
#: At most this many running task runs get a row; the rest are counted.
MAX_ROWS = 10
#: Rates are measured over windows of at least this many seconds.
RATE_WINDOW = 1.0

# Kinds that leave a task run running; the hot path tests the first two by identity.
_RUNNING, _LOOPED = Kind.RUNNING, Kind.LOOPED
_ONGOING = frozenset({Kind.RUNNING, Kind.LOOPED, Kind.RETRYING, Kind.PENDING})


class _TaskRunView:
    """What the display knows about one running task run (written on the hot path)."""

    __slots__ = ("kind", "label", "last_label", "loop_index", "rate", "sample_index",
                 "sample_time", "started", "wake")

    def __init__(self, label: str, kind: Kind, loop_index: int, now: float) -> None:
        self.label = label
        self.kind = kind
        self.loop_index = loop_index
        self.started = now
        self.sample_time = now
        self.sample_index = loop_index
        self.rate: float | None = None
        # When the task run sleeps in iterflow.sleep: its wake-up time (else None or past).
        self.wake: float | None = None
        # The label of the last iteration that ended with one (set_iteration_label,
        # LOOP(label=...)): where a paging loop is, in its own words.
        self.last_label: str | None = None

    def update_rate(self, now: float) -> float | None:
        """Iterations per second over the last window; called by the drawing thread."""
        elapsed = now - self.sample_time
        if elapsed >= RATE_WINDOW:
            index = self.loop_index
            self.rate = (index - self.sample_index) / elapsed
            self.sample_time, self.sample_index = now, index
        elif self.rate is None and now > self.started and self.loop_index > 0:
            self.rate = self.loop_index / (now - self.started)
        return self.rate


class ProgressDisplay:
    """An event sink that shows a flow run's progress on a console.

    ``total_tasks`` is how many tasks the run counts towards "finished";
    ``hidden_slugs`` are tasks not worth a line (parameters). ``live=None``
    picks the live display exactly when the console is a terminal. Build one
    for a flow with :meth:`for_flow`.

    >>> display = ProgressDisplay.for_flow(flow, quiet=True)   # doctest: +SKIP
    >>> from iterflow.runtime import run_flow                  # doctest: +SKIP
    >>> run_flow(flow, sinks=[display])                        # doctest: +SKIP
    """

    #: Each Looped event stands for the next iteration's start (see EventBus).
    implied_running = True

    def __init__(
        self,
        total_tasks: int | None = None,
        console: Console | None = None,
        live: bool | None = None,
        hidden_slugs: frozenset[str] = frozenset(),
        refresh_per_second: float = REFRESH_PER_SECOND,
    ) -> None:
        if console is None:
            # The stdout of now, not of each print: a task with log_stdout=True swaps
            # sys.stdout for its logger while it runs.
            console = Console(file=sys.stdout, highlight=False)
        self.console = console
        if live is None:
            live = self.console.is_terminal and not self.console.is_dumb_terminal
        self.live = live
        self.total_tasks = total_tasks
        self.hidden_slugs = hidden_slugs
        self.refresh_per_second = refresh_per_second
        self._running: dict[str, _TaskRunView] = {}
        self._lock = threading.RLock()
        self._live: Live | None = None
        self._flow_name = ""
        self._started = time.time()
        self._finished = 0
        self._finished_slugs: set[str] = set()
        self._failed = 0
        self._children_finished = 0
        self._already_finished = 0
        self._closed = False
        utf = (self.console.encoding or "").lower().startswith("utf")
        self._marks = {"ok": "✓", "bad": "✗", "skip": "-"} if utf else {
            "ok": "+", "bad": "x", "skip": "-"}

    @classmethod
    def for_flow(
        cls, flow: Any, console: Console | None = None, quiet: bool = False
    ) -> ProgressDisplay:
        """A display for one run of ``flow``: live on a terminal, plain otherwise or if quiet."""
        # Parameters get no line of their own; a loop block's it.result / it.index are
        # supplied by the engine and never reported at all.
        hidden = frozenset(p.slug for p in flow.parameters()) | frozenset(
            t.slug for t in flow.tasks if getattr(t, "supplied_by_engine", False)
        )
        total = len(flow.tasks) - len(hidden)
        return cls(total, console=console, live=False if quiet else None, hidden_slugs=hidden)


    # -- the sink contract -------------------------------------------------------
    def handle(self, event: Any) -> None:
        """Take one event. O(1), and draws nothing, for an iteration of a known task run."""
        if event.__class__ is TaskRunEvent:
            # Identity tests, not `in _ONGOING`: hashing an Enum member calls Python code.
            kind = event.state.kind
            if kind is _RUNNING or kind is _LOOPED:
                view = self._running.get(event.task_run_id)
                if view is not None:
                    if kind is _LOOPED:
                        # The next iteration starts at once; its Running event is
                        # implied, so it may never come (see implied_running).
                        view.loop_index = event.loop_index + 1
                        view.kind = _RUNNING
                        if event.label is not None:
                            view.last_label = event.label
                    else:
                        view.loop_index = event.loop_index
                        view.kind = kind
                    return
            self._task_event(event)
        elif event.__class__ is FlowRunEvent:
            self._flow_event(event)
        elif event.__class__ is LogEvent and event.message.startswith(SLEEP_PREFIX):
            # A durable sleep's record: the row says "sleeping until HH:MM" meanwhile.
            # Other LogEvents are shown by the logging handler of whoever set up logging.
            view = self._running.get(event.task_run_id)
            found = parse_sleep(event.message)
            if view is not None and found is not None:
                view.wake = found[0]

    #: Its lane never declines a state (see EventBus.looped_lane).
    lane_always_takes = True

    def looped_lane(self, slug: str, serializer: str | None) -> Any:
        """:meth:`record_looped`: the display needs no event to count an iteration."""
        return self.record_looped

    def record_looped(
        self, head: tuple[Any, ...], loop_index: int, value: Any, label: str | None
    ) -> bool:
        """Iteration ``loop_index`` of the task run ``head`` names looped (no event made).

        See :func:`iterflow.engine.transitions.looped_lane`; ``head`` is (flow
        run id, task run id, slug, name, map index, task run name).
        """
        view = self._running.get(head[1])
        if view is None:  # not seen yet: the usual way, which adds its line
            looped = Looped(None, value, loop_index=loop_index)
            self.handle(task_run_event(*head[:5], loop_index, looped, label=label))
            return True
        view.loop_index = loop_index + 1  # the next iteration starts at once
        view.kind = _RUNNING
        if label is not None:
            view.last_label = label
        return True

    def flush(self) -> None:
        """Make sure everything printed so far has reached the terminal."""
        live = self._live
        if live is not None:
            live.refresh()
        self.console.file.flush()

    def close(self) -> None:
        """Stop the live display (it leaves no trace; the lines printed above stay)."""
        with self._lock:
            self._closed = True
            live, self._live = self._live, None
        if live is not None:
            live.stop()

    # -- events off the hot path ---------------------------------------------------
    # Each takes ``_lock`` to update the counts and decide what to print, and prints
    # after letting it go: printing takes rich's Live lock, and the refresh thread
    # holds that lock while it calls ``_render``, which takes ``_lock``.
    def _task_event(self, event: TaskRunEvent) -> None:
        state = event.state
        kind = state.kind
        now = time.time()
        with self._lock:
            if kind in _ONGOING:
                view = self._running.get(event.task_run_id)
                if view is None:
                    self._running[event.task_run_id] = _TaskRunView(
                        _label(event.task_run_name or event.task_name, event.map_index), kind,
                        event.loop_index, now,
                    )
                else:  # a retry: same task run, same clock
                    view.kind, view.loop_index = kind, event.loop_index
                return
            view = self._running.pop(event.task_run_id, None)
            bad = state.is_failed() or kind is Kind.CANCELLED
            self._failed += bad
            hidden = event.task_slug in self.hidden_slugs
            if not hidden:
                if event.map_index is not None:
                    self._children_finished += 1
                elif event.task_slug not in self._finished_slugs:
                    # A loop block's body tasks finish once per iteration: count each
                    # task once, so "finished" never runs past the total.
                    self._finished_slugs.add(event.task_slug)
                    self._finished += 1
        # Parameters and a mapped task's children get a line only when they fail.
        if bad or not (hidden or event.map_index is not None):
            self._print(self._finished_line(event, view, now))

    def _flow_event(self, event: FlowRunEvent) -> None:
        state = event.state
        live = None
        with self._lock:
            if self._closed:
                return
            if not state.is_finished():
                self._flow_name = event.flow_name
                self._started = state.timestamp
                # A resumed run's runner emits nothing for the tasks it does not run
                # again; its first event names them.
                kept = [s for s in event.finished if s not in self.hidden_slugs]
                self._finished_slugs.update(kept)
                self._finished += len(kept)
                self._already_finished += len(kept)
                verb = "Resuming" if event.resumed else "Running"
                total = self.total_tasks
                count = f", {_plural(total, 'task')}" if total is not None else ""
                if self._already_finished:
                    count += f", {self._already_finished} already finished"
                line = Text.assemble(
                    f"{verb} flow ", (quoted(event.flow_name), "bold"),
                    f" (run {event.flow_run_id[:8]}{count})",
                )
                if self.live and self._live is None:
                    live = self._live = Live(
                        get_renderable=self._render,
                        console=self.console,
                        refresh_per_second=self.refresh_per_second,
                        transient=True,
                        redirect_stdout=True,
                        redirect_stderr=True,
                    )
            else:
                elapsed = state.timestamp - self._started
                style = "green" if state.is_successful() else "red"
                tail = f"{self._finished} tasks" if self.total_tasks is None else (
                    f"{self._finished}/{self.total_tasks} tasks")
                if self._failed:
                    tail += f", {self._failed} failed"
                message = (
                    f": {state.message}" if state.message and not state.is_successful() else ""
                )
                line = Text.assemble(
                    "Flow ", (quoted(event.flow_name), "bold"), " finished ",
                    (state.name, f"bold {style}"),
                    f" in {format_duration(elapsed)} ({tail}){message}",
                )
        self._print(line)
        if live is not None:
            live.start()

    def _finished_line(self, event: TaskRunEvent, view: _TaskRunView | None, now: float) -> Text:
        state = event.state
        if state.is_failed() or state.kind is Kind.CANCELLED:
            mark, style = self._marks["bad"], "red"
        elif state.is_skipped():
            mark, style = self._marks["skip"], "yellow"
        else:
            mark, style = self._marks["ok"], "green"
        # A task run's own name (task_run_name=...) when it has one, else its task's.
        name = _label(event.task_run_name or event.task_name, event.map_index)
        parts: list[Any] = [f"  {mark} ", (name, "bold"), " "]
        parts.append((state.name, style))
        details = []
        if state.kind is Kind.MAPPED:
            details.append(f"{len(state.map_states)} children")
        elif (state.loop_count or 0) > 1:
            details.append(f"{state.loop_count} iterations")
        if view is not None:
            details.append(format_duration(now - view.started))
        if details:
            parts.append(f" ({', '.join(details)})")
        if state.message and not state.is_successful():
            parts.append(f": {state.message}")
        return Text.assemble(*parts)

    def _print(self, line: RenderableType) -> None:
        # Through the console, so that with a live display the line lands above it.
        self.console.print(line, soft_wrap=True, highlight=False)

    # -- drawing (rich's refresh thread) ----------------------------------------------
    def _render(self) -> RenderableType:
        now = time.time()
        with self._lock:
            views = list(self._running.values())
            finished, failed, children = self._finished, self._failed, self._children_finished
        total = f"/{self.total_tasks}" if self.total_tasks is not None else ""
        header = Text.assemble(
            ("● ", "cyan"), (self._flow_name, "bold"),
            f"  {finished}{total} tasks finished, {len(views)} running",
            (f", {failed} failed" if failed else "", "red"),
            f", {children} mapped children done" if children else "",
            f"  {format_duration(now - self._started)}",
        )
        if not views:
            return header
        table = Table(box=None, show_header=True, header_style="dim", pad_edge=False)
        table.add_column("task")
        table.add_column("state")
        table.add_column("iteration", justify="right")
        table.add_column("rate", justify="right")
        table.add_column("elapsed", justify="right")
        views.sort(key=lambda v: v.started)
        shown = views[:MAX_ROWS]
        labelled = any(view.last_label is not None for view in shown)
        if labelled:
            # Labels may be 200 characters long: one line each, cut to fit.
            table.add_column("last label", no_wrap=True, overflow="ellipsis", max_width=48)
        for view in shown:
            rate = view.update_rate(now)
            looping = view.loop_index > 0
            wake = view.wake
            extra = [Text(view.last_label or "")] if labelled else []  # text, never markup
            table.add_row(
                Text(view.label),  # a task's name is text, never markup
                view.kind.value if wake is None or wake <= now
                else f"sleeping until {time.strftime('%H:%M:%S', time.localtime(wake))}",
                str(view.loop_index) if looping else "",
                f"{rate:,.0f} it/s" if looping and rate is not None else "",
                format_duration(now - view.started),
                *extra,
            )
        rows: list[RenderableType] = [header, table]
        if len(views) > MAX_ROWS:
            rows.append(Text(f"  … and {len(views) - MAX_ROWS} more running", style="dim"))
        return Group(*rows)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _label(task_name: str, map_index: int | None) -> str:
    return task_name if map_index is None else f"{task_name}[{map_index}]"


def quoted(name: str) -> str:
    """A user's name in quotes, exactly as written (``repr`` would double backslashes).

    >>> print(quoted("etl [prod]"))
    'etl [prod]'
    """
    return f"'{name}'"


def format_duration(seconds: float | None) -> str:
    """``0.42 s``, ``12.3 s``, ``4m05s``, ``2h10m``; empty for None."""
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
