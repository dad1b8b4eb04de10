"""Task identities (core.fingerprint): stored with task runs and compared by later resumes.

The digests are pinned: a resume compares the identities a run recorded (by an
older iterflow, perhaps) with the flow's today, so a change to how they are
computed would make every recorded task look changed and run again.
"""

from __future__ import annotations

from iterflow import Flow, loop, task
from iterflow.core.fingerprint import task_identities


@task
def fetch(page, retries=0):
    return page


@task
def double(x):
    return 2 * x


@task
def step(total, scale):
    return total + scale


@task
def finished(total):
    return total >= 3


@task
def report(a, b, c):
    return (a, b, c)


def small_flow(first: str = "A") -> Flow:
    """Constants, a mapped literal, a loop block with members, two tasks of one name."""
    with Flow("pinned") as flow:
        a = fetch(first, retries=2)
        b = fetch(page=a)
        doubled = double.map([1, 2, 3])
        with loop(initial=0) as it:
            nxt = step(it.result, scale=b)
            it.next(result=nxt, until=finished(nxt))
        report(doubled, it.final, 7)
    return flow


def nested_flow() -> Flow:
    """A block inside a block, its carried value first used in the inner one."""
    with Flow("nested") as flow, loop(initial=0, name="outer") as outer:
        with loop(initial=0, name="inner") as inner:
            x = step(outer.result, scale=inner.index)
            inner.next(result=x, until=finished(x))
        y = double(outer.index)
        outer.next(result=inner.final, until=finished(y))
    return flow


def by_hand_flow() -> Flow:
    """Edges added by hand, a downstream task added before its upstreams."""
    flow = Flow("by hand")
    first, second, third = report.copy(), double.copy(), double.copy()
    flow.add_task(first)
    flow.add_edge(second, first, key="a")
    flow.add_edge(third, first, key="b")
    flow.add_edge(third, second, key="x", mapped=True)
    flow.add_edge(second, first)  # an ordering edge besides the data edge
    flow.set_dependencies(first, keyword_tasks={"c": "constant"})
    return flow


# Computed by the implementation these digests were first recorded with (iterflow 0.x,
# before task_identities was made linear): never change them.
PINNED_SMALL = {
    "double": "679dc6f0f1c4b479d03e5caf20896e6b",
    "double.x": "a333a0c317c231a098f6d8843597d4bd",
    "fetch": "d47b34d4b3b61244eecaa55b9c9af17c",
    "fetch-2": "e9a58346d4e3cb442ffc8ead284990f9",
    "finished": "3f0406435b5e846f9734ed480cce51a2",
    "loop": "89171010966d879a15c16b25e37c8019",
    "loop.result": "a5d8a05976a24807c5720d55e4ecbeb8",
    "report": "497106eef8117ca266a9ce65f05620a0",
    "step": "97b96ffa8f18d07ed789b5db479f612d",
}
PINNED_NESTED = {
    "double": "9b302946fd9a88dc8b86c4c071438adf",
    "finished": "e2c2e1db983fd4e6c76d578f953c90f2",
    "finished-2": "e68a2db17a7bc77f5bc09f8bb5cacf8f",
    "inner": "34ecc3979bfbd7d30d610760823980f8",
    "inner.index": "28141af2d270ce70e1a57e2e1ef80ae7",
    "outer": "976e89d5c705f6ae3b71bfe257239d04",
    "outer.index": "aceb68c543e091d43f631c16496961ac",
    "outer.result": "8fd63a8420d76b9a3778ea4c80bbafd4",
    "step": "85bd499ac05d260937112d27db32ee60",
}
PINNED_BY_HAND = {
    "double": "4524290b9792305bff2864adc6cf4a7c",
    "double-2": "85c3c737fc2d9b86514fadd52750b0ad",
    "report": "7d144223b7262c39c36e8e36ade6b5c7",
}


def test_identities_are_the_recorded_digests():
    assert task_identities(small_flow()) == PINNED_SMALL


def test_identities_of_nested_blocks_are_the_recorded_digests():
    assert task_identities(nested_flow()) == PINNED_NESTED


def test_identities_of_a_flow_built_by_hand_are_the_recorded_digests():
    assert task_identities(by_hand_flow()) == PINNED_BY_HAND


def test_identities_do_not_depend_on_the_flow_object():
    assert task_identities(small_flow()) == task_identities(small_flow())


def test_a_changed_constant_changes_the_task_and_what_is_downstream():
    before = task_identities(small_flow())
    after = task_identities(small_flow("B"))
    assert set(before) == set(after)
    changed = {slug for slug in before if before[slug] != after[slug]}
    assert {"fetch", "fetch-2", "step", "report"} <= changed
    assert "double" not in changed


def test_remembered_digests_are_the_recorded_ones(monkeypatch):
    from iterflow.core import fingerprint

    monkeypatch.setattr(fingerprint, "_digested", {})
    assert task_identities(small_flow()) == PINNED_SMALL  # digested
    assert fingerprint._digested
    assert task_identities(small_flow()) == PINNED_SMALL  # remembered
    assert task_identities(small_flow("B")) != PINNED_SMALL  # a new text: digested anew
    monkeypatch.setattr(fingerprint, "_DIGESTED_MAX", 2)  # full: emptied, never wrong
    assert task_identities(nested_flow()) == PINNED_NESTED
    assert len(fingerprint._digested) <= 2
