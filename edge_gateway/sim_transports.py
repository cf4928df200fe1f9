"""Carry the simulated fleet's traffic: through the gateway over WebSocket, or straight to Kafka.

The WebSocket transport is what real devices do: each site holds its own
connection with its own token, many sites per process; one ticker per process
steps every site's physics in numpy and writes the frames.
The Kafka transport skips the gateway (for loading the dataflows without it):
it produces telemetry and acks itself and consumes ``commands.site`` and
``prices.forecast`` directly.
"""

from __future__ import annotations

import asyncio
import json
import random
import resource
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from clickhouse_connect.driver.exceptions import ClickHouseError
from confluent_kafka import Consumer, Producer, TopicPartition
from websockets import ConnectionClosed, InvalidHandshake
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from assets.generator import Site, generate_fleet
from assets.loader import restore_fleet
from core import kafka
from core.config import Settings
from core.device_tokens import issue_token
from core.topics import COMMANDS_ACKS, COMMANDS_SITE, PLANS_SITE, PRICES_FORECAST, STORM_WATCH, TELEMETRY_RAW
from edge_gateway.acks import ACKS_HEADER
from edge_gateway.feeds import next_batch, start_at_end_unless_committed, uncancellable_in_thread
from edge_gateway.simulator import FleetSimulator, SimClock, SimulatedSite
from edge_gateway.telemetry_frames import TelemetryEncoder
from edge_gateway.wire import DOWNSTREAM_RECORDS, Encoding, delivered_frame, json_frame
from edge_gateway.ws_direct import TakesFrames, send_now
from schemas import packaged_codec
from schemas.codec import AvroCodec, DecodeError

#: Reconnect backoff: the first ceiling, doubled after every failed attempt up to the cap.
RECONNECT_BASE_S = 0.5
#: The ticker steps a fleet in this many slices per interval, spreading the frames over it ...
TICK_SLICES = 20
#: ... but no slice smaller than this: below a few hundred rows, numpy's cost per call dominates a step.
SLICE_SITES = 500
#: How the gateway writes a delivery count (``wire.delivered_frame``): read without the JSON parser.
_DELIVERED_PREFIX = delivered_frame(0)[:-2].encode()
_DELIVERED_AT = len(_DELIVERED_PREFIX)
#: The cap bounds how long a device stays away after a long outage: recovery within 30 s of a fault's
#: end needs it well below 30 s (at 30 s, devices that failed a few times came back up to 30 s late).
RECONNECT_CAP_S = 10.0


def reconnect_delay(attempt: int, rng: random.Random, base_s: float = RECONNECT_BASE_S,
                    cap_s: float = RECONNECT_CAP_S) -> float:
    """How long a device waits before its reconnect ``attempt`` (0 first): exponential, full jitter.

    Uniform over ``[0, min(cap, base * 2**attempt)]``: devices dropped together spread their
    retries over the whole window instead of returning in step (a fixed one-second retry kept a
    saturated gateway saturated), and the ceiling grows while the gateway keeps refusing.
    """
    return rng.uniform(0.0, min(cap_s, base_s * 2.0 ** min(attempt, 32)))


@dataclass
class SimStats:
    """What the transports did, for the summary line and for tests."""

    telemetry: int = 0
    acks: int = 0
    plans: int = 0
    commands: int = 0
    forecasts: int = 0
    corrupt: int = 0
    errors: int = 0
    connects: int = 0
    refused: int = 0
    #: Telemetry frames handed back for a later upload: sent but never confirmed, or unsendable.
    held_back: int = 0


def fleet_sites(settings: Settings, n_sites: int, seed: int) -> list[Site]:
    """The first ``n_sites`` of the registry's fleet, or of a generated one if none is stored or reachable."""
    try:
        fleet = restore_fleet(settings)
    except (ClickHouseError, OSError):
        fleet = None
    if fleet is None or len(fleet.sites) < n_sites:
        fleet = generate_fleet(datetime.now(UTC), n_sites, seed)
    return [fleet.sites[site_id] for site_id in sorted(fleet.sites)[:n_sites]]


