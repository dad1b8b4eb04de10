"""Every page and fragment of the dashboard over HTTP, on a real SQLite store."""

from __future__ import annotations

import re
import time

from iterflow.core.state import Running
from iterflow.events import FlowRunEvent
from iterflow.store import runs_page

ROW = re.compile(r'<a href="/runs/([0-9a-f]{32})">')


def run_ids(html: str) -> list[str]:
    return ROW.findall(html)


# -- runs list ---------------------------------------------------------------------------


def test_runs_list_links_every_run_to_its_page(client, big):
    _store, run = big
    page = client.get("/")
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    ids = run_ids(page.text)
    assert ids[0] == run.run_id  # newest first
    assert len(ids) == 50
    assert "1,000 iterations" in page.text  # loop progress


def test_runs_list_pages_by_keyset(client):
    first = client.get("/")
    more = re.search(r'href="(/\?after=[^"]+)"', first.text)
    assert more, "an 'older runs' link"
    second = client.get(more.group(1).replace("&amp;", "&"))
    assert second.status_code == 200
    a, b = run_ids(first.text), run_ids(second.text)
    assert len(b) == 50 and not set(a) & set(b)
    # htmx asks for the rows only.
    fragment = client.get(more.group(1).replace("&amp;", "&"),
                          headers={"HX-Request": "true", "HX-Target": "runs-more"})
    assert "<html" not in fragment.text and run_ids(fragment.text) == b


def test_runs_list_filters(client, big):
    _store, run = big
    by_flow = client.get("/?flow=big")
    assert run_ids(by_flow.text) == [run.run_id]
    failed = run_ids(client.get("/?state=Failed").text)
    assert failed and run.run_id not in failed
    assert all("Failed" in row for row in client.get("/?state=Failed").text.split("<tr>")[2:])
    assert run_ids(client.get(f"/?q={run.run_id[:10]}").text) == [run.run_id]
    assert run_ids(client.get("/?q=demo").text) == [run.run_id]  # a parameter value
    # Time range: the small runs started a day before the big one.
    assert run_ids(client.get("/?since=2023-11-14T22:00").text) == [run.run_id]
    assert run.run_id not in run_ids(client.get("/?until=2023-11-13").text + "x")
    assert client.get("/?since=yesterday").status_code == 400


def test_a_dead_run_shows_crashed(empty_store):
    from starlette.testclient import TestClient

    from iterflow.ui import create_app

    sink = empty_store.sink(heartbeat_interval=3600)
    sink.handle(FlowRunEvent("d" * 32, "gone", Running(timestamp=time.time() - 3600)))
    sink.flush()
    # The process that "ran" it: a pid that cannot exist, on this host.
    empty_store.write(lambda conn: conn.exec_driver_sql(
        "UPDATE flow_runs SET pid = 999999999, heartbeat = 1"))
    sink.close()
    with TestClient(create_app(empty_store)) as c:
        page = c.get("/")
        assert "Crashed" in page.text
        assert run_ids(c.get("/?state=Crashed").text) == ["d" * 32]
        assert run_ids(c.get("/?state=Running").text) == []
        assert "Crashed" in c.get("/runs/ddd").text


# -- run page ------------------------------------------------------------------------------


def test_run_page_by_id_and_by_unique_prefix(client, big):
    _store, run = big
    full = client.get(f"/runs/{run.run_id}")
    assert full.status_code == 200
    assert run.run_id in full.text
    assert client.get(f"/runs/{run.run_id[:7]}").text == full.text
    assert client.get("/runs/ffffffffffff").status_code == 404


def test_ambiguous_prefix_is_404_naming_the_problem(client):
    page = client.get("/runs/")
    assert page.status_code == 404
    ids = run_ids(client.get("/").text)
    common = next(a[:1] for a in ids for b in ids if a != b and a[:1] == b[:1])
    answer = client.get(f"/runs/{common}")
    assert answer.status_code == 404 and "more than one run" in answer.text


def test_run_page_folds_maps_and_hides_block_bodies(client, big):
    _store, run = big
    page = client.get(f"/runs/{run.run_id}").text
    tasks = page.split('<table class="tasks">')[1].split("</table>")[0]
    assert tasks.count("<tr>") == 1 + 3 + 1 + 1  # header + grind, epochs, fetch; children
    assert "120 children of fetch" in tasks  # folded, expandable
    assert "map \u00d7 120" in tasks
    assert "118 Success" in tasks and "2 Failed" in tasks
    assert "loop block" in tasks
    assert "train" not in tasks  # the block's body lives under its iterations


