"""Loop charts: downsampling keeps extremes (a property), the series endpoint on a real run."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

import iterflow
from iterflow import LOOP, Flow, task
from iterflow.store import loop_series, open_store, run_shape
from iterflow.ui import create_app
from iterflow.ui.charts import MAX_POINTS, downsample


@settings(max_examples=200, deadline=None)
@given(ys=st.lists(st.floats(-1e9, 1e9, allow_nan=False), min_size=1, max_size=9_000),
       limit=st.integers(2, 3_000))
def test_downsampling_keeps_the_extremes_and_the_order(ys, limit):
    xs = list(range(len(ys)))
    dx, dy = downsample(xs, ys, limit)
    assert len(dx) == len(dy) <= max(limit, 2)
    assert dx == sorted(set(dx))  # increasing, no point twice
    assert all(ys[x] == y for x, y in zip(dx, dy, strict=True))  # real points only
    assert min(dy) == min(ys) and max(dy) == max(ys)
    if len(ys) <= limit:
        assert dy == ys


@settings(max_examples=50, deadline=None)
@given(ys=st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=10, max_size=4_000),
       parts=st.integers(2, 40))
def test_every_bucket_keeps_its_own_extremes(ys, parts):
    # Whatever window of the data a bucket covers, its spike survives: every
    # local extreme of a block of len/limit*2 points is among the points kept.
    limit = 2 * parts
    dx, _dy = downsample(list(range(len(ys))), ys, limit)
    kept = set(dx)
    n = len(ys)
    if n <= limit:
        return
    for b in range(parts):
        lo, hi = b * n // parts, (b + 1) * n // parts
        chunk = ys[lo:hi]
        assert any(ys[i] == min(chunk) for i in kept if lo <= i < hi)
        assert any(ys[i] == max(chunk) for i in kept if lo <= i < hi)


@task
def train(epochs):
    i = iterflow.context.loop_index
    loss = 1.0 / (i + 1) + (5.0 if i == 1234 else 0.0)  # one spike
    if i < epochs - 1:
        raise LOOP(result={"loss": loss, "epoch": i, "note": "x"})
    return {"loss": loss}


def test_the_series_of_a_loop_result_downsampled_and_zoomed(tmp_path):
    with open_store(f"sqlite:///{tmp_path}/iterflow.db", home=tmp_path) as store:
        with Flow("charted") as flow:
            train(5_000)
        state = flow.run(store=store)
        key = next(g.key for g in run_shape(store, state.run_id).tasks)
        raw = loop_series(store, key)
        assert set(raw) == {"loss", "epoch"} and len(raw["loss"][0]) == 4_999
        with TestClient(create_app(store)) as client:
            whole = client.get(f"/runs/{state.run_id}/series/train").json()
            assert whole["source"] == "result" and whole["start"] == 0
            loss = whole["series"]["loss"]
            assert len(loss["x"]) <= MAX_POINTS and loss["count"] == 4_999
            assert max(loss["y"]) == 5.0 + 1 / 1235  # the spike survived
            assert 1234 in loss["x"]
            zoom = client.get(f"/runs/{state.run_id}/series/train?start=1200&end=1300").json()
            assert zoom["series"]["loss"]["x"] == list(range(1200, 1301))  # full detail
            assert client.get(f"/runs/{state.run_id}/series/train?start=x").status_code == 400
            page = client.get(f"/runs/{state.run_id}").text
            assert f'data-src="/runs/{state.run_id}/series/train"' in page
            assert "<script>" not in page  # CSP: scripts come from files only
