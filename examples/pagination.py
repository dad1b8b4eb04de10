"""Paginate several sources until each has no next page — an unknown number of loops.

The "API" is simulated here: each source has a different number of pages and
returns a cursor to the next one until the last. The fetch task is mapped over
the sources, so each source paginates independently, with its own
``loop_index``, and a page that fails is retried at the same cursor.
"""

import random

import iterflow
from iterflow import LOOP, Flow, Parameter, task

PAGES = {"alpha": 3, "beta": 7, "gamma": 1, "delta": 12}
PAGE_SIZE = 5


def fetch_page(source: str, cursor: int | None) -> dict:
    """A stand-in for an HTTP call: items of one page and the next cursor (or None)."""
    page = cursor or 0
    if random.random() < 0.1:
        raise ConnectionError(f"{source}: transient error on page {page}")
    items = [f"{source}-{page}-{i}" for i in range(PAGE_SIZE)]
    has_next = page + 1 < PAGES[source]
    return {"items": items, "next": page + 1 if has_next else None}


@task(max_retries=5, max_loops=1_000)
def paginate(source):
    """Fetch every page of ``source``; the loop ends when there is no next page."""
    so_far = iterflow.context.get("loop_result", {"items": [], "cursor": None})
    page = fetch_page(source, so_far["cursor"])
    items = so_far["items"] + page["items"]
    if page["next"] is not None:
        raise LOOP(result={"items": items, "cursor": page["next"]})
    return items


@task
def count(batches):
    return sum(len(b) for b in batches)


with Flow("pagination") as flow:
    sources = Parameter("sources", default=sorted(PAGES))
    pages = paginate.map(sources)
    total = count(pages)


if __name__ == "__main__":
    state = flow.run()
    for source, child in zip(sorted(PAGES), state.result[pages].map_states):
        print(f"{source:>6}: {child.loop_count} pages, {len(child.result)} items")
    print("total items:", state.result[total].result)
