"""What a fleet under a node can give a peak event, and how much of it a plan may count on.

The live aggregate states power and energy from reporting sites and the coverage
(reporting / expected sites). A plan commits the fleet hours ahead, so it counts
only on what is likely to be there: below :data:`FULL_COVERAGE` the power and
energy are scaled by the coverage (the missing sites may come back, but the plan
does not bet on it), and a forecast flagged worse than the naive commits only
:data:`WORSE_THAN_NAIVE_COMMITMENT` of the fleet (the threshold it would choose
from a poor forecast is less trustworthy, so a smaller share of the fleet is put
at risk of being spent before the real peak). Every derating is written into
``notes`` so the plan says why it asks for less.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

FULL_COVERAGE = 0.9
WORSE_THAN_NAIVE_COMMITMENT = 0.5


@dataclass(frozen=True, slots=True)
class FleetCapacity:
    """A node's fleet, summed: limits in kW, energies in kWh.

    ``energy_kwh`` is what the batteries hold above their backup reserves (what
    may be discharged); ``headroom_kwh`` is the room left to charge. The
    efficiencies are one-way: discharging ``x`` kWh to the grid draws
    ``x / discharge_efficiency`` from storage, charging ``x`` stores
    ``x * charge_efficiency``.
    """

    discharge_kw: float
    charge_kw: float
    energy_kwh: float
    headroom_kwh: float
    coverage: float = 1.0
    charge_efficiency: float = 0.95
    discharge_efficiency: float = 0.95
    notes: tuple[str, ...] = field(default=())

    @property
    def capacity_kwh(self) -> float:
        """Usable storage between the reserves and full."""
        return self.energy_kwh + self.headroom_kwh

    def scaled(self, factor: float, note: str) -> FleetCapacity:
        """Power and energy scaled by ``factor`` (headroom too: the missing sites' room is not counted)."""
        return replace(self, discharge_kw=self.discharge_kw * factor, charge_kw=self.charge_kw * factor,
                       energy_kwh=self.energy_kwh * factor, headroom_kwh=self.headroom_kwh * factor,
                       notes=(*self.notes, note))


def committed(fleet: FleetCapacity, forecast_worse_than_naive: bool = False) -> FleetCapacity:
    """The part of ``fleet`` a plan may count on: derated by coverage and by a poor forecast."""
    out = fleet
    if fleet.coverage < FULL_COVERAGE:
        out = out.scaled(max(fleet.coverage, 0.0),
                         f"coverage {fleet.coverage:.0%} below {FULL_COVERAGE:.0%}: power and energy "
                         f"derated to {max(fleet.coverage, 0.0):.0%}")
    if forecast_worse_than_naive:
        out = out.scaled(WORSE_THAN_NAIVE_COMMITMENT,
                         f"forecast worse than the naive: fleet commitment lowered to "
                         f"{WORSE_THAN_NAIVE_COMMITMENT:.0%}")
    return out
