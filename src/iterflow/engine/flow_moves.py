"""The flow run's own states: each move through the flow's handlers to the sinks.

:class:`FlowMoves` is mixed into :class:`~iterflow.engine.runner.FlowRunner`:
:meth:`~FlowMoves._flow_move` makes a state the run's (the flow's state
handlers first), and hands it to the sinks — as values through the only
sink's flow lane when it offers one, else as a
:class:`~iterflow.events.FlowRunEvent`; :meth:`~FlowMoves._finish` ends the
run with its results; :meth:`~FlowMoves._event` is a task run's event.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, cast

from iterflow.core.memo import derived
from iterflow.core.shape import describe
from iterflow.core.state import Pending, State
from iterflow.engine.transitions import apply_handlers, task_run_event
from iterflow.events import FlowRunEvent, ResumePoint, TaskRunEvent

if TYPE_CHECKING:
    from collections.abc import Callable

    from iterflow.core.flow import Flow
    from iterflow.engine.blocks import Blocks
    from iterflow.engine.machine import FlowMachine
    from iterflow.engine.scopes import Scope
    from iterflow.events import EventBus

__all__ = ["FlowMoves"]

# A flow run's later states carry neither its tasks' names nor its shape.
_NO_NAMES: tuple[tuple[tuple[str, str], ...], None] = ((), None)


class FlowMoves:
    """A run's flow states and task run events (the state is the runner's)."""

    # Set by FlowRunner.__init__; declared here for the methods below.
    flow: Flow
    run_id: str
    bus: EventBus | None
    parameters: dict[str, Any]
    source: Any
    sync_flow_events: bool
    resume: ResumePoint | None
    _flow_state: State
    _flow_lane: Callable[..., Any] | None
    _blocks: Blocks | None

    def _finish(self, state: State, machine: FlowMachine) -> State:
        if state is not self._flow_state:  # a flow handler may have ended the run already
            state = self._flow_move(self._flow_state, state)
        blocks = self._blocks
        state.result = dict(machine.states) if blocks is None else blocks.results(machine.states)
        state.run_id = self.run_id
        if self.bus is not None:
            self.bus.flush()
        return state

    def _flow_move(self, old: State | None, new: State, initial: bool = False) -> State:
        """Make ``new`` the flow run's state, through the flow's handlers, and emit it.

        ``old`` None: the run's first move, from a ``Pending`` made only for handlers.
        """
        if self.flow.state_handlers:
            # A handler that raises or asks for an illegal move ends the run Failed.
            new = apply_handlers(self.flow, self.flow.state_handlers,
                                 Pending() if old is None else old, new, kind="flow")
        self._flow_state = new
        if self.bus is not None:
            flow = self.flow
            # Once per graph (core.memo): a child flow starts once per subflow call.
            tasks, shape = derived(flow, "names_and_shape", lambda: (
                # Every task of a flow has its slug.
                tuple((cast(str, t.slug), t.name) for t in flow.sorted_tasks()), describe(flow),
            )) if initial else _NO_NAMES
            lane = self._flow_lane
            if lane is not None:  # the only sink takes the state as values: no event
                lane(self.run_id, flow.name, new, self.parameters if initial else None,
                     tasks, self.source, shape,
                     threading.Event() if self.sync_flow_events else None)
                return new
            finished: tuple[str, ...] = ()
            if initial and self.resume is not None:
                finished = tuple(sorted(
                    slug for slug, map_index in self.resume.finished if map_index is None
                ))
            self.bus.emit(
                FlowRunEvent(
                    self.run_id,
                    self.flow.name,
                    new,
                    parameters=self.parameters if initial else None,
                    tasks=tasks,
                    source=self.source,
                    resumed=self.resume is not None,
                    finished=finished,
                    shape=shape,
                    sync=self.sync_flow_events,
                )
            )
        return new

    def _event(self, scope: Scope, task: Any, map_index: int | None,
               state: State) -> TaskRunEvent:
        return task_run_event(
            self.run_id,
            scope.task_run_id(task, map_index),
            task.slug,
            task.name,
            map_index,
            max((state.loop_count or 1) - 1, 0),
            state,
            False,
            task.serializer or self.flow.serializer,
            scope.block_index,
        )
