"""The Bytewax face of :class:`operators.dispatch.Dispatch`, and the control dataflow's reads of the twin.

Requests and acks are keyed by dispatch id (an ack finds its dispatch through
the command id, ``{dispatch}/{site}/{revision}``), so each dispatch is one
piece of keyed state that Bytewax snapshots and restores: an active dispatch
survives a restart of the flow and carries on delivering and correcting.

The clock of a dispatch is the newest of the wall clock and the event times
it has seen (twin ``last_seen``, acks): in production the two agree; with a
simulated fleet running faster than real time, the fleet's own time rules.
A dispatch wakes every ``control_tick_s`` of wall time and reads the twin of
its sites from Redis (one pipelined round trip) to decide what is due.
"""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import redis
from bytewax.connectors.kafka import KafkaSinkMessage
from bytewax.operators import StatefulBatchLogic
from typing_extensions import override

from core import keys
from core.config import Settings
from core.dispatch_spec import DispatchRejectedError, DispatchSpec, parse_strategy
from core.rows import DispatchLogEntry
from core.topics import COMMANDS_ACKS, COMMANDS_SITE, DISPATCH_STATUS
from operators.allocation import Array
from operators.dispatch import Ack, ControlConfig, Dispatch, Output, Request, TwinSnapshot, dispatch_of
from operators.emitted import Emitted
from operators.kafka_batches import Polled
from operators.records import DLQ_KEY, KafkaOut, codec, dead_letter
from operators.sinks import StatusWrite
from schemas.codec import DecodeError
from schemas.times import epoch_ms, from_epoch_ms, wall_ms

CONSUMER = "dataflows.control"
#: HMGET of the fields ``ARGV`` for every key in ``KEYS``, flattened: one argument per key to encode
#: instead of one per field, which is what a pipeline of 10,000 HMGETs spent most of its time on.
#: (On Redis Cluster the keys of one call must share a slot; there, read through a pipeline.)
_READ_TWINS = """
local out = {}
for _, key in ipairs(KEYS) do
  local values = redis.call('HMGET', key, unpack(ARGV))
  for j = 1, #values do
    out[#out + 1] = values[j]
  end
end
return out
"""
#: Keys per script call: bounds the time one call holds Redis.
READ_CHUNK = 2000
TWIN_FIELDS = ("status", "battery_kw", "last_seen", "max_discharge_kw", "max_charge_kw",
               "energy_available_kwh", "charge_headroom_kwh", "solar_kw", "load_kw", "active_command_id")

Event = Request | Ack


def decode_control(polls: list[Polled]) -> list[tuple[str, Event | KafkaOut]]:
    """Requests and acks keyed by their dispatch id; what cannot be read goes to the dead letters."""
    out: list[tuple[str, Event | KafkaOut]] = []
    decode = codec().decode
    for poll in polls:
        acks = poll.topic == COMMANDS_ACKS
        for msg in poll.messages:
            error, value = msg.error(), msg.value()
            if error is not None:
                out.append((DLQ_KEY, dead_letter(msg, "KAFKA_ERROR", str(error), CONSUMER)))
                continue
            if value is None:
                continue
            try:
                record = decode(value, "CommandAck" if acks else "DispatchRequest")
            except DecodeError as exc:
                out.append((DLQ_KEY, dead_letter(msg, exc.reason.value, exc.message, CONSUMER)))
                continue
            key = msg.key()
            owner = record["site_id"] if acks else record["dispatch_id"]
            if key is not None and key != owner.encode():
                reason = f"record of {owner!r} under key {key!r}"
                out.append((DLQ_KEY, dead_letter(msg, "KEY_MISMATCH", reason, CONSUMER)))
                continue
            event = _ack(record) if acks else _request(record)
            owner_dispatch = dispatch_of(event.command_id) if isinstance(event, Ack) else event.dispatch_id
            out.append((owner_dispatch, event))
    return out


def _ack(record: dict[str, Any]) -> Ack:
    return Ack(record["command_id"], record["site_id"], record["status"], record["reason"],
               epoch_ms(record["event_time"]))


