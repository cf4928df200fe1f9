"""The plans step's state: bad plans rejected with a reason and counted; the rest aggregated."""

from __future__ import annotations

import math

from siteplan.aggregate import MINUTE_MS, SiteLimits
from siteplan.intake import PlanIntake

T0 = 1_796_083_200_000
LIMITS = SiteLimits(capacity_kwh=10.0, max_charge_kw=5.0, max_discharge_kw=4.0, reserve_pct=20.0)


def _plan(site: str, plan_id: str, power: list[float], issued: int = T0) -> dict[str, object]:
    return {"site_id": site, "plan_id": plan_id, "issued_at": issued, "start": T0, "interval_minutes": 15,
            "power_kw": power, "forecast_issued_at": T0}


def test_unknown_nan_beyond_limits_and_below_reserve_are_rejected_and_counted() -> None:
    intake = PlanIntake()
    intake.on_site("a", LIMITS, ("feeder-1", "region-0"))
    intake.on_site("b", LIMITS, ("feeder-2", "region-0"))
    intake.on_status("a", True, soc_pct=50.0)
    intake.on_status("b", False)
    outcomes = [
        intake.on_plan(_plan("ghost", "g1", [1.0])),
        intake.on_plan(_plan("a", "a0", [1.0, math.nan])),
        intake.on_plan(_plan("a", "a1", [9.0])),
        intake.on_plan(_plan("a", "a2", [4.0] * 8)),  # 8 kWh / 0.95 from 5 kWh: below the 2 kWh reserve
        intake.on_plan(_plan("a", "a3", [1.0, -1.0])),
        intake.on_plan(_plan("a", "a3", [1.0, -1.0])),
        intake.on_plan(_plan("b", "b1", [2.0, 2.0])),
        intake.on_plan(_plan("b", "b0", [3.0], issued=T0 - 15 * MINUTE_MS)),
    ]
    assert [o.outcome for o in outcomes] == ["rejected"] * 4 + ["new", "replayed", "new", "late"]
    assert ["unknown site" in (outcomes[0].reason or ""), "non-finite" in (outcomes[1].reason or ""),
            "limits" in (outcomes[2].reason or ""), "reserve" in (outcomes[3].reason or "")] == [True] * 4
    assert intake.counts == {"rejected": 4, "new": 2, "replayed": 1, "late": 1}

    nodes = intake.node_plans(T0, 2)
    region = nodes["region-0"]
    assert region.planned_kw.tolist() == [1.0, -1.0]  # b is offline: its plan is in the estimate only
    assert region.estimate_kw.tolist() == [3.0, 1.0]
    assert region.coverage.tolist() == [0.5, 0.5] and region.carried_sites.tolist() == [1, 1]
    intake.on_site("b", None)  # retired: counts nowhere
    assert intake.node_plans(T0, 2)["region-0"].expected_sites == 1
