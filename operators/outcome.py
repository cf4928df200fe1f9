"""What a dispatch delivered, judged against what was asked: its final outcome.

Pure logic, no I/O. The figures are computed from the dispatch's *samples*,
one per status it published while active (event time, target, measured power),
which are exactly the rows it wrote to ClickHouse ``dispatch_log``: anyone can
recompute an outcome from that table and get the same numbers.

* Requested energy: the target held over the window. Before the first sample
  the first sample's target counts (the window had started, the fleet had not
  answered yet); from each sample to the next, that sample's target.
* Delivered energy: each sample's measured power held until the next sample
  (left rectangles), clipped to the window. Nothing before the first sample: a
  dispatch that starts late delivers that much less.
* Tracking error: ``|target - measured|`` at each sample; its mean and its
  95th percentile (nearest rank).

The verdict: COMPLETED only if the delivered energy is within ``tolerance``
(a fraction of the requested energy) of what was asked; FAILED if no site
could be commanded, none acknowledged its command (what the fleet did then
was its own plan, not the dispatch) or nothing was delivered in the target's
direction;
PARTIAL otherwise (too little, or too much). FAILED and PARTIAL carry the
reason.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

MS_PER_HOUR = 3_600_000
#: Default: a dispatch is met if it delivered within 10 % of the requested energy.
DEFAULT_TOLERANCE = 0.1


@dataclass(frozen=True, slots=True)
class Sample:
    """One published status of an active dispatch: what it aimed at and what the fleet did."""

    at_ms: int
    target_kw: float
    measured_kw: float


@dataclass(frozen=True)
class Outcome:
    """The figures of a dispatch over its window (so far), and the verdict they give."""

    requested_kwh: float
    delivered_kwh: float
    #: Mean and 95th percentile of ``|target - measured|`` over the samples, kW.
    tracking_error_mean_kw: float
    tracking_error_p95_kw: float
    samples: int
    #: COMPLETED, PARTIAL or FAILED.
    verdict: str
    #: Why it is not COMPLETED ("" when it is).
    reason: str

    @property
    def delivered_pct(self) -> float:
        """Delivered energy as a percentage of requested (0 when nothing was requested)."""
        return 100.0 * self.delivered_kwh / self.requested_kwh if self.requested_kwh else 0.0


def energies(samples: Sequence[Sample], start_ms: int, stop_ms: int) -> tuple[float, float]:
    """(requested, delivered) kWh over ``[start_ms, stop_ms]`` from the samples (see the module doc)."""
    if not samples:
        return 0.0, 0.0
    requested = samples[0].target_kw * max(0, min(samples[0].at_ms, stop_ms) - start_ms)
    delivered = 0.0
    for here, after in zip(samples, [*samples[1:], None], strict=True):
        begin = max(here.at_ms, start_ms)
        end = min(after.at_ms if after is not None else stop_ms, stop_ms)
        if end > begin:
            requested += here.target_kw * (end - begin)
            delivered += here.measured_kw * (end - begin)
    return requested / MS_PER_HOUR, delivered / MS_PER_HOUR


def p95(values: Sequence[float]) -> float:
    """The 95th percentile by nearest rank (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def judge(samples: Sequence[Sample], start_ms: int, stop_ms: int, sites_commanded: int,
          tolerance: float = DEFAULT_TOLERANCE, why_no_sites: str = "",
          sites_acknowledged: int | None = None) -> Outcome:
    """The outcome of a dispatch whose window ran from ``start_ms`` to ``stop_ms``."""
    requested, delivered = energies(samples, start_ms, stop_ms)
    errors = [abs(s.target_kw - s.measured_kw) for s in samples]
    mean = sum(errors) / len(errors) if errors else 0.0
    figures = f"delivered {delivered:,.2f} of {requested:,.2f} kWh requested"
    if sites_commanded == 0:
        verdict, reason = "FAILED", f"no site could be commanded{': ' + why_no_sites if why_no_sites else ''}"
    elif sites_acknowledged == 0:
        verdict, reason = "FAILED", (f"none of the {sites_commanded} commanded sites acknowledged its "
                                     f"command ({figures})")
    elif requested == 0.0:
        verdict, reason = "COMPLETED", ""
    elif delivered / requested <= 0.0:
        verdict, reason = "FAILED", f"{figures}: nothing in the target's direction"
    elif abs(delivered - requested) <= tolerance * abs(requested):
        verdict, reason = "COMPLETED", ""
    else:
        pct = 100.0 * delivered / requested
        side = "short of" if abs(delivered) < abs(requested) else "beyond"
        verdict, reason = "PARTIAL", (f"{figures} ({pct:.0f} %), {side} the {100 * tolerance:.0f} % "
                                      "tolerance")
    return Outcome(requested, delivered, mean, p95(errors), len(samples), verdict, reason)
