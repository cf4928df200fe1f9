"""A feeder re-parented in a 1,000-site fleet shows up on assets.changes, in Redis and in ClickHouse."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
import redis
from confluent_kafka import Consumer, Producer, TopicPartition

from assets.generator import generate_fleet
from assets.registry import Node, RegistryError
from assets.service import AssetService
from assets.sinks import persist_edges, publish_ancestries, write_navigation
from core import history, kafka
from core.config import Settings
from core.topics import ASSETS_CHANGES
from schemas import packaged_codec

pytestmark = pytest.mark.integration

LOADED = datetime(2026, 1, 1, tzinfo=UTC)
MOVED = datetime(2026, 2, 1, 6, 30, tzinfo=UTC)


def test_reparented_feeder_reaches_kafka_redis_and_clickhouse(stack_settings: Settings) -> None:
    fleet = generate_fleet(LOADED, 1000, seed=3)
    reg, codec = fleet.registry, packaged_codec()
    store = history.HistoryStore(history.connect(stack_settings))
    rds = redis.Redis.from_url(stack_settings.redis, decode_responses=True)
    producer = Producer(kafka.client_config(stack_settings))

    persist_edges(store, reg.edges, LOADED)
    write_navigation(rds, reg, LOADED)
    assert publish_ancestries(producer, codec, reg, fleet.sites.values(), LOADED, version=1) == 1000

    feeder, old_sub = "feeder-0-0", "substation-0-0"
    new_sub = f"substation-new-{uuid.uuid4().hex[:6]}"
    reg.add_node(Node(new_sub, "substation", "New"), "region-0", LOADED + timedelta(days=1))
    persist_edges(store, reg.edges_of(new_sub), LOADED)
    moved_sites = reg.members(feeder, MOVED)
    assert len(moved_sites) == 150
    service = AssetService(fleet, store.client, rds, producer, codec)
    with pytest.raises(RegistryError, match="must be a substation"):
        service.reparent_node(feeder, "region-0", MOVED)
    service.reparent_node(feeder, new_sub, MOVED)

    # Redis: the current view moved the 150 sites from the old substation to the new one.
    assert set(rds.smembers(f"node:{new_sub}:sites")) == moved_sites
    assert not moved_sites & set(rds.smembers(f"node:{old_sub}:sites"))
    assert rds.smembers(f"node:{feeder}:parents") == {new_sub}
    assert feeder in rds.smembers(f"node:{new_sub}:children")
    assert feeder not in rds.smembers(f"node:{old_sub}:children")

    # ClickHouse: the old edge closed at MOVED, the new one opens at MOVED; history before is intact.
    rows = store.client.query(
        "SELECT parent_id, valid_from, valid_to FROM vpp.asset_membership FINAL "
        "WHERE child_id = %(c)s ORDER BY valid_from", parameters={"c": feeder},
    ).result_rows
    assert [(p, f.replace(tzinfo=UTC), t and t.replace(tzinfo=UTC)) for p, f, t in rows] == [
        (old_sub, LOADED, MOVED), (new_sub, MOVED, None)]

    version = int(MOVED.timestamp() * 1000)
    # Kafka: the latest ancestry of every moved site names the new substation from MOVED on.
    consumer = Consumer(kafka.client_config(stack_settings, **{"group.id": f"t-{uuid.uuid4()}"}))
    topic = kafka.admin(stack_settings).list_topics(ASSETS_CHANGES, timeout=10).topics[ASSETS_CHANGES]
    parts = topic.partitions
    consumer.assign([TopicPartition(ASSETS_CHANGES, p, 0) for p in parts])
    latest: dict[str, dict[str, object]] = {}
    for _ in range(60):
        for message in consumer.consume(500, timeout=0.5):
            value = codec.decode(message.value() or b"", expected="SiteAncestry")
            latest[str(value["site_id"])] = value
        if sum(1 for s in moved_sites if latest.get(s, {}).get("version") == version) == len(moved_sites):
            break
    consumer.close()
    assert len(latest) >= 1000
    for site in moved_sites:
        paths = {p["hierarchy"]: p for p in latest[site]["paths"]}  # type: ignore[attr-defined]
        assert latest[site]["version"] == version
        assert paths["electrical"]["node_ids"] == [feeder, new_sub, "region-0"]
        assert paths["electrical"]["valid_from"] == MOVED
