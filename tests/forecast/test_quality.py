"""The one worse-than-the-naive rule the API shows and the peak planner derates on."""

from __future__ import annotations

from forecast.quality import pooled, worse_than_naive

ROWS = [("node_load", "holt-winters", 1, 10, 2.0, 0.7), ("node_load", "holt-winters", 2, 30, 6.0, 0.9),
        ("node_load", "naive", 1, 10, 4.0, 0.8), ("node_load", "naive", 2, 30, 4.0, 0.8),
        ("node_solar", "naive", 1, 10, 0.1, 0.8)]


def test_pooling_weights_each_horizon_by_its_points() -> None:
    mine = pooled(ROWS, "node_load", "holt-winters")
    assert (mine.points, mine.mae, mine.coverage_80) == (40, 5.0, 0.85)
    assert pooled(ROWS, "node_solar", "holt-winters").mae is None


def test_worse_than_naive_needs_points_on_both_sides() -> None:
    assert worse_than_naive(ROWS, "node_load", "holt-winters") is True  # 5.0 against 4.0
    assert worse_than_naive(ROWS[:1] + ROWS[2:3], "node_load", "holt-winters") is False  # 2.0 against 4.0
    assert worse_than_naive([], "node_load", "holt-winters") is None
    assert worse_than_naive(ROWS, "node_load", "naive") is None
