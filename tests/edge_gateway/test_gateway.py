"""The edge gateway against the real broker and Redis: auth, site binding, bad input, commands, prices."""

from __future__ import annotations

import asyncio
import json
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from confluent_kafka import Producer
from pydantic import SecretStr
from websockets import ConnectionClosed, InvalidStatus

from core import kafka
from core.config import Settings
from core.device_tokens import issue_token
from core.revocations import revoke_token
from core.topics import COMMANDS_ACKS, COMMANDS_SITE, PLANS_SITE, PRICES_FORECAST, TELEMETRY_RAW
from edge_gateway.wire import Encoding, json_frame
from schemas import packaged_codec
from schemas.times import epoch_ms
from tests.edge_gateway.support import (
    TopicTail,
    close_of,
    device,
    eventually,
    gateway_settings,
    next_frame,
    running_gateway,
    telemetry,
)
from tests.edge_gateway.test_ratelimit_and_backpressure import FullQueueProducer

pytestmark = pytest.mark.integration

CODEC = packaged_codec()


def _site() -> str:
    return f"site-gw-{uuid.uuid4().hex[:8]}"


def test_a_token_for_site_a_cannot_publish_as_site_b(stack_settings: Settings) -> None:
    settings = gateway_settings(stack_settings)
    site_a, site_b = _site(), _site()
    tail = TopicTail(settings, TELEMETRY_RAW)

    async def scenario() -> list[Any]:
        async with running_gateway(settings) as gateway, \
                device(gateway, issue_token(settings, site_a).token, Encoding.AVRO) as ws:
            await ws.send(CODEC.encode("SiteTelemetry", telemetry(site_b)))
            await ws.send(json_frame("telemetry", telemetry(site_b)))
            errors = [json.loads(await next_frame(ws)) for _ in range(2)]
            await ws.send(json_frame("telemetry", telemetry(site_a, seq=7)))  # the marker
            records = await asyncio.to_thread(tail.collect, lambda rs: any(k == site_a for k, _ in rs))
            assert gateway.metrics.value("vpp_gateway_rejects_total", {"reason": "site_mismatch"}) == 2
            assert gateway.metrics.value("vpp_gateway_frames_in_total", {"kind": "telemetry"}) == 1
            return [errors, records]

    errors, records = asyncio.run(scenario())
    tail.close()
    assert [e["reason"] for e in errors] == ["site_mismatch", "site_mismatch"]
    assert all(e["type"] == "error" for e in errors)
    assert not [k for k, v in records if site_b in (k, v["site_id"])]
    ((_, value),) = [(k, v) for k, v in records if k == site_a]
    assert value["site_id"] == site_a and value["seq"] == 7


def test_missing_invalid_and_revoked_tokens_are_refused(stack_settings: Settings) -> None:
    settings = gateway_settings(stack_settings)
    site = _site()
    other_secret = settings.model_copy(update={"gateway_token_secret": SecretStr("x" * 40)})
    forged = issue_token(other_secret, site).token
    expired = issue_token(settings, site, ttl=timedelta(seconds=-5)).token
    valid = issue_token(settings, site)

    async def status_of(gateway: Any, token: str | None) -> int:
        with pytest.raises(InvalidStatus) as refused:
            async with device(gateway, token):
                pass
        return int(refused.value.response.status_code)

    async def scenario() -> tuple[list[int], int | None, str | None]:
        async with running_gateway(settings) as gateway:
            statuses = [await status_of(gateway, None), await status_of(gateway, "not-a-jwt"),
                        await status_of(gateway, forged), await status_of(gateway, expired)]
            async with device(gateway, valid.token, query_token=True) as ws:
                revoke_token(settings, valid.claims.jti)
                with pytest.raises(ConnectionClosed) as closed:
                    await next_frame(ws)
            statuses.append(await status_of(gateway, valid.token))
            assert gateway.metrics.value("vpp_gateway_rejects_total", {"reason": "revoked"}) == 2
            return statuses, *close_of(closed.value)

    statuses, code, reason = asyncio.run(scenario())
    assert statuses == [401, 401, 401, 401, 403]
    assert (code, reason) == (1008, "token revoked")


