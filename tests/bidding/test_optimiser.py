"""The bid optimiser against a brute-force dynamic programme on small cases, and its bid bands."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import numpy as np
import pytest

from bidding.bids import ENERGY, PRICE_FLOOR, Band, IntervalBid, energy_bands, response_bands, safe_bid
from bidding.optimiser import Battery, optimise

T0 = datetime(2018, 3, 5, tzinfo=UTC)


def brute_force(battery: Battery, energy: np.ndarray, reserve: np.ndarray | None, step_h: float, soc0: float,
                levels: int, reserve_levels: int) -> float:
    """Best revenue over a discretised state of charge (``levels`` points) and reserve (``reserve_levels``).

    Every move between two grid points is tried, so the only approximation is the grid.
    """
    grid = np.linspace(0.0, battery.energy_mwh, levels)
    reserves = np.linspace(0.0, battery.power_mw, reserve_levels) if reserve is not None else np.zeros(1)
    eta, power, sustain, deg = battery.eta, battery.power_mw, battery.reserve_sustain_h, \
        battery.degradation_eur_per_mwh
    value = np.zeros(levels)  # value-to-go after the last interval: soc_end >= 0 only
    for t in reversed(range(len(energy))):
        new = np.full(levels, -np.inf)
        for i, j, k in itertools.product(range(levels), range(levels), range(len(reserves))):
            s, s_next, r = grid[i], grid[j], reserves[k]
            delta = s_next - s
            c, d = (delta / (eta * step_h), 0.0) if delta > 0 else (0.0, -delta * eta / step_h)
            held = sustain * r
            if max(c, d) > power + 1e-9 or d - c + r > power + 1e-9 or c - d + r > power + 1e-9:
                continue
            if min(s, s_next) < held - 1e-9 or max(s, s_next) > battery.energy_mwh - held + 1e-9:
                continue
            rp = 0.0 if reserve is None else reserve[t]
            gain = step_h * (energy[t] * (d - c) + rp * r - deg * (c + d)) + value[j]
            new[i] = max(new[i], gain)
        value = new
    return float(value[int(np.argmin(np.abs(grid - soc0)))])


@pytest.mark.parametrize("seed", range(6))
def test_lp_matches_the_dynamic_programme_exactly_where_the_grid_holds_the_optimum(seed: int) -> None:
    """Lossless, grid step = one interval at full power / 2: the LP's vertices lie on the grid."""
    rng = np.random.default_rng(seed)
    battery = Battery(1.0, 2.0, round_trip=1.0, degradation_eur_per_mwh=1.0, reserve_sustain_h=1.0)
    energy = rng.uniform(0, 100, 5)
    reserve = rng.uniform(0, 30, 5)
    plan = optimise(battery, energy, 1.0, 1.0, reserve_price=reserve)
    dp = brute_force(battery, energy, reserve, 1.0, 1.0, levels=5, reserve_levels=3)
    assert plan.value_eur == pytest.approx(dp, abs=1e-4)


