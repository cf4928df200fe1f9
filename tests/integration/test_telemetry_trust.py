"""Issue 20, cases 2-5, over the real stack: an attacker with access to ``telemetry.raw``.

The attacker produces Avro records with the project codec straight to the topic, past the
gateway, in the middle of a fleet's ordinary stream: absurd powers, a NaN, a power beyond the
site's rating, a 1e300 later followed by zeros, readings dated a year ahead on every partition
and one dated 1971. The real telemetry dataflow must dead-letter each with its reason, and what
it writes (live aggregates, twins, minutes) must be exactly what the fleet's own readings say.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from confluent_kafka import Producer

from core.config import Settings
from core.kafka import client_config
from core.plausibility import BEYOND_RATING, FUTURE_EVENT_TIME, NOT_A_NUMBER, OUT_OF_RANGE, STALE_EVENT_TIME
from core.topics import ASSETS_CHANGES, TELEMETRY_DLQ, TELEMETRY_RAW
from operators.sinks import RedisTwinSink, TwinWrite
from schemas import packaged_codec
from schemas.times import epoch_ms
from tests.conftest import local_settings
from tests.telemetry import flowrun
from tests.telemetry.compare import check_all
from tests.telemetry.scenario import Scenario, generate, recent_start_ms
from vpp.stack import running

pytestmark = pytest.mark.integration

PARTITIONS = 6
MINUTES = 3.25


@pytest.fixture
def own_stack(tmp_path: Path) -> Iterator[Settings]:
    settings = local_settings(tmp_path / "stack", default_partitions=3,
                              topic_partitions={TELEMETRY_RAW: PARTITIONS}, telemetry_shards=8,
                              telemetry_node_groups=4, partition_idle_s=flowrun.REPLAY_PARTITION_IDLE_S)
    with running(settings):
        yield settings


def _attack(sc: Scenario) -> list[tuple[str, int | None, dict[str, Any]]]:
    """(expected reason, partition or None, SiteTelemetry record) of every forged record."""
    middle = sc.readings[len(sc.readings) // 2]
    sites = [s.site_id for s in sc.sites]

    def forged(site: str, seq: int, **fields: Any) -> dict[str, Any]:
        return {**middle, "site_id": site, "seq": seq, **fields}

    future = datetime.now(UTC) + timedelta(days=365)
    small = next(s for s in sc.sites if s.max_kw == 3.0)
    attack: list[tuple[str, int | None, dict[str, Any]]] = [
        (OUT_OF_RANGE, None, forged(sites[0], 1_000_000, battery_kw=1e12)),
        (OUT_OF_RANGE, None, forged(sites[1], 1_000_000, grid_kw=-1e12)),
        (NOT_A_NUMBER, None, forged(sites[2], 1_000_000, battery_kw=float("nan"))),
        (OUT_OF_RANGE, None, forged(sites[3], 1_000_000, battery_kw=1e300)),
        (BEYOND_RATING, None, forged(small.site_id, 1_000_000, battery_kw=40.0)),
        (STALE_EVENT_TIME, None, forged(sites[4], 1_000_000, event_time=datetime(1971, 1, 1, tzinfo=UTC))),
    ]
    # A year ahead on every partition: the old shard clock (the oldest partition's newest time) jumped.
    attack += [(FUTURE_EVENT_TIME, p, forged(sites[5 + p], 1_000_000 + p, event_time=future))
               for p in range(PARTITIONS)]
    return attack


def _produce_ancestries(settings: Settings, sc: Scenario) -> None:
    """The fleet's ancestries (with the sites' ratings), read by a first run of the flow: the flow reads
    two topics with no order between them, so a rating produced just before a reading could still be
    read after it (and a reading beyond a rating nobody knows yet is not beyond it)."""
    codec = packaged_codec()
    producer = Producer(client_config(settings, **{"linger.ms": 20}))
    for record in sc.ancestries:
        producer.produce(ASSETS_CHANGES, key=record["site_id"].encode(),
                         value=codec.encode("SiteAncestry", record))
    producer.flush(30)


def _produce(settings: Settings, sc: Scenario, attack: list[tuple[str, int | None, dict[str, Any]]]) -> None:
    """The first half of the readings, the forged records, then the second half."""
    codec = packaged_codec()
    producer = Producer(client_config(settings, **{"linger.ms": 20}))
    half = len(sc.readings) // 2

    def readings(part: list[dict[str, Any]]) -> None:
        for record in part:
            producer.produce(TELEMETRY_RAW, key=record["site_id"].encode(),
                             value=codec.encode("SiteTelemetry", record))
        producer.flush(30)

    readings(sc.readings[:half])
    for _, partition, record in attack:
        key, value = record["site_id"].encode(), codec.encode("SiteTelemetry", record)
        if partition is None:
            producer.produce(TELEMETRY_RAW, key=key, value=value)
        else:
            producer.produce(TELEMETRY_RAW, key=key, value=value, partition=partition)
    producer.flush(30)
    readings(sc.readings[half:])


def test_forged_readings_are_dead_lettered_and_the_sums_stay_the_sum_of_the_twins(
        own_stack: Settings, tmp_path: Path) -> None:
    sc = generate(n_sites=60, minutes=MINUTES, seed=3, start_ms=recent_start_ms(MINUTES))
    sc.too_late = []
    attack = _attack(sc)
    # After its 1e300, the site's readings are zeros: the old float sums lost every small term to it.
    zeroed = attack[3][2]["site_id"]
    for record in sc.readings[len(sc.readings) // 2:]:
        if record["site_id"] == zeroed:
            record["battery_kw"] = 0.0
    _produce_ancestries(own_stack, sc)
    flowrun.run_to_end(own_stack, recovery=tmp_path / "recovery")
    _produce(own_stack, sc, attack)

    flowrun.run_to_end(own_stack, recovery=tmp_path / "recovery")

    # Every forged record, and nothing else, is a dead letter with its reason.
    codec = packaged_codec()
    letters = [codec.decode(m.value(), "DeadLetter") for m in flowrun.read_to_end(own_stack, TELEMETRY_DLQ)]
    got = sorted((d["error_kind"], bytes(d["original_value"])) for d in letters)
    assert got == sorted((reason, codec.encode("SiteTelemetry", r)) for reason, _, r in attack)
    assert all(d["error"] and d["topic"] == TELEMETRY_RAW and d["offset"] >= 0 for d in letters)

    # Live aggregates, site minutes and node minutes are what the fleet's own readings give: no
    # forged value in a sum, no twin frozen by a reading from the future, no clock a year ahead
    # (which would have made every site OFFLINE and written empty minutes ahead).
    nodes, site_rows, node_rows = (flowrun.live_nodes(own_stack),
                                   flowrun.minute_rows(own_stack, "site_minute", "site_id"),
                                   flowrun.minute_rows(own_stack, "node_minute", "node_id"))
    problems = check_all(sc, nodes, site_rows, node_rows, sc.end_ms)
    assert problems == [], "\n".join(problems[:40])
    assert site_rows, "minutes were written"

    # The region's sums equal the sums of the twins in Redis.
    sites = flowrun.live_sites(own_stack)
    for region in ("region-0", "region-1"):
        members = [s for s in sites.values() if s.get("region") == region]
        online = [s for s in members if s["status"] == "ONLINE"]
        assert nodes[region]["expected_sites"] == len(members)
        assert nodes[region]["reporting_sites"] == len(online)
        for name in ("battery_kw", "grid_kw"):
            assert abs(nodes[region][name] - sum(float(s[name]) for s in online)) < 1e-6, (region, name)
    latest = {r["site_id"]: r for r in sorted(sc.readings, key=lambda r: (r["event_time"], r["seq"]))}
    for _, _, record in attack:
        twin = sites[record["site_id"]]
        assert int(twin["last_seen"]) == epoch_ms(latest[record["site_id"]]["event_time"]), twin
    assert max(int(s["last_seen"]) for s in sites.values()) <= sc.end_ms
    assert all(node["event_time"] <= sc.end_ms + 600_000 for node in nodes.values()), "no clock a year ahead"


def test_a_twin_version_written_from_a_clock_a_year_ahead_does_not_freeze_the_redis_twin(
        stack_settings: Settings) -> None:
    """Code before bounded event time wrote versions from the future into Redis; they order nothing now."""
    client = redis.Redis.from_url(stack_settings.redis, decode_responses=True)
    key = "site:trust-poisoned"
    client.delete(key)
    now = epoch_ms(datetime.now(UTC))
    future = now + 365 * 24 * 3_600_000
    partition = RedisTwinSink(stack_settings.redis).build("redis", 0, 1)
    ceiling = (now + 10_000) * 4 + 3
    partition.write_batch([TwinWrite(key, (future * 4, 1), {"status": "ONLINE", "last_seen": future})])
    partition.write_batch([TwinWrite(key, (now * 4, 1), {"status": "ONLINE", "last_seen": now})])
    assert int(client.hget(key, "last_seen") or 0) == future, "without a ceiling the newest version wins"
    partition.write_batch([TwinWrite(key, (now * 4, 1), {"status": "ONLINE", "last_seen": now}, ceiling)])
    assert int(client.hget(key, "last_seen") or 0) == now
    partition.write_batch([TwinWrite(key, (now * 4 - 4, 1), {"last_seen": now - 1}, ceiling)])
    assert int(client.hget(key, "last_seen") or 0) == now, "an older plausible write still loses"
    partition.close()
    client.close()
