"""The dashboard's Starlette application: routes, templates, static files, the live hub.

:func:`create_app` is all a server (``iterflow ui``) or a test needs::

    from iterflow.store import open_store
    from iterflow.ui import create_app
    app = create_app(open_store())        # then: uvicorn.run(app, port=4200)

Pages are rendered on the server (Jinja2 with autoescape on, so every user
string — flow, task and parameter names, values, messages, log lines — is
text, never markup) and work without JavaScript. htmx swaps fragments in for
paging and filters (a request with ``HX-Request`` gets the fragment, any
other the whole page) and its SSE extension applies live updates.

Routes (``<task>`` is a task run id without the run id: ``grind``,
``fetch/7``, ``epochs/3/train``)::

    /                                       runs, filtered, paged by keyset
    /events                                 live rows of the runs list (SSE)
    /runs/<run>                             run page (a unique id prefix resolves)
    /runs/<run>/events                      its live fragments (SSE)
    /runs/<run>/cancel, /resume             POST: actions (iterflow.ui.actions)
    /runs/<run>/delete                      GET: confirm; POST: delete
    /runs/<run>/rewind/<n>/<task>           POST: rewind to iteration n
    /runs/<run>/graph.svg                   the flow's graph
    /runs/<run>/logs                        logs: task, iteration, level, text; by id
    /runs/<run>/logs/events                 new log lines, followed live (SSE)
    /runs/<run>/tasks/<task>                a task run (a mapped task: its children)
    /runs/<run>/iterations/<task>           iteration table: start, failed, jump
    /runs/<run>/iterations/<n>/<task>       one iteration
    /runs/<run>/strip/<task>                the strip of iteration durations (SVG)
    /runs/<run>/series/<task>               a loop's numbers per iteration (JSON, charts)
    /runs/<run>/summary/<task>              a loop's summary (fragment, loaded after the page)
    /static/...                             CSS and vendored JS
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
from starlette.applications import Starlette
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from iterflow.ui import actions, charts, formatting, views
from iterflow.ui.live import Hub
from iterflow.ui.security import SecurityMiddleware

if TYPE_CHECKING:
    from iterflow.store import IterationSummary, LoopStats, RunStore
    from iterflow.store.dashboard_metrics import MetricHistory

__all__ = ["STATIC", "Dashboard", "create_app"]

STATIC = Path(__file__).with_name("static")
_TEMPLATES = Path(__file__).with_name("templates")


class Dashboard:
    """What the routes share: the store, the templates, the live hub, loop summaries.

    Loop summaries (:class:`~iterflow.store.LoopStats`) are kept for the
    ``max_loops`` task runs viewed most recently, so a page of a finished
    100,000-iteration loop reads its history once and a running one only
    what was added since; the least recently viewed are dropped while they
    hold more than ``max_rows`` iterations in all (9 bytes each).
    """

    def __init__(self, store: RunStore, *, interval: float = 0.5, max_loops: int = 32,
                 max_rows: int = 5_000_000) -> None:
        self.store = store
        #: Whether the action buttons work: not ``--read-only``, and a store we can write.
        self.writable = not getattr(store, "read_only", False)
        self.hub = Hub(store, interval=interval)
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(_TEMPLATES),
            autoescape=True,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters.update(formatting.FILTERS)
        self.env.globals.update(formatting.GLOBALS)
        self._loops: OrderedDict[int, tuple[threading.Lock, LoopStats]] = OrderedDict()
        self._loops_lock = threading.Lock()
        self.max_loops = max_loops
        self.max_rows = max_rows
        self._metrics: OrderedDict[int, tuple[threading.Lock, MetricHistory]] = OrderedDict()

    def render(self, template: str, **context: Any) -> str:
        """Render a template (autoescaped)."""
        return self.env.get_template(template).render(**context)

    def metric_history(self, key: int, task_run_id: str) -> MetricHistory:
        """Task run ``key``'s metrics per iteration, brought up to date (read incrementally).

        Kept for the ``max_loops // 4`` task runs charted most recently, fewer
        when they hold more than ``max_rows // 2`` values in all.
        """
        from iterflow.store.dashboard_metrics import MetricHistory

        with self._loops_lock:
            entry = self._metrics.get(key)
            if entry is None:
                entry = (threading.Lock(), MetricHistory(key, task_run_id))
                self._metrics[key] = entry
            self._metrics.move_to_end(key)
            while len(self._metrics) > max(1, self.max_loops // 4):
                self._metrics.popitem(last=False)
        lock, history = entry
        with lock:
            history.update(self.store)
        with self._loops_lock:
            total = sum(len(h) for _lock, h in self._metrics.values())
            while total > self.max_rows // 2 and len(self._metrics) > 1:
                oldest = next(iter(self._metrics))
                if oldest == key:
                    break
                total -= len(self._metrics.pop(oldest)[1])
        return history

    def has_summary(self, key: int) -> bool:
        """Whether task run ``key``'s history has been read (a summary costs little now)."""
        with self._loops_lock:
            return key in self._loops

    def summary(self, key: int, width: int = 600) -> IterationSummary:
        """The iteration summary of task run ``key``, read incrementally (class doc)."""
        from iterflow.store import LoopStats

        with self._loops_lock:
            entry = self._loops.get(key)
            if entry is None:
                entry = (threading.Lock(), LoopStats(key))
                self._loops[key] = entry
                while len(self._loops) > self.max_loops:
                    self._loops.popitem(last=False)
            else:
                self._loops.move_to_end(key)
        lock, stats = entry
        with lock:
            stats.update(self.store)
            summary = stats.summary(width)
        with self._loops_lock:
            total = sum(len(s.durations) for _lock, s in self._loops.values())
            while total > self.max_rows and len(self._loops) > 1:
                oldest = next(iter(self._loops))
                if oldest == key:
                    break
                total -= len(self._loops.pop(oldest)[1].durations)
        return summary


