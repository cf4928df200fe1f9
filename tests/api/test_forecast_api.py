"""GET /v1/nodes/{id}/forecast: the latest run with its band, and the flag when the naive does better."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from core import history
from tests.api.conftest import Api
from vpp.forecast_service import forecast_node

pytestmark = pytest.mark.integration

NODE = "feeder-0-0"  # tests/api/test_history_api.py stores January 2025 there; this is February
NOW = datetime(2025, 3, 1, 0, 7, tzinfo=UTC)
EDGE = NOW.replace(minute=0)


def _insert_minutes(store: history.HistoryStore, first: datetime, count: int, noise_kw: float = 0.0) -> None:
    """A daily load shape, with noise or exact (then the same slot last week is exactly right)."""
    minute = int(first.timestamp()) // 60 + np.arange(count)
    load = 50 + 20 * np.sin(2 * np.pi * (minute % 1440) / 1440)
    load += np.random.default_rng(0).normal(0, noise_kw, count) if noise_kw else 0.0
    rows = [[NODE, "electrical", first + timedelta(minutes=int(m)), float(kw), 1]
            for m, kw in zip(range(count), load, strict=True)]
    store.client.insert("vpp.node_minute", rows,
                        column_names=["node_id", "hierarchy", "minute", "load_kw", "version"])


def test_latest_forecast_with_band_then_flagged_when_worse_than_the_naive(api: Api) -> None:
    with api.client("read") as client:
        assert client.get("/v1/nodes/feeder-9-99/forecast").status_code == 404
        missing = client.get(f"/v1/nodes/{NODE}/forecast")
    assert missing.status_code == 404 and "vpp forecast node" in missing.json()["detail"]
    store = history.HistoryStore(history.connect(api.settings), api.settings.clickhouse_database)
    _insert_minutes(store, EDGE - timedelta(days=15), 8 * 1440, noise_kw=3.0)
    _insert_minutes(store, EDGE - timedelta(days=7), 7 * 1440)
    issued = forecast_node(store, NODE, "node_load", NOW)
    with api.client("read") as client:
        answer = client.get(f"/v1/nodes/{NODE}/forecast", params={"series": "load"}).json()
    assert answer["run_id"] == issued.run.run_id and answer["model"] == "holt-winters"
    assert answer["count"] == 96 and answer["data"][0]["horizon_steps"] == 1
    assert all(p["q10"] < p["value"] < p["q90"] for p in answer["data"])
    assert answer["quality"]["points"] == 0 and answer["quality"]["worse_than_naive"] is None
    _insert_minutes(store, EDGE, 120)  # two hours of actuals, exactly last week's shape
    with api.client("read") as client:
        quality = client.get(f"/v1/nodes/{NODE}/forecast").json()["quality"]
    assert quality["points"] == 8 and quality["naive_mae"] == pytest.approx(0.0, abs=1e-6)
    assert quality["mae"] > 0 and quality["worse_than_naive"] is True


def test_a_region_price_forecast_says_its_prices_are_simulated_and_scores_them(api: Api) -> None:
    from vpp.forecast_service import forecast_price
    from vpp.market_feed import MarketFeed

    region = "region-price-api"
    now = datetime(2026, 11, 30, 14, 5, tzinfo=UTC)
    with api.client("read") as client:
        missing = client.get(f"/v1/prices/{region}/forecast")
    assert missing.status_code == 404 and "vpp forecast price" in missing.json()["detail"]
    store = history.HistoryStore(history.connect(api.settings), api.settings.clickhouse_database)
    feed = MarketFeed.from_settings(api.settings, [region])
    known = feed.publish(store, now, weeks=8)
    issued = forecast_price(store, region, now)
    with api.client("read") as client:
        answer = client.get(f"/v1/prices/{region}/forecast").json()
    assert answer["run_id"] == issued.run.run_id and answer["model"] == "mstl" and answer["count"] == 48
    assert answer["simulated"] is True and answer["source"] == "smard:DE:2018" and answer["currency"] == "EUR"
    assert all(p["q10"] < p["value"] < p["q90"] for p in answer["data"])
    assert answer["quality"]["points"] == 0 and answer["quality"]["worse_than_naive"] is None
    assert len(answer["actual"]) == 24 and answer["actual"][-1]["interval_start"].startswith("2026-12-01T22")
    feed.publish(store, now + timedelta(days=1), since=known)
    with api.client("read") as client:
        quality = client.get(f"/v1/prices/{region}/forecast").json()["quality"]
    assert quality["points"] == 24 and quality["naive_mae"] is not None
    assert quality["worse_than_naive"] is (quality["mae"] > quality["naive_mae"])
