"""The probes of a dataflow process (``/livez``, ``/readyz``: :mod:`operators.readiness`), from settings.

Each flow module starts them when ``bytewax.run`` reads its ``flow``, on its
own port (``VPP_TELEMETRY_PROBE_PORT``, ``VPP_CONTROL_PROBE_PORT``,
``VPP_PLANS_PROBE_PORT``, ``VPP_BIDDING_PROBE_PORT``) bound on ``VPP_HOST``
(127.0.0.1 locally, 0.0.0.0 in the Kubernetes ConfigMap), unlike Bytewax's own
metrics server, which binds every interface.
"""

from __future__ import annotations

from core import kafka
from core.config import Settings
from operators.readiness import ProbeServer, serve_probes

#: How long one metadata request to the broker may take before it counts as unreachable.
KAFKA_CHECK_TIMEOUT_S = 3.0


def start_probes(settings: Settings, port: int) -> ProbeServer | None:
    """Serve this process's probes on ``port`` (0: none), checking the configured broker."""
    client = kafka.admin(settings)

    def check_kafka() -> None:
        client.list_topics(timeout=KAFKA_CHECK_TIMEOUT_S)

    return serve_probes(settings.host, port, settings.dataflow_stall_s, settings.dataflow_live_stall_s,
                        check_kafka)