def test_malformed_and_oversized_frames_are_rejected_and_never_produced(stack_settings: Settings) -> None:
    settings = gateway_settings(stack_settings, gateway_max_frame_bytes=1024)
    site = _site()
    good = CODEC.encode("SiteTelemetry", telemetry(site))
    bad_frames: list[bytes | str] = [
        b"\x07" + good[1:],                      # wrong magic byte
        good[:12],                               # truncated Avro
        CODEC.encode("SiteCommand", {            # a record devices do not send
            "command_id": "c", "dispatch_id": "d", "site_id": site, "setpoint_kw": 1.0,
            "valid_from": 0, "valid_until": 1, "attempt": 1, "issued_at": 0}),
        "{not json",
        json.dumps({"type": "telemetry", "seq": "one"}),
        json.dumps({"type": "gossip"}),
        json_frame("telemetry", telemetry(site, soc_pct=150.0)),
    ]
    tail = TopicTail(settings, TELEMETRY_RAW)

    async def scenario() -> tuple[list[str], int | None, list[Any]]:
        async with running_gateway(settings) as gateway, \
                device(gateway, issue_token(settings, site).token) as ws:
            reasons = []
            for frame in bad_frames:
                await ws.send(frame)
                reasons.append(json.loads(await next_frame(ws))["reason"])
            await ws.send(json_frame("telemetry", telemetry(site, seq=99)))  # the marker
            records = await asyncio.to_thread(tail.collect, lambda rs: any(k == site for k, _ in rs))
            await ws.send(b"\x00" * 2048)
            with pytest.raises(ConnectionClosed) as closed:
                await next_frame(ws)
            await eventually(lambda: gateway.metrics.value(
                "vpp_gateway_rejects_total", {"reason": "oversized"}) == 1)
            assert gateway.metrics.value("vpp_gateway_frames_in_total", {"kind": "telemetry"}) == 1
            return reasons, close_of(closed.value)[0], records

    reasons, code, records = asyncio.run(scenario())
    tail.close()
    assert reasons == ["undecodable", "undecodable", "unexpected_record", "undecodable", "invalid",
                       "unexpected_record", "out_of_range"]
    assert code == 1009
    assert [v["seq"] for k, v in records if k == site] == [99]


def test_a_device_over_its_rate_limit_is_closed_with_1008(stack_settings: Settings) -> None:
    settings = gateway_settings(stack_settings, gateway_rate_per_s=0.001, gateway_rate_burst=3)
    site = _site()

    async def scenario() -> tuple[int | None, str | None, float]:
        async with running_gateway(settings) as gateway, \
                device(gateway, issue_token(settings, site).token) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                for seq in range(1, 11):
                    await ws.send(json_frame("telemetry", telemetry(site, seq=seq)))
                await next_frame(ws)
            await eventually(lambda: gateway.metrics.value(
                "vpp_gateway_rejects_total", {"reason": "rate_limited"}) == 1)
            return *close_of(closed.value), gateway.metrics.value(
                "vpp_gateway_frames_in_total", {"kind": "telemetry"})

    assert asyncio.run(scenario()) == (1008, "rate limit exceeded", 3)


def test_frames_the_producer_has_no_room_for_wait_and_keep_their_order(stack_settings: Settings) -> None:
    """Frames are taken as they arrive; one whose record librdkafka's full queue refuses is left to the
    connection's task, which waits for room, and the frames behind it follow in order, none dropped."""
    settings = gateway_settings(stack_settings)
    site, full = _site(), FullQueueProducer(full_for=5)

    async def scenario() -> tuple[list[int], float]:
        async with running_gateway(settings) as gateway, \
                device(gateway, issue_token(settings, site).token) as ws:
            gateway._producer.replace(full)
            for seq in (1, 2, 3):
                await ws.send(json_frame("telemetry", telemetry(site, seq=seq)))
            await eventually(lambda: len(full.produced) == 3)
            return ([CODEC.decode(value)["seq"] for _, _, value in full.produced],
                    gateway.metrics.value("vpp_gateway_backpressure_waits_total"))

    produced, waits = asyncio.run(scenario())
    assert produced == [1, 2, 3]
    assert waits == 4  # the first frame's record: refused once when taken, then four times while waiting


def _command(site: str, command_id: str, setpoint_kw: float = 2.0) -> dict[str, Any]:
    now = datetime.now(UTC).replace(microsecond=0)
    return {"command_id": command_id, "dispatch_id": "dispatch-test", "site_id": site,
            "setpoint_kw": setpoint_kw, "valid_from": now, "valid_until": now + timedelta(minutes=5),
            "attempt": 1, "issued_at": now}


