"""End-to-end acknowledgement: a device is told a frame is safe only once Kafka confirmed it.

The gateway counts each connection's upstream frames and, for a device that
asked (``X-VPP-Acks: 1``), tells it how many of the first ones are done with
(delivered, or refused with an error frame). With the broker paused the count
does not move however long the gateway holds the records; when the broker runs
again it covers them all. The device side keeps unconfirmed telemetry to send
again (:class:`edge_gateway.sim_transports.Unconfirmed`).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import uuid

import pytest

from core.config import Settings
from core.device_tokens import issue_token
from core.topics import TELEMETRY_RAW
from edge_gateway.acks import DeliveryWindow
from edge_gateway.sim_transports import Unconfirmed, delivered_count
from edge_gateway.wire import delivered_frame, json_frame
from tests.edge_gateway.support import (
    TopicTail,
    acking_device,
    delivered,
    eventually,
    gateway_settings,
    running_gateway,
    telemetry,
)


def test_the_count_covers_a_prefix_of_frames_done_and_never_a_failed_one() -> None:
    window = DeliveryWindow()
    first, second, third = window.receive(), window.receive(), window.receive()
    window.done(second)
    assert window.to_tell() is None, "frame 0 is not done yet: nothing may be confirmed"
    window.done(first)
    assert window.to_tell() == 2 and window.to_tell() is None
    window.done(third, delivered=False)
    assert window.failed and window.through == 2


def test_the_device_keeps_what_was_not_confirmed_in_order() -> None:
    link = Unconfirmed()
    readings = [{"seq": n} for n in range(4)]
    link.sent(readings[0])
    link.sent(None)  # an ack to a command: counted by the gateway, never sent again
    for reading in readings[1:]:
        link.sent(reading)
    link.confirm(3)
    assert link.telemetry() == readings[2:]
    link.confirm(2)  # an older count arriving late changes nothing
    assert link.telemetry() == readings[2:]



def test_the_device_reads_the_gateways_delivered_frames_without_the_json_parser() -> None:
    for count in (0, 7, 123_456_789):
        assert delivered_count(delivered_frame(count).encode()) == count
    for other in (b'{"type":"delivered","count":-1}', b'{"type":"delivered","count":}',
                  b'{"type":"error","reason":"invalid","detail":"x"}', b'{"type":"delivered","count":3'):
        assert delivered_count(other) is None


@pytest.mark.integration
def test_frames_are_confirmed_once_produced_and_refused_ones_count_as_done(stack_settings: Settings) -> None:
    settings = gateway_settings(stack_settings)
    site = f"site-ack-{uuid.uuid4().hex[:8]}"
    token = issue_token(settings, site).token
    tail = TopicTail(settings, TELEMETRY_RAW)

    async def scenario() -> None:
        async with running_gateway(settings) as gateway, acking_device(gateway, token) as ws:
            await ws.send(json_frame("telemetry", telemetry(site, seq=1)))
            await ws.send(json_frame("telemetry", telemetry(site, seq=2, soc_pct=140.0)))  # implausible
            await ws.send(json_frame("telemetry", telemetry(site, seq=3)))
            await delivered(ws, 3)

    try:
        asyncio.run(scenario())
        records = tail.collect(lambda rs: len([r for k, r in rs if k == site]) >= 2)
        assert sorted(r["seq"] for k, r in records if k == site) == [1, 3]
    finally:
        tail.close()




@pytest.mark.integration
def test_nothing_is_confirmed_while_the_broker_holds_it(own_broker: tuple[Settings,
                                                                          subprocess.Popen[bytes]]) -> None:
    broker_settings, broker = own_broker
    settings = gateway_settings(broker_settings)
    site = f"site-ack-{uuid.uuid4().hex[:8]}"
    token = issue_token(settings, site).token

    async def scenario() -> None:
        async with running_gateway(settings) as gateway, acking_device(gateway, token) as ws:
            await ws.send(json_frame("telemetry", telemetry(site, seq=1)))
            await delivered(ws, 1)
            os.kill(broker.pid, signal.SIGSTOP)
            try:
                await ws.send(json_frame("telemetry", telemetry(site, seq=2)))
                await ws.send(json_frame("telemetry", telemetry(site, seq=3)))
                await eventually(lambda: gateway._producer.outstanding == 2, 60)
                session = gateway._sessions[site]
                assert session.window is not None
                for _ in range(10):  # several rounds of the gateway's acknowledgement loop
                    await asyncio.sleep(0.2)
                    assert session.window.told == 1, "records still in the producer were confirmed"
            finally:
                os.kill(broker.pid, signal.SIGCONT)
            await delivered(ws, 3)

    asyncio.run(scenario())
