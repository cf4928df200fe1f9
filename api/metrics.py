"""Prometheus metrics of the API (requests and latency per route, the ``/metrics`` page) and its access log.

A plain ASGI middleware rather than Starlette's ``BaseHTTPMiddleware``: it
adds microseconds, not a task per request, which matters on the live-read
hot path. Routes are labelled by their template (``/v1/nodes/{node_id}``),
never the raw path, so a scan of ids cannot blow up the label set. The same
timing gives the access log: one INFO line per request on ``vpp.api.access``
(method, path, status, duration_ms; :mod:`core.logs` sets the format).
"""

from __future__ import annotations

import logging
import time
from functools import lru_cache

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.logs import ACCESS_LOGGER

REQUESTS = Counter("vpp_api_requests_total", "HTTP requests answered, by route, method and status.",
                   ["route", "method", "status"])
LATENCY = Histogram("vpp_api_request_seconds", "Time to answer an HTTP request (streams: their lifetime).",
                    ["route", "method"],
                    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0))
access_log = logging.getLogger(ACCESS_LOGGER)


@lru_cache(maxsize=1024)
def _series(route: str, method: str, status: int) -> tuple[Histogram, Counter]:
    """The latency and count series of one label set, looked up once (``labels()`` hashes and locks)."""
    return LATENCY.labels(route, method), REQUESTS.labels(route, method, str(status))


class MetricsMiddleware:
    """Count, time and log every HTTP request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            seconds = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", "unmatched")
            latency, count = _series(route, scope["method"], status)
            latency.observe(seconds)
            count.inc()
            if access_log.isEnabledFor(logging.INFO):
                # The path without its query string: tokens may travel in it (?token= for SSE).
                access_log.info("%s %s %d %.1f ms", scope["method"], scope["path"], status, seconds * 1000,
                                extra={"method": scope["method"], "path": scope["path"], "status": status,
                                       "duration_ms": round(seconds * 1000, 2)})
