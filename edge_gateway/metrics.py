"""The gateway's Prometheus metrics, in a registry of their own.

One registry per gateway instance (not the process-global one) so that tests
and benchmarks can run several instances in one process and read each one's
figures.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from edge_gateway.wire import DOWNSTREAM_TYPES, UPSTREAM

#: One produce latency in this many is observed: the distribution, without a locked histogram
#: update for every record on the delivery thread.
LATENCY_SAMPLE = 16


class KindCounter(Collector):
    """A counter by ``kind`` kept as plain ints, for what happens once per frame.

    ``counts[kind] += 1`` on the event loop costs a fraction of a ``Counter.inc`` (which takes a
    lock each time); the registry reads the ints when scraped, as ``{name}_total{kind=...}``.
    Every kind starts at 0, so the family's labels are fixed from the start.
    """

    def __init__(self, name: str, documentation: str, kinds: Iterable[str],
                 registry: CollectorRegistry) -> None:
        self._name, self._documentation = name, documentation
        self.counts = dict.fromkeys(kinds, 0)
        registry.register(self)

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(self._name, self._documentation, labels=["kind"])
        for kind, count in list(self.counts.items()):
            family.add_metric([kind], count)
        yield family


class GatewayMetrics:
    """Connections, frames in and out, rejects by reason, command routing and produce latency."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.connections = Gauge("vpp_gateway_connections", "Open device connections.",
                                 registry=self.registry)
        self.frames_in = KindCounter("vpp_gateway_frames_in", "Device frames accepted and produced, by kind.",
                                     [kind.type for kind in UPSTREAM], self.registry)
        self.frames_out = KindCounter("vpp_gateway_frames_out", "Frames sent to devices, by kind.",
                                      [*DOWNSTREAM_TYPES.values(), "delivered", "error"], self.registry)
        self.rejects = Counter("vpp_gateway_rejects", "Connections or frames refused, by reason.",
                               ["reason"], registry=self.registry)
        self.commands = Counter("vpp_gateway_commands", "Commands from commands.site, by routing outcome.",
                                ["outcome"], registry=self.registry)
        self.backpressure_waits = Counter(
            "vpp_gateway_backpressure_waits", "Times a reader waited because the producer queue was full.",
            registry=self.registry)
        self.produce_errors = Counter("vpp_gateway_produce_errors", "Records the broker did not accept.",
                                      registry=self.registry)
        self.undelivered = Gauge("vpp_gateway_undelivered_records",
                                 "Records produced with no delivery report yet (the producer queue).",
                                 registry=self.registry)
        self.delivery_stalled = Gauge(
            "vpp_gateway_delivery_stalled_seconds",
            "How long records have waited with no delivery report at all (0 while none wait).",
            registry=self.registry)
        self.oldest_undelivered = Gauge(
            "vpp_gateway_oldest_undelivered_seconds",
            "Age of the oldest record with no delivery report yet (0 while none wait).",
            registry=self.registry)
        self.producer_replacements = Counter(
            "vpp_gateway_producer_replacements",
            "Kafka producers replaced because they delivered nothing for VPP_GATEWAY_PRODUCER_REPLACE_S "
            "with records waiting (their records were reported failed: the devices send them again).",
            registry=self.registry)
        self.produce_latency = Histogram(
            "vpp_gateway_produce_latency_seconds",
            f"From produce() to the broker's delivery report (one record in {LATENCY_SAMPLE}).",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=self.registry)

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        """A sample's current value (0 when absent), e.g. ``value("vpp_gateway_rejects_total", ...)``."""
        return self.registry.get_sample_value(name, labels or {}) or 0.0
