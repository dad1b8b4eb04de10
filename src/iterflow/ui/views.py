"""The dashboard's pages and fragments: one function per route (see :mod:`iterflow.ui.app`).

Handlers are plain functions (Starlette runs them in a worker thread, as the
store's readers block). Each does bounded work: a page of rows by keyset,
summaries from :meth:`Dashboard.summary`, never one row per iteration. A
request from htmx (``HX-Request``) gets just the fragment it swaps; any
other request the whole page, so every link and form works without JS.
"""

from __future__ import annotations

import calendar
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from sse_starlette.sse import EventSourceResponse
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from iterflow.errors import StoreError
from iterflow.ui import graph
from iterflow.ui.live import stream

if TYPE_CHECKING:
    from iterflow.ui.app import Dashboard

__all__ = ["ERRORS"]

_LIVE = ("Running", "Pending")
_STATES = ("Running", "Pending", "Success", "Failed", "Crashed", "Cancelled", "TimedOut",
           "TriggerFailed", "Skipped")
_PAGE = 50
_PANEL_ROWS = 10
STRIP_WIDTH = 600
#: A loop with more iterations than this, whose history has not been read yet, has
#: its summary loaded after the page (htmx) so the page itself stays fast.
INLINE_SUMMARY = 5_000


def _dash(request: Request) -> Dashboard:
    return request.app.state.dash  # type: ignore[no-any-return]