def raise_fd_limit() -> int:
    """Lift the soft open-files limit to the hard one (each connection is a descriptor); the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def mangle(frame: bytes | str, rng: random.Random) -> bytes | str:
    """A corrupted copy of a frame: Avro loses its tail or its magic byte, JSON is cut mid-object."""
    if isinstance(frame, str):
        return frame[: len(frame) // 2]
    if rng.random() < 0.5:
        return frame[: max(1, len(frame) // 2)]
    return b"\x07" + frame[1:]


class Unconfirmed:
    """A connection's upstream frames in the order sent, until the gateway confirms them.

    The gateway's ``delivered`` count covers every upstream frame (telemetry, acks, plans);
    only telemetry is worth sending again, so the others are kept as placeholders.
    """

    def __init__(self) -> None:
        self._frames: deque[dict[str, Any] | None] = deque()
        self._confirmed = 0

    def sent(self, telemetry: dict[str, Any] | None) -> None:
        """A frame is about to go out (``None`` for one that is not telemetry)."""
        self._frames.append(telemetry)

    def confirm(self, count: int) -> None:
        """The gateway says the first ``count`` frames of the connection are safe."""
        while self._confirmed < count and self._frames:
            self._frames.popleft()
            self._confirmed += 1

    def telemetry(self) -> list[dict[str, Any]]:
        """The telemetry not confirmed: to be sent again."""
        return [frame for frame in self._frames if frame is not None]


class _Link:
    """A site's open connection, as the ticker sees it."""

    __slots__ = ("site", "unconfirmed", "ws")

    def __init__(self, site: SimulatedSite, ws: ClientConnection) -> None:
        self.site = site
        self.ws = ws
        self.unconfirmed = Unconfirmed()


def delivered_count(data: bytes | bytearray) -> int | None:
    """The count of a ``delivered`` frame (its UTF-8 bytes) as the gateway writes it, read without
    the JSON parser; None for any other frame (which then goes the usual way)."""
    if data.startswith(_DELIVERED_PREFIX) and data.endswith(b"}"):
        digits = data[_DELIVERED_AT:-1]
        if digits.isdigit():
            return int(digits)
    return None


class _DeviceConnection(TakesFrames, ClientConnection):
    """A device's connection that takes delivery counts as they arrive, without waking its task.

    Every site is told a count every couple of seconds, alone in its read from the socket: a count
    goes straight to ``on_delivered`` (:class:`ws_direct.TakesFrames`) rather than through
    websockets' message queue to the site's listening task; every other frame goes the usual
    way, to the task.
    """

    on_delivered: Callable[[int], None] | None = None

    def take_message(self, text: bool, payload: bytes) -> bool:
        on_delivered = self.on_delivered
        if on_delivered is None or not text:
            return False
        count = delivered_count(payload)
        if count is None:
            return False
        on_delivered(count)
        return True


