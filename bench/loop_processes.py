"""The telemetry and control dataflows as processes and a simulated fleet on a thread of its own:
what the closed-loop benches (``bench.control``, ``bench.peak_loop``) run on a stack that is up."""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

from core.config import Settings
from edge_gateway.sim_transports import KafkaTransport
from vpp.dataflows import dataflow_argv, ensure_recovery, settings_env


class LoopProcesses:
    """Both dataflows (the control flow on a recovery store, snapshotted every second) and the fleet.

    ``log_name`` names a flow's log file in the data directory; ``control_recovery`` the control
    flow's recovery store under ``recovery/``.
    """

    def __init__(self, settings: Settings, log_name: Callable[[str], str], control_recovery: str) -> None:
        self.settings = settings
        self.log_name = log_name
        self.control_recovery = control_recovery
        self.flows: dict[str, subprocess.Popen[bytes]] = {}

    @contextmanager
    def running(self, make_transport: Callable[[], KafkaTransport]) -> Iterator[KafkaTransport]:
        """Start the flows, then the fleet's transport; stop them all afterwards."""
        self.flows = {name: self.start_flow(name) for name in ("telemetry", "control")}
        transport = make_transport()
        stop = threading.Event()
        thread = threading.Thread(target=lambda: asyncio.run(_simulate(transport, stop)), daemon=True)
        thread.start()
        try:
            yield transport
        finally:
            stop.set()
            thread.join(30)
            for flow in self.flows.values():
                flow.terminate()
            for flow in self.flows.values():
                try:
                    flow.wait(20)
                except subprocess.TimeoutExpired:
                    flow.kill()

    def start_flow(self, name: str) -> subprocess.Popen[bytes]:
        recovery = None
        if name == "control":
            recovery = self.settings.data_dir / "recovery" / self.control_recovery
            ensure_recovery(recovery)
        settings = self.settings.model_copy(update={"snapshot_interval_s": 1})
        log = (self.settings.data_dir / self.log_name(name)).open("ab")
        return subprocess.Popen(dataflow_argv(name, settings, recovery=recovery),
                                env={**os.environ, **settings_env(settings)}, stdout=log, stderr=log)

    def check(self) -> None:
        """Raise if a dataflow has died, with the end of its logs."""
        for flow in self.flows.values():
            if flow.poll() is not None:
                raise RuntimeError(f"a dataflow died: {self.log_tail()}")

    def log_tail(self) -> str:
        """The end of each dataflow's log, for an error message."""
        logs = [self.settings.data_dir / self.log_name(name) for name in self.flows]
        return "\n".join(f"{log.name}: {log.read_text()[-1500:]}" for log in logs if log.exists())


async def _simulate(transport: KafkaTransport, stop: threading.Event) -> None:
    task = asyncio.create_task(transport.run(None))
    while not stop.is_set() and not task.done():
        await asyncio.sleep(0.2)
    task.cancel()
    with suppress(asyncio.CancelledError):
        await task
