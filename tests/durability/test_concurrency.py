"""Four processes run flows at once against one store; every event of every run is kept (§8)."""

from __future__ import annotations

from iterflow.store import iterations, list_runs, logs, task_runs

from .helpers import wait_for

WORKERS = """
@task
def gate(who):
    # Every process waits here until the test has seen all four at the gate.
    mark("ready", who)
    wait_for_file("go")
    return who


@task(checkpoint=os.environ.get("CHECKPOINT") or None)
def work(x, who, n):
    i = iterflow.context.loop_index
    iterflow.context.logger.info("%s child %s iteration %s", who, x, i)
    total = iterflow.context.get("loop_result", 0) + x
    if i < n - 1:
        raise LOOP(result=total)
    return total


with Flow("workers") as flow:
    who = gate(Parameter("who"))
    work.map([1, 2, 3], unmapped(who), unmapped(Parameter("n")))
"""

N = 150  # iterations of each of the 3 children, in each of the 4 processes


def test_four_processes_record_every_event_of_every_run(flow_script, store_url):
    script = flow_script(WORKERS, store_url)
    procs = [
        script.start(
            "run", f"{{'who': 'p{k}', 'n': {N}}}", CHECKPOINT="every" if k % 2 else "batched"
        )
        for k in range(4)
    ]

    def all_ready() -> bool:
        for proc in procs:
            assert proc.poll() is None, script.output(proc)[1][-3000:]
        return len(script.side("ready")) == 4

    wait_for(all_ready, "all four processes at the gate", timeout=60)
    (script.dir / "go").touch()
    outs = [script.finish(proc) for proc in procs]

    assert sorted(out["results"]["who"] for out in outs) == ["p0", "p1", "p2", "p3"]
    for out in outs:
        assert out["state"] == "Success"
        assert out["results"]["work"] == [x * N for x in (1, 2, 3)]
    runs = list_runs(limit=None, store=store_url)
    assert sorted(r.run_id for r in runs) == sorted(out["run_id"] for out in outs)
    assert {r.state for r in runs} == {"Success"}

    for out in outs:
        run_id, who = out["run_id"], out["results"]["who"]
        for index in range(3):
            history = iterations(run_id, "work", map_index=index, store=store_url)
            assert [(h.state, h.loop_index) for h in history] == [
                *[("Looped", i) for i in range(N - 1)],
                ("Success", N - 1),
            ], f"run {who} child {index}: the history is not every iteration once, in order"
            x = index + 1
            assert [h.preview for h in history] == [str(x * (i + 1)) for i in range(N)]
        recorded = sorted(
            (e.map_index, e.loop_index, e.message) for e in logs(run_id, store=store_url)
        )
        assert recorded == sorted(
            (index, i, f"{who} child {index + 1} iteration {i}")
            for index in range(3)
            for i in range(N)
        )
        states = {
            (t.task_name, t.map_index): (t.state, t.loop_count)
            for t in task_runs(run_id, store=store_url)
        }
        assert states == {
            ("who", None): ("Success", 1),
            ("n", None): ("Success", 1),
            ("gate", None): ("Success", 1),
            ("work.x", None): ("Success", 1),
            ("work", None): ("Mapped", None),
            **{("work", i): ("Success", N) for i in range(3)},
        }
