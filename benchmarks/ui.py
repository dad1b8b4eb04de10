"""The dashboard on a big store: server time per page, response sizes, the browser's view.

Builds (once, kept in ``--home``) a store holding one run with a loop of
100,000 iterations, a loop block of 10,000 iterations and a map of 10,000
children, plus 10,000 other runs, by handing events straight to the store's
sink (what a run would record, in seconds rather than minutes). Then times
each page in-process (Starlette's TestClient, so server time only), best of
``--repeat``; with ``--browser``, loads the run page in headless Chromium and
counts its DOM nodes; with ``--live``, measures the server's memory while 5
SSE clients follow a loop that keeps adding iterations.

    python benchmarks/ui.py                       # SQLite in a temporary home
    python benchmarks/ui.py --home /tmp/uibench   # keep (and reuse) the store
    python benchmarks/ui.py --url postgresql+psycopg://...   # PostgreSQL
    python benchmarks/ui.py --browser --live
    python benchmarks/ui.py --metrics             # also a loop logging 3 metrics x 100,000

Targets (issue 13): runs list and run page <= 200 ms; the iteration table at
any offset <= 50 ms; <= 3,000 DOM nodes; no response over 1 MB.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.ui.stores import write_big_run, write_small_runs

TARGETS = {"runs": 0.2, "run": 0.2, "table": 0.05}


def build(store) -> str:
    """The big run's id (built now if the store does not hold it yet)."""
    from iterflow.store import runs_page

    found = runs_page(store, flow="big", limit=1).runs
    if found:
        return found[0].run_id
    started = time.perf_counter()
    write_small_runs(store, 10_000)
    run = write_big_run(store, loops=100_000, block=10_000, width=10_000, fail_every=250)
    print(f"built the store in {time.perf_counter() - started:.1f} s")
    return run.run_id


def timed(client, url: str, repeat: int, headers=None) -> tuple[float, float, int]:
    """(first, best of ``repeat``, bytes) of GET ``url``."""
    times = []
    size = 0
    for _ in range(repeat):
        started = time.perf_counter()
        answer = client.get(url, headers=headers or {})
        times.append(time.perf_counter() - started)
        assert answer.status_code == 200, (url, answer.status_code, answer.text[:300])
        size = len(answer.content)
    return times[0], min(times), size


def pages(client, run_id: str, repeat: int) -> None:
    from iterflow.store import runs_page

    store = client.app.state.dash.store
    after = runs_page(store, limit=50).next_key
    fragment = {"HX-Request": "true", "HX-Target": "iter-table-grind"}
    rows = [
        ("runs list", "runs", "/", None),
        ("runs list, page 2 (keyset)", "runs", f"/?after={after}", None),
        ("runs list, flow + text filter", "runs", "/?flow=small&q=99", None),
        ("runs list, state Crashed", "runs", "/?state=Crashed", None),
        ("run page", "run", f"/runs/{run_id}", None),
        ("loop summary + strip (100,000 iterations)", None, f"/runs/{run_id}/summary/grind",
         None),
        ("run page, summaries read", "run", f"/runs/{run_id}", None),
        ("iteration table: first page", "table", f"/runs/{run_id}/iterations/grind", fragment),
        ("iteration table: jump to 99,999", "table",
         f"/runs/{run_id}/iterations/grind?jump=99999", fragment),
        ("iteration table: jump to 50,000, failed only", "table",
         f"/runs/{run_id}/iterations/grind?jump=50000&failed=1", fragment),
        ("iteration table: failed only", "table",
         f"/runs/{run_id}/iterations/grind?failed=1", fragment),
        ("block iteration table: jump to 9,999", "table",
         f"/runs/{run_id}/iterations/epochs?jump=9999",
         {"HX-Request": "true", "HX-Target": "iter-table-epochs"}),
        ("iteration page (#99,999, with logs)", None, f"/runs/{run_id}/iterations/99999/grind",
         None),
        ("block iteration page (#9,999, its body)", None,
         f"/runs/{run_id}/iterations/9999/epochs", None),
        ("mapped task (10,000 children, first page)", None, f"/runs/{run_id}/tasks/fetch", None),
        ("logs, errors only", None, f"/runs/{run_id}/logs?level=40", None),
        ("strip (SVG)", None, f"/runs/{run_id}/strip/grind", None),
        ("graph (SVG)", None, f"/runs/{run_id}/graph.svg", None),
    ]
    print("\n| page | first ms | best ms | KB | target |\n|---|---:|---:|---:|---|")
    largest = 0
    for label, target, url, headers in rows:
        first, best, size = timed(client, url, repeat, headers)
        largest = max(largest, size)
        goal = TARGETS.get(target or "")
        verdict = "" if goal is None else f"≤ {goal * 1000:.0f} {'✔' if best <= goal else '✘'}"
        print(f"| {label} | {first * 1000:.1f} | {best * 1000:.1f} | {size / 1024:.1f} | "
              f"{verdict} |")
    print(f"\nlargest response: {largest / 1024:.1f} KB (limit 1024 KB)")


