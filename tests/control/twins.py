"""Answering the control step's twin demand synchronously, as the flow's input would on its thread."""

from __future__ import annotations

from operators.control_steps import ControlLogic, ControlResult, Received
from operators.twin_feed import serve
from operators.twin_reader import TwinReader


def step(logic: ControlLogic, reader: TwinReader, values: list[Received]) -> list[ControlResult]:
    """``values`` into the step, then one read of what it asks for, as the input would bring it."""
    emitted, _ = logic.on_batch(list(values))
    more, _ = logic.on_batch([serve(reader, want) for want in logic.demand.wants()])
    return emitted + more
