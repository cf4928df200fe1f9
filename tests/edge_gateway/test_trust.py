"""Issue 20 at the real gateway: default secrets, implausible frames, durable revocations.

Against the session stack (broker, Redis, history server); the revocation
crash test runs a Redis of its own, so killing it harms no other test.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
import redis
from websockets import InvalidStatus

from assets.generator import Site
from assets.sinks import persist_sites
from core import history
from core.config import Settings
from core.device_tokens import issue_token
from core.plausibility import REASONS
from core.revocations import revoke_token
from core.topics import COMMANDS_ACKS, TELEMETRY_RAW
from edge_gateway.server import Gateway
from edge_gateway.wire import Encoding, json_frame
from schemas import packaged_codec
from schemas.times import epoch_ms
from tests.conftest import free_port
from tests.edge_gateway.support import (
    TopicTail,
    device,
    eventually,
    gateway_settings,
    next_frame,
    running_gateway,
    telemetry,
)
from tests.own_redis import RedisServer

pytestmark = pytest.mark.integration

CODEC = packaged_codec()
YEAR_MS = 365 * 24 * 3_600_000


def _site() -> str:
    return f"site-trust-{uuid.uuid4().hex[:8]}"


def _register(settings: Settings, site_id: str, rating_kw: float) -> None:
    """The site in the asset registry's durable table, as the registry writes it."""
    now = datetime.now(UTC)
    site = Site(site_id, "customer-trust", 52.0, 13.0, 10.0, rating_kw, rating_kw, 10.0, 5.0, "flat",
                "region-0")
    client = history.connect(settings)
    try:
        persist_sites(history.HistoryStore(client, settings.clickhouse_database), [(site, now, None)],
                      time.time_ns())
    finally:
        client.close()


async def _status_of(gateway: Gateway, token: str) -> int:
    """The HTTP status of a handshake: 101 if the connection opened."""
    try:
        async with device(gateway, token):
            return 101
    except InvalidStatus as refused:
        return int(refused.response.status_code)


def test_a_device_token_signed_with_the_old_default_secret_is_refused(stack_settings: Settings) -> None:
    settings = gateway_settings(stack_settings)
    forged = jwt.encode({"sub": "site-x", "site_id": "site-x", "jti": "f" * 32, "aud": "vpp-gateway",
                         "exp": datetime.now(UTC) + timedelta(hours=1)},
                        "vpp-local-gateway-secret-not-for-production", algorithm="HS256")

    async def scenario() -> tuple[int, int]:
        async with running_gateway(settings) as gateway:
            return await _status_of(gateway, forged), await _status_of(gateway, issue_token(settings,
                                                                                            "site-x").token)

    assert asyncio.run(scenario()) == (401, 101)


