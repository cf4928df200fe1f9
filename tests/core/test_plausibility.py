"""The fast path of check_telemetry accepts exactly what the rule-by-rule diagnosis accepts."""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from core.plausibility import (
    BEYOND_RATING,
    FUTURE_EVENT_TIME,
    NOT_A_NUMBER,
    Rules,
    SiteLimits,
    check_telemetry,
    diagnose_telemetry,
    plausible_rows,
)

NOW = 1_796_000_000_000
RULES = Rules()

awkward_numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.floats(-150, 150), st.integers(-200, 200),
    st.booleans(), st.none(), st.text(max_size=3), st.sampled_from([0.0, -0.0, 100.0, 100.000001, 1e300]))
event_times = st.one_of(st.integers(NOW - RULES.max_behind_ms - 5, NOW + RULES.max_ahead_ms + 5),
                        st.booleans(), st.floats(allow_nan=True), st.none())


@st.composite
def records(draw: st.DrawFn) -> dict[str, Any]:
    record: dict[str, Any] = {"site_id": "site-1", "seq": draw(st.one_of(st.integers(-2, 10), st.booleans())),
                              "event_time": draw(event_times)}
    for name in ("battery_kw", "solar_kw", "load_kw", "grid_kw", "soc_pct", "battery_temp_c"):
        if draw(st.booleans()):
            record[name] = draw(awkward_numbers)
        else:
            record[name] = draw(st.floats(0, 20))
    if draw(st.booleans()):
        del record[draw(st.sampled_from(sorted(record)))]
    return record


limits = st.one_of(st.none(), st.builds(SiteLimits, st.floats(1, 20), st.floats(1, 20)))


@settings(max_examples=600, deadline=None)
@given(records(), limits)
def test_the_fast_path_and_the_diagnosis_agree(record: dict[str, Any], site: SiteLimits | None) -> None:
    assert (check_telemetry(record, NOW, RULES, site) is None) == (
        diagnose_telemetry(record, NOW, RULES, site) is None)


def test_each_kind_of_bad_reading_is_named() -> None:
    good: dict[str, Any] = {"seq": 1, "event_time": NOW, "soc_pct": 50.0, "battery_kw": 2.0, "solar_kw": 1.0,
                            "load_kw": 1.0, "grid_kw": 0.5, "battery_temp_c": None}
    assert check_telemetry(good, NOW, RULES) is None
    cases = {"battery_kw": (float("nan"), NOT_A_NUMBER), "grid_kw": (True, NOT_A_NUMBER),
             "event_time": (NOW + 60_000, FUTURE_EVENT_TIME)}
    for name, (value, reason) in cases.items():
        verdict = check_telemetry({**good, name: value}, NOW, RULES)
        assert verdict is not None and verdict.reason == reason, name
    over = check_telemetry({**good, "battery_kw": 9.0}, NOW, RULES, SiteLimits(5.0, 5.0))
    assert over is not None and over.reason == BEYOND_RATING


_numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(-150, 150),
                     st.sampled_from([0.0, -0.0, 100.0, 100.000001, -100.0, 120.0, -60.0, 1e300]))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.fixed_dictionaries({
    "site_id": st.just("site-1"), "seq": st.integers(-3, 3),
    "event_time": st.integers(NOW - RULES.max_behind_ms - 5, NOW + RULES.max_ahead_ms + 5),
    "battery_kw": _numbers, "solar_kw": _numbers, "load_kw": _numbers, "grid_kw": _numbers,
    "soc_pct": _numbers, "battery_temp_c": st.one_of(st.none(), _numbers)}), min_size=1, max_size=20))
def test_the_rules_over_columns_accept_exactly_what_check_telemetry_accepts(
        batch: list[dict[str, Any]]) -> None:
    names = ("seq", "event_time", "battery_kw", "solar_kw", "load_kw", "grid_kw", "soc_pct")
    columns: dict[str, Any] = {name: np.array([r[name] for r in batch]) for name in names}
    columns["temp_null"] = np.array([r["battery_temp_c"] is None for r in batch])
    columns["battery_temp_c"] = np.array([np.nan if r["battery_temp_c"] is None else r["battery_temp_c"]
                                          for r in batch])
    with np.errstate(invalid="ignore"):
        plausible = plausible_rows(columns, NOW, RULES)
    assert plausible.tolist() == [check_telemetry(r, NOW, RULES) is None for r in batch]