def browser(app, run_id: str) -> None:
    import uvicorn
    from playwright.sync_api import sync_playwright

    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync"]
    with sync_playwright() as p:
        # Debian's Chromium (never a downloaded browser).
        path = os.environ.get("ITERFLOW_TEST_CHROMIUM") or shutil.which("chromium")
        chromium = p.chromium.launch(executable_path=path, args=flags)
        page = chromium.new_page()
        url = f"http://127.0.0.1:{port}/runs/{run_id}"
        page.goto(url)  # warm
        best = None
        for _ in range(3):
            started = time.perf_counter()
            page.goto(url, wait_until="load")
            elapsed = time.perf_counter() - started
            best = elapsed if best is None else min(best, elapsed)
        nodes = page.evaluate("document.getElementsByTagName('*').length")
        print(f"\nrun page in Chromium: {nodes} DOM nodes (≤ 3,000), loaded in "
              f"{best * 1000:.0f} ms (≤ 1,000)")
        chromium.close()
    server.should_exit = True
    thread.join(timeout=10)


def live(store, app) -> None:
    """Server memory while 5 SSE clients follow a loop adding 20,000 iterations."""
    from starlette.testclient import TestClient

    from iterflow.core.state import Looped, Running, Success
    from iterflow.events import FlowRunEvent, TaskRunEvent

    run_id = os.urandom(16).hex()
    tid = f"{run_id}/train"
    sink = store.sink(heartbeat_interval=0.5)
    sink.handle(FlowRunEvent(run_id, "live", Running(), tasks=(("train", "train"),)))
    sink.handle(TaskRunEvent(run_id, tid, "train", "train", None, 0, Running()))
    sink.flush()
    received = [0] * 5
    rss = []

    def follow(n: int) -> None:
        with TestClient(app) as c, c.stream("GET", f"/runs/{run_id}/events") as answer:
            for line in answer.iter_lines():
                if line.startswith("event:"):
                    received[n] += 1

    clients = [threading.Thread(target=follow, args=(n,)) for n in range(5)]
    for c in clients:
        c.start()
    total = 20_000
    for i in range(total):
        sink.handle(TaskRunEvent(run_id, tid, "train", "train", None, i,
                                 Looped(result=i, loop_index=i)))
        if i % 2000 == 0:
            time.sleep(0.3)
            rss.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    sink.handle(TaskRunEvent(run_id, tid, "train", "train", None, total,
                             Success(loop_count=total + 1)))
    sink.handle(FlowRunEvent(run_id, "live", Success()))
    sink.close()
    for c in clients:
        c.join(timeout=30)
    print(f"\n5 SSE clients following {total:,} iterations: events per client "
          f"{received}; peak RSS (MB) every 2,000 iterations: "
          f"{', '.join(f'{r:.0f}' for r in rss)}")


