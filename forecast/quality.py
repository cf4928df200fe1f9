"""How good a model has been so far, from the stored error rows: one rule for every reader. Pure.

The rows are what the history's error views give per horizon, (series kind, model, horizon,
points, MAE, 80% band coverage). Pooling weights each horizon by its scored points. A model is
*worse than the naive* when its pooled MAE is above the naive's on the same series; with no scored
points on either side there is no verdict. The API shows the verdict and the peak planner derates
the fleet on it, so they must agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

ErrorRow = tuple[str, str, int, int, float, float]


@dataclass(frozen=True)
class Pooled:
    """One model's error over every scored horizon; ``mae`` and ``coverage_80`` are None without points."""

    points: int
    mae: float | None
    coverage_80: float | None


def pooled(errors: Sequence[ErrorRow], kind: str, model: str) -> Pooled:
    rows = [(n, mae, cov) for k, m, _, n, mae, cov in errors if k == kind and m == model]
    total = sum(n for n, _, _ in rows)
    if not total:
        return Pooled(0, None, None)
    mae = sum(n * mae for n, mae, _ in rows) / total
    return Pooled(total, mae, sum(n * cov for n, _, cov in rows) / total)


def worse_than_naive(errors: Sequence[ErrorRow], kind: str, model: str) -> bool | None:
    """Whether ``model`` has done worse than the naive so far; None when that cannot be said yet."""
    if model == "naive":
        return None
    mae, naive = pooled(errors, kind, model).mae, pooled(errors, kind, "naive").mae
    return None if mae is None or naive is None else mae > naive
