"""What the control step's recovery snapshot holds: plain, versioned data, never config. Pure.

Up to version 1 the step pickled its :class:`~operators.arbitration.Arbiter`
whole, every :class:`~operators.dispatch.Dispatch` with its config (re-attached
after loading): recovery was tied to the classes' internals. Now the snapshot is
an :class:`ArbiterState` (frozen dataclasses of values) and :func:`restore`
rebuilds the objects from it and the config the step is built with.

Versions: 0, one pickled ``Dispatch`` per dispatch id (before the arbiter;
dropped by the step); 1, a pickled ``Arbiter`` (:func:`migrate` reads it);
2, :class:`ArbiterState`. A new field of ``Dispatch`` is one line in
:class:`DispatchState`, with a default so older snapshots still load.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import astuple, dataclass, fields
from typing import Any

from operators.arbitration import Arbiter
from operators.dispatch import ControlConfig, Dispatch, Request, Slot
from operators.outcome import Outcome, Sample

VERSION = 2


@dataclass(frozen=True)
class DispatchState:
    """One dispatch's state: the attributes of :class:`Dispatch` of the same names, frozen.

    Lists, sets and dicts are kept as tuples (sets sorted, dicts as pairs); ``slots`` as
    ``(site_id, Slot fields...)`` tuples.
    """

    request: Request
    state: str
    reason: str
    members: tuple[str, ...]
    slots: tuple[tuple[Any, ...], ...]
    clock_ms: int
    next_correction_ms: int
    next_status_ms: int
    measured_kw: float
    shortfall_kw: float
    claimed: tuple[str, ...]
    unavailable: tuple[tuple[str, str], ...]
    acks_refused: int = 0
    samples: tuple[Sample, ...] = ()
    outcome: Outcome | None = None


@dataclass(frozen=True)
class ArbiterState:
    """The arbiter's state: its dispatches, the ids it remembers, its refusal counts."""

    dispatches: tuple[DispatchState, ...]
    #: (dispatch id, requested_ms of its CREATE, forget after this clock ms)
    used: tuple[tuple[str, int, int], ...]
    refused: tuple[tuple[str, int], ...]
    version: int = VERSION


def _freeze(value: Any) -> Any:
    if isinstance(value, set):
        return tuple(sorted(value))
    if isinstance(value, dict):
        return tuple(value.items())
    if isinstance(value, list):
        return tuple(value)
    return value


def _thaw(value: Any, like: Any) -> Any:
    """``value`` in the container type of ``like`` (the attribute of a fresh Dispatch)."""
    if isinstance(like, (set, dict, list)):
        return type(like)(value)
    return value


def dispatch_state(dispatch: Dispatch) -> DispatchState:
    values = {f.name: _freeze(getattr(dispatch, f.name)) for f in fields(DispatchState) if f.name != "slots"}
    slots = tuple((site_id, *astuple(slot)) for site_id, slot in dispatch.slots.items())
    return DispatchState(slots=slots, **values)


def restore_dispatch(state: DispatchState, config: ControlConfig) -> Dispatch:
    dispatch = Dispatch(state.request, config)
    for f in fields(DispatchState):
        if f.name not in ("request", "slots"):
            setattr(dispatch, f.name, _thaw(getattr(state, f.name), getattr(dispatch, f.name)))
    dispatch.slots = {site_id: Slot(*values) for site_id, *values in state.slots}
    return dispatch


def arbiter_state(arbiter: Arbiter) -> ArbiterState:
    return ArbiterState(tuple(dispatch_state(d) for d in arbiter.dispatches.values()), _used(arbiter),
                        tuple(arbiter.refused.items()))


def _used(arbiter: Arbiter) -> tuple[tuple[str, int, int], ...]:
    return tuple((ident, requested, until) for ident, (requested, until) in arbiter.used.items())


def restore(state: ArbiterState, config: ControlConfig) -> Arbiter:
    """The arbiter ``state`` describes, run by ``config``."""
    dispatches = {d.request.dispatch_id: restore_dispatch(d, config) for d in state.dispatches}
    return Arbiter(config, dispatches, {ident: (requested, until) for ident, requested, until in state.used},
                   Counter(dict(state.refused)))


def migrate(old: Arbiter) -> ArbiterState:
    """Version 1 (a pickled Arbiter, config included) as the current state; its config is dropped.

    A dispatch pickled before an attribute existed gets that attribute's initial value.
    """
    dispatches = []
    for pickled in old.dispatches.values():
        dispatch = Dispatch(pickled.request, pickled.config)
        dispatch.__dict__.update(pickled.__dict__)
        dispatches.append(dispatch_state(dispatch))
    return ArbiterState(tuple(dispatches), _used(old), tuple(old.refused.items()))