def test_run_page_summarises_each_loop(client, big):
    _store, run = big
    page = client.get(f"/runs/{run.run_id}").text
    assert 'id="loop-grind"' in page and 'id="loop-epochs"' in page
    grind = page.split('id="loop-grind"')[1].split("</section>")[0]
    assert '<span class="big">1,000</span> iterations' in grind
    assert "4 Retrying" in grind and "retries 4" in grind
    assert "p50" in grind and "p95" in grind and "max" in grind
    assert f"/runs/{run.run_id}/iterations/249/grind" in grind  # first failure
    assert "slowest: #" in grind
    assert f'src="/runs/{run.run_id}/strip/grind' in grind
    # Bounded: ten rows of the table, not a thousand.
    assert grind.count('<td class="num"><a href=') == 10
    epochs = page.split('id="loop-epochs"')[1].split("</section>")[0]
    assert "<span class=\"big\">40</span> iterations" in epochs


def test_graph(client, big):
    _store, run = big
    svg = client.get(f"/runs/{run.run_id}/graph.svg")
    assert svg.headers["content-type"].startswith("image/svg+xml")
    text = svg.text
    assert "\u00d71,000" in text  # the looping task's self-edge label
    assert "40 iterations" in text  # the block's back-edge label
    assert "map \u00d7 120" in text
    assert text.count('<g class="node"') == 3


# -- iterations ------------------------------------------------------------------------------


def iteration_numbers(html: str) -> list[int]:
    return [int(n) for n in re.findall(r'/iterations/(\d+)/grind">\d+</a>', html)]


def test_iteration_table_pages_jumps_and_filters(client, big):
    _store, run = big
    base = f"/runs/{run.run_id}/iterations/grind"
    first = client.get(base).text
    assert iteration_numbers(first)[:5] == [0, 1, 2, 3, 4]
    assert len(set(iteration_numbers(first))) == 50
    later = re.search(r'href="([^"]+start=\d+)"', first.split('class="pager"')[1]).group(1)
    assert iteration_numbers(client.get(later).text)[0] == 50
    end = client.get(f"{base}?jump=999").text
    assert iteration_numbers(end) == [999, 999]  # a failed attempt, then the success
    assert "Success" in end and "Retrying" in end
    assert "← earlier" in end
    failed = client.get(f"{base}?failed=1").text
    assert iteration_numbers(failed) == list(run.failing)
    assert "Looped" not in failed.split("<tbody>")[1]
    fragment = client.get(f"{base}?start=500", headers={"HX-Request": "true",
                                                       "HX-Target": "iter-table-grind"})
    assert "<html" not in fragment.text and iteration_numbers(fragment.text)[0] == 500
    assert client.get(f"{base}?jump=abc").status_code == 400


def test_strip_is_an_svg_and_a_click_opens_that_iteration(client, big):
    _store, run = big
    strip = client.get(f"/runs/{run.run_id}/strip/grind")
    assert strip.headers["content-type"].startswith("image/svg+xml")
    assert strip.text.count("<path") == 3  # whatever the number of iterations
    assert strip.text.count("<") < 10
    click = client.get(f"/runs/{run.run_id}/iterations/grind?at.x=300&at.y=10",
                       follow_redirects=False)
    assert click.status_code == 303
    assert click.headers["location"] == f"/runs/{run.run_id}/iterations/500/grind"


def test_iteration_page_shows_states_traceback_and_logs(client, big):
    _store, run = big
    page = client.get(f"/runs/{run.run_id}/iterations/249/grind")
    assert page.status_code == 200
    text = page.text
    assert "Retrying" in text and "Looped" in text
    assert "ValueError: flaky" in text  # the traceback
    assert "iteration 249 failed" in text  # its log line
    assert client.get(f"/runs/{run.run_id}/iterations/5000/grind").status_code == 404


def test_block_iteration_lists_its_body(client, big):
    _store, run = big
    text = client.get(f"/runs/{run.run_id}/iterations/3/epochs").text
    body = text.split("Body task runs")[1]
    assert f"/runs/{run.run_id}/tasks/epochs/3/train" in body
    assert f"/runs/{run.run_id}/tasks/epochs/3/check" in body
    assert client.get(f"/runs/{run.run_id}/tasks/epochs/3/train").status_code == 200


def test_mapped_task_page_pages_its_children(client, big):
    _store, run = big
    page = client.get(f"/runs/{run.run_id}/tasks/fetch").text
    children = re.findall(r'/tasks/fetch/(\d+)">', page)
    assert children == [str(i) for i in range(50)]
    more = re.search(r'href="([^"]+after=\d+)"', page).group(1)
    fragment = client.get(more, headers={"HX-Request": "true", "HX-Target": "children"})
    assert "<html" not in fragment.text
    assert re.findall(r'/tasks/fetch/(\d+)">', fragment.text)[0] == "50"
    assert client.get(f"/runs/{run.run_id}/tasks/fetch/49").status_code == 200
    assert client.get(f"/runs/{run.run_id}/tasks/nothing").status_code == 404


# -- logs -------------------------------------------------------------------------------------