class WebSocketTransport:
    """Each online site holds a connection to the gateway, sends telemetry each interval, answers commands.

    Every site has a WebSocket of its own, as real devices do (that is what the gateway must
    carry), but sampling is not per site: one ticker per process steps the fleet's physics in
    numpy (:meth:`FleetSimulator.step`) a slice of the sites at a time, ``TICK_SLICES`` slices
    spread over each interval so the gateway sees a steady stream rather than one burst a
    second, and writes each sample's frame (:class:`TelemetryEncoder`) straight to its site's
    connection. A site's own task only connects, listens (delivery counts, commands, forecasts,
    storm watches) and reconnects with capped, fully jittered exponential backoff.

    Store-and-forward, as the protocol asks of real devices: the device asks for delivery
    acknowledgements (``X-VPP-Acks: 1``) and keeps every telemetry frame until the gateway confirms
    it reached Kafka; frames unconfirmed when a connection ends, readings taken while it is not
    connected and readings its connection cannot take now (the socket's buffer is full) go to the
    site's backlog (:meth:`SimulatedSite.hold`) and are uploaded, oldest first at a bounded rate,
    once it is connected again.
    """

    def __init__(self, fleet: FleetSimulator, clock: SimClock, settings: Settings, url: str,
                 encoding: Encoding = Encoding.AVRO, interval_s: float = 1.0, seed: int = 0) -> None:
        self.fleet = fleet
        self.clock = clock
        self.url = url
        self.encoding = encoding
        self.interval_s = interval_s
        self.stats = SimStats()
        self._codec = packaged_codec()
        self._telemetry = TelemetryEncoder(self._codec)
        self._rng = random.Random(seed)
        self._tokens = {site_id: issue_token(settings, site_id, region=site.site.region).token
                        for site_id, site in fleet.sites.items()}
        #: The sites connected now, by id: where the ticker writes their frames.
        self._links: dict[str, _Link] = {}
        for site in fleet.sites.values():
            site.started = False  # each starts measuring at its first connection attempt

    async def run(self, duration_s: float | None = None) -> SimStats:
        """Run every site for ``duration_s`` of wall time (forever if None)."""
        tasks = [asyncio.create_task(self._ticker()),
                 *(asyncio.create_task(self._site(site)) for site in self.fleet.sites.values())]
        try:
            await asyncio.wait(tasks, timeout=duration_s, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for task in tasks:
                task.cancel()
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        for outcome in outcomes:  # a task that failed (a bug, not a network fault) fails the run
            if isinstance(outcome, Exception):
                raise outcome
        return self.stats

    async def _ticker(self) -> None:
        """Step the fleet a slice at a time, each slice once an interval, and send what each site reports."""
        n = len(self.fleet.rows)
        slices = max(1, min(TICK_SLICES, n // SLICE_SITES))
        bounds = [slice(n * k // slices, n * (k + 1) // slices) for k in range(slices)]
        loop = asyncio.get_running_loop()
        period = self.clock.wall_seconds(self.interval_s) / slices
        last = [self.clock.now()] * slices
        due = loop.time()
        k = 0
        while True:
            due += period
            await asyncio.sleep(max(0.0, due - loop.time()))
            if loop.time() - due > self.clock.wall_seconds(self.interval_s):
                due = loop.time()  # far behind (a stalled machine): skip ahead, do not burst to catch up
            now = self.clock.now()
            self._close_offline(bounds[k], now)
            records = self.fleet.step((now - last[k]).total_seconds(), now, bounds[k])
            last[k] = now
            self._send_telemetry(records)
            k = (k + 1) % slices

    def _send_telemetry(self, records: list[dict[str, Any]]) -> None:
        """Write each record to its site's connection now; without one (or with a full one), keep it."""
        links, stats = self._links, self.stats
        for record in records:
            link = links.get(record["site_id"])
            if link is None or not self._write(link, record):
                self._hand_back(self.fleet.sites[record["site_id"]], [record])
                continue
            stats.telemetry += 1

    def _write(self, link: _Link, record: dict[str, Any]) -> bool:
        """Write one telemetry frame without waiting (:func:`send_now`: no coroutine per frame for
        thousands of frames a second); False if the connection cannot take it now."""
        frame: bytes | str = (self._telemetry.encode(record) if self.encoding is Encoding.AVRO
                              else json_frame("telemetry", record))
        corrupt = link.site.corrupts_next_frame()
        if corrupt:
            frame = mangle(frame, self._rng)
        if not send_now(link.ws, frame):
            return False
        if corrupt:
            self.stats.corrupt += 1
        link.unconfirmed.sent(record)
        return True

    def _close_offline(self, rows: slice, now: datetime) -> None:
        """Drop the connections of these sites that went off (flapping, cut off): their tasks wait."""
        links = self._links
        for site in self.fleet.rows[rows]:
            if not site.online(now):
                link = links.pop(site.site_id, None)
                if link is not None:
                    link.ws.transport.abort()  # the device drops off the network: no closing handshake

    async def _site(self, site: SimulatedSite) -> None:
        """Hold the site's connection while it is online; reconnect with backoff when it ends."""
        interval = self.clock.wall_seconds(self.interval_s)
        await asyncio.sleep(self._rng.uniform(0.0, interval))
        headers = {"Authorization": f"Bearer {self._tokens[site.site_id]}", ACKS_HEADER: "1"}
        loop = asyncio.get_running_loop()
        attempt = 0  # failed connects (or connections that ended at once) since the last one that lasted
        while True:
            while not site.online(self.clock.now()):
                await asyncio.sleep(interval)
            link: _Link | None = None
            opened = loop.time()
            try:
                # No permessage-deflate: a frame of ~80 bytes does not shrink, and deflating every
                # frame (zlib flush: ~3% of the simulator's profile) and inflating it in the gateway
                # is work for nothing. No proxy: looking one up reads the whole environment on every
                # connect (a third of a reconnect storm's CPU). No pings of its own: the device sends
                # every interval and the gateway pings it (answering is cheap); its own pings, a
                # task, a timer and a frame each, were a fifth of the profile at 1,000 sites.
                async with connect(self.url, open_timeout=30, additional_headers=headers, compression=None,
                                   proxy=None, ping_interval=None, create_connection=_DeviceConnection,
                                   subprotocols=[Subprotocol(self.encoding.subprotocol)]) as ws:
                    self.stats.connects += 1
                    opened = loop.time()
                    link = self._links[site.site_id] = _Link(site, ws)
                    assert isinstance(ws, _DeviceConnection)
                    ws.on_delivered = link.unconfirmed.confirm
                    site.started = True
                    await self._listen(site, ws, link.unconfirmed)
            except InvalidHandshake:
                self.stats.refused += 1
            except (OSError, ConnectionClosed, TimeoutError):
                pass
            finally:
                site.started = True  # connected or not: it measures from now on (keeping what it cannot send)
                if link is not None:
                    if self._links.get(site.site_id) is link:
                        del self._links[site.site_id]
                    self._hand_back(site, link.unconfirmed.telemetry())
            if link is not None and loop.time() - opened >= interval:
                attempt = 0  # it carried frames for an interval: no refusal (1013 closes at once)
            if site.online(self.clock.now()):
                await asyncio.sleep(reconnect_delay(attempt, self._rng))
            attempt += 1

    def _hand_back(self, site: SimulatedSite, records: list[dict[str, Any]]) -> None:
        if records:
            site.hold(records)
            self.stats.held_back += len(records)

    async def _send(self, site: SimulatedSite, ws: ClientConnection, frame_type: str, record_name: str,
                    record: dict[str, Any], link: Unconfirmed) -> None:
        frame: bytes | str = (self._codec.encode(record_name, record) if self.encoding is Encoding.AVRO
                              else json_frame(frame_type, record))
        if site.corrupts_next_frame():
            frame = mangle(frame, self._rng)
            self.stats.corrupt += 1
        link.sent(None)
        await ws.send(frame)

    async def _listen(self, site: SimulatedSite, ws: ClientConnection, link: Unconfirmed) -> None:
        """Answer commands with acks and forecasts with plans; take delivery counts; count error frames."""
        async for frame in ws:
            record_name, record = self._decode(frame)
            now = self.clock.now()
            if record_name == "delivered":
                link.confirm(int(record["count"]))
            elif record_name == "SiteCommand":
                self.stats.commands += 1
                await self._send(site, ws, "ack", "CommandAck", site.apply_command(record, now), link)
                self.stats.acks += 1
            elif record_name == "PriceForecast":
                self.stats.forecasts += 1
                if record["region"] == site.site.region:
                    await self._send(site, ws, "plan", "SitePlan", site.receive_prices(record, now), link)
                    self.stats.plans += 1
            elif record_name == "StormWatch":  # the gateway sends it only to the sites it names
                plan = site.receive_storm(record, now)
                if plan is not None:
                    await self._send(site, ws, "plan", "SitePlan", plan, link)
                    self.stats.plans += 1
            else:
                self.stats.errors += 1

    def _decode(self, frame: bytes | str) -> tuple[str, dict[str, Any]]:
        if isinstance(frame, bytes):
            try:
                decoded = self._codec.decode_with_info(frame)
            except DecodeError:
                return "undecodable", {}
            return decoded.record_name, decoded.value
        count = delivered_count(frame.encode())
        if count is not None:
            return "delivered", {"count": count}  # most frames: skip the JSON parser
        record = json.loads(frame)
        frame_type = record.pop("type", "")
        if frame_type == "delivered":
            return "delivered", record
        return DOWNSTREAM_RECORDS.get(frame_type, "error"), record


class KafkaTransport:
    """The fleet on Kafka directly: telemetry and acks produced, commands and forecasts consumed."""

    def __init__(self, fleet: FleetSimulator, clock: SimClock, settings: Settings, interval_s: float = 1.0,
                 seed: int = 0, group_id: str = "vpp-simulator") -> None:
        self.fleet = fleet
        self.clock = clock
        self.interval_s = interval_s
        self.stats = SimStats()
        self._codec: AvroCodec = packaged_codec()
        self._telemetry = TelemetryEncoder(self._codec)
        self._rng = random.Random(seed)
        self._producer = Producer(kafka.client_config(settings, **{"linger.ms": 20}))
        # A short session: brokers (Tansu among them) hold a new group's first join for a
        # good part of the session timeout, which at librdkafka's default is 45 s.
        # A short fetch wait: at librdkafka's default (500 ms) a command sits in the broker for up to
        # half a second, minutes of an accelerated clock (the peak replay measured it at speed 120).
        self._consumer = Consumer(kafka.client_config(settings, **{
            "group.id": group_id, "session.timeout.ms": 10_000, "heartbeat.interval.ms": 1_000,
            "fetch.wait.max.ms": 20}))
        self.assigned: set[tuple[str, int]] = set()
        self._consumer.subscribe([COMMANDS_SITE, PRICES_FORECAST, STORM_WATCH], on_assign=self._on_assign)

    async def run(self, duration_s: float | None = None) -> SimStats:
        """Step the fleet every interval for ``duration_s`` of wall time (forever if None)."""
        loop = asyncio.get_running_loop()
        deadline = None if duration_s is None else loop.time() + duration_s
        last = self.clock.now()
        try:
            while deadline is None or loop.time() < deadline:
                tick = loop.time() + self.clock.wall_seconds(self.interval_s)
                while (left := tick - loop.time()) > 0:
                    await uncancellable_in_thread(self._answer, left)
                now = self.clock.now()
                for record in self.fleet.step((now - last).total_seconds(), now):
                    site_id = record["site_id"]
                    self._produce(TELEMETRY_RAW, site_id, self._telemetry.encode(record),
                                  corruptible=self.fleet.sites[site_id])
                    self.stats.telemetry += 1
                last = now
                self._producer.poll(0)
        finally:
            self._producer.flush(10)
            self._consumer.close()
        return self.stats

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        start_at_end_unless_committed(consumer, partitions)
        self.assigned = {(p.topic, p.partition) for p in partitions}

    def _answer(self, wait_s: float) -> None:
        """Consume commands and forecasts for up to ``wait_s``; produce acks and plans."""
        for message in next_batch(self._consumer, 1000, wait_s):
            value = message.value()
            if message.error() is not None or value is None:
                continue
            try:
                decoded = self._codec.decode_with_info(value)
            except DecodeError:
                self.stats.errors += 1
                continue
            now = self.clock.now()
            if decoded.record_name == "SiteCommand":
                self.stats.commands += 1
                ack = self.fleet.apply_command(decoded.value, now)
                if ack is not None:
                    self._produce(COMMANDS_ACKS, ack["site_id"], self._codec.encode("CommandAck", ack))
                    self.stats.acks += 1
            elif decoded.record_name == "PriceForecast":
                self.stats.forecasts += 1
                for plan in self.fleet.receive_prices(decoded.value, now):
                    self._produce(PLANS_SITE, plan["site_id"], self._codec.encode("SitePlan", plan))
                    self.stats.plans += 1
            elif decoded.record_name == "StormWatch":
                for plan in self.fleet.receive_storm(decoded.value, now):
                    self._produce(PLANS_SITE, plan["site_id"], self._codec.encode("SitePlan", plan))
                    self.stats.plans += 1

    def _produce(self, topic: str, site_id: str, value: bytes,
                 corruptible: SimulatedSite | None = None) -> None:
        if corruptible is not None and corruptible.corrupts_next_frame():
            mangled = mangle(value, self._rng)  # a broken device's bytes, for the DLQ path downstream
            value = mangled if isinstance(mangled, bytes) else mangled.encode()
            self.stats.corrupt += 1
        while True:
            try:
                self._producer.produce(topic, key=site_id.encode(), value=value)
                return
            except BufferError:
                self._producer.poll(0.1)