def metrics_run(store, loops: int = 100_000) -> str:
    """A run whose task loops ``loops`` times logging 3 metrics per iteration (built once)."""
    from iterflow.core.state import Looped, Running, Success
    from iterflow.events import FlowRunEvent, MetricEvent, TaskRunEvent
    from iterflow.store import runs_page

    found = runs_page(store, flow="metered", limit=1).runs
    if found:
        return found[0].run_id
    started = time.perf_counter()
    run_id = "e" * 32
    tid = f"{run_id}/fit"
    sink = store.sink(max_pending=50_000, max_batch=20_000)
    now = 1_700_000_000.0
    sink.handle(FlowRunEvent(run_id, "metered", Running(timestamp=now), tasks=(("fit", "fit"),)))
    sink.handle(TaskRunEvent(run_id, tid, "fit", "fit", None, 0, Running(timestamp=now)))
    for i in range(loops):
        now += 0.001
        for name, value in (("loss", 1.0 / (i + 1)), ("accuracy", i / loops), ("lr", 0.1)):
            sink.handle(MetricEvent(run_id, tid, "fit", "fit", None, i, None, name, value, now))
        state = (Looped(result=i, loop_index=i, timestamp=now) if i < loops - 1
                 else Success(result=i, loop_count=loops, timestamp=now))
        sink.handle(TaskRunEvent(run_id, tid, "fit", "fit", None, i, state))
    sink.handle(FlowRunEvent(run_id, "metered", Success(timestamp=now)))
    sink.close()
    print(f"built the metrics run in {time.perf_counter() - started:.1f} s")
    return run_id


def metric_pages(client, run_id: str, repeat: int) -> None:
    fragment = {"HX-Request": "true", "HX-Target": "iter-table-fit"}
    rows = [
        ("run page (panel with 3 metric columns)", f"/runs/{run_id}", None),
        ("series: whole loop, 3 x 100,000 -> 3 x 2,000 points", f"/runs/{run_id}/series/fit",
         None),
        ("series: zoom to 1,000 iterations", f"/runs/{run_id}/series/fit?start=50000&end=50999",
         None),
        ("iteration table with metrics: jump to 99,999",
         f"/runs/{run_id}/iterations/fit?jump=99999", fragment),
    ]
    print("\n| metrics | first ms | best ms | KB |\n|---|---:|---:|---:|")
    for label, url, headers in rows:
        first, best, size = timed(client, url, repeat, headers)
        print(f"| {label} | {first * 1000:.1f} | {best * 1000:.1f} | {size / 1024:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", help="keep the store here (reused when it exists)")
    parser.add_argument("--url", help="a store URL (PostgreSQL); default SQLite in --home")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--browser", action="store_true", help="also load it in Chromium")
    parser.add_argument("--live", action="store_true", help="also follow a live loop")
    parser.add_argument("--metrics", action="store_true",
                        help="also a 100,000-iteration loop logging 3 metrics per iteration")
    args = parser.parse_args()
    from starlette.testclient import TestClient

    from iterflow.store import open_store
    from iterflow.ui import create_app

    home = Path(args.home or tempfile.mkdtemp(prefix="iterflow-ui-bench-"))
    home.mkdir(parents=True, exist_ok=True)
    store = open_store(args.url or f"sqlite:///{home}/iterflow.db", home=home)
    run_id = build(store)
    print(f"store: {store.name}; run {run_id}")
    app = create_app(store)
    with TestClient(app) as client:
        pages(client, run_id, args.repeat)
        if args.metrics:
            metrics_id = metrics_run(store)
            metric_pages(client, metrics_id, args.repeat)
    if args.browser:
        browser(create_app(store), run_id)
    if args.live:
        live(store, create_app(store, interval=0.5))
    store.close()


if __name__ == "__main__":
    main()
