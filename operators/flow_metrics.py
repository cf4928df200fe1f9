"""The dataflows' own Prometheus metrics: what Bytewax's per-step item counts cannot say.

Bytewax serves every metric of the process's default registry, its own
(``bytewax_item_inp_count_total`` and ``bytewax_item_out_count_total`` per
step, batch durations) and these, on ``/metrics`` of its dataflow API
(``BYTEWAX_DATAFLOW_API_ENABLED``, port ``BYTEWAX_DATAFLOW_API_PORT``, 3030 on
Kubernetes; locally ``VPP_TELEMETRY_METRICS_PORT`` and
``VPP_CONTROL_METRICS_PORT``, :mod:`vpp.services`). A step's items are
batches; these count records:

* ``vpp_dataflow_records_in_total{flow, topic}``: Kafka records read;
* ``vpp_dataflow_dead_letters_total{flow, kind}``: records sent to
  ``telemetry.dlq``, by error kind (undecodable, key mismatch, implausible);
* ``vpp_telemetry_late_readings_total``: readings whose minute had closed
  (left out of history; the twin still takes them);
* ``vpp_telemetry_event_time_lag_seconds{shard}``: the wall clock minus a
  shard's event-time clock when it last worked, so a stalled or backlogged
  shard shows.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

RECORDS_IN = Counter("vpp_dataflow_records_in_total", "Kafka records a dataflow read, by flow and topic.",
                     ["flow", "topic"])
DEAD_LETTERS = Counter("vpp_dataflow_dead_letters_total",
                       "Records a dataflow sent to the dead-letter topic, by flow and error kind.",
                       ["flow", "kind"])
LATE_READINGS = Counter("vpp_telemetry_late_readings_total",
                        "Readings that came after their minute closed (allowed lateness passed): in the "
                        "twin, not in history.")
EVENT_TIME_LAG = Gauge("vpp_telemetry_event_time_lag_seconds",
                       "Wall clock minus a telemetry shard's event-time clock, when the shard last worked.",
                       ["shard"])

#: The flow label of each consumer name the dead letters carry.
FLOWS = {"dataflows.telemetry": "telemetry", "dataflows.control": "control"}


def flow_of(consumer: str) -> str:
    """The ``flow`` label of a dataflow's consumer name (``dataflows.telemetry`` -> ``telemetry``)."""
    return FLOWS.get(consumer, consumer)


def shard_lag(shard: int, clock_ms: int, wall_ms: int) -> None:
    """Record a shard's event-time lag; a shard that has seen no reading yet has none."""
    if clock_ms > 0:
        EVENT_TIME_LAG.labels(str(shard)).set(max(0.0, (wall_ms - clock_ms) / 1000))
