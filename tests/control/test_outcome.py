"""Honest dispatch outcomes: COMPLETED only when the energy asked was delivered, the figures recomputable.

Issue 18: a dispatch that delivered 45 of 500 kW ended COMPLETED, and one that ran with 0 sites ended
COMPLETED with a 500 kW shortfall. Here the pure dispatch drives a simulated fleet in-process; the
rows it writes to ``dispatch_log`` are taken from what the control step emits for ClickHouse.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

from core import keys
from core.config import Settings
from core.dispatch import check_eligible_now
from core.dispatch_spec import DispatchRejectedError, DispatchSpec
from core.rows import DispatchLogEntry
from edge_gateway.simulator import FaultMix
from operators.control_steps import emissions
from operators.dispatch import ControlConfig, Dispatch, Output
from operators.outcome import Sample, judge, p95
from operators.sinks import StatusWrite
from schemas.times import epoch_ms
from tests.control.inprocess import Loop, request, sites


class Journal(Loop):
    """The in-process loop, keeping what the control step would write: dispatch_log rows and statuses."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.rows: list[DispatchLogEntry] = []
        self.stored: list[StatusWrite] = []

    def answer(self, dispatch: Dispatch, out: Output, arbiter: Any = None) -> None:
        for item in emissions(dispatch, out):
            if isinstance(item, DispatchLogEntry):
                self.rows.append(item)
            elif isinstance(item, StatusWrite):
                self.stored.append(item)
        super().answer(dispatch, out, arbiter)


def recompute(rows: list[DispatchLogEntry], start_ms: int, end_ms: int) -> dict[str, float]:
    """The outcome figures from dispatch_log alone, written out independently of operators.outcome.

    Rows are deduplicated per event time (the table is a ReplacingMergeTree on it, the last row wins);
    the ACTIVE rows are the samples: each one's power and target hold until the next one.
    """
    by_time = {epoch_ms(row.event_time): row for row in rows}
    active = [by_time[t] for t in sorted(by_time) if by_time[t].state == "ACTIVE"]
    edges = [max(epoch_ms(r.event_time), start_ms) for r in active] + [end_ms]
    requested = active[0].target_kw * (edges[0] - start_ms)
    delivered = 0.0
    for row, begin, end in zip(active, edges, edges[1:], strict=False):
        requested += row.target_kw * (end - begin)
        delivered += row.measured_kw * (end - begin)
    errors = sorted(abs(r.error_kw) for r in active)
    return {"requested_kwh": requested / 3_600_000, "delivered_kwh": delivered / 3_600_000,
            "tracking_error_mean_kw": sum(errors) / len(errors),
            "tracking_error_p95_kw": errors[math.ceil(0.95 * len(errors)) - 1]}


def test_a_dispatch_that_delivers_far_less_than_asked_ends_partial_with_the_reason() -> None:
    """Half the commanded sites ignore their commands and there is no room to correct: far too little."""
    fleet = sites(20)
    loop = Journal(fleet, FaultMix(noncompliant=0.6))
    capability = sum(site.max_discharge_kw for site in fleet)
    dispatch = Dispatch(request(0.8 * capability, 3, fleet), ControlConfig(claim_margin=0.0))
    loop.run(dispatch, 240)
    assert dispatch.state == "PARTIAL", dispatch.reason
    outcome = dispatch.outcome
    assert outcome is not None and outcome.delivered_kwh < 0.7 * outcome.requested_kwh
    assert "short of" in dispatch.reason and "kWh requested" in dispatch.reason
    final = loop.stored[-1].fields
    assert final["state"] == "PARTIAL" and final["reason"] == dispatch.reason
    assert final["sites_total"] == len(dispatch.slots) > 0
    assert 0 < final["sites_following"] < final["sites_acknowledged"] <= final["sites_total"], final


def test_a_dispatch_that_is_met_completes() -> None:
    fleet = sites(20)
    loop = Journal(fleet)
    dispatch = Dispatch(request(30.0, 5, fleet), ControlConfig())
    loop.run(dispatch, 400)
    assert dispatch.state == "COMPLETED" and dispatch.outcome is not None
    assert abs(dispatch.outcome.delivered_kwh - 2.5) <= 0.1 * 2.5


