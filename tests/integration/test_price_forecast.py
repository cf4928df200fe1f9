"""Prices end to end on the local stack: the simulated market -> market_prices -> a price forecast run in
ClickHouse and a PriceForecast on prices.forecast -> scored once the next day's prices are published."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from core import history, kafka
from core.config import Settings
from core.history import HistoryStore
from core.topics import PRICES_FORECAST
from forecast.clean import InsufficientHistoryError
from schemas import packaged_codec
from vpp.forecast_service import forecast_price, publish_price
from vpp.market_feed import MarketFeed, MarketFeedError

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 30, 14, 5, tzinfo=UTC)  # after 12:45 Berlin: tomorrow's prices are out


@pytest.fixture(scope="module")
def store(stack_settings: Settings) -> HistoryStore:
    client = history.connect(stack_settings)
    history.apply_ddl(client)
    return HistoryStore(client)


def test_the_market_feed_replays_the_configured_series_and_refuses_without_one(
        stack_settings: Settings, store: HistoryStore) -> None:
    with pytest.raises(MarketFeedError, match="VPP_MARKET_PRICE_SERIES"):
        MarketFeed.from_settings(stack_settings.model_copy(update={"market_price_series": ""}), ["region-0"])
    with pytest.raises(MarketFeedError, match="region"):
        MarketFeed.from_settings(stack_settings, [])
    region = f"region-{uuid.uuid4().hex[:8]}"
    feed = MarketFeed.from_settings(stack_settings, [region])
    end = feed.publish(store, NOW, weeks=8)
    assert end == datetime(2026, 12, 1, 23, 0, tzinfo=UTC)  # end of tomorrow, Berlin time
    rows = store.market_prices(region, end - timedelta(weeks=9), end + timedelta(days=3))
    assert len(rows) == 8 * 7 * 24 and rows[-1].interval_start == end - timedelta(hours=1)
    assert {r.source for r in rows} == {"smard:DE:2018"}
    assert any(r.price_eur_mwh < 0 for r in rows) or min(r.price_eur_mwh for r in rows) < 20
    # the day-ahead publication of the last day: noon-ish the day before, never after the interval
    assert all(r.published_at < r.interval_start for r in rows)
    assert feed.publish(store, NOW, weeks=8) == end  # a restart rewrites the same rows
    assert len(store.market_prices(region, end - timedelta(weeks=9), end)) == len(rows)


def test_a_price_forecast_is_stored_published_and_scored_when_prices_arrive(
        stack_settings: Settings, store: HistoryStore) -> None:
    region = f"region-{uuid.uuid4().hex[:8]}"
    feed = MarketFeed.from_settings(stack_settings, [region])
    known = feed.publish(store, NOW, weeks=8)
    issued = forecast_price(store, region, NOW)
    assert issued.run.series_kind == "price" and issued.run.model == "mstl" and issued.run.note == ""
    assert issued.run.first_target == known and len(issued.points) == 48
    assert all(p.q10 < p.value < p.q90 for p in issued.points)
    assert issued.baseline.model == "naive" and issued.baseline.note == "baseline"
    latest = store.latest_forecast("price", region)
    assert latest is not None and latest[0].run_id == issued.run.run_id

    codec = packaged_codec()
    consumer = Consumer(kafka.client_config(
        stack_settings, **{"group.id": f"test-{uuid.uuid4()}", "enable.auto.commit": False}))
    partitions = kafka.admin(stack_settings).list_topics(PRICES_FORECAST, timeout=10).topics[
        PRICES_FORECAST].partitions
    ends = {p: consumer.get_watermark_offsets(TopicPartition(PRICES_FORECAST, p), timeout=10)[1]
            for p in partitions}
    publish_price(Producer(kafka.client_config(stack_settings)), codec, issued)
    consumer.assign([TopicPartition(PRICES_FORECAST, p, ends[p]) for p in partitions])
    received = None
    for _ in range(120):
        for message in consumer.consume(num_messages=10, timeout=0.5):
            value = message.value()
            assert message.error() is None and value is not None
            record = codec.decode(value, expected="PriceForecast")
            if record["region"] == region:
                received = record
        if received is not None:
            break
    consumer.close()
    assert received is not None
    assert received["start"] == known and received["interval_minutes"] == 60
    assert received["currency"] == "EUR" and received["prices_per_mwh"] == [p.value for p in issued.points]

    assert store.forecast_price_errors(region) == []  # nothing published for the targets yet
    feed.publish(store, NOW + timedelta(days=1), since=known)  # the next day's auction
    errors = store.forecast_price_errors(region)
    scored = {(model, h) for _, model, h, *_ in errors}
    assert scored == {(m, h) for m in ("mstl", "naive") for h in range(1, 25)}
    assert all(n == 1 and mae >= 0 for _, _, _, n, mae, _ in errors)


def test_a_stale_or_missing_market_is_refused(store: HistoryStore) -> None:
    with pytest.raises(InsufficientHistoryError, match="market feed"):
        forecast_price(store, f"region-{uuid.uuid4().hex[:8]}", NOW)


def test_the_cli_runs_the_market_and_forecasts_a_region_on_demand(stack_settings: Settings) -> None:
    from typer.testing import CliRunner

    from vpp.cli import app
    from vpp.dataflows import settings_env

    region = f"region-{uuid.uuid4().hex[:8]}"
    env = settings_env(stack_settings)
    market = CliRunner().invoke(app, ["forecast", "market", "--region", region, "--once"], env=env)
    assert market.exit_code == 0, market.output
    assert "smard:DE:2018 (simulated)" in market.output
    price = CliRunner().invoke(app, ["forecast", "price", region], env=env)
    assert price.exit_code == 0, price.output
    assert "published on prices.forecast" in price.output
    refused = CliRunner().invoke(app, ["forecast", "market", "--region", region, "--once"],
                                 env={**env, "VPP_MARKET_PRICE_SERIES": ""})
    assert refused.exit_code == 1 and "VPP_MARKET_PRICE_SERIES" in refused.output
