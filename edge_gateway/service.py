"""Run a gateway instance until SIGINT/SIGTERM, then close connections and flush (the process side)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from core.config import Settings
from edge_gateway.server import Gateway


async def run_gateway(settings: Settings, *, host: str | None = None, port: int | None = None,
                      metrics_port: int | None = None, instance_id: str | None = None) -> None:
    """Serve until a termination signal; devices see 1001 (going away) and reconnect elsewhere."""
    gateway = Gateway(settings, host=host, port=port, metrics_port=metrics_port, instance_id=instance_id)
    await gateway.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    logging.getLogger(__name__).info(
        "gateway %s: devices on %d, /healthz and /metrics on %d",
        gateway.instance_id, gateway.port, gateway.metrics_port)
    await stop.wait()
    await gateway.stop()