def test_implausible_frames_are_answered_counted_by_reason_and_never_produced(
        stack_settings: Settings) -> None:
    """Cases 2 and 3 at the gateway: absurd values, booleans, poisoned event times, beyond the rating."""
    settings = gateway_settings(stack_settings)
    site = _site()
    _register(settings, site, rating_kw=5.0)
    now_ms = epoch_ms(datetime.now(UTC))
    valid = json.loads(json_frame("telemetry", telemetry(site)))
    bad: list[tuple[bytes | str, str]] = [
        (json.dumps({**valid, "battery_kw": True}), "not_a_number"),
        (json.dumps({**valid, "battery_kw": 1e12}), "out_of_range"),
        (json.dumps({**valid, "grid_kw": -1e12}), "out_of_range"),
        (json.dumps({**valid, "event_time": now_ms + YEAR_MS}), "future_event_time"),
        (json.dumps({**valid, "event_time": 31_536_000_000}), "stale_event_time"),
        (json.dumps({**valid, "battery_kw": 9.0}), "beyond_rating"),  # registered 5 kW
        (CODEC.encode("SiteTelemetry", telemetry(site, battery_kw=-1e12)), "out_of_range"),
        (json.dumps({"type": "ack", "command_id": "c1", "status": "ACCEPTED", "reason": None,
                     "event_time": now_ms + YEAR_MS}), "future_event_time"),
        (json.dumps({"type": "plan", "plan_id": "p", "issued_at": 0, "start": now_ms, "interval_minutes": 5,
                     "power_kw": [1.0]}), "stale_event_time"),
    ]
    raw, acks = TopicTail(settings, TELEMETRY_RAW), TopicTail(settings, COMMANDS_ACKS)

    async def scenario() -> tuple[list[str], dict[str, float], list[Any]]:
        async with running_gateway(settings) as gateway, \
                device(gateway, issue_token(settings, site).token, Encoding.AVRO) as ws:
            assert gateway.ratings.get(site) is not None
            reasons = []
            for frame, _ in bad:
                await ws.send(frame)
                answer = json.loads(await next_frame(ws))
                assert answer["type"] == "error"
                reasons.append(answer["reason"])
            await ws.send(json.dumps({**valid, "seq": 77, "battery_kw": 4.0}))  # still connected: the marker
            records = await asyncio.to_thread(raw.collect, lambda rs: any(k == site for k, _ in rs))
            counted = {reason: gateway.metrics.value("vpp_gateway_rejects_total", {"reason": reason})
                       for reason in REASONS}
            return reasons, counted, records

    reasons, counted, records = asyncio.run(scenario())
    time.sleep(1.0)  # anything wrongly produced would have arrived by now along with the marker
    acks.collect(lambda _: True, timeout_s=5)
    raw.close()
    acks.close()
    assert reasons == [reason for _, reason in bad]
    expected = {reason: float(sum(1 for _, r in bad if r == reason)) for reason in REASONS}
    assert counted == expected
    assert [v["seq"] for k, v in records if k == site] == [77]
    assert not [k for k, _ in acks.records if k == site]


# -- durable revocations (case 9) ------------------------------------------------------------------


def test_a_revocation_survives_a_redis_crash(stack_settings: Settings, own_redis: RedisServer) -> None:
    settings = gateway_settings(stack_settings, redis_port=own_redis.port)
    site = _site()
    revoked, kept = issue_token(settings, site), issue_token(settings, site)

    async def scenario() -> tuple[int, int, list[int]]:
        async with running_gateway(settings) as gateway:
            await asyncio.to_thread(revoke_token, settings, revoked.claims.jti)
            before = await _status_of(gateway, revoked.token)
            own_redis.stop()
            own_redis.start()  # empty: the revocation is gone from Redis
            with redis.Redis(port=own_redis.port) as fresh:
                assert not fresh.exists("gateway:revoked")
            after: list[int] = []

            async def refused_for_being_revoked() -> bool:
                after.append(await _status_of(gateway, revoked.token))
                return after[-1] == 403

            deadline = time.monotonic() + 60
            while not await refused_for_being_revoked():
                assert time.monotonic() < deadline, after
                await asyncio.sleep(0.2)
            return before, await _status_of(gateway, kept.token), after

    before, other, after = asyncio.run(scenario())
    assert before == 403
    assert all(status in (403, 503) for status in after), after  # never accepted
    assert other == 101  # only the revoked token is refused
    with redis.Redis(port=own_redis.port) as restarted:
        assert restarted.sismember("gateway:revoked", revoked.claims.jti)  # re-loaded from the durable list


def test_a_gateway_that_cannot_read_the_revocation_list_refuses_new_connections(
        stack_settings: Settings) -> None:
    """Fail closed: with the history store unreachable the list was never loaded, so nobody connects."""
    settings = gateway_settings(stack_settings, clickhouse_port=free_port())
    token = issue_token(settings, _site()).token

    async def scenario() -> tuple[int, float, float | None]:
        async with running_gateway(settings) as gateway:
            status = await _status_of(gateway, token)
            await eventually(lambda: gateway.metrics.value(
                "vpp_gateway_rejects_total", {"reason": "revocation_unknown"}) == 1)
            return status, len(gateway.ratings), gateway.revocations.age_s

    status, rated, age = asyncio.run(scenario())
    assert status == 503
    assert rated == 0 and age is None
