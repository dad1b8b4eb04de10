"""Charts of a loop's numbers per iteration: the data behind the panels' uPlot charts.

``GET /runs/<run>/series/<task>?start=&end=`` answers JSON::

    {"source": "metrics" | "result", "total": 100000, "start": 0, "end": 99999,
     "series": {"loss": {"x": [...], "y": [...]}, ...}}

one series per metric logged with ``iterflow.log_metric`` (by the task in
each iteration, or by a loop block's body in each block iteration: read by
iteration through :class:`iterflow.store.dashboard_metrics.MetricHistory`, kept
by the dashboard and read incrementally), else, when no
metric was logged, one per number in the loop's results (a number, or a dict
of numbers: :func:`iterflow.store.loop_series`). Each series is
downsampled here to at most :data:`MAX_POINTS` points by
:func:`downsample`, which keeps every bucket's minimum and maximum, so a
spike never disappears from a chart however long the loop. Zooming in asks
again for the narrower ``start``..``end`` and gets full detail there.

The browser side is ``static/charts.js`` (no inline script: the page's CSP
allows none) over the vendored uPlot.

>>> downsample(list(range(10)), [0, 5, 1, 1, 9, 1, 1, 1, -3, 1], 4)
([0, 4, 5, 8], [0, 9, 1, -3])
"""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

__all__ = ["MAX_POINTS", "downsample", "series_json"]

#: The most points a series is sent with.
MAX_POINTS = 2_000


def downsample(xs: list[Any], ys: list[float], limit: int = MAX_POINTS
               ) -> tuple[list[Any], list[float]]:
    """At most ``limit`` points of ``(xs, ys)``: each bucket's minimum and maximum, in order.

    ``xs`` must be increasing. The points are split into ``limit // 2``
    buckets of consecutive points; each keeps its lowest and its highest
    point (one point when they are the same), so the series' extremes always
    survive.
    """
    n = len(xs)
    if n <= limit:
        return list(xs), list(ys)
    buckets = max(1, limit // 2)
    out_x: list[Any] = []
    out_y: list[float] = []
    for b in range(buckets):
        lo, hi = b * n // buckets, (b + 1) * n // buckets
        if lo >= hi:
            continue
        chunk = ys[lo:hi]
        i_min = lo + min(range(len(chunk)), key=chunk.__getitem__)
        i_max = lo + max(range(len(chunk)), key=chunk.__getitem__)
        for i in sorted({i_min, i_max}):
            out_x.append(xs[i])
            out_y.append(ys[i])
    return out_x, out_y


def _bound(value: str | None) -> int | None:
    if value is None or value.strip() == "":
        return None
    try:
        return max(0, int(float(value)))
    except ValueError:
        raise HTTPException(400, f"start and end are iteration numbers, got {value!r}") from None


def series_json(request: Request) -> Response:
    """``/runs/<run>/series/<task>``: the loop's series, downsampled (module doc)."""
    from iterflow.store import loop_series
    from iterflow.ui import views

    dash = request.app.state.dash
    run = views._run(dash, request.path_params["run_id"])
    row = views._task_row(dash, run.run_id, request.path_params["task"])
    start = _bound(request.query_params.get("start"))
    end = _bound(request.query_params.get("end"))
    # Read incrementally and kept by the dashboard: a live chart's refresh reads only
    # what was logged since, and a zoom reads nothing.
    history = dash.metric_history(row.id, row.task_run_id)
    found = history.series(start, end)
    source = "metrics"
    # A zoom outside the logged iterations is still a metrics chart (an empty one).
    if not found and ((start is None and end is None) or not history.data):
        found, source = loop_series(dash.store, row.id, start=start, end=end), "result"
    series = {}
    for name, (xs, ys) in found.items():
        dx, dy = downsample(xs, ys)
        series[name] = {"x": dx, "y": dy, "count": len(xs)}
    all_x = [x for xs, _ys in found.values() for x in (xs[:1] + xs[-1:])]
    return JSONResponse(
        {"source": source, "series": series,
         "start": min(all_x) if all_x else None, "end": max(all_x) if all_x else None},
        headers={"cache-control": "no-store"},
    )