def _request(record: dict[str, Any]) -> Request:
    strategy = record["strategy"]
    allocator, correction = (parse_strategy(strategy) if record["action"] in ("CREATE", "REPLACE")
                             else ("waterfill", False))
    sites = record["site_ids"]
    return Request(record["dispatch_id"], record["action"], record["node_id"],
                   tuple(sites) if sites is not None else None, float(record["target_kw"]),
                   epoch_ms(record["start"]), epoch_ms(record["end"]), allocator, correction, strategy,
                   record["requested_by"], epoch_ms(record["requested_at"]))


def _problem(request: Request, now_ms: int) -> str | None:
    """Why a request cannot run (the same checks the CLI and API make before sending), or None."""
    try:
        DispatchSpec(request.target_kw, from_epoch_ms(request.start_ms), from_epoch_ms(request.end_ms),
                     request.node_id, request.site_ids, request.strategy,
                     request.dispatch_id).check(from_epoch_ms(now_ms))
    except DispatchRejectedError as exc:
        return str(exc)
    return None


class TwinReader:
    """Member sites and their live twin, read from Redis."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._read = client.register_script(_READ_TWINS)

    def members(self, node_id: str) -> list[str]:
        """The node's current member sites: at the start of a window, its members at that time."""
        members: set[bytes] = self.client.smembers(keys.node_sites(node_id))  # type: ignore[assignment]
        return sorted(s.decode() for s in members)

    def fleet_time(self, request: Request) -> int:
        """The fleet's event time as the twin last saw it: the node's aggregate, or a few of the sites."""
        if request.node_id is not None:
            stamp = self.client.hget(keys.node(request.node_id), "event_time")
            return int(stamp) if stamp else 0
        return self.snapshot(list(request.site_ids or ())[:50]).newest_event_ms

    def snapshot(self, site_ids: list[str]) -> TwinSnapshot:
        """One pipelined read of the twin of ``site_ids`` (a site without a twin: no status, no limits)."""
        pipe = self.client.pipeline(transaction=False)
        for first in range(0, len(site_ids), READ_CHUNK):
            self._read(keys=[keys.site(s) for s in site_ids[first:first + READ_CHUNK]], args=TWIN_FIELDS,
                       client=pipe)
        flat = [value for chunk in pipe.execute() for value in chunk]
        width = len(TWIN_FIELDS)

        def column(name: str) -> list[Any]:
            return flat[TWIN_FIELDS.index(name)::width]

        def numbers(name: str) -> Array:
            return np.array([float(v) if v else 0.0 for v in column(name)])

        def texts(name: str) -> list[str]:
            return [v.decode() if v else "" for v in column(name)]

        seen = [int(v) for v in column("last_seen") if v]
        solar_surplus = np.maximum(numbers("solar_kw") - numbers("load_kw"), 0.0)
        return TwinSnapshot(site_ids, texts("status"), numbers("battery_kw"), numbers("max_discharge_kw"),
                            numbers("max_charge_kw"), numbers("energy_available_kwh"),
                            numbers("charge_headroom_kwh"), solar_surplus, texts("active_command_id"),
                            max(seen, default=0))


def control_config(settings: Settings) -> ControlConfig:
    return ControlConfig(
        retry_base_ms=int(settings.control_retry_base_s * 1000),
        retry_max_ms=int(settings.control_retry_max_s * 1000),
        correction_ms=int(settings.control_correction_s * 1000),
        gain=settings.control_gain, max_step_fraction=settings.control_max_step_fraction,
    )


def emissions(dispatch: Dispatch, out: Output) -> list[Emitted]:
    """Commands and statuses for Kafka, the status for Redis, journal rows for ClickHouse."""
    encode = codec().encode
    request = dispatch.request
    ident = request.dispatch_id
    emitted = [Emitted("kafka", ident, KafkaSinkMessage(
        key=c["site_id"].encode(), value=encode("SiteCommand", c), topic=COMMANDS_SITE))
        for c in out.commands]
    for status in out.statuses:
        emitted.append(Emitted("kafka", ident, KafkaSinkMessage(
            key=ident.encode(), value=encode("DispatchStatus", status), topic=DISPATCH_STATUS)))
        fields = {**status, "node_id": status["node_id"] or "", "start": request.start_ms,
                  "end": request.end_ms, "strategy": request.strategy, "requested_by": request.requested_by,
                  "reason": dispatch.reason,
                  "site_ids": ",".join(request.site_ids) if request.site_ids is not None else ""}
        emitted.append(Emitted("redis", ident, StatusWrite(status["dispatch_id"], status["event_time"],
                                                    status["state"], request.start_ms, fields)))
        emitted.append(Emitted("history", ident, DispatchLogEntry(
            status["dispatch_id"], from_epoch_ms(status["event_time"]), status["state"], status["node_id"],
            status["target_kw"], status["measured_kw"], status["error_kw"], status["shortfall_kw"],
            status["sites_total"], status["sites_acked"], status["sites_pending"], status["sites_rejected"])))
    emitted.extend(Emitted("history", ident, row) for row in out.command_log)
    return emitted


