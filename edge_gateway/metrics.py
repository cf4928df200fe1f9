"""The gateway's Prometheus metrics, in a registry of their own.

One registry per gateway instance (not the process-global one) so that tests
and benchmarks can run several instances in one process and read each one's
figures.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class GatewayMetrics:
    """Connections, frames in and out, rejects by reason, command routing and produce latency."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.connections = Gauge("vpp_gateway_connections", "Open device connections.",
                                 registry=self.registry)
        self.frames_in = Counter("vpp_gateway_frames_in", "Device frames accepted and produced, by kind.",
                                 ["kind"], registry=self.registry)
        self.frames_out = Counter("vpp_gateway_frames_out", "Frames sent to devices, by kind.",
                                  ["kind"], registry=self.registry)
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
            "vpp_gateway_produce_latency_seconds", "From produce() to the broker's delivery report.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=self.registry)

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        """A sample's current value (0 when absent), e.g. ``value("vpp_gateway_rejects_total", ...)``."""
        return self.registry.get_sample_value(name, labels or {}) or 0.0
