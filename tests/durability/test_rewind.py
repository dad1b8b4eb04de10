"""Rewind a loop to iteration K: ``flow.run(resume=RUN, from_iteration=K, task=NAME)``."""

from __future__ import annotations

import pytest

import iterflow
from iterflow import LOOP, Flow, Parameter, task
from iterflow.errors import ParameterError
from iterflow.store import iterations, open_store
from iterflow.store.rewind import superseded_before

SEEN: list[tuple[str, int, object]] = []


@task
def train(epochs):
    i = iterflow.context.loop_index
    carried = iterflow.context.get("loop_result", 0)
    SEEN.append(("train", i, carried))
    if i < epochs - 1:
        raise LOOP(result=carried + 10)
    return carried + 10


@task
def report(total):
    SEEN.append(("report", 0, total))
    return f"total {total}"


@task
def pages():
    i = iterflow.context.loop_index
    if i < 2:
        raise LOOP(result=i)
    return i


@task
def once():
    return 1


@pytest.fixture(autouse=True)
def _seen():
    SEEN.clear()


def build():
    with Flow("training") as flow:
        t = train(Parameter("epochs", default=5))
        r = report(t)
    return flow, t, r


def test_rewind_continues_from_iteration_k_and_reruns_downstream(store_url):
    flow, t, r = build()
    first = flow.run(store=store_url)
    assert first.result[r].result == "total 50"
    run_id = first.run_id
    SEEN.clear()
    state = flow.run(store=store_url, resume=run_id, from_iteration=3, task="train")
    assert state.is_successful() and state.run_id == run_id
    # Iteration 3 starts with the Looped result of iteration 2 (30); report runs again.
    assert SEEN == [("train", 3, 30), ("train", 4, 40), ("report", 0, 50)]
    assert state.result[r].result == "total 50"
    with open_store(store_url) as store:
        marks = superseded_before(store, run_id)
        assert [(slug, k) for slug, k, _ in marks] == [(t.slug, 3)]
        # Nothing was deleted: iterations 3 and 4 are there twice (old ones superseded).
        looped = [rec.loop_index for rec in iterations(run_id, t.slug, store=store)]
        assert looped.count(3) >= 1


def test_rewind_to_zero_starts_the_loop_over(store_url):
    flow, _, _r = build()
    run_id = flow.run(store=store_url).run_id
    SEEN.clear()
    flow.run(store=store_url, resume=run_id, from_iteration=0)  # one loop: --task optional
    assert next(s for s in SEEN if s[0] == "train") == ("train", 0, 0)
    assert len([s for s in SEEN if s[0] == "train"]) == 5


def test_refusals(store_url):
    flow, _, _ = build()
    run_id = flow.run(store=store_url).run_id
    with pytest.raises(ParameterError, match="beyond them"):
        flow.run(store=store_url, resume=run_id, from_iteration=5, task="train")
    with pytest.raises(ParameterError, match="does not loop"):
        flow.run(store=store_url, resume=run_id, from_iteration=1, task="report")
    with Flow("two-loops") as two:
        train(3)
        pages()
        once()
    two_id = two.run(store=store_url).run_id
    with pytest.raises(ParameterError, match="--task"):
        two.run(store=store_url, resume=two_id, from_iteration=1)
    SEEN.clear()
    assert two.run(store=store_url, resume=two_id, from_iteration=1, task="train").is_successful()
    assert SEEN[0] == ("train", 1, 10)
    # A refused rewind leaves the run as it was: still finished.
    from iterflow.store import get_run

    with open_store(store_url) as store:
        assert get_run(run_id, store=store).state == "Success"


def test_rewind_needs_resume(store_url):
    flow, _, _ = build()
    with pytest.raises(ParameterError, match="resume="):
        flow.run(store=store_url, from_iteration=1)


def test_live_run_is_refused(flow_script, store_url):
    from iterflow.errors import RunNotResumable
    from iterflow.store import list_runs

    from .helpers import wait_for

    script = flow_script("""
@task
def slow():
    i = iterflow.context.loop_index
    mark("it", i)
    if i == 1:
        wait_for_file("go")
    if i < 2:
        raise LOOP(result=i)
    return i


with Flow("slow-loop") as flow:
    slow()
""", store_url)
    proc = script.start("run")
    wait_for(lambda: len(script.side("it")) >= 2, "iteration 1", proc=proc, script=script)
    flow = script.load()["flow"]
    with open_store(store_url) as store:
        run_id = list_runs(store=store)[0].run_id
    with pytest.raises(RunNotResumable, match="still running"):
        flow.run(store=store_url, resume=run_id, from_iteration=0)
    (script.dir / "go").write_text("")
    assert script.finish(proc)["state"] == "Success"


def test_cli_resume_from_iteration(flow_script, store_url):
    import subprocess
    import sys

    from iterflow.store import list_runs

    script = flow_script("""
@task
def epochs():
    i = iterflow.context.loop_index
    mark("epoch", i, iterflow.context.get("loop_result", 0))
    if i < 3:
        raise LOOP(result=iterflow.context.get("loop_result", 0) + 1)
    return i


with Flow("epochs") as flow:
    epochs()
""", store_url)
    script.run("run")
    with open_store(store_url) as store:
        run_id = list_runs(store=store)[0].run_id

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "iterflow", "resume", run_id[:8], *args],
                              capture_output=True, text=True, timeout=120,
                              env={**script.env, "NO_COLOR": "1"}, cwd=script.dir)

    done = cli("--from-iteration", "2", "--task", "epochs", "-q")
    assert done.returncode == 0, done.stderr
    assert [tuple(r) for r in script.side("epoch")][4:] == [("2", "2"), ("3", "3")]
    beyond = cli("--from-iteration", "9")
    assert beyond.returncode != 0 and "beyond them" in beyond.stderr
    alone = cli("--task", "epochs")
    assert alone.returncode != 0 and "--from-iteration" in alone.stderr


@task
def step(value):
    SEEN.append(("step", 0, value))
    return (value or 0) + 1


@task
def enough(value):
    return value >= 4


@task
def finish(final):
    SEEN.append(("finish", 0, final))
    return final


def test_rewind_a_loop_block(store_url):
    from iterflow import loop

    with Flow("block") as flow:
        with loop(initial=0, max_loops=20) as it:
            value = step(it.result)
            it.next(result=value, until=enough(value))
        done = finish(it.final)
    first = flow.run(store=store_url)
    assert first.result[done].result == 4
    SEEN.clear()
    state = flow.run(store=store_url, resume=first.run_id, from_iteration=2)
    assert state.is_successful(), state
    # Iteration 2 starts with the value carried out of iteration 1 (2); finish reruns.
    assert SEEN == [("step", 0, 2), ("step", 0, 3), ("finish", 0, 4)]
