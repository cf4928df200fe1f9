"""``/livez``, ``/readyz`` (and ``/healthz``, the same as ``/readyz``) and ``/metrics`` on their own port.

Served from the gateway's event loop, so ``/livez`` answering at all says the
loop runs: liveness asks nothing of Redis or Kafka, and a dependency's blip
never makes the kubelet restart the gateway. ``/readyz`` says whether the
instance can do its work now (``check``): kubelet takes it out of the load
balancer while it cannot, and puts it back when it can.

A separate port keeps probes and scrapes off the device listener (and out of
its auth). The server speaks just enough HTTP/1.1 for kubelet probes and
Prometheus: one GET per connection.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

HealthCheck = Callable[[], tuple[bool, dict[str, Any]]]


async def serve_health(host: str, port: int, check: HealthCheck,
                       registry: CollectorRegistry) -> asyncio.Server:
    """Start the probe server; ``check`` says whether the instance is healthy and why."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
            parts = request.split(b" ", 2)
            path = parts[1].split(b"?", 1)[0] if len(parts) > 1 else b""
            if path == b"/metrics":
                status, ctype, body = "200 OK", CONTENT_TYPE_LATEST, generate_latest(registry)
            elif path == b"/livez":
                status, ctype, body = "200 OK", "application/json", b'{"status": "alive"}'
            elif path in (b"/readyz", b"/healthz"):
                healthy, detail = check()
                status = "200 OK" if healthy else "503 Service Unavailable"
                ctype, body = "application/json", json.dumps(detail).encode()
            else:
                status, ctype, body = "404 Not Found", "text/plain", b"try /livez, /readyz or /metrics\n"
            head = (f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                    "Connection: close\r\n\r\n")
            writer.write(head.encode() + body)
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port)
