"""The node forecast service on the history server: node_minute -> a run -> scored once actuals arrive."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from core import history
from core.config import Settings
from core.history import HistoryStore
from forecast.clean import GapTooLongError, InsufficientHistoryError
from vpp.forecast_service import forecast_node, forecast_round

pytestmark = pytest.mark.integration

NOW = datetime(2026, 5, 1, 0, 7, tzinfo=UTC)  # the last complete quarter-hour ends at 00:00


def _load_kw(t: np.ndarray) -> np.ndarray:
    """A node's load: a daily shape in kW, by epoch minute."""
    return 50 + 20 * np.sin(2 * np.pi * (t % 1440) / 1440)


def _minutes(store: HistoryStore, node: str, first: datetime, count: int, skip: range = range(0)) -> None:
    minutes = [m for m in range(count) if m not in skip]
    base = int(first.timestamp()) // 60
    load = _load_kw(base + np.array(minutes))
    rows = [[node, "electrical", first + timedelta(minutes=m), float(kw), 1]
            for m, kw in zip(minutes, load, strict=True)]
    store.client.insert("vpp.node_minute", rows,
                        column_names=["node_id", "hierarchy", "minute", "load_kw", "version"])


@pytest.fixture(scope="module")
def store(stack_settings: Settings) -> HistoryStore:
    client = history.connect(stack_settings)
    history.apply_ddl(client)
    return HistoryStore(client)


def test_a_node_forecast_is_stored_gaps_counted_and_scored_when_actuals_arrive(store: HistoryStore) -> None:
    node = f"feeder-{uuid.uuid4().hex[:8]}"
    days = 15
    start = NOW.replace(minute=0) - timedelta(days=days)
    _minutes(store, node, start, days * 1440, skip=range(600, 630))  # a 30-minute outage: 2 slots
    issued = forecast_node(store, node, "node_load", NOW)
    assert issued.run.model == "holt-winters" and issued.run.note == ""
    assert issued.filled.filled == 2 and issued.run.filled_steps == 2
    assert len(issued.points) == 96 and issued.points[0].target_time == NOW.replace(minute=0)
    assert all(p.q10 < p.value < p.q90 for p in issued.points)
    assert store.forecast_node_errors(node) == []  # nothing to score yet
    _minutes(store, node, NOW.replace(minute=0), 60)  # the first hour's actuals arrive
    errors = store.forecast_node_errors(node)
    assert [(kind, model, h, n) for kind, model, h, n, *_ in errors] == [
        ("node_load", model, h, 1) for model in ("holt-winters", "naive") for h in (1, 2, 3, 4)]
    assert all(mae < 2.0 for *_, mae, _ in errors)  # a clean daily shape is easy
    assert issued.baseline.note == "baseline" and issued.baseline.model == "naive"


def test_short_history_is_served_by_the_naive_and_flagged_long_gaps_refused(store: HistoryStore) -> None:
    node = f"feeder-{uuid.uuid4().hex[:8]}"
    _minutes(store, node, NOW.replace(minute=0) - timedelta(days=9), 9 * 1440)
    issued = forecast_node(store, node, "node_load", NOW)
    assert issued.run.note.startswith("naive fallback for holt-winters")
    assert "at least 2 x 7 days" in issued.run.note
    broken = f"feeder-{uuid.uuid4().hex[:8]}"
    _minutes(store, broken, NOW.replace(minute=0) - timedelta(days=15), 15 * 1440, skip=range(600, 900))
    with pytest.raises(GapTooLongError, match="20 consecutive missing slot"):
        forecast_node(store, broken, "node_load", NOW)
    with pytest.raises(InsufficientHistoryError, match="stale"):
        forecast_node(store, node, "node_load", NOW + timedelta(hours=1))


def test_a_round_forecasts_every_node_and_reports_the_refused_ones(store: HistoryStore) -> None:
    good, silent = f"feeder-{uuid.uuid4().hex[:8]}", f"feeder-{uuid.uuid4().hex[:8]}"
    _minutes(store, good, NOW.replace(minute=0) - timedelta(days=15), 15 * 1440)
    done = forecast_round(store, [good, silent], ["node_load", "node_solar"], NOW)
    assert [(r.run.series_id, r.run.series_kind) for r in done.issued] == [
        (good, "node_load"), (good, "node_solar")]  # solar_kw is stored as 0 by default: a flat forecast
    assert set(done.refused) == {f"{silent}:node_load", f"{silent}:node_solar"}
    assert "no load_kw history" in done.refused[f"{silent}:node_load"]


def test_the_cli_forecasts_a_node_now_and_runs_a_round(store: HistoryStore, stack_settings: Settings,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from vpp.cli import app

    monkeypatch.setenv("VPP_CLICKHOUSE_PORT", str(stack_settings.clickhouse_port))
    monkeypatch.setenv("VPP_DATA_DIR", str(stack_settings.data_dir))
    node = f"feeder-{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC)
    edge = now.replace(minute=now.minute // 15 * 15, second=0, microsecond=0)
    _minutes(store, node, edge - timedelta(days=15), 15 * 1440 + 15)  # and the next quarter, in case
    outcome = CliRunner().invoke(app, ["forecast", "node", node, "--series", "load"])
    assert outcome.exit_code == 0, outcome.output
    assert "holt-winters, 96 x 15 min" in outcome.output and "0 of" in outcome.output
    assert CliRunner().invoke(app, ["forecast", "node", node, "--series", "wind"]).exit_code == 2
    silent = CliRunner().invoke(app, ["forecast", "node", f"feeder-{uuid.uuid4().hex[:8]}"])
    assert silent.exit_code == 1 and "no load_kw history" in silent.output
    round_ = CliRunner().invoke(app, ["forecast", "serve", "--once", "--kinds", "no-such-kind",
                                      "--no-prices"])
    assert round_.exit_code == 0 and "0 run(s) for 0 node(s); 0 refused" in round_.output
