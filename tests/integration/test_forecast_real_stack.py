"""The forecast service over the real stack, as the issue asks: node history made by the real telemetry
dataflow from real Avro on telemetry.raw -> a forecast run in ClickHouse, a price forecast on
prices.forecast -> the error views filled once the actuals (the next readings, the next day's prices) arrive.

The readings are pre-written with event times spread over 15 days (one per site per quarter-hour, a daily
load shape), so the dataflow builds two weeks of node history in seconds; the test widens
VPP_PLAUSIBLE_MAX_BEHIND_H for that run explicitly rather than weakening the default.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from core import history, kafka
from core.config import Settings
from core.topics import ASSETS_CHANGES, PRICES_FORECAST, TELEMETRY_RAW
from schemas import packaged_codec
from schemas.times import from_epoch_ms
from tests.conftest import local_settings
from tests.telemetry import flowrun
from tests.telemetry.scenario import SiteSpec, ancestry
from vpp.forecast_service import forecast_node, forecast_price, publish_price
from vpp.market_feed import MarketFeed
from vpp.stack import running

pytestmark = pytest.mark.integration

SITES = [SiteSpec(f"site-{i}", 13.5, 10.0, 5.0, 0, 0, (0,)) for i in range(2)]
QUARTER_MS = 15 * 60_000  # one partition: the flow's clock waits for no silent partition
BEHIND_H = str(17 * 24)  # 15 days of history is older than the default 168 h bound


@pytest.fixture
def own_stack(tmp_path: Path) -> Iterator[Settings]:
    settings = local_settings(tmp_path / "stack", default_partitions=3, topic_partitions={"telemetry.raw": 1})
    with running(settings):
        yield settings


def _reading(site: str, seq: int, t_ms: int) -> dict[str, Any]:
    hour = (t_ms / 3_600_000) % 24
    return {"site_id": site, "seq": seq, "event_time": from_epoch_ms(t_ms), "received_time": None,
            "soc_pct": 50.0, "battery_kw": 0.0, "solar_kw": 0.0,
            "load_kw": 1.5 + math.sin(2 * math.pi * hour / 24), "grid_kw": 0.0, "battery_temp_c": 25.0,
            "mode": "SELF_CONSUMPTION", "active_command_id": None, "firmware": "1.0"}


def _produce(settings: Settings, first_ms: int, quarters: int, ancestries: bool = False,
             tick_ms: int | None = None) -> None:
    """One reading per site mid-quarter; ``tick_ms``: one more per site then, to move the flow's event
    clock past the last quarter so its minutes close (the clock is the newest event time seen)."""
    codec = packaged_codec()
    producer = Producer(kafka.client_config(settings, **{"linger.ms": 20}))
    if ancestries:
        for spec in SITES:
            record = ancestry(spec, 1, first_ms - 60_000, {0: 0})
            producer.produce(ASSETS_CHANGES, key=spec.site_id.encode(),
                             value=codec.encode("SiteAncestry", record))
    for q in range(quarters):
        t = first_ms + q * QUARTER_MS + 7 * 60_000  # mid-quarter
        for spec in SITES:
            producer.produce(TELEMETRY_RAW, key=spec.site_id.encode(),
                             value=codec.encode("SiteTelemetry", _reading(spec.site_id, t // 1000, t)))
        producer.poll(0)
    for spec in SITES if tick_ms is not None else []:
        assert tick_ms is not None
        producer.produce(TELEMETRY_RAW, key=spec.site_id.encode(),
                         value=codec.encode("SiteTelemetry",
                                            _reading(spec.site_id, tick_ms // 1000, tick_ms)))
    assert producer.flush(30) == 0


def test_flow_history_to_a_stored_run_and_a_published_price_scored_when_actuals_arrive(
        own_stack: Settings, tmp_path: Path) -> None:
    wall = datetime.now(UTC)
    issue_at = wall.replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    first_ms = int((issue_at - timedelta(days=15)).timestamp() * 1000)
    _produce(own_stack, first_ms, 15 * 96, ancestries=True, tick_ms=int(issue_at.timestamp() * 1000))
    recovery = tmp_path / "recovery"
    flowrun.run_to_end(own_stack, recovery=recovery, VPP_PLAUSIBLE_MAX_BEHIND_H=BEHIND_H)

    store = history.HistoryStore(history.connect(own_stack), own_stack.clickhouse_database)
    issued = forecast_node(store, "feeder-0", "node_load", issue_at + timedelta(minutes=7))
    assert issued.run.model == "holt-winters" and issued.run.note == ""
    assert issued.run.first_target == issue_at and len(issued.points) == 96
    assert store.latest_forecast("node_load", "feeder-0") is not None
    assert store.forecast_node_errors("feeder-0") == []

    _produce(own_stack, int(issue_at.timestamp() * 1000), 4)  # the next hour's readings
    flowrun.run_to_end(own_stack, recovery=recovery, VPP_PLAUSIBLE_MAX_BEHIND_H=BEHIND_H)
    errors = store.forecast_node_errors("feeder-0")
    scored = {(model, h) for _, model, h, *_ in errors}
    assert {("holt-winters", 1), ("naive", 1)} <= scored, errors
    assert all(0 <= mae < 5 for *_, mae, _ in errors), errors  # kW of 2 sites: scored, not garbage

    region = "region-0"  # the sites' price region (their ancestry's region)
    feed = MarketFeed.from_settings(own_stack, [region])
    known = feed.publish(store, wall, weeks=8)
    price = forecast_price(store, region, wall)
    codec = packaged_codec()
    publish_price(Producer(kafka.client_config(own_stack)), codec, price)
    messages = flowrun.read_to_end(own_stack, PRICES_FORECAST)
    records = [codec.decode(m.value(), "PriceForecast") for m in messages]
    assert [(r["region"], r["start"], len(r["prices_per_mwh"])) for r in records] == [(region, known, 48)]
    assert store.forecast_price_errors(region) == []
    feed.publish(store, wall + timedelta(days=1), since=known)
    assert len({h for *_, h, _, _, _ in store.forecast_price_errors(region)}) == 24