def test_logs_filter_and_page(client, big):
    _store, run = big
    base = f"/runs/{run.run_id}/logs"
    errors = client.get(f"{base}?level=40").text
    assert errors.count("lvl-error") == 4 and "lvl-info" not in errors
    one = client.get(f"{base}?iteration=249&task=grind").text
    assert "iteration 249 failed" in one and "at iteration 200" not in one
    text = client.get(f"{base}?q=iteration+7").text
    assert "iteration 700" in text and "iteration 249" not in text
    first = client.get(base).text
    assert first.count("<tr class=") == 14  # 10 progress lines + 4 errors
    assert client.get(f"{base}?task=nothing").text.count("<tr class=") == 0


def test_logs_page_by_id(client, big):
    store, run = big
    from iterflow.store import log_page

    key = run.run_id
    page = log_page(store, key, limit=5)
    assert len(page.lines) == 5 and page.next_after == page.lines[-1].id
    rest = log_page(store, key, after=page.next_after, limit=500)
    assert rest.lines[0].id > page.next_after
    assert len(rest.lines) == 9 and rest.next_after is None


def test_store_reader_pages_runs_without_repeats(big):
    store, _run = big
    seen, key = [], None
    while True:
        page = runs_page(store, limit=17, after=key)
        seen += [r.run_id for r in page.runs]
        key = page.next_key
        if key is None:
            break
    assert len(seen) == len(set(seen)) == 121


def test_static_assets_are_served(client):
    for path in ("/static/style.css", "/static/vendor/htmx.min.js",
                 "/static/vendor/htmx-ext-sse.min.js"):
        answer = client.get(path)
        assert answer.status_code == 200 and len(answer.content) > 1000, path


def test_a_long_loop_seen_first_gets_its_summary_after_the_page(big, monkeypatch):
    from starlette.testclient import TestClient

    from iterflow.ui import create_app, views

    store, run = big
    monkeypatch.setattr(views, "INLINE_SUMMARY", 100)
    with TestClient(create_app(store)) as c:
        page = c.get(f"/runs/{run.run_id}").text
        grind = page.split('id="loop-grind"')[1].split("</section>")[0]
        assert '<span class="big">1,000</span> iterations' in grind
        assert f'hx-get="/runs/{run.run_id}/summary/grind"' in grind
        assert f'href="/runs/{run.run_id}/tasks/grind"' in grind  # without JS: a link
        assert "p95" not in grind
        fragment = c.get(f"/runs/{run.run_id}/summary/grind").text
        assert "<html" not in fragment and "p95" in fragment and "first failure" in fragment
        # Read once, the summary is cheap: the page includes it from now on.
        again = c.get(f"/runs/{run.run_id}").text.split('id="loop-grind"')[1]
        assert "p95" in again.split("</section>")[0]


def test_create_app_opens_a_store_from_a_url(big):
    from starlette.testclient import TestClient

    from iterflow.ui import create_app

    store, run = big
    app = create_app(store.url)
    with TestClient(app) as c:
        assert run.run_id in c.get("/").text


def test_loop_summaries_kept_are_bounded(big):
    from iterflow.store import run_shape
    from iterflow.ui.app import Dashboard

    store, run = big
    keys = [g.key for g in run_shape(store, run.run_id).tasks if g.loops]
    dash = Dashboard(store, max_rows=1500)
    first = dash.summary(keys[0])  # grind: 1,004 attempts
    assert dash.has_summary(keys[0])
    dash.summary(keys[1])  # epochs: 40 more, within the bound
    assert dash.has_summary(keys[0]) and dash.has_summary(keys[1])
    small = Dashboard(store, max_rows=500)
    small.summary(keys[0])
    small.summary(keys[1])  # over the bound: the least recently viewed goes
    assert not small.has_summary(keys[0]) and small.has_summary(keys[1])
    assert small.summary(keys[0]) == first  # read again when asked


def test_an_empty_store(empty_store):
    from starlette.testclient import TestClient

    from iterflow.ui import create_app

    with TestClient(create_app(empty_store)) as c:
        page = c.get("/")
        assert page.status_code == 200 and "No runs." in page.text
        assert "No runs match these filters." in c.get("/?flow=nothing").text


def test_a_task_that_did_not_loop_shows_its_states(client, big):
    _store, run = big
    page = client.get(f"/runs/{run.run_id}/tasks/fetch/49").text
    assert "Failed" in page and "no page" in page
    assert "Iterations of" not in page and 'class="panel"' not in page


def test_logs_page_links_to_the_next_page(big, monkeypatch):
    from starlette.testclient import TestClient

    from iterflow.ui import create_app, views

    _store, run = big
    with TestClient(create_app(big[0])) as c:
        monkeypatch.setattr(views, "_PAGE", 3)  # 6 lines a page
        first = c.get(f"/runs/{run.run_id}/logs").text
        monkeypatch.undo()
        assert first.count("<tr class=") == 6
        more = re.search(r'href="([^"]+after=\d+)"', first).group(1).replace("&amp;", "&")
        rest = c.get(more).text
        assert rest.count("<tr class=") == 8
        assert not set(re.findall(r"at iteration \d+", first)) & set(
            re.findall(r"at iteration \d+", rest))
