"""The bidding tasks' pure logic and artifact forms, and reading the journal back after a crash."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from bidding import journal
from bidding.artifacts import artifact
from bidding.bids import ENERGY, RESERVE
from bidding.tasks import (
    MarketData,
    MarketDataLateError,
    PriceForecast,
    RunInputs,
    Submission,
    bid_for,
    check_output,
    forecast,
    market_data,
    safe_bid,
    value_of,
)
from bidding.workflow import FETCH, Event, Start, TaskDone, TaskFailed, Wake, Workflow, transition

T0 = datetime(2018, 3, 5, tzinfo=UTC)
HOUR = timedelta(hours=1)


def prices(days: int = 7) -> list[tuple[datetime, float]]:
    """A daily shape with a trend: cheap nights, dear evenings."""
    return [(T0 + i * HOUR, round(40 + 15 * math.sin(2 * math.pi * (i % 24) / 24) + 0.1 * i, 2))
            for i in range(days * 24)]


def inputs(interval: datetime | None = None) -> RunInputs:
    return RunInputs("battery", "DE", interval or T0 + 7 * 24 * HOUR, 3600, 24, 1.0, 2.0, 1.0)


def test_market_data_covers_the_hours_before_the_interval_and_late_data_is_refused() -> None:
    data = market_data(inputs(), prices())
    assert data.first == T0 and data.end == inputs().interval_start and len(data.prices) == 168
    with pytest.raises(MarketDataLateError, match="ends at"):
        market_data(inputs(), prices()[:-2])  # the last two hours are not published yet
    gappy = prices()[:50] + prices()[51:]
    assert market_data(inputs(), gappy).prices[50] == market_data(inputs(), gappy).prices[49]


def test_forecasts_are_daily_seasonal_naive_for_energy_and_the_generated_rule_for_reserve() -> None:
    data = market_data(inputs(), prices())
    energy = forecast(ENERGY, data, inputs())
    assert energy.mean == data.prices[-24:] and len(energy.std) == 24 and min(energy.std) > 0
    stale = forecast(ENERGY, data, inputs(inputs().interval_start + 30 * HOUR))  # the fallback, a day on
    assert stale.mean[0] == data.prices[-24 + 6]
    reserve = forecast(RESERVE, data, inputs())
    last_day = data.prices[-24:]
    assert reserve.mean[0] == pytest.approx(8 + 0.1 * (max(last_day) - min(last_day)), abs=1e-4)


def test_the_bid_is_deterministic_and_round_trips_through_its_artifact() -> None:
    data = market_data(inputs(), prices())
    energy, reserve = forecast(ENERGY, data, inputs()), forecast(RESERVE, data, inputs())
    bid = bid_for(inputs(), energy, reserve)
    assert {c.product for c in bid.intervals} == {ENERGY, RESERVE}
    again = bid_for(inputs(), energy, reserve)
    assert artifact("bid", bid) == artifact("bid", again), "same inputs, same bytes, same hash"
    for value in (inputs(), data, energy, bid, safe_bid(inputs()),
                  Submission("battery", "abc", (inputs().interval_start,), T0)):
        made = artifact("x", value)
        assert value_of(made.body) == value
        assert artifact("x", value_of(made.body)).artifact_id == made.artifact_id


def test_check_output_refuses_what_a_step_must_not_produce() -> None:
    data = market_data(inputs(), prices())
    energy = forecast(ENERGY, data, inputs())
    check_output("forecast:energy", energy)
    for step, value in (("fetch", energy), ("forecast:reserve", energy), ("optimise", data),
                        ("forecast:energy", replace(energy, std=(-1.0,) * 24)),
                        ("forecast:energy", replace(energy, mean=(float("nan"),) * 24)),
                        ("fetch", MarketData("DE", T0, 3600, ()))):
        with pytest.raises(ValueError):
            check_output(step, value)
    assert isinstance(energy, PriceForecast) and np.isfinite(energy.mean).all()


WF = "wf"
NOW = datetime(2026, 12, 1, 10, tzinfo=UTC)


def _entry(seq: int, event: Start | TaskDone | TaskFailed | Wake, state: Workflow,
           at: datetime) -> journal.Entry:
    payload = journal.loads(journal.event_payload(event, at, state))
    return journal.Entry(WF, seq, journal.EVENT_TYPES[type(event)], at, payload, journal.step_of(event))


def test_a_rewound_tail_is_replaced_by_what_the_resumed_run_wrote() -> None:
    start = Start(WF, NOW + HOUR, NOW + timedelta(seconds=20), NOW + timedelta(seconds=40),
                  NOW + timedelta(minutes=55), ("energy", "reserve"), ("in",), "old-market")
    events: list[Event] = [start, TaskDone(WF, FETCH, 1, "m"), TaskFailed(WF, "forecast:energy", 1, "boom")]
    state, written = Workflow(WF), []
    for seq, event in enumerate(events):
        state, _ = transition(state, event, NOW + seq * timedelta(seconds=1))
        written.append(_entry(seq, event, state, NOW + seq * timedelta(seconds=1)))
    # The orchestrator crashed after seq 2 and resumed from its snapshot at seq 1: it rewrites from seq 1.
    resumed = Workflow(WF)
    resumed, _ = transition(resumed, start, NOW)
    recovered = journal.Entry(WF, 1, journal.RECOVERED, NOW, {"resumed_at_seq": 1})
    again = TaskDone(WF, FETCH, 1, "m")
    resumed, _ = transition(resumed, again, NOW + timedelta(seconds=5))
    tail = [recovered, _entry(2, again, resumed, NOW + timedelta(seconds=5))]
    lived = journal.effective([*written, *tail])
    assert [(e.seq, e.event_type) for e in lived] == [(0, "start"), (1, "recovered"), (2, "task_done")]
    assert journal.replay_entries(WF, [*written, *tail]) == resumed
    assert journal.replay_entries(WF, written) == state


def test_every_event_survives_its_payload() -> None:
    start = Start(WF, NOW, NOW, NOW, NOW, ("energy",), ("a", "b"), None, 4, 12.5)
    for event in (start, TaskDone(WF, "optimise", 2, "x"), TaskFailed(WF, FETCH, 1, "late"), Wake(WF)):
        payload = journal.loads(journal.event_payload(event, NOW, Workflow(WF)))
        assert journal.event_of(payload["event"]) == event
