"""What a run records, and where (DESIGN §7.10, §8)."""

from __future__ import annotations

import pytest

import iterflow
from iterflow import LOOP, Flow, task
from iterflow.store import iterations, list_runs, load_result


def test_the_recorded_loop_result_is_the_value_when_loop_was_raised(store_url):
    # The task appends to one list and passes that same object on every time.
    seen: list[int] = []

    @task
    def grow():
        i = iterflow.context.loop_index
        items = iterflow.context.get("loop_result", [])
        items.append(i)
        seen.append(id(items))
        if i < 4:
            raise LOOP(result=items)
        return items

    with Flow("mutating") as flow:
        t = grow()
    state = flow.run(store=store_url)
    assert state.result[t].result == [0, 1, 2, 3, 4]
    assert len(set(seen)) == 1, "the test needs one list object mutated in place"

    history = iterations(state.run_id, "grow", store=store_url)
    assert [(h.state, h.loop_index) for h in history] == [
        *[("Looped", i) for i in range(4)],
        ("Success", 4),
    ]
    expected = [list(range(i + 1)) for i in range(5)]
    assert [h.preview for h in history] == [repr(v) for v in expected]
    assert [load_result(h.result_id, store=store_url) for h in history] == expected


def count_to_three():
    @task
    def count():
        i = iterflow.context.loop_index
        if i < 2:
            raise LOOP(result=i)
        return i

    with Flow("where") as flow:
        count()
    return flow


def test_the_default_store_is_iterflow_db_in_iterflow_home(tmp_path, monkeypatch):
    home = tmp_path / "not yet made"
    monkeypatch.setenv("ITERFLOW_HOME", str(home))
    monkeypatch.delenv("ITERFLOW_STORE_URL", raising=False)
    state = count_to_three().run()
    db = home / "iterflow.db"
    assert db.is_file()
    runs = list_runs(store=f"sqlite:///{db}")
    assert [(r.run_id, r.state) for r in runs] == [(state.run_id, "Success")]
    assert [h.loop_index for h in iterations(state.run_id, "count", store=f"sqlite:///{db}")] == [
        0,
        1,
        2,
    ]
    assert [r.run_id for r in list_runs()] == [state.run_id]  # queries default there too


def test_iterflow_store_url_overrides_the_default(tmp_path, monkeypatch):
    home = tmp_path / "home"
    other = tmp_path / "elsewhere.db"
    monkeypatch.setenv("ITERFLOW_HOME", str(home))
    monkeypatch.setenv("ITERFLOW_STORE_URL", f"sqlite:///{other}")
    state = count_to_three().run()
    assert [r.run_id for r in list_runs(store=f"sqlite:///{other}")] == [state.run_id]
    assert not (home / "iterflow.db").exists()


@pytest.mark.parametrize("with_url", [False, True], ids=["home", "url"])
def test_store_none_writes_nothing(tmp_path, monkeypatch, with_url):
    home = tmp_path / "home"
    monkeypatch.setenv("ITERFLOW_HOME", str(home))
    if with_url:
        monkeypatch.setenv("ITERFLOW_STORE_URL", f"sqlite:///{tmp_path / 'url.db'}")
    else:
        monkeypatch.delenv("ITERFLOW_STORE_URL", raising=False)
    state = count_to_three().run(store=None)
    assert state.is_successful() and state.run_id
    assert sorted(p.name for p in tmp_path.iterdir()) == []