@pytest.mark.parametrize("faults", [FaultMix(noncompliant=0.6), FaultMix(flapping=0.3, delayed=0.2)])
def test_the_outcome_figures_equal_a_recomputation_from_dispatch_log(faults: FaultMix) -> None:
    fleet = sites(30)
    loop = Journal(fleet, faults)
    dispatch = Dispatch(request(40.0, 3, fleet), ControlConfig())
    loop.run(dispatch, 220)
    assert dispatch.state in ("COMPLETED", "PARTIAL", "FAILED") and dispatch.outcome is not None
    final = loop.stored[-1].fields
    expected = recompute(loop.rows, dispatch.request.start_ms, dispatch.request.end_ms)
    for name, value in expected.items():
        assert final[name] == pytest.approx(value, rel=1e-9, abs=1e-9), name
    assert expected["requested_kwh"] == pytest.approx(40.0 * 3 / 60)


def test_a_dispatch_whose_sites_are_all_offline_fails_at_once_saying_why() -> None:
    fleet = sites(10)
    loop = Journal(fleet, FaultMix(offline=1.0))
    dispatch = Dispatch(request(20.0, 2, fleet), ControlConfig())
    loop.run(dispatch, 35)
    assert dispatch.state == "FAILED" and not loop.sent
    assert "no site could be commanded" in dispatch.reason, dispatch.reason
    assert "10 of 10 member sites not ONLINE" in dispatch.reason
    assert loop.stored[-1].fields["requested_kwh"] == pytest.approx(20.0 * 2 / 60)
    assert loop.stored[-1].fields["delivered_kwh"] == 0.0


def test_judge_verdicts() -> None:
    half = [Sample(0, 10.0, 5.0)]
    assert judge(half, 0, 3_600_000, 4, 0.1, sites_acknowledged=4).verdict == "PARTIAL"
    assert judge([Sample(0, 10.0, 9.5)], 0, 3_600_000, 4, 0.1, sites_acknowledged=4).verdict == "COMPLETED"
    assert judge([Sample(0, 10.0, 13.0)], 0, 3_600_000, 4, 0.1, sites_acknowledged=4).verdict == "PARTIAL"
    assert judge([Sample(0, 10.0, -1.0)], 0, 3_600_000, 4, 0.1, sites_acknowledged=4).verdict == "FAILED"
    assert judge(half, 0, 3_600_000, 0).verdict == "FAILED"
    assert judge(half, 0, 3_600_000, 4, sites_acknowledged=0).verdict == "FAILED"
    assert p95([float(i) for i in range(1, 101)]) == 95.0


# ---- at submit: a dispatch with no eligible site now is refused -----------------------------------------


@pytest.mark.integration
def test_a_dispatch_with_no_eligible_site_now_is_refused_unless_it_starts_later(
        stack_settings: Settings) -> None:
    client = redis.Redis.from_url(stack_settings.redis)
    node, members = "feeder-outcome-test", [f"site-outcome-{i}" for i in range(3)]
    client.sadd(keys.node_sites(node), *members)
    for site_id in members:
        client.hset(keys.site(site_id), mapping={"status": "OFFLINE"})
    now = datetime.now(UTC)
    spec = DispatchSpec(5.0, now, now + timedelta(minutes=10), node, None, "waterfill")
    try:
        with pytest.raises(DispatchRejectedError, match=r"no eligible site now.*3 OFFLINE"):
            check_eligible_now(client, spec, now)
        later = DispatchSpec(5.0, now + timedelta(minutes=5), now + timedelta(minutes=10), node, None,
                             "waterfill")
        check_eligible_now(client, later, now)  # judged when its window starts
        client.hset(keys.site(members[1]), "status", "ONLINE")
        check_eligible_now(client, spec, now)
    finally:
        client.delete(keys.node_sites(node), *[keys.site(s) for s in members])
        client.close()
