"""The edge gateway: one WebSocket per device; telemetry, acks and plans up; commands and prices down.

Instances are stateless and interchangeable behind a TCP load balancer; what
they share lives in Redis (routes, inboxes, revoked tokens) and Kafka. A
connection is authenticated once at the handshake by its token, and that
token's site is the only site the connection can speak for or be spoken to as.
Revocations are re-loaded from their durable record and the state is refused
when unknown (:mod:`edge_gateway.revocations`); every upstream frame is held to
:mod:`core.plausibility` against the gateway's clock and the site's registered
rating (:mod:`edge_gateway.limits`, a background-refreshed view, so no frame
waits on a store).

Command routing: all instances share one consumer group on ``commands.site``,
so each command is read once. The reading instance delivers it if it holds the
site's connection, else looks up ``gateway:route:{site}`` and appends the raw
record to the holder's inbox stream, which the holder reads and delivers. A
device that reconnects elsewhere claims its route there, so the next command
(and every retry of the control loop) follows it. Reading every command on
every instance would also work, but costs each instance the whole command
stream, which is what scaling out should avoid.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

from clickhouse_connect.driver.exceptions import ClickHouseError
from confluent_kafka import KafkaException, Message, Producer
from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import RedisError
from websockets import ConnectionClosed, ConnectionClosedError, Headers
from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.frames import CloseCode
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from core import kafka
from core.config import Settings
from core.device_tokens import DeviceClaims, TokenError, verify_token
from core.plausibility import Rules
from core.revocations import REVOKED_KEY
from edge_gateway.acks import ACKS_HEADER, DeliveryWindow
from edge_gateway.coalesce import Coalescer
from edge_gateway.feeds import Feed, commands_feed, prices_feed, storms_feed
from edge_gateway.frames import Accepted, FrameRejectedError, parse_frame
from edge_gateway.health import serve_health
from edge_gateway.limits import SiteRatings
from edge_gateway.metrics import GatewayMetrics
from edge_gateway.producer import BackpressureProducer
from edge_gateway.ratelimit import TokenBucket
from edge_gateway.revocations import Revocations, RevocationUnknownError
from edge_gateway.routing import Routes
from edge_gateway.wire import (
    AVRO_SUBPROTOCOL,
    JSON_SUBPROTOCOL,
    Encoding,
    delivered_frame,
    error_frame,
    json_frame,
)
from edge_gateway.ws_direct import TakesFrames, send_now
from schemas import packaged_codec
from schemas.codec import AvroCodec, DecodeError

log = logging.getLogger(__name__)

SEND_TIMEOUT_S = 5.0
REDIS_CONNECTIONS = 64
#: Waits between tries at a route claim while Redis fails: doubling from the first to the cap.
ROUTE_RETRY_FIRST_S = 0.1
ROUTE_RETRY_CAP_S = 5.0
#: How often the gateway tells devices that asked for them which of their frames are safe in Kafka:
#: every ACK_INTERVAL_S it tells one of ACK_TURNS groups of connections (each connection joins one
#: in turn), so a device is told at most every ACK_PERIOD_S and the counts go out spread over it.
#: With a count per frame of a 1 Hz device (a period under 1 s), writing counts was about 40% of the
#: gateway's CPU per reading and reading them 30% of the simulator's; a 2 s period halves both, and a
#: device holds about two seconds more of frames until they are confirmed.
ACK_INTERVAL_S = 0.2
ACK_TURNS = 10
ACK_PERIOD_S = ACK_INTERVAL_S * ACK_TURNS


def default_instance_id() -> str:
    """Host name and pid: unique per process, and the pod name on Kubernetes."""
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(eq=False)
class Session:
    """One open device connection and what its token says."""

    ws: ServerConnection
    claims: DeviceClaims
    encoding: Encoding
    closing: bool = False
    #: Upstream frames and their delivery, for a device that asked for acknowledgements.
    window: DeliveryWindow | None = None
    #: Downstream frames handed to tasks to send and not sent yet: later frames follow them, in order.
    sending: int = 0
    #: Which of the ACK_TURNS groups the connection is told its delivery count with.
    ack_turn: int = 0


@dataclass(frozen=True)
class _Forecast:
    issued_at: datetime
    raw: bytes
    text: str


@dataclass(frozen=True)
class _Storm:
    """The newest StormWatch of a node: the sites it names (joined over the records of one watch) and
    its frame (without the site list)."""

    event_time: datetime
    raised: bool
    until: datetime
    sites: frozenset[str]
    raw: bytes
    text: str


class _DeviceConnection(TakesFrames, ServerConnection):
    """A device's connection that hands each complete data frame to ``take`` as it arrives.

    Each device sends a frame a second, alone in its read from the socket; such a frame goes to
    ``take`` rather than to the connection's task (:class:`ws_direct.TakesFrames`). A frame
    ``take`` returns False for goes the usual way, to the task (``async for frame in ws``), and
    every frame after it follows while the queue holds any. A text frame that is not UTF-8 goes
    the usual way too (websockets closes with 1007).
    """

    take: Callable[[bytes | str], bool] | None = None

    def take_message(self, text: bool, payload: bytes) -> bool:
        take = self.take
        if take is None:
            return False
        message: bytes | str = payload
        if text:
            try:
                message = payload.decode()
            except UnicodeDecodeError:
                return False
        return take(message)


#: A frame ready to produce, and its ticket (the connection and frame number, if its device asked for acks).
_Ready = tuple[Accepted, tuple[Session, int] | None]


@dataclass(frozen=True, slots=True)
class _Upstream:
    """What a connection's reader needs of its gateway: where records go, the checks they pass, and
    how a device is answered."""

    producer: BackpressureProducer[tuple[Session, int]]
    codec: AvroCodec
    rules: Rules
    ratings: SiteRatings
    metrics: GatewayMetrics
    rate_per_s: float
    rate_burst: float
    #: Send a frame to a device now, or soon without holding up the caller (``Gateway._send_soon``).
    send: Callable[[Session, bytes | str, str], None]
    #: A connection has frames done since its device was last told its count.
    acknowledged: Callable[[Session], None]


class _Reader:
    """One connection's upstream frames: rate limit, validation, produce, acknowledgement numbers.

    :meth:`take_now` is called by the connection for a frame as it arrives, :meth:`take` by the
    connection's task for a frame left to it; between them every frame is taken once, in order.
    Per frame only what must be: the key, counters and producer are looked up once per
    connection, the clock is read as integers, and the count of frames in is a plain int.
    """

    def __init__(self, upstream: _Upstream, session: Session) -> None:
        site = session.claims.site_id
        self._upstream, self._session, self._site, self._key = upstream, session, site, site.encode()
        self._bucket = TokenBucket(upstream.rate_per_s, upstream.rate_burst, time.monotonic())
        self._producer, self._codec, self._rules = upstream.producer, upstream.codec, upstream.rules
        self._counted, self._ratings = upstream.metrics.frames_in.counts, upstream.ratings
        self._window = session.window
        #: The task is in the middle of a frame (waiting for room in the producer, or closing).
        self._busy = False
        #: take_now found the connection over its rate limit: the task closes it.
        self._over_limit = False
        #: A frame take_now accepted but the producer had no room for: the task produces it.
        self._stalled: _Ready | None = None

    def take_now(self, frame: bytes | str) -> bool:
        """Take a frame as it arrives; False leaves it (and what follows) to the task."""
        if self._busy or self._over_limit:
            return False
        if not self._bucket.allow(time.monotonic()):
            self._over_limit = True
            return False
        ready = self._accept(frame)
        if ready is not None and not self._produce_now(ready):
            self._stalled = ready
            return False
        return True

    async def take(self, frame: bytes | str) -> bool:
        """Take a frame the task read, waiting for room in the producer if need be; False: the
        connection is closed for its rate limit, read no more."""
        self._busy = True
        try:
            ready, self._stalled = self._stalled, None
            if ready is None:
                if self._over_limit or not self._bucket.allow(time.monotonic()):
                    self._upstream.metrics.rejects.labels("rate_limited").inc()
                    await self._session.ws.close(CloseCode.POLICY_VIOLATION, "rate limit exceeded")
                    return False
                ready = self._accept(frame)
                if ready is None or self._produce_now(ready):
                    return True
            record, ticket = ready
            await self._producer.produce(record.kind.topic, self._key, record.value, ticket)
            return True
        finally:
            self._busy = False

    def _accept(self, frame: bytes | str) -> _Ready | None:
        """Number and validate a frame within the rate limit: the record to produce and its ticket,
        or None for a frame refused (its device is told why, and the refusal counts as done)."""
        window = self._window
        index = window.receive() if window is not None else 0
        try:
            received_ms = time.time_ns() // 1_000_000
            accepted = parse_frame(self._codec, frame, self._site, received_ms, self._rules,
                                   self._ratings.get(self._site))
        except FrameRejectedError as rejected:
            upstream = self._upstream
            upstream.metrics.rejects.labels(rejected.reason).inc()
            upstream.send(self._session, error_frame(rejected.reason, rejected.detail), "error")
            if window is not None:
                window.done(index)  # refused for good: the error frame is the answer
                upstream.acknowledged(self._session)
            return None
        self._counted[accepted.kind.type] += 1
        return accepted, (None if window is None else (self._session, index))

    def _produce_now(self, ready: _Ready) -> bool:
        record, ticket = ready
        return self._producer.try_produce(record.kind.topic, self._key, record.value, ticket)


class Gateway:
    """One gateway instance: ``await start()``, serve, ``await stop()``."""

    def __init__(self, settings: Settings, *, host: str | None = None, port: int | None = None,
                 metrics_port: int | None = None, instance_id: str | None = None) -> None:
        self.settings = settings
        # First, so a deployment without its secret refuses to start before it opens anything.
        self._keys = settings.gateway_keys()
        self._rules = settings.plausibility()
        self.instance_id = instance_id or default_instance_id()
        self.metrics = GatewayMetrics()
        self._host = host or settings.host
        self._port = settings.gateway_port if port is None else port
        self._metrics_port = settings.gateway_metrics_port if metrics_port is None else metrics_port
        self._codec = packaged_codec()
        # A bounded pool that makes callers wait for a connection: a burst of handshakes queues
        # rather than failing with "too many connections".
        self._rds: Redis = Redis(connection_pool=BlockingConnectionPool.from_url(
            settings.redis, max_connections=REDIS_CONNECTIONS, timeout=10))
        self._routes = Routes(self._rds, self.instance_id, settings.gateway_route_ttl_s)
        self.revocations = Revocations(settings, self._rds)
        # Handshakes arriving together (a reconnect storm) share one revocation round trip.
        self._revoked: Coalescer[str, bool] = Coalescer(self.revocations.revoked)
        self.ratings = SiteRatings(settings)
        #: Tickets: the connection and the number of a frame whose device asked for acknowledgements.
        self._producer: BackpressureProducer[tuple[Session, int]] = BackpressureProducer(
            self._new_producer(), self.metrics)
        #: Connections with frames done since their device was last told its count, by ack turn,
        #: and the turn the next connection joins.
        self._acked: list[set[Session]] = [set() for _ in range(ACK_TURNS)]
        self._next_turn = 0
        self._upstream = _Upstream(self._producer, self._codec, self._rules, self.ratings, self.metrics,
                                   settings.gateway_rate_per_s, settings.gateway_rate_burst,
                                   self._send_soon, self._acknowledged)
        #: A replaced producer's successor has not reached the broker yet (readiness waits for it).
        self._producer_unconfirmed = False
        self._sessions: dict[str, Session] = {}
        # Claims between the handshake and the handler; weak, so an aborted handshake leaves nothing.
        self._handshakes: weakref.WeakKeyDictionary[ServerConnection, DeviceClaims] = (
            weakref.WeakKeyDictionary())
        self._prices: dict[str, _Forecast] = {}
        self._storms: dict[str, _Storm] = {}
        self._feeds: list[Feed] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self._block_s = min(1.0, settings.gateway_heartbeat_s)
        # Admission control: handshakes being authenticated now, the most ever at once, and the
        # connections accepted only to be closed with 1013 because the budget was full.
        self.handshaking = 0
        self.handshaking_peak = 0
        self._busy: weakref.WeakSet[ServerConnection] = weakref.WeakSet()
        self._server: Server | None = None
        self._health: asyncio.Server | None = None
        self._last_heartbeat = 0.0

    def _new_producer(self) -> Producer:
        # lz4 batches: telemetry is most of what the platform writes, and a broker keeps it as sent (the
        # local memory-only one held 2.75 MB of RSS per MB of plain telemetry produced, 1.7 with lz4).
        # Few, large batches (gateway_linger_ms): a broker's work goes with produce requests and batches
        # far more than with records (bench/broker_load.py).
        return Producer(kafka.client_config(self.settings, **{
            "linger.ms": self.settings.gateway_linger_ms, "compression.type": "lz4",
            "client.id": f"gateway-{self.instance_id}"}))

    @property
    def port(self) -> int:
        """The WebSocket port actually bound."""
        assert self._server is not None, "not started"
        return int(next(iter(self._server.sockets)).getsockname()[1])

    @property
    def metrics_port(self) -> int:
        """The health and metrics port actually bound."""
        assert self._health is not None, "not started"
        return int(self._health.sockets[0].getsockname()[1])

    @property
    def command_partitions(self) -> set[int]:
        """Partitions of commands.site this instance consumes right now."""
        return set(self._feeds[0].assigned) if self._feeds else set()

    async def start(self) -> None:
        """Open Kafka and Redis, start the listeners and the background loops."""
        await self._rds.ping()
        for load, what in ((self.revocations.reload, "revocations"), (self.ratings.refresh, "site ratings")):
            try:
                await load()
            except (RevocationUnknownError, ClickHouseError, OSError) as exc:
                log.warning("cannot load %s at start (%s); retrying in the background", what, exc)
        self._producer.start(self._reported)
        commands, prices = commands_feed(self.settings, self.instance_id), prices_feed(self.settings,
                                                                                      self.instance_id)
        storms = storms_feed(self.settings, self.instance_id)
        self._feeds = [commands, prices, storms]
        inbox_start = await self._routes.inbox_position()
        self._spawn(self._consume_commands(commands))
        self._spawn(self._consume_prices(prices))
        self._spawn(self._consume_storms(storms))
        self._spawn(self._read_inbox(inbox_start))
        self._spawn(self._heartbeat())
        self._spawn(self._tell_deliveries())
        self._spawn(self._watch_producer())
        self._spawn(self._every(self.settings.gateway_revocations_refresh_s, self.revocations.reload,
                                "re-loading revocations"))
        self._spawn(self._every(self.settings.gateway_limits_refresh_s, self.ratings.refresh,
                                "refreshing site ratings"))
        self._server = await serve(
            self._handle, self._host, self._port, process_request=self._authenticate,
            select_subprotocol=_select_subprotocol, create_connection=_DeviceConnection,
            subprotocols=[Subprotocol(AVRO_SUBPROTOCOL), Subprotocol(JSON_SUBPROTOCOL)],
            max_size=self.settings.gateway_max_frame_bytes, max_queue=16, server_header=None,
            # No permessage-deflate: frames are a hundred bytes of Avro or JSON, which it barely
            # shrinks, for a zlib inflate per frame and a compression context (tens of kB) per connection.
            compression=None)
        self._health = await serve_health(self._host, self._metrics_port, self._healthz,
                                          self.metrics.registry)
        self._last_heartbeat = time.monotonic()
        log.info("gateway %s listening on %s:%d", self.instance_id, self._host, self.port)

    async def stop(self) -> None:
        """Close every connection (1001), stop the loops, flush the producer, release routes."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._health is not None:
            self._health.close()
            await self._health.wait_closed()
        self._stopping.set()
        for feed in self._feeds:
            feed.stop()
        # The loops end on their own within a poll; cancelling is only the fallback, because
        # redis-py can swallow a cancellation that lands inside a blocking call.
        if self._tasks:
            _, late = await asyncio.wait(set(self._tasks), timeout=self._block_s + 5)
            for task in late:
                task.cancel()
        for feed in self._feeds:
            await asyncio.to_thread(feed.close)
        await asyncio.to_thread(self._producer.close)
        await self._rds.aclose()

    async def serve_forever(self) -> None:
        """Run until cancelled."""
        assert self._server is not None, "not started"
        await self._server.serve_forever()

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _healthz(self) -> tuple[bool, dict[str, Any]]:
        """Readiness: Redis answers the heartbeat and Kafka delivers what the gateway produces."""
        fresh = time.monotonic() - self._last_heartbeat < 3 * self.settings.gateway_heartbeat_s
        stalled_s = self._producer.stalled_s()
        delivering = stalled_s < self.settings.gateway_produce_stall_s and not self._producer_unconfirmed
        problems = ([] if fresh else ["redis heartbeat failing"]) + (
            [] if stalled_s < self.settings.gateway_produce_stall_s
            else [f"kafka delivered nothing for {stalled_s:.0f} s"]) + (
            ["kafka producer replaced, the broker not reached yet"] if self._producer_unconfirmed else [])
        age = self.revocations.age_s
        return fresh and delivering, {
                       "status": "; ".join(problems) or "ok", "instance": self.instance_id,
                       "undelivered_records": self._producer.outstanding,
                       "delivery_stalled_s": round(stalled_s, 1),
                       "oldest_undelivered_s": round(self._producer.oldest_undelivered_s(), 1),
                       "connections": len(self._sessions),
                       "handshaking": self.handshaking, "handshaking_peak": self.handshaking_peak,
                       "command_partitions": sorted(self.command_partitions),
                       "revocations_age_s": None if age is None else round(age, 1),
                       "rated_sites": len(self.ratings)}

    # -- handshake and connections ---------------------------------------------------------------

    async def _authenticate(self, connection: ServerConnection, request: Request) -> Response | None:
        """Refuse the upgrade unless the request carries a valid, unrevoked token (401 / 403).

        At most ``gateway_max_handshakes`` run at once: beyond them the connection is upgraded
        only to be closed at once with 1013 and a retry hint (:meth:`_handle`), so a reconnect
        storm meets a quick, cheap answer instead of a queue that outlives its clients' patience.
        """
        if self.handshaking >= self.settings.gateway_max_handshakes:
            self.metrics.rejects.labels("busy").inc()
            self._busy.add(connection)
            return None
        self.handshaking += 1
        self.handshaking_peak = max(self.handshaking_peak, self.handshaking)
        try:
            return await self._check_token(connection, request)
        finally:
            self.handshaking -= 1

    async def _check_token(self, connection: ServerConnection, request: Request) -> Response | None:
        token = _token_of(request)
        if token is None:
            return self._refuse(connection, 401, "missing_token", "a device token is required")
        try:
            claims = verify_token(self.settings, token, self._keys)
        except TokenError as exc:
            return self._refuse(connection, 401, "invalid_token", f"invalid token: {exc}")
        try:
            revoked = await self._revoked(claims.jti)
        except (RedisError, RevocationUnknownError) as exc:
            log.warning("revocation check failed (%s); refusing %s for now", exc, claims.site_id)
            return self._refuse(connection, 503, "revocation_unknown", "cannot check revocation; retry")
        if revoked:
            return self._refuse(connection, 403, "revoked", "token revoked")
        self._handshakes[connection] = claims
        return None

    def _refuse(self, connection: ServerConnection, status: int, reason: str, text: str) -> Response:
        self.metrics.rejects.labels(reason).inc()
        response = connection.respond(status, text + "\n")
        if status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="vpp-gateway"'
        return response

    async def _handle(self, ws: ServerConnection) -> None:
        if ws in self._busy:
            retry = self.settings.gateway_busy_retry_s
            await ws.close(CloseCode.TRY_AGAIN_LATER, f"gateway busy: retry after {retry:g} s")
            return
        claims = self._handshakes.pop(ws)
        session = Session(ws, claims, Encoding.AVRO if ws.subprotocol == AVRO_SUBPROTOCOL else Encoding.JSON,
                          ack_turn=self._next_turn)
        self._next_turn = (self._next_turn + 1) % ACK_TURNS
        if ws.request is not None and ws.request.headers.get(ACKS_HEADER) == "1":
            session.window = DeliveryWindow()
        site = claims.site_id
        previous = self._sessions.get(site)
        self._sessions[site] = session
        if previous is not None:
            await previous.ws.close(CloseCode.POLICY_VIOLATION, "superseded by a newer connection")
        self.metrics.connections.inc()
        # The route is claimed beside the connection: telemetry does not wait for Redis, and a slow
        # or absent Redis never closes a healthy connection (commands reach it once the route is written).
        self._spawn(self._claim_route(session))
        try:
            self._send_latest_prices(session)
            self._send_storms(session)
            await self._read(session)
        except ConnectionClosedError as exc:
            if exc.sent is not None and exc.sent.code == CloseCode.MESSAGE_TOO_BIG:
                self.metrics.rejects.labels("oversized").inc()
        finally:
            self.metrics.connections.dec()
            if self._sessions.get(site) is session:
                del self._sessions[site]
                with contextlib.suppress(RedisError):
                    await self._routes.release(site)

    async def _claim_route(self, session: Session) -> None:
        """Claim the session's route, trying again (doubling waits up to 5 s) while Redis fails."""
        site, delay = session.claims.site_id, ROUTE_RETRY_FIRST_S
        while self._sessions.get(site) is session:
            try:
                await self._routes.claim(site)
                return
            except RedisError as exc:
                if delay == ROUTE_RETRY_FIRST_S:
                    log.warning("cannot claim the route of %s yet (%s); retrying in the background",
                                site, exc)
            if not await self._pause(delay):
                return
            delay = min(2 * delay, ROUTE_RETRY_CAP_S)

    async def _read(self, session: Session) -> None:
        """Forward each frame the device sends until it closes, breaks the rate limit or oversends.

        Frames are taken as they arrive (:class:`_DeviceConnection`); this task reads only those
        the connection leaves to it: a frame over the rate limit (it closes the connection), one
        the producer had no room for (it waits for room), and any frame behind those.
        """
        ws, reader = session.ws, _Reader(self._upstream, session)
        assert isinstance(ws, _DeviceConnection)
        ws.take = reader.take_now
        try:
            async for frame in ws:
                if not await reader.take(frame):
                    return
        finally:
            ws.take = None

    def _reported(self, reports: list[tuple[tuple[Session, int], bool]]) -> None:
        """The outcomes of one poll's deliveries of acknowledged frames (on the event loop)."""
        for (session, index), ok in reports:
            window = session.window
            assert window is not None
            window.done(index, ok)
            self._acknowledged(session)
            if window.failed and not session.closing:
                # The device still holds the frame (never confirmed): it sends it again on a new connection.
                session.closing = True
                self._spawn(session.ws.close(CloseCode.INTERNAL_ERROR, "delivery failed: send again"))

    def _acknowledged(self, session: Session) -> None:
        """``session`` has frames done since its device was last told: its turn will tell it."""
        self._acked[session.ack_turn].add(session)

    async def _tell_deliveries(self) -> None:
        """Tell each device whose frames were done with since how many of its frames are safe, when
        that count grew: one turn's connections every ACK_INTERVAL_S (only those with frames done,
        not every open one), so each device at most every ACK_PERIOD_S."""
        turn = 0
        while await self._pause(ACK_INTERVAL_S):
            acked, self._acked[turn] = self._acked[turn], set()
            turn = (turn + 1) % ACK_TURNS
            for session in acked:
                count = session.window.to_tell() if session.window is not None else None
                if count is not None:
                    self._send_soon(session, delivered_frame(count), "delivered")

    # -- downstream ---------------------------------------------------------------------------------

    async def _consume_commands(self, feed: Feed) -> None:
        async for batch in feed.batches():
            try:
                await self._route_commands(batch)
            except RedisError as exc:
                log.warning("redis failed while routing %d commands (%s); the control loop retries them",
                            len(batch), exc)
                self.metrics.commands.labels("unroutable").inc(len(batch))

    async def _route_commands(self, batch: list[Message]) -> None:
        remote: list[tuple[str, bytes]] = []
        for message in batch:
            raw = message.value()
            assert raw is not None  # Feed yields only messages with a value
            site = self._command_site(raw)
            if site is None:
                continue
            if site in self._sessions:
                self._deliver_command(site, raw)
            else:
                remote.append((site, raw))
        owners = await self._routes.owners(sorted({site for site, _ in remote}))
        forwards = []
        for site, raw in remote:
            owner = owners.get(site)
            if owner is None or owner == self.instance_id:
                self.metrics.commands.labels("unroutable").inc()
            else:
                forwards.append((owner, raw))
                self.metrics.commands.labels("forwarded").inc()
        if forwards:
            await self._routes.forward(forwards)

    async def _read_inbox(self, position: bytes) -> None:
        while not self._stopping.is_set():
            try:
                position, records = await self._routes.read_inbox(position, int(self._block_s * 1000))
            except RedisError as exc:
                log.warning("reading the inbox failed (%s); retrying", exc)
                await self._pause(self.settings.gateway_heartbeat_s)
                continue
            for raw in records:
                site = self._command_site(raw)
                if site is None:
                    continue
                if site in self._sessions:
                    self._deliver_command(site, raw)
                else:
                    self.metrics.commands.labels("unroutable").inc()

    def _command_site(self, raw: bytes) -> str | None:
        try:
            return str(self._codec.decode(raw, expected="SiteCommand")["site_id"])
        except DecodeError:
            self.metrics.commands.labels("undecodable").inc()
            return None

    def _deliver_command(self, site: str, raw: bytes) -> None:
        session = self._sessions[site]
        frame: bytes | str = raw
        if session.encoding is Encoding.JSON:
            frame = json_frame("command", self._codec.decode(raw, expected="SiteCommand"))
        self.metrics.commands.labels("delivered").inc()
        self._send_soon(session, frame, "command")

    def _send_soon(self, session: Session, frame: bytes | str, kind: str) -> None:
        """Send ``frame`` now if the connection can take it (the usual case: one write, no task);
        else in a task of its own that waits up to ``SEND_TIMEOUT_S`` for room (a device slow to
        read, or a connection closing), so no device holds up the loop. While such a task is
        pending, later frames of the connection go the same way, so they arrive in order."""
        if not session.sending and send_now(session.ws, frame):
            self.metrics.frames_out.counts[kind] += 1
        else:
            session.sending += 1
            self._spawn(self._send(session, frame, kind))

    async def _send(self, session: Session, frame: bytes | str, kind: str) -> None:
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for wraps the send in a task of its own,
        # and a device that asked for acknowledgements gets a frame a second (4.6 vs 13.5 us a send).
        try:
            async with asyncio.timeout(SEND_TIMEOUT_S):
                await session.ws.send(frame)
        except (ConnectionClosed, TimeoutError):
            self.metrics.rejects.labels(f"{kind}_send_failed").inc()
        else:
            self.metrics.frames_out.counts[kind] += 1
        finally:
            session.sending -= 1

    async def _consume_prices(self, feed: Feed) -> None:
        async for batch in feed.batches():
            for message in batch:
                raw = message.value()
                assert raw is not None
                try:
                    forecast = self._codec.decode(raw, expected="PriceForecast")
                except DecodeError:
                    self.metrics.rejects.labels("prices_undecodable").inc()
                    continue
                region, cached = forecast["region"], self._prices.get(forecast["region"])
                if cached is not None and cached.issued_at >= forecast["issued_at"]:
                    continue
                latest = _Forecast(forecast["issued_at"], raw, json_frame("prices", forecast))
                self._prices[region] = latest
                listeners = [s for s in self._sessions.values() if s.claims.region == region]
                self._broadcast_prices(listeners, latest)

    def _send_latest_prices(self, session: Session) -> None:
        latest = self._prices.get(session.claims.region or "")
        if latest is not None:
            self._broadcast_prices([session], latest)

    def _broadcast_prices(self, sessions: list[Session], forecast: _Forecast) -> None:
        """Send without awaiting: a device too slow to take a forecast skips it and gets the next one."""
        avro = [s.ws for s in sessions if s.encoding is Encoding.AVRO]
        text = [s.ws for s in sessions if s.encoding is Encoding.JSON]
        broadcast(avro, forecast.raw)
        broadcast(text, forecast.text)
        self.metrics.frames_out.counts["prices"] += len(sessions)

    async def _consume_storms(self, feed: Feed) -> None:
        """Hand each storm watch (raised or cleared) to the connected sites it names."""
        async for batch in feed.batches():
            for message in batch:
                raw = message.value()
                assert raw is not None
                try:
                    record = self._codec.decode(raw, expected="StormWatch")
                except DecodeError:
                    self.metrics.rejects.labels("storm_undecodable").inc()
                    continue
                node, held = record["node_id"], self._storms.get(record["node_id"])
                named = frozenset(record["site_ids"])
                if held is not None and held.event_time == record["event_time"] and \
                        held.raised == (record["action"] == "RAISE") and held.until == record["until"]:
                    # Another part of the same watch (a large node's sites come in several records).
                    storm = replace(held, sites=held.sites | named)
                elif held is not None and held.event_time >= record["event_time"]:
                    continue
                else:
                    frame = {**record, "site_ids": []}  # a device needs the watch, not its neighbours' ids
                    storm = _Storm(record["event_time"], record["action"] == "RAISE", record["until"],
                                   named, self._codec.encode("StormWatch", frame), json_frame("storm", frame))
                self._storms[node] = storm
                self._broadcast_storm([s for site, s in self._sessions.items() if site in named], storm)

    def _send_storms(self, session: Session) -> None:
        """A site that connects while a watch over it is in force is told at once."""
        now = datetime.now(UTC)
        for storm in self._storms.values():
            if storm.raised and storm.until > now and session.claims.site_id in storm.sites:
                self._broadcast_storm([session], storm)

    def _broadcast_storm(self, sessions: list[Session], storm: _Storm) -> None:
        broadcast([s.ws for s in sessions if s.encoding is Encoding.AVRO], storm.raw)
        broadcast([s.ws for s in sessions if s.encoding is Encoding.JSON], storm.text)
        self.metrics.frames_out.counts["storm"] += len(sessions)

    # -- heartbeat --------------------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        """Refresh routes; close connections whose token was revoked or expired, or whose site moved."""
        while await self._pause(self.settings.gateway_heartbeat_s):
            try:
                await self._sweep()
            except RedisError as exc:
                log.warning("heartbeat failed (%s); routes expire if this persists", exc)
            else:
                self._last_heartbeat = time.monotonic()

    async def _watch_producer(self) -> None:
        """Replace a producer that delivered nothing for ``gateway_producer_replace_s`` with records
        waiting (librdkafka recovers from most broker faults by itself; this is for one that does
        not); until the new one reaches the broker, the gateway is not ready."""
        limit = self.settings.gateway_producer_replace_s
        while await self._pause(min(1.0, limit / 4)):
            if self._producer_unconfirmed:
                self._producer_unconfirmed = not await asyncio.to_thread(self._broker_answers)
            elif self._producer.stalled_s() >= limit:
                log.warning("the Kafka producer delivered nothing for %.0f s with %d records waiting: "
                            "replacing it (those records are reported failed; their devices send them again)",
                            self._producer.stalled_s(), self._producer.outstanding)
                self._producer_unconfirmed = True
                old = self._producer.replace(self._new_producer())
                await asyncio.to_thread(self._producer.retire, old)

    def _broker_answers(self) -> bool:
        """Whether the producer's broker answers a metadata request within 2 s."""
        try:
            self._producer.list_topics(timeout=2)
        except KafkaException:
            return False
        return True

    async def _every(self, seconds: float, action: Callable[[], Awaitable[None]], doing: str) -> None:
        """Run ``action`` every ``seconds`` until the gateway stops; a failure is logged and retried."""
        while await self._pause(seconds):
            try:
                await action()
            except (RevocationUnknownError, ClickHouseError, OSError, RedisError) as exc:
                log.warning("%s failed (%s); retrying in %.0f s", doing, exc, seconds)

    async def _pause(self, seconds: float) -> bool:
        """Sleep ``seconds`` unless the gateway stops first; whether to go on."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)
        return not self._stopping.is_set()

    async def _sweep(self) -> None:
        sessions = list(self._sessions.values())
        sites = [s.claims.site_id for s in sessions]
        moved = set(await self._routes.refresh(sites))
        revoked: list[bool] = []
        for start in range(0, len(sessions), 1000):
            revoked.extend(await self._revoked_open([s.claims.jti for s in sessions[start:start + 1000]]))
        now = datetime.now(UTC)
        for session, is_revoked in zip(sessions, revoked, strict=True):
            if session.closing:
                continue
            if is_revoked:
                reason, label = "token revoked", "revoked"
            elif session.claims.expires_at <= now:
                reason, label = "token expired", "expired"
            elif session.claims.site_id in moved:
                reason, label = "site connected to another gateway instance", "moved"
            else:
                continue
            self.metrics.rejects.labels(label).inc()
            session.closing = True
            self._spawn(session.ws.close(CloseCode.POLICY_VIOLATION, reason))


    async def _revoked_open(self, jtis: list[str]) -> list[bool]:
        """Revocation flags of open connections; while the durable list is unknown, Redis's set as it is.

        Open connections were checked when they connected, so they stay rather than all dropping
        at once when the history store is briefly unreachable.
        """
        try:
            return await self.revocations.revoked(jtis)
        except RevocationUnknownError as exc:
            log.warning("revocation list unknown (%s); checking open connections against redis as it is", exc)
            return [bool(flag) for flag in await self._rds.smismember(REVOKED_KEY, jtis)]


def _token_of(request: Request) -> str | None:
    """The bearer token from the Authorization header, else the ``token`` query parameter."""
    headers: Headers = request.headers
    authorization = headers.get("Authorization", "")
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    values = parse_qs(urlsplit(request.path).query).get("token")
    return values[0] if values else None


def _select_subprotocol(_connection: ServerConnection, offered: Sequence[Subprotocol]) -> Subprotocol | None:
    """Avro if the device offers it, else JSON; a device offering nothing gets JSON rather than a 400."""
    for protocol in (AVRO_SUBPROTOCOL, JSON_SUBPROTOCOL):
        if protocol in offered:
            return Subprotocol(protocol)
    return None
