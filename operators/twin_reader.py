"""What the control dataflow plans from: member sites and their live twin, read from Redis.

The control flow's input reads through a :class:`TwinReader`, on a thread of its
own, what the control step asks for (:mod:`operators.twin_feed`): a node's
members and their twin when a dispatch starts, the twin on every tick. The
reader is given to the flow (``build_flow(settings, reader=...)``), so the flow
holds no global client and tests run it on a twin of their own.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import redis

from core import keys
from operators.allocation import Array
from operators.dispatch import Request, TwinSnapshot

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


class TwinReader(Protocol):
    """Member sites and their live twin, however they are kept."""

    def members(self, node_id: str) -> list[str]:
        """The node's current member sites: at the start of a window, its members at that time."""

    def fleet_time(self, request: Request) -> int:
        """The fleet's event time as the twin last saw it (epoch ms; 0 when unknown)."""

    def snapshot(self, site_ids: list[str]) -> TwinSnapshot:
        """The twin of ``site_ids`` now (a site without a twin: no status, no limits)."""


class RedisTwinReader:
    """Member sites and their live twin, read from the Redis hashes the telemetry dataflow writes."""

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
