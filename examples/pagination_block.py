"""Copy every page of a paginated API: fetch -> transform -> save -> decide, as a loop block.

``examples/pagination.py`` pages through each source with one looping task.
Here each page goes through a small pipeline of its own tasks, so each step
is recorded, retried and timed on its own, and a page that fails to save is
retried without fetching it again. The loop carries the cursor and the
running counts; it ends when the API says there is no next page.

The "API" is simulated: 7 pages of 5 items, with transient errors now and
then. Pages are saved as ``page-<n>.json`` files (in a temporary directory
here; pass ``-p out_dir=...`` to ``iterflow run`` to choose), so saving a
page twice — after a crash, say — writes the same file: the loop can be
resumed safely.

    python examples/pagination_block.py
"""

import json
import random
import tempfile
from pathlib import Path

import iterflow
from iterflow import Flow, Parameter, loop, task

PAGES = 7
PAGE_SIZE = 5


@task(max_retries=5)
def fetch_page(cursor):
    """A stand-in for an HTTP call: one page of items and the next cursor (or None)."""
    if random.random() < 0.15:
        raise ConnectionError(f"transient error fetching page {cursor}")
    items = [{"id": cursor * PAGE_SIZE + i, "name": f"item {cursor}.{i}"} for i in range(PAGE_SIZE)]
    return {"items": items, "next": cursor + 1 if cursor + 1 < PAGES else None}


@task
def transform(page):
    """Keep what we need, in the shape we store."""
    return [{"id": item["id"], "title": item["name"].title()} for item in page["items"]]


@task(max_retries=3)
def save(records, cursor, out_dir):
    """Write the page's records; the file name makes a second write of a page harmless."""
    path = Path(out_dir) / f"page-{cursor:04d}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records))
    iterflow.context.logger.info("saved %d records to %s", len(records), path.name)
    return len(records)


@task
def advance(progress, page, saved):
    """The value carried to the next iteration: where to go on, and how far we got."""
    return {"cursor": page["next"], "pages": progress["pages"] + 1,
            "items": progress["items"] + saved}


@task
def last_page(page):
    return page["next"] is None


@task
def report(progress):
    return f"{progress['pages']} pages, {progress['items']} items"


with Flow("pagination block") as flow:
    out_dir = Parameter(
        "out_dir", default=str(Path(tempfile.gettempdir()) / "iterflow-pagination-block")
    )
    with loop(initial={"cursor": 0, "pages": 0, "items": 0}, max_loops=1_000,
              name="pages") as it:
        cursor = it.result["cursor"]
        page = fetch_page(cursor)
        records = transform(page)
        saved = save(records, cursor, out_dir)
        it.next(result=advance(it.result, page, saved), until=last_page(page))
    summary = report(it.final)


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as out:
        state = flow.run(parameters={"out_dir": out})
        print(state.result[summary].result, "in", len(list(Path(out).glob("page-*.json"))),
              "files")
        block = state.result[it.final]
        print(f"the loop block ran {block.loop_count} iterations; run id {state.run_id}")
