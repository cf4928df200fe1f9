"""Prometheus /metrics for a service process that has no web server of its own.

The dataflows get theirs from Bytewax, the gateway and the API from their own servers; the
bidding worker, the forecast service and the simulated market call :func:`serve_metrics` at
start, so that in a cluster each pod can be scraped and probed (k8s: port ``metrics``, 3030).
"""

from __future__ import annotations

import logging

from prometheus_client import start_http_server

from core.config import Settings

log = logging.getLogger(__name__)


def serve_metrics(settings: Settings) -> int | None:
    """Serve this process's metrics on ``VPP_METRICS_PORT`` in a daemon thread; the port, or None.

    None when unset, and when the port is taken (several local services given the same
    ``VPP_METRICS_PORT``): metrics are worth a warning, not the service.
    """
    if settings.metrics_port is None:
        return None
    try:
        start_http_server(settings.metrics_port, addr=settings.host)
    except OSError as exc:
        log.warning("no /metrics: port %s on %s is not free (%s)", settings.metrics_port, settings.host, exc)
        return None
    return settings.metrics_port
