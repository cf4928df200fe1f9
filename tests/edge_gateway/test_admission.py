"""The gateway under a slow Redis: healthy connections stay, telemetry flows, handshakes are bounded,
and devices still connect on the durable revocation list the gateway keeps in memory.

Redis is paused (SIGSTOP) as if overloaded. An open connection keeps sending
telemetry, which reaches Kafka, and is not closed. New handshakes wait on the
revocation check in Redis; beyond ``gateway_max_handshakes`` of them a new
connection is closed at once with 1013 (try again later) and a retry hint,
instead of queueing. When Redis answers again the waiting handshake completes.
"""

from __future__ import annotations

import asyncio
import os
import signal
import uuid

import pytest
from websockets import ConnectionClosed, InvalidStatus

from core.config import Settings
from core.device_tokens import issue_token
from core.revocations import revoke_token
from core.topics import TELEMETRY_RAW
from edge_gateway.server import Gateway
from edge_gateway.wire import json_frame
from tests.edge_gateway.support import (
    TopicTail,
    close_of,
    device,
    eventually,
    gateway_settings,
    running_gateway,
    telemetry,
)
from tests.own_redis import RedisServer

pytestmark = pytest.mark.integration




def _site() -> str:
    return f"site-admit-{uuid.uuid4().hex[:8]}"


def test_a_paused_redis_closes_nothing_and_a_full_handshake_budget_answers_1013(
        stack_settings: Settings, own_redis: RedisServer) -> None:
    # Handshakes wait for the paused Redis (no answer from the in-memory copy): they fill the budget.
    settings = gateway_settings(stack_settings, redis_port=own_redis.port, gateway_max_handshakes=1,
                                gateway_revocation_check_timeout_s=300.0)
    connected, waiting, refused = _site(), _site(), _site()
    tokens = {site: issue_token(settings, site).token for site in (connected, waiting, refused)}
    tail = TopicTail(settings, TELEMETRY_RAW)
    assert own_redis.process is not None
    pid = own_redis.process.pid

    async def scenario() -> tuple[tuple[int | None, str | None], bool, int]:
        async with running_gateway(settings) as gateway, device(gateway, tokens[connected]) as ws:
            await ws.send(json_frame("telemetry", telemetry(connected, seq=1)))
            os.kill(pid, signal.SIGSTOP)  # Redis stops answering
            try:
                for seq in range(2, 6):
                    await ws.send(json_frame("telemetry", telemetry(connected, seq=seq)))
                # The heartbeat runs every 0.5 s against the paused Redis meanwhile.
                await asyncio.to_thread(tail.collect, lambda records: sum(
                    1 for key, _ in records if key == connected) >= 5, 60.0)

                async def handshake_of(site: str) -> None:
                    async with device(gateway, tokens[site]) as opened:
                        await opened.send(json_frame("telemetry", telemetry(site)))

                held = asyncio.create_task(handshake_of(waiting))  # waits on the revocation check
                await eventually(lambda: gateway.handshaking == 1, 60)
                try:
                    async with device(gateway, tokens[refused]) as busy:
                        await asyncio.wait_for(busy.recv(), 60)
                    close: tuple[int | None, str | None] = (None, "not closed")
                except ConnectionClosed as closed:
                    close = close_of(closed)
            finally:
                os.kill(pid, signal.SIGCONT)
            await asyncio.wait_for(held, 60)  # completes once Redis answers
            await ws.send(json_frame("telemetry", telemetry(connected, seq=6)))
            open_after = ws.close_code is None
            return close, open_after, gateway.handshaking_peak

    try:
        close, open_after, peak = asyncio.run(scenario())
    finally:
        tail.close()
    assert close[0] == 1013 and close[1] is not None and "retry after" in close[1], close
    assert open_after, "the established connection was not closed because Redis was slow"
    assert peak <= 1, "the handshake budget was never exceeded"


async def _status_of(gateway: Gateway, token: str) -> int:
    try:
        async with device(gateway, token):
            return 101
    except InvalidStatus as refused:
        return refused.response.status_code


def test_with_redis_paused_devices_connect_and_revoked_tokens_are_refused_from_the_durable_list(
        stack_settings: Settings, own_redis: RedisServer) -> None:
    settings = gateway_settings(stack_settings, redis_port=own_redis.port,
                                gateway_revocation_check_timeout_s=0.5)
    good, bad = issue_token(settings, _site()), issue_token(settings, _site())
    revoke_token(settings, bad.claims.jti)  # durable first, then Redis
    assert own_redis.process is not None
    pid = own_redis.process.pid

    async def scenario() -> tuple[int, int]:
        async with running_gateway(settings) as gateway:
            os.kill(pid, signal.SIGSTOP)
            try:
                return await _status_of(gateway, good.token), await _status_of(gateway, bad.token)
            finally:
                os.kill(pid, signal.SIGCONT)

    good_status, bad_status = asyncio.run(scenario())
    assert good_status == 101, "a good token connects while Redis does not answer"
    assert bad_status == 403, "a revoked token is refused from the in-memory durable list"