def test_commands_reach_the_device_via_either_instance_and_acks_reach_kafka(stack_settings: Settings) -> None:
    """Commands land on every partition, so the instance not holding the device must forward some."""
    settings = gateway_settings(stack_settings)
    site = _site()
    token = issue_token(settings, site).token
    partitions = settings.partitions_of(COMMANDS_SITE)
    acks = TopicTail(settings, COMMANDS_ACKS)
    producer = Producer(kafka.client_config(settings))

    async def scenario() -> tuple[list[dict[str, Any]], float]:
        async with running_gateway(settings, "gw-one") as one, running_gateway(settings, "gw-two") as two:
            await eventually(lambda: bool(one.command_partitions) and bool(two.command_partitions)
                             and one.command_partitions | two.command_partitions == set(range(partitions)))
            async with device(one, token, Encoding.JSON):
                await eventually(lambda: one.metrics.value("vpp_gateway_connections") == 1)
            async with device(two, token, Encoding.AVRO) as ws:  # reconnected to the other instance
                await eventually(lambda: two.metrics.value("vpp_gateway_connections") == 1)
                for partition in range(partitions):
                    command = _command(site, f"cmd-{partition}")
                    producer.produce(COMMANDS_SITE, key=site.encode(), partition=partition,
                                     value=CODEC.encode("SiteCommand", command))
                producer.flush(10)
                received = []
                for _ in range(partitions):
                    frame = await next_frame(ws)
                    assert isinstance(frame, bytes)
                    received.append(CODEC.decode(frame, expected="SiteCommand"))
                    await ws.send(CODEC.encode("CommandAck", {
                        "command_id": received[-1]["command_id"], "site_id": site, "status": "ACCEPTED",
                        "reason": None, "event_time": datetime.now(UTC)}))
                await asyncio.to_thread(
                    acks.collect, lambda rs: len([k for k, _ in rs if k == site]) >= partitions)
            return received, one.metrics.value("vpp_gateway_commands_total", {"outcome": "forwarded"})

    received, forwarded = asyncio.run(scenario())
    acked = {v["command_id"]: v["status"] for k, v in acks.records if k == site}
    acks.close()
    expected = {f"cmd-{p}" for p in range(partitions)}
    assert {c["command_id"] for c in received} == expected
    assert acked == dict.fromkeys(expected, "ACCEPTED")
    assert forwarded >= 1


def test_prices_reach_connected_sites_of_their_region_and_plans_reach_kafka(stack_settings: Settings) -> None:
    settings = gateway_settings(stack_settings)
    region, site = f"region-{uuid.uuid4().hex[:6]}", _site()
    now = datetime.now(UTC).replace(microsecond=0)
    forecast = {"region": region, "issued_at": now, "start": now, "interval_minutes": 5,
                "prices_per_mwh": [50.0, 80.0, 120.0], "currency": "EUR"}
    plans = TopicTail(settings, PLANS_SITE)
    producer = Producer(kafka.client_config(settings))

    async def scenario() -> dict[str, Any]:
        async with running_gateway(settings) as gateway, \
                device(gateway, issue_token(settings, site, region=region).token) as ws:
            producer.produce(PRICES_FORECAST, key=region.encode(),
                             value=CODEC.encode("PriceForecast", forecast))
            producer.flush(10)
            frame = await next_frame(ws)
            assert isinstance(frame, str)
            now_ms = epoch_ms(datetime.now(UTC))
            await ws.send(json.dumps({"type": "plan", "plan_id": "p1", "issued_at": now_ms, "start": now_ms,
                                      "interval_minutes": 5, "power_kw": [-1.0, 0.0, 2.0]}))
            await asyncio.to_thread(plans.collect, lambda rs: any(k == site for k, _ in rs))
            return dict(json.loads(frame))

    received = asyncio.run(scenario())
    (plan,) = [v for k, v in plans.records if k == site]
    plans.close()
    assert received["type"] == "prices" and received["region"] == region
    assert received["prices_per_mwh"] == [50.0, 80.0, 120.0]
    assert plan["site_id"] == site and plan["power_kw"] == [-1.0, 0.0, 2.0]


