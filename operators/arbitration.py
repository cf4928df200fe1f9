"""Every dispatch of the control dataflow in one place, so a site follows at most one of them. Pure.

The control dataflow keys every request and ack by one key
(:data:`ARBITER_KEY`), so one :class:`Arbiter` sees all dispatches and is the
one place that decides which dispatch may command which site (dispatches are
few; each one's state is still its own :class:`operators.dispatch.Dispatch`).

The policy:

* A site belongs to at most one running (PENDING or ACTIVE) dispatch: the one
  that *claimed* it when its window started (or when it was replaced). A
  dispatch claims only what it needs (``claim_margin`` times its target, most
  capable sites first), so a node can serve several dispatches at once.
* Dispatches whose windows start in the same step claim in order of
  ``priority`` (higher first), then first come (``requested_at``), then id.
  A running dispatch is never preempted: a site that follows a command keeps
  it until its dispatch ends or is cancelled; then its sites are free again.
* The loser plans around the sites it could not have (its status counts them,
  ``sites_unavailable``, and its reason names the holders), or FAILS when every
  member site is held.
* A dispatch id names one dispatch: a CREATE for an id that is running, or that
  ended within ``remember_ms``, is refused (dead-lettered by the caller) and the
  running dispatch is untouched; the very same request seen again (a replay)
  is ignored.
* An ack counts only when it answers a command a running dispatch sent to the
  acking site (:meth:`operators.dispatch.Dispatch.bound`) and its event time
  is plausible against that dispatch's clock (:func:`core.plausibility.check_event_time`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from core.plausibility import Rules, check_event_time
from operators.dispatch import UNKNOWN_COMMAND, Ack, ControlConfig, Dispatch, Request, dispatch_of

ARBITER_KEY = "control"
#: Why a request is refused (DeadLetter ``error_kind``).
DISPATCH_ID_REUSED = "DISPATCH_ID_REUSED"
#: How long the id of a finished dispatch stays taken (event-time ms).
REMEMBER_MS = 7 * 24 * 3_600_000


@dataclass(frozen=True)
class Refusal:
    """Why a record is not taken: ``kind`` for the dead letter and the counters, ``detail`` for people."""

    kind: str
    detail: str


@dataclass
class Arbiter:
    """The dispatches of the control dataflow, the sites they hold, and the ids already used."""

    config: ControlConfig
    dispatches: dict[str, Dispatch] = field(default_factory=dict)
    #: Ids of finished dispatches: id -> (requested_ms of its CREATE, forget after this clock ms).
    used: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: Refused records by kind, since the flow's state began.
    refused: Counter[str] = field(default_factory=Counter)

    def clock(self, dispatch: Dispatch, wall_ms: int) -> int:
        """A dispatch's now: the newer of the wall clock and the fleet time it has seen."""
        return max(wall_ms, dispatch.clock_ms)

    def create(self, request: Request) -> Dispatch | Refusal | None:
        """A new dispatch for a CREATE; a Refusal for a reused id; None for a replay of the same request."""
        ident = request.dispatch_id
        running = self.dispatches.get(ident)
        seen = running.request.requested_ms if running is not None else self.used.get(ident, (None, 0))[0]
        if seen is not None:
            if seen == request.requested_ms:
                return None
            return self._refuse(DISPATCH_ID_REUSED, f"dispatch id {ident!r} is taken (requested at {seen} "
                                "ms): send REPLACE to change it, or use a new id")
        dispatch = self.dispatches[ident] = Dispatch(request, self.config)
        return dispatch

    def held(self, besides: Dispatch, now_ms: int | None = None) -> dict[str, str]:
        """Sites other running dispatches hold: site -> dispatch id.

        A dispatch whose window has ended by ``now_ms`` (the asking dispatch's clock) holds none:
        its commands lapse at its end, even if its own clock has not yet seen the end (each
        dispatch's clock moves with its own twin reads). Without this, a dispatch starting as
        another ends on the same sites (a peak plan's back-to-back intervals) plans around them.
        """
        return {site_id: other.request.dispatch_id for other in self.dispatches.values()
                if other is not besides and (now_ms is None or other.request.end_ms > now_ms)
                for site_id in other.holds()}

    def lapsed(self, now_ms: int) -> frozenset[str]:
        """Ids of dispatches whose commands have lapsed by ``now_ms``: finished, or their window over.

        A twin that still shows a command of one of these (read just before the command's end)
        does not make its site another dispatch's.
        """
        ended = {ident for ident, d in self.dispatches.items() if d.request.end_ms <= now_ms}
        return frozenset(ended | set(self.used))

    def in_order(self) -> Iterator[Dispatch]:
        """The dispatches in the order they claim sites: priority (higher first), then first come, then id."""
        yield from sorted(self.dispatches.values(),
                          key=lambda d: (-d.request.priority, d.request.requested_ms, d.request.dispatch_id))

    def check_ack(self, ack: Ack, rules: Rules, wall_ms: int) -> Refusal | None:
        """None if ``ack`` counts; else why not (also counted against the dispatch it names, if running)."""
        dispatch = self.dispatches.get(dispatch_of(ack.command_id))
        if dispatch is None:
            return self._refuse(UNKNOWN_COMMAND, f"{ack.command_id!r} names no running dispatch")
        unbound = dispatch.bound(ack)
        if unbound is not None:
            dispatch.acks_refused += 1
            return self._refuse(*unbound)
        implausible = check_event_time(ack.event_ms, self.clock(dispatch, wall_ms), rules)
        if implausible is not None:
            dispatch.acks_refused += 1
            return self._refuse(implausible.reason, f"ack {ack.command_id!r}: {implausible.detail}")
        return None

    def retire(self, wall_ms: int) -> None:
        """Drop finished dispatches, keeping their ids taken for ``REMEMBER_MS``; forget older ids."""
        for ident, dispatch in list(self.dispatches.items()):
            now = self.clock(dispatch, wall_ms)
            if dispatch.finished(now):
                del self.dispatches[ident]
                self.used[ident] = (dispatch.request.requested_ms, now + REMEMBER_MS)
        newest = max((self.clock(d, wall_ms) for d in self.dispatches.values()), default=wall_ms)
        for ident, (_, until) in list(self.used.items()):
            if until <= newest:
                del self.used[ident]

    def _refuse(self, kind: str, detail: str) -> Refusal:
        self.refused[kind] += 1
        return Refusal(kind, detail)