def _html(dash: Dashboard, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    return HTMLResponse(dash.render(template, **context), status_code=status)


def _fragment(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def _int(value: str | None, default: int | None = None, *, low: int = 0) -> int | None:
    if value is None or value.strip() == "":
        return default
    try:
        return max(low, int(value.strip()))
    except ValueError:
        raise HTTPException(400, f"{value!r} is not a whole number.") from None


def _time(value: str | None) -> float | None:
    """``YYYY-MM-DD``, ``YYYY-MM-DDTHH:MM`` (UTC) or epoch seconds; ``None`` if empty."""
    if not value:
        return None
    value = value.strip()
    for pattern in ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%Y-%m-%d"):
        try:
            return float(calendar.timegm(time.strptime(value, pattern)))
        except ValueError:
            continue
    try:
        return float(value)
    except ValueError:
        raise HTTPException(
            400, f"{value!r} is not a time (use YYYY-MM-DD or YYYY-MM-DDTHH:MM)."
        ) from None


def _shape(dash: Dashboard, run_id: str) -> Any:
    from iterflow.store import run_shape

    try:
        return run_shape(dash.store, run_id)
    except StoreError as exc:
        raise HTTPException(404, str(exc)) from None


def _run(dash: Dashboard, run_id: str) -> Any:
    """The run (id or unique prefix): header facts only, one indexed lookup."""
    from iterflow.store import get_run

    try:
        return get_run(run_id, store=dash.store)
    except StoreError as exc:
        raise HTTPException(404, str(exc)) from None


def _task_row(dash: Dashboard, run_id: str, task: str) -> Any:
    from iterflow.store import task_run_row

    row = task_run_row(dash.store, f"{run_id}/{task}")
    if row is None:
        raise HTTPException(404, f"Run {run_id} has no task run {task!r}.")
    return row


# -- runs list -------------------------------------------------------------------------------


def _runs_filters(request: Request) -> dict[str, Any]:
    q = request.query_params
    state = q.get("state") or None
    return {
        "flow": q.get("flow") or None,
        "state": state,
        "since": _time(q.get("since")),
        "until": _time(q.get("until")),
        "text": (q.get("q") or "").strip() or None,
    }


def _runs_context(request: Request, after: str | None) -> dict[str, Any]:
    from iterflow.store import flow_names, runs_page

    dash = _dash(request)
    filters = _runs_filters(request)
    page = runs_page(dash.store, after=after, limit=_PAGE, **filters)
    keep = {k: v for k, v in request.query_params.items() if k not in ("after", "token") and v}
    next_url = f"/?{urlencode({**keep, 'after': page.next_key})}" if page.next_key else None
    return {
        "page": page,
        "next_url": next_url,
        "query": keep,
        "query_string": urlencode(keep),
        "flows": flow_names(dash.store),
        "states": _STATES,
        "after": after,
    }


def runs_list(request: Request) -> Response:
    """``/``: runs, newest first, filtered, ``_PAGE`` per page by keyset."""
    dash = _dash(request)
    context = _runs_context(request, request.query_params.get("after") or None)
    if _fragment(request) and request.headers.get("hx-target") in ("run-rows", "runs-more"):
        return _html(dash, "_runs_rows.html", **context)
    deleted = request.query_params.get("deleted", "")
    # Only a run id's characters are echoed (escaped as every string is).
    context["deleted"] = deleted[:64] if deleted.replace("-", "").isalnum() else None
    return _html(dash, "runs.html", **context)


def runs_events(request: Request) -> Response:
    """``/events``: the first page of the runs list, re-sent when it changes."""
    dash = _dash(request)

    def render() -> tuple[dict[str, str], bool]:
        return {"rows": dash.render("_runs_rows.html", **_runs_context(request, None))}, False

    return EventSourceResponse(stream(dash.hub, render, request), ping=15)


# -- a run -----------------------------------------------------------------------------------


def _panels(dash: Dashboard, shape: Any, *, defer: bool = True) -> list[dict[str, Any]]:
    """An iterations panel for each looping task and loop block of the run.

    The first look at a long loop reads its whole history (about a second for
    100,000 iterations); with ``defer`` that summary is left for its own
    request (:func:`summary_fragment`) and the page shows the count meanwhile.
    """
    from iterflow.store import iteration_page

    panels = []
    for group in shape.tasks:
        if not group.loops:
            continue
        count = group.loop_count or (group.loop_index or 0) + 1
        later = defer and count > INLINE_SUMMARY and not dash.has_summary(group.key)
        summary = None if later else dash.summary(group.key, STRIP_WIDTH)
        rows = iteration_page(dash.store, group.key, start=0, limit=_PANEL_ROWS)
        panels.append({"group": group, "summary": summary, "rows": rows, "count": count,
                       "task": _task_path(shape.run.run_id, group.task_run_id),
                       **_metric_table(dash, group.key, group.task_run_id, rows)})
    return panels


def _metric_table(dash: Dashboard, key: int, task_run_id: str, page: Any) -> dict[str, Any]:
    """The iteration table's metric columns: the names, and each shown row's last values.

    One indexed read for the page's iterations only (:mod:`iterflow.store.dashboard_metrics`).
    """
    from iterflow.store.dashboard_metrics import metric_cells

    cells = metric_cells(dash.store, key, task_run_id, [r.loop_index for r in page.rows])
    names: dict[str, None] = {}
    for index in sorted(cells):
        names.update(dict.fromkeys(cells[index]))
    return {"metric_names": list(names), "metric_cells": cells}


def _task_path(run_id: str, task_run_id: str) -> str:
    return task_run_id[len(run_id) + 1:] if task_run_id.startswith(run_id + "/") else task_run_id


def _resume_from(shape: Any) -> list[str]:
    """What ``iterflow resume`` would continue from, in words (nothing if it succeeded)."""
    if shape.run.state in ("Success", *_LIVE):
        return []
    notes = []
    for group in shape.tasks:
        if group.state in ("Success", "Cached", "Skipped", "Mapped"):
            continue
        if group.looped_index is not None:
            notes.append(f"{group.task_name}: iteration {group.looped_index + 1}")
        else:
            notes.append(f"{group.task_name}: from the start")
    return notes


def _run_context(dash: Dashboard, run_id: str, *, defer: bool = True) -> dict[str, Any]:
    from iterflow.store.children import child_runs, parent_of

    shape = _shape(dash, run_id)
    return {
        "run": shape.run,
        # Subflows: the run that started this one, and the runs this one started.
        "parent": parent_of(shape.run.run_id, store=dash.store),
        "children": child_runs(shape.run.run_id, store=dash.store),
        "shape": shape,
        "panels": _panels(dash, shape, defer=defer),
        "resume": _resume_from(shape),
        "live": shape.run.state in _LIVE,
        "graph": _graph(dash, shape),
    }


#: A flow with more top-level tasks than this gets no drawing (the table lists them).
MAX_GRAPH_NODES = 150


def _graph(dash: Dashboard, shape: Any) -> str:
    if len(shape.tasks) > MAX_GRAPH_NODES:
        return (f'<p class="empty">{len(shape.tasks):,} tasks: too many to draw; '
                f"the table below lists them.</p>")
    return graph.render(_graph_shape(dash, shape))


def _graph_shape(dash: Dashboard, shape: Any) -> graph.FlowShape:
    """The run's graph, each loop block drawn with its body (from its first iteration)."""
    from iterflow.ui.pictures import run_picture

    return run_picture(dash.store, shape)


def run_page(request: Request) -> Response:
    """``/runs/<run>``: header, graph, task runs, an iterations panel per loop."""
    from iterflow.ui import actions

    dash = _dash(request)
    context = _run_context(dash, request.path_params["run_id"])
    context["actions"] = actions.page_context(request, dash, context["run"])
    context["events"] = f"/runs/{context['run'].run_id}/events"
    if request.query_params.get("done") in actions.STARTING and not context["live"]:
        # Resume or Rewind just started a process that has not recorded its start
        # yet: follow the run anyway, as it will be live in a moment.
        context["live"] = True
        context["events"] += "?awaiting=1"
    return actions.set_csrf_cookie(request, _html(dash, "run.html", **context))


#: How long a page that started a resume waits for its run to go live (seconds).
AWAIT_START = 60.0


def run_events(request: Request) -> Response:
    """``/runs/<run>/events``: header, tasks and panels as they change; ``end`` at the end."""
    from iterflow.ui import actions

    dash = _dash(request)
    run_id = _run(dash, request.path_params["run_id"]).run_id
    # ?awaiting=1: a page that has just started a resume (see run_page) follows the
    # run until it has gone live and ended, or AWAIT_START passed with no start.
    waiting_until = (
        time.monotonic() + AWAIT_START if request.query_params.get("awaiting") == "1" else 0.0
    )
    went_live = False

    def render() -> tuple[dict[str, str], bool]:
        nonlocal went_live
        context = _run_context(dash, run_id, defer=False)
        # The buttons follow the state (Cancel while live; Resume, Delete after).
        buttons = actions.page_context(request, dash, context["run"])
        fragments = {
            "header": dash.render("_run_header.html", **context),
            "actions": dash.render("_actions.html", run=context["run"], actions=buttons),
            "tasks": dash.render("_tasks.html", **context),
            "children": dash.render("_subflows.html", **context),
            "graph": context["graph"],
        }
        for panel in context["panels"]:
            fragments[f"panel-{panel['group'].task_slug}"] = dash.render(
                "_panel_summary.html", panel=panel, run=context["run"])
        went_live = went_live or context["live"]
        waiting = not went_live and time.monotonic() < waiting_until
        return fragments, not context["live"] and not waiting

    return EventSourceResponse(stream(dash.hub, render, request), ping=15)


def graph_svg(request: Request) -> Response:
    """``/runs/<run>/graph.svg``: the flow's graph, tasks coloured by state."""
    dash = _dash(request)
    shape = _shape(dash, request.path_params["run_id"])
    return Response(graph.render(_graph_shape(dash, shape), standalone=True),
                    media_type="image/svg+xml")


# -- task runs and iterations ------------------------------------------------------------


def task_page(request: Request) -> Response:
    """``/runs/<run>/tasks/<task>``: one task run; a mapped task's children, paged."""
    from iterflow.store import iteration_page, mapped_children

    dash = _dash(request)
    shape = _shape(dash, request.path_params["run_id"])
    run_id = shape.run.run_id
    task = request.path_params["task"]
    row = _task_row(dash, run_id, task)
    after = _int(request.query_params.get("after"), -1, low=-1)
    children, next_after = [], None
    group = next((g for g in shape.tasks if g.task_run_id == row.task_run_id), None)
    if group is not None and group.width:
        children, next_after = mapped_children(dash.store, run_id, row.task_slug,
                                               after=after, limit=_PAGE)
    history = iteration_page(dash.store, row.id, start=0, limit=_PANEL_ROWS)
    looping = (row.loop_count or 0) > 1 or (row.loop_index or 0) > 0 or (group and group.is_block)
    panel = None
    if looping:
        panel = {"group": row, "summary": dash.summary(row.id, STRIP_WIDTH), "rows": history,
                 "task": task, **_metric_table(dash, row.id, row.task_run_id, history)}
    context = {"run": shape.run, "row": row, "task": task, "group": group,
               "children": children, "after": after, "next_after": next_after,
               "history": history, "panel": panel}
    if _fragment(request) and request.headers.get("hx-target") in ("children", "children-more"):
        return _html(dash, "_children.html", **context)
    return _html(dash, "task.html", **context)


def iterations_page(request: Request) -> Response:
    """``/runs/<run>/iterations/<task>``: the iteration table from ``start`` (or ``jump``).

    ``failed=1`` keeps failed attempts; ``label=text`` the iterations whose
    label contains ``text``; ``at.x`` (a click on the strip,
    submitted by the form around it) starts at that bucket's first iteration.
    """
    from iterflow.store import iteration_page

    dash = _dash(request)
    run = _run(dash, request.path_params["run_id"])
    run_id = run.run_id
    task = request.path_params["task"]
    row = _task_row(dash, run_id, task)
    q = request.query_params
    failed = q.get("failed") in ("1", "on", "true")
    # A search of the labels (iterflow.set_iteration_label), done by the store.
    label = (q.get("label") or "").strip()[:200]
    start = _int(q.get("jump")) if q.get("jump") else _int(q.get("start"), 0)
    if q.get("at.x") is not None:
        summary = dash.summary(row.id, STRIP_WIDTH)
        x = _int(q.get("at.x"), 0) or 0
        if summary.strip:
            n = len(summary.strip)
            bucket = summary.strip[min(n - 1, x * n // STRIP_WIDTH)]
            target = f"/runs/{run_id}/iterations/{bucket.first}/{task}"
            return RedirectResponse(target, status_code=303)
    page = iteration_page(dash.store, row.id, start=start or 0, failed_only=failed,
                          label=label or None, limit=_PAGE)
    context = {"run": run, "row": row, "task": task, "rows": page, "failed": failed,
               "label": label, "start": start or 0, "limit": _PAGE,
               **_metric_table(dash, row.id, row.task_run_id, page)}
    if _fragment(request) and (request.headers.get("hx-target") or "").startswith("iter-table"):
        return _html(dash, "_iter_table.html", **context)
    return _html(dash, "iterations.html", **context)


def iteration_page(request: Request) -> Response:
    """``/runs/<run>/iterations/<n>/<task>``: transitions, traceback, preview, logs, body."""
    from iterflow.store import iteration_detail, log_page

    dash = _dash(request)
    run = _run(dash, request.path_params["run_id"])
    run_id = run.run_id
    task = request.path_params["task"]
    index = request.path_params["index"]
    row = _task_row(dash, run_id, task)
    detail = iteration_detail(dash.store, row.task_run_id, row.id, index)
    if not detail["states"] and not detail["body"]:
        raise HTTPException(404, f"Task run {task!r} of run {run_id} has no iteration {index}.")
    lines = log_page(dash.store, run_id, task_run_key=row.id, iteration=index, limit=_PAGE)
    from iterflow.ui import actions

    page = _html(dash, "iteration.html", run=run, row=row, task=task, index=index,
                 detail=detail, logs=lines, run_path=run_id,
                 children=_children_of(dash, run_id, detail["body"]),
                 rewind=actions.rewind_context(request, dash, run, row))
    return actions.set_csrf_cookie(request, page)


def _children_of(dash: Dashboard, run_id: str, body: Any) -> list[Any]:
    """The child runs (subflows) that the body task runs of one block iteration started."""
    if not body:
        return []
    from iterflow.store.children import child_runs

    ids = {b["task_run_id"] if isinstance(b, dict) else b.task_run_id for b in body}
    return [c for c in child_runs(run_id, store=dash.store) if c.parent_task_run_id in ids]


def summary_fragment(request: Request) -> Response:
    """``/runs/<run>/summary/<task>``: a loop's summary and strip, for its panel."""
    dash = _dash(request)
    run = _run(dash, request.path_params["run_id"])
    task = request.path_params["task"]
    row = _task_row(dash, run.run_id, task)
    summary = dash.summary(row.id, STRIP_WIDTH)
    panel = {"summary": summary, "task": task, "group": row}
    return _html(dash, "_panel_summary.html", panel=panel, run=run)


def strip_svg(request: Request) -> Response:
    """``/runs/<run>/strip/<task>``: every iteration's duration and state, bucketed (SVG)."""
    dash = _dash(request)
    run = _run(dash, request.path_params["run_id"])
    row = _task_row(dash, run.run_id, request.path_params["task"])
    summary = dash.summary(row.id, STRIP_WIDTH)
    return Response(graph.strip(summary.strip, STRIP_WIDTH), media_type="image/svg+xml",
                    headers={"cache-control": "no-store"})


# -- logs ---------------------------------------------------------------------------------


def logs_page(request: Request) -> Response:
    """``/runs/<run>/logs``: filter by task, iteration, level, text; paged by id."""
    from iterflow.store import flow_tasks, log_page

    dash = _dash(request)
    run = _run(dash, request.path_params["run_id"])
    q = request.query_params
    after = _int(q.get("after"), 0)
    lines = log_page(dash.store, run.run_id, after=after or 0, limit=_PAGE * 2,
                     **_log_filters(request))
    keep = {k: v for k, v in q.items() if k not in ("after", "token") and v}
    last = lines.lines[-1].id if lines.lines else (after or 0)
    follow = None
    if run.state in _LIVE and lines.next_after is None:
        follow = f"/runs/{run.run_id}/logs/events?{urlencode({**keep, 'after': last})}"
    next_url = (f"/runs/{run.run_id}/logs?{urlencode({**keep, 'after': lines.next_after})}"
                if lines.next_after else None)
    context = {"run": run, "flow_tasks": flow_tasks(dash.store, run.flow_name),
               "lines": lines, "query": keep, "follow": follow,
               "next_url": next_url, "after": after}
    if _fragment(request) and request.headers.get("hx-target") in ("log-rows", "logs-more"):
        return _html(dash, "_log_rows.html", **context)
    return _html(dash, "logs.html", **context)


def _log_filters(request: Request) -> dict[str, Any]:
    q = request.query_params
    return {"task": q.get("task") or None, "iteration": _int(q.get("iteration")),
            "level": _int(q.get("level"), 0), "text": q.get("q") or None}


def logs_events(request: Request) -> Response:
    """``/runs/<run>/logs/events``: new log lines (after ``after``) as they are written."""
    from iterflow.store import get_run, log_page

    dash = _dash(request)
    run_id = _run(dash, request.path_params["run_id"]).run_id
    filters = _log_filters(request)
    seen = [_int(request.query_params.get("after"), 0) or 0]

    def render() -> tuple[dict[str, str], bool]:
        finished = get_run(run_id, store=dash.store).state not in _LIVE
        page = log_page(dash.store, run_id, after=seen[0], limit=_PAGE * 4, **filters)
        if not page.lines:
            return {}, finished
        seen[0] = page.lines[-1].id
        html = dash.render("_log_rows.html", lines=page, next_url=None, quiet=True)
        # More than a page arrived in one tick: send the rest on the next one.
        return {"lines": html}, finished and page.next_after is None

    return EventSourceResponse(stream(dash.hub, render, request, fresh=True), ping=15)


# -- errors -------------------------------------------------------------------------------


def _error(request: Request, exc: Exception) -> Response:
    status = getattr(exc, "status_code", 500)
    detail = getattr(exc, "detail", "") or "Something went wrong."
    dash = _dash(request)
    return _html(dash, "error.html", status=status, status_code=status, detail=detail)


ERRORS: dict[Any, Any] = {HTTPException: _error}