def test_health_and_metrics_are_served_on_their_own_port(stack_settings: Settings) -> None:
    settings = gateway_settings(stack_settings)

    def get(port: int, path: str) -> tuple[int, str]:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read().decode()

    async def scenario() -> tuple[tuple[int, str], tuple[int, str]]:
        async with running_gateway(settings, "gw-health") as gateway:
            return (await asyncio.to_thread(get, gateway.metrics_port, "/healthz"),
                    await asyncio.to_thread(get, gateway.metrics_port, "/metrics"))

    (health_status, health), (metrics_status, metrics) = asyncio.run(scenario())
    assert health_status == 200 and json.loads(health)["instance"] == "gw-health"
    assert metrics_status == 200
    for name in ("vpp_gateway_connections", "vpp_gateway_produce_latency_seconds_bucket"):
        assert name in metrics


def test_a_storm_watch_reaches_the_sites_it_names_now_and_when_they_connect(stack_settings: Settings) -> None:
    settings = gateway_settings(stack_settings)
    named, other, later = _site(), _site(), _site()
    now = datetime.now(UTC).replace(microsecond=0)

    def watch(node: str, sites: list[str]) -> bytes:
        return CODEC.encode("StormWatch", {
            "node_id": node, "action": "RAISE", "starts": now + timedelta(hours=1),
            "until": now + timedelta(hours=7), "site_ids": sites, "raised_by": "test", "event_time": now})

    producer = Producer(kafka.client_config(settings))

    async def scenario() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        first_node, second_node = f"feeder-{uuid.uuid4().hex[:6]}", f"feeder-{uuid.uuid4().hex[:6]}"
        async with running_gateway(settings) as gateway, \
                device(gateway, issue_token(settings, named).token) as ws_named, \
                device(gateway, issue_token(settings, other).token) as ws_other:
            producer.produce("storm.watch", key=first_node.encode(), value=watch(first_node, [named, later]))
            producer.produce("storm.watch", key=second_node.encode(), value=watch(second_node, [other]))
            producer.flush(10)
            got_named, got_other = await next_frame(ws_named), await next_frame(ws_other)
            async with device(gateway, issue_token(settings, later).token) as ws_later:
                got_later = await next_frame(ws_later)
        return (dict(json.loads(got_named)), dict(json.loads(got_other)),
                dict(json.loads(got_later)))

    named_frame, other_frame, later_frame = asyncio.run(scenario())
    assert named_frame["type"] == "storm" and named_frame["action"] == "RAISE"
    assert named_frame["site_ids"] == []  # a device gets the watch, not the list of its neighbours
    assert named_frame["starts"] == epoch_ms(now + timedelta(hours=1))
    # The other site's first frame is the watch naming it: the first watch never reached it.
    assert other_frame["node_id"] != named_frame["node_id"]
    assert later_frame["node_id"] == named_frame["node_id"]  # connected after it was raised


def test_a_storm_watch_over_a_large_node_comes_in_parts_and_the_gateway_joins_them(
        stack_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """A node's sites beyond ``SITES_PER_RECORD`` go in further records of the same watch (one record
    over 100,000 sites would pass Kafka's message size): a site named only in the second part gets the
    watch when it connects, as one named in the first does at once."""
    from core import storm

    settings = gateway_settings(stack_settings)
    first, second = sorted([_site(), _site()])
    node = f"feeder-{uuid.uuid4().hex[:6]}"
    monkeypatch.setattr(storm, "SITES_PER_RECORD", 1)
    sent: list[bytes] = []

    class Registry:  # the watch's Redis side: the node's members, the hash of watches in force
        def smembers(self, _key: str) -> set[str]:
            return {first, second}

        def hset(self, *_args: Any) -> None:
            return None

    class Recording(Producer):
        def produce(self, *args: Any, **kwargs: Any) -> None:
            sent.append(kwargs["value"])
            super().produce(*args, **kwargs)

    producer = Recording(kafka.client_config(settings))

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        async with running_gateway(settings) as gateway, \
                device(gateway, issue_token(settings, first).token) as ws_first:
            storm.raise_watch(Registry(), producer, node, None,  # type: ignore[arg-type]
                              datetime.now(UTC) + timedelta(hours=6), "test")
            got_first = await next_frame(ws_first)
            async with device(gateway, issue_token(settings, second).token) as ws_second:
                got_second = await next_frame(ws_second)
        return dict(json.loads(got_first)), dict(json.loads(got_second))

    first_frame, second_frame = asyncio.run(scenario())
    assert [CODEC.decode(v, "StormWatch")["site_ids"] for v in sent] == [[first], [second]]
    assert first_frame["type"] == second_frame["type"] == "storm"
    assert first_frame["node_id"] == second_frame["node_id"] == node and second_frame["action"] == "RAISE"
