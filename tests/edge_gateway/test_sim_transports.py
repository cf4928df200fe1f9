"""The simulated fleet on the real stack: through the gateway over WebSocket, and straight to Kafka."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from confluent_kafka import Producer

from assets.generator import Site, generate_fleet
from core import kafka
from core.config import Settings
from core.topics import COMMANDS_ACKS, COMMANDS_SITE, TELEMETRY_RAW
from edge_gateway.sim_transports import KafkaTransport, WebSocketTransport
from edge_gateway.simulator import FleetSimulator, SimClock
from edge_gateway.wire import Encoding
from schemas import packaged_codec
from tests.edge_gateway.support import TopicTail, eventually, gateway_settings, running_gateway

pytestmark = pytest.mark.integration

CODEC = packaged_codec()


def _sites(n: int) -> list[Site]:
    """Sites with ids no other test uses, so topic tails can tell them apart."""
    tag = uuid.uuid4().hex[:6]
    fleet = generate_fleet(datetime.now(UTC), n, seed=1)
    return [Site(**{**vars(site), "site_id": f"sim-{tag}-{i}"})
            for i, site in enumerate(fleet.sites.values())]


def _command(site_id: str) -> bytes:
    now = datetime.now(UTC)
    return CODEC.encode("SiteCommand", {
        "command_id": f"cmd-{site_id}", "dispatch_id": "d", "site_id": site_id, "setpoint_kw": -1.0,
        "valid_from": now - timedelta(minutes=1), "valid_until": now + timedelta(hours=1), "attempt": 1,
        "issued_at": now})


def _per_site(records: list[tuple[str, dict[str, Any]]],
              sites: list[Site]) -> dict[str, list[dict[str, Any]]]:
    wanted = {s.site_id for s in sites}
    found: dict[str, list[dict[str, Any]]] = {}
    for key, value in records:
        if key in wanted:
            found.setdefault(key, []).append(value)
    return found


@pytest.mark.parametrize("encoding", [Encoding.AVRO, Encoding.JSON])
def test_simulated_sites_report_through_the_gateway_and_follow_a_command(stack_settings: Settings,
                                                                         encoding: Encoding) -> None:
    settings = gateway_settings(stack_settings)
    sites = _sites(3)
    commanded = sites[0].site_id
    telemetry, acks = TopicTail(settings, TELEMETRY_RAW), TopicTail(settings, COMMANDS_ACKS)
    producer = Producer(kafka.client_config(settings))

    def followed(records: list[tuple[str, dict[str, Any]]]) -> bool:
        return any(v["active_command_id"] == f"cmd-{commanded}" for k, v in records if k == commanded)

    async def scenario() -> None:
        async with running_gateway(settings) as gateway:
            await eventually(lambda: bool(gateway.command_partitions))
            start = datetime.now(UTC)
            fleet = FleetSimulator(sites, seed=4, start=start)
            transport = WebSocketTransport(fleet, SimClock(start, speed=4.0), settings,
                                           f"ws://127.0.0.1:{gateway.port}", encoding, interval_s=1.0)
            running = asyncio.create_task(transport.run())
            await asyncio.to_thread(telemetry.collect, lambda rs: len(_per_site(rs, sites)) == len(sites))
            await eventually(lambda: gateway.metrics.value("vpp_gateway_connections") == len(sites))
            producer.produce(COMMANDS_SITE, key=commanded.encode(), value=_command(commanded))
            producer.flush(10)
            await asyncio.to_thread(acks.collect, lambda rs: any(k == commanded for k, _ in rs))
            await asyncio.to_thread(telemetry.collect, followed)
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)

    asyncio.run(scenario())
    by_site = _per_site(telemetry.records, sites)
    ack = next(v for k, v in acks.records if k == commanded)
    telemetry.close()
    acks.close()
    assert set(by_site) == {s.site_id for s in sites}
    for site_id, values in by_site.items():
        assert all(v["site_id"] == site_id and v["received_time"] is not None for v in values)
        seqs = [v["seq"] for v in values]
        assert seqs == sorted(seqs)
    assert (ack["command_id"], ack["status"]) == (f"cmd-{commanded}", "ACCEPTED")
    following = [v for v in by_site[commanded] if v["active_command_id"] == f"cmd-{commanded}"]
    assert all(v["battery_kw"] == pytest.approx(-1.0) for v in following if v["soc_pct"] < 99.0)


def test_the_kafka_transport_produces_telemetry_and_answers_commands(stack_settings: Settings) -> None:
    sites = _sites(3)
    commanded = sites[1].site_id
    telemetry, acks = TopicTail(stack_settings, TELEMETRY_RAW), TopicTail(stack_settings, COMMANDS_ACKS)
    producer = Producer(kafka.client_config(stack_settings))

    async def scenario() -> None:
        start = datetime.now(UTC)
        transport = KafkaTransport(FleetSimulator(sites, seed=5, start=start), SimClock(start, speed=4.0),
                                   stack_settings, interval_s=1.0,
                                   group_id=f"sim-test-{uuid.uuid4().hex[:6]}")
        running = asyncio.create_task(transport.run())
        await asyncio.to_thread(telemetry.collect, lambda rs: len(_per_site(rs, sites)) == len(sites))
        await eventually(lambda: any(topic == COMMANDS_SITE for topic, _ in transport.assigned))
        producer.produce(COMMANDS_SITE, key=commanded.encode(), value=_command(commanded))
        producer.flush(10)
        await asyncio.to_thread(acks.collect, lambda rs: any(k == commanded for k, _ in rs))
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)

    asyncio.run(scenario())
    ack = next(v for k, v in acks.records if k == commanded)
    telemetry.close()
    acks.close()
    assert (ack["command_id"], ack["status"]) == (f"cmd-{commanded}", "ACCEPTED")