_READERS: dict[str, TwinReader] = {}


def _reader(url: str) -> TwinReader:
    """One Redis connection pool per worker process, shared by every dispatch it holds."""
    reader = _READERS.get(url)
    if reader is None:
        reader = _READERS[url] = TwinReader(redis.Redis.from_url(url))
    return reader


class ControlLogic(StatefulBatchLogic[Event, Emitted, bytes]):
    """One dispatch inside the control dataflow."""

    def __init__(self, dispatch: Dispatch | None, config: ControlConfig, tick: timedelta,
                 reader: TwinReader) -> None:
        self.dispatch = dispatch
        self.config = config
        self.tick = tick
        self.reader = reader

    @classmethod
    def builder(cls, settings: Settings) -> Any:
        config = control_config(settings)
        tick = timedelta(seconds=settings.control_tick_s)
        url = settings.redis

        def build(resume: bytes | None) -> ControlLogic:
            dispatch = pickle.loads(resume) if resume is not None else None
            if dispatch is not None:
                dispatch.config = config
            return cls(dispatch, config, tick, _reader(url))

        return build

    def _now(self) -> int:
        return max(wall_ms(), self.dispatch.clock_ms if self.dispatch is not None else 0)

    @override
    def on_batch(self, values: list[Event]) -> tuple[list[Emitted], bool]:
        emitted: list[Emitted] = []
        for event in values:
            emitted += self._apply(event)
        emitted += self._step()
        return emitted, self._keep()

    def _apply(self, event: Event) -> list[Emitted]:
        now = self._now()
        dispatch = self.dispatch
        if isinstance(event, Ack):
            return emissions(dispatch, dispatch.on_ack(event, now)) if dispatch is not None else []
        if event.action == "CREATE":
            if dispatch is not None:  # a replayed or repeated request: the dispatch exists already
                return []
            dispatch = self.dispatch = Dispatch(event, self.config)
            problem = _problem(event, now)
            return emissions(dispatch, dispatch.fail(problem, now) if problem else dispatch.tick(now, None))
        if dispatch is None:
            return []
        if event.action == "CANCEL":
            return emissions(dispatch, dispatch.cancel(now))
        if event.action == "REPLACE" and _problem(event, now) is None:
            twin = self.reader.snapshot(dispatch.members) if dispatch.state == "ACTIVE" else None
            return emissions(dispatch, dispatch.replace(event, twin, now))
        return []

    def _step(self) -> list[Emitted]:
        dispatch = self.dispatch
        if dispatch is None or dispatch.state == "FAILED":
            return []
        now = self._now()
        if dispatch.state == "PENDING":  # no members yet to tell the time by: ask the node
            dispatch.clock_ms = max(dispatch.clock_ms, self.reader.fleet_time(dispatch.request))
            now = self._now()
        if dispatch.needs_members(now):
            request = dispatch.request
            members = list(request.site_ids) if request.site_ids is not None else self.reader.members(
                request.node_id or "")
            return emissions(dispatch, dispatch.activate(members, self.reader.snapshot(members), now))
        twin = self.reader.snapshot(dispatch.members) if dispatch.state in ("ACTIVE", "CANCELLED") else None
        return emissions(dispatch, dispatch.tick(now, twin))

    def _keep(self) -> bool:
        dispatch = self.dispatch
        return self.DISCARD if dispatch is None or dispatch.finished(self._now()) else self.RETAIN

    @override
    def notify_at(self) -> datetime | None:
        return datetime.now(UTC) + self.tick if self.dispatch is not None else None

    @override
    def on_notify(self) -> tuple[list[Emitted], bool]:
        return self._step(), self._keep()

    @override
    def snapshot(self) -> bytes:
        return pickle.dumps(self.dispatch, protocol=pickle.HIGHEST_PROTOCOL)