@pytest.mark.parametrize("seed", range(4))
def test_lp_with_losses_bounds_the_dynamic_programme_and_the_gap_closes_with_the_grid(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    battery = Battery(1.0, 2.0, round_trip=0.9, degradation_eur_per_mwh=0.5, reserve_sustain_h=0.5)
    energy = rng.uniform(-10, 100, 4)
    reserve = rng.uniform(0, 20, 4)
    plan = optimise(battery, energy, 1.0, 1.0, reserve_price=reserve)
    coarse = brute_force(battery, energy, reserve, 1.0, 1.0, levels=9, reserve_levels=3)
    fine = brute_force(battery, energy, reserve, 1.0, 1.0, levels=33, reserve_levels=5)
    assert coarse <= fine + 1e-9 <= plan.value_eur + 1e-4  # the grid restricts, the LP does not
    assert plan.value_eur - fine <= 0.05 * abs(plan.value_eur) + 0.5


def test_schedule_respects_limits_and_energy_balance() -> None:
    rng = np.random.default_rng(7)
    battery = Battery(1.0, 2.0, degradation_eur_per_mwh=1.0)
    energy, reserve = rng.uniform(0, 80, 48), rng.uniform(0, 15, 48)
    plan = optimise(battery, energy, 0.5, 1.0, reserve_price=reserve, soc_end_min_mwh=1.0)
    eps = 1e-6
    assert plan.soc_mwh.min() >= -eps and plan.soc_mwh.max() <= 2.0 + eps and plan.soc_mwh[-1] >= 1.0 - eps
    assert np.all(plan.discharge_mw - plan.charge_mw + plan.reserve_mw <= 1.0 + eps)
    assert np.all(plan.soc_mwh[1:] >= battery.reserve_sustain_h * plan.reserve_mw - eps)
    flow = 0.5 * (battery.eta * plan.charge_mw - plan.discharge_mw / battery.eta)
    np.testing.assert_allclose(np.diff(plan.soc_mwh), flow, atol=1e-6)


def test_energy_bands_buy_cheap_sell_dear_and_stay_monotone() -> None:
    battery = Battery(1.0, 2.0)
    energy = np.array([10.0, 10, 50, 50, 30, 30])
    plan = optimise(battery, energy, 1.0, 1.0)
    bid = energy_bands(battery, plan, 0, 1.0, 1.0, T0)
    assert len(bid.bands) <= 10 and bid.bands[0].price == PRICE_FLOOR
    assert bid.quantity_at(5.0) < 0 < bid.quantity_at(60.0)  # buys below the water value, sells far above
    assert bid.quantity_at(5.0) == pytest.approx(-battery.power_mw)  # 1 MWh of room: full power for an hour
    full = energy_bands(battery, plan, 0, 1.0, 2.0, T0)
    assert full.quantity_at(-100.0) == pytest.approx(0.0)  # full: nothing left to buy


def test_bands_refuse_non_monotone_curves_and_more_than_ten() -> None:
    with pytest.raises(ValueError, match="never fall"):
        IntervalBid(T0, ENERGY, (Band(0, 1.0), Band(10, 0.5)))
    with pytest.raises(ValueError, match="1 to 10"):
        IntervalBid(T0, ENERGY, tuple(Band(float(i), float(i)) for i in range(11)))
    assert safe_bid("b1", T0, "no forecast").intervals[0].quantity_at(1e4) == 0.0


def test_a_day_of_five_minute_intervals_with_reserve_solves() -> None:
    rng = np.random.default_rng(3)
    energy, reserve = rng.uniform(0, 100, 288), rng.uniform(0, 20, 288)
    plan = optimise(Battery(1.0, 2.0), energy, 1 / 12, 1.0, reserve_price=reserve)
    assert len(plan.soc_mwh) == 289 and plan.value_eur > 0


def test_response_bands_are_monotone_and_answer_the_price_that_clears() -> None:
    battery = Battery(1.0, 2.0, degradation_eur_per_mwh=1.0)
    mean = np.array([40.0, 20, 20, 60, 60, 40])
    independent = response_bands(battery, mean, np.full(6, 30.0), 1.0, 1.0, T0, persistence=0.0)
    assert 1 <= len(independent.bands) <= 10
    assert independent.quantity_at(-10.0) < 0  # far below the forecast: buy now rather than later
    assert independent.quantity_at(90.0) > 0  # far above even the evening: sell now
    # errors that persist move the later prices too: a low price now says the next hours are lower
    persistent = response_bands(battery, mean, np.full(6, 30.0), 1.0, 1.0, T0, persistence=0.9)
    assert persistent.quantity_at(-10.0) > independent.quantity_at(-10.0)
    for bid in (independent, persistent):
        quantities = [bid.quantity_at(p) for p in np.linspace(-50, 150, 81)]
        assert quantities == sorted(quantities)


def test_re_running_the_decision_on_the_same_inputs_gives_the_same_artifact_hash() -> None:
    from bidding.artifacts import artifact

    rng = np.random.default_rng(11)
    mean, std = rng.uniform(10, 90, 24), rng.uniform(5, 15, 24)
    battery = Battery(1.0, 2.0, degradation_eur_per_mwh=1.0)
    first = artifact("bid", response_bands(battery, mean, std, 1.0, 0.7, T0, soc_end_min_mwh=1.0))
    optimise(battery, rng.uniform(0, 50, 24), 1.0, 1.5)  # the compiled problem is reused in between
    again = artifact("bid", response_bands(battery, mean, std, 1.0, 0.7, T0, soc_end_min_mwh=1.0))
    assert first.artifact_id == again.artifact_id