def create_app(
    store: RunStore | str | None = None,
    *,
    token: str | None = None,
    read_only: bool = False,
    interval: float = 0.5,
    allowed_hosts: frozenset[str] | None = None,
) -> Starlette:
    """The dashboard as an ASGI app reading ``store``.

    ``store``: an open :class:`~iterflow.store.RunStore`, a store URL, or
    ``None`` for the default store (``ITERFLOW_STORE_URL`` or
    ``$ITERFLOW_HOME/iterflow.db``), as the CLI reads it.

    ``token``: when given, every request must carry it (see
    :mod:`iterflow.ui.security`). ``interval``: how often the live hub polls
    the store. ``read_only``: refuse every request but GET and HEAD, so
    the Cancel, Resume and Delete buttons (:mod:`iterflow.ui.actions`) are off.
    ``allowed_hosts``: the only ``Host`` names answered (``None``: any).
    """
    opened = store is None or isinstance(store, str)
    if opened:
        from iterflow.store import open_store

        store = open_store(store)  # type: ignore[arg-type]
    dash = Dashboard(store, interval=interval)  # type: ignore[arg-type]
    dash.writable = dash.writable and not read_only

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        dash.hub.stop()
        if opened:
            dash.store.close()  # ours to close: we opened it

    routes = [
        Route("/", views.runs_list, name="runs"),
        Route("/events", views.runs_events, name="runs_events"),
        Route("/runs/{run_id}", views.run_page, name="run"),
        Route("/runs/{run_id}/events", views.run_events, name="run_events"),
        Route("/runs/{run_id}/cancel", actions.cancel, methods=["POST"], name="cancel"),
        Route("/runs/{run_id}/resume", actions.resume, methods=["POST"], name="resume"),
        Route("/runs/{run_id}/delete", actions.delete_page, methods=["GET"],
              name="delete_page"),
        Route("/runs/{run_id}/delete", actions.delete, methods=["POST"], name="delete"),
        Route("/runs/{run_id}/rewind/{index:int}/{task:path}", actions.rewind,
              methods=["POST"], name="rewind"),
        Route("/runs/{run_id}/graph.svg", views.graph_svg, name="graph"),
        Route("/runs/{run_id}/logs", views.logs_page, name="logs"),
        Route("/runs/{run_id}/logs/events", views.logs_events, name="logs_events"),
        Route("/runs/{run_id}/tasks/{task:path}", views.task_page, name="task"),
        Route("/runs/{run_id}/iterations/{index:int}/{task:path}", views.iteration_page,
              name="iteration"),
        Route("/runs/{run_id}/iterations/{task:path}", views.iterations_page, name="iterations"),
        Route("/runs/{run_id}/strip/{task:path}", views.strip_svg, name="strip"),
        Route("/runs/{run_id}/series/{task:path}", charts.series_json, name="series"),
        Route("/runs/{run_id}/summary/{task:path}", views.summary_fragment, name="summary"),
        Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers=views.ERRORS)
    app.state.dash = dash
    app.add_middleware(SecurityMiddleware, token=token, read_only=read_only,
                       allowed_hosts=allowed_hosts)
    return app
