"""``vpp bench simulator``: what the fleet simulator costs per site-second, this tree against a baseline tree.

The simulator (``python -m edge_gateway.simulate``, WebSocket transport, Avro
frames, one sample per site and second) talks to a sink: a WebSocket server in
a process of its own that reads every frame and, like the gateway, tells each
connection every ``ACK_PERIOD_S`` how many of its frames are safe (the
``delivered`` frames the simulator decodes). Nothing else runs, so the
simulator process's CPU (user and system, from ``/proc``) over a window once
every site is connected, divided by the telemetry frames the sink received in
it, is the simulator's cost per site-second.

With ``VPP_BENCH_SIM_BASELINE`` (the root of another checkout, e.g. ``main``
extracted with ``git archive``) the baseline's simulator runs against the same
sink, alternated with this tree's (A B A B), so both see the same machine.
Figures per size: ``cpu_us_per_site_s_<tree>_<n>`` (median of the rounds),
``frames_per_s_<tree>_<n>`` and ``speedup_<n>`` (baseline over this tree).
``VPP_BENCH_SIM_SITES`` (comma-separated) and ``VPP_BENCH_SIM_WINDOW_S``
override the sizes (1,000 and 5,000; ``--quick``: 200) and the window (20 s).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.e2e import cpu_seconds
from bench.local import free_port, private_settings
from edge_gateway.server import ACK_PERIOD_S
from edge_gateway.sim_transports import raise_fd_limit
from edge_gateway.wire import delivered_frame
from vpp.dataflows import settings_env

ROUNDS = 2
THIS_TREE = Path(__file__).resolve().parent.parent


async def _sink(port: int) -> None:
    """Accept every device, count its frames, tell it what is delivered; print totals every second."""
    from websockets import ConnectionClosed
    from websockets.asyncio.server import ServerConnection, serve

    counts: dict[ServerConnection, list[int]] = {}  # frames received, count told
    frames = 0

    async def handler(ws: ServerConnection) -> None:
        nonlocal frames
        state = counts[ws] = [0, 0]
        try:
            async for _ in ws:
                state[0] += 1
                frames += 1
        except ConnectionClosed:
            pass  # a simulator stopped mid-frame
        finally:
            del counts[ws]

    async def tell() -> None:
        while True:
            await asyncio.sleep(ACK_PERIOD_S)
            for ws, state in list(counts.items()):
                if state[0] > state[1]:
                    state[1] = state[0]
                    try:
                        await ws.send(delivered_frame(state[0]))
                    except ConnectionClosed:
                        continue  # a device gone mid-send: nothing to tell

    # A patient handshake: on a busy machine a refused device backs off and skews the window.
    async with serve(handler, "127.0.0.1", port, compression=None, max_queue=None, open_timeout=120,
                     ping_interval=None):
        teller = asyncio.create_task(tell())
        while not teller.done():
            await asyncio.sleep(1.0)
            print(json.dumps({"connections": len(counts), "frames": frames}), flush=True)


class Sink:
    """The sink process and its latest totals."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process = subprocess.Popen([sys.executable, "-m", "bench.simulator", "--sink", str(self.port)],
                                        stdout=subprocess.PIPE, cwd=THIS_TREE)
        self.connections = 0
        self.frames = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            totals = json.loads(line)
            self.connections, self.frames = totals["connections"], totals["frames"]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def measure(tree: Path, sink: Sink, env: dict[str, str], sites: int, window_s: float) -> tuple[float, float]:
    """Run the simulator of ``tree`` for ``sites``; (CPU microseconds per site-second, frames per second)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "edge_gateway.simulate", "--sites", str(sites), "--speed", "1", "--interval",
         "1", "--url", f"ws://127.0.0.1:{sink.port}"],
        env={**env, "PYTHONPATH": str(tree)}, cwd=tree, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300 + sites / 10
        while sink.connections < sites:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{tree}: {sink.connections} of {sites} sites connected")
            time.sleep(0.5)
        time.sleep(5)  # the connections' start-up bursts pass
        cpu0, frames0, t0 = cpu_seconds(process.pid), sink.frames, time.monotonic()
        time.sleep(window_s)
        cpu1, frames1, t1 = cpu_seconds(process.pid), sink.frames, time.monotonic()
        if cpu0 is None or cpu1 is None:
            raise RuntimeError(f"{tree}: the simulator exited")
        frames = frames1 - frames0
        return 1e6 * (cpu1 - cpu0) / max(1, frames), frames / (t1 - t0)
    finally:
        process.terminate()
        process.wait(30)
        deadline = time.monotonic() + 60
        while sink.connections and time.monotonic() < deadline:  # the next run starts from an empty sink
            time.sleep(0.2)


#: Steps the fleet of the tree on ``PYTHONPATH`` in-process and encodes its frames: CPU per site-step.
_CORE = """
import sys, time
from datetime import UTC, datetime, timedelta
from assets.generator import generate_fleet
from edge_gateway.simulator import FleetSimulator
from schemas import packaged_codec
codec = packaged_codec()
try:
    from edge_gateway.telemetry_frames import TelemetryEncoder
    encode = TelemetryEncoder(codec).encode
except ImportError:
    def encode(record):
        return codec.encode("SiteTelemetry", record)
sites, steps = int(sys.argv[1]), int(sys.argv[2])
start = datetime.now(UTC)
fleet = FleetSimulator(list(generate_fleet(start, sites, 0).sites.values()), 0, start)
times = [0.0, 0.0]
for k in range(1, steps + 1):
    t0 = time.process_time()
    records = fleet.step(1.0, start + timedelta(seconds=k))
    t1 = time.process_time()
    frames = [encode(r) for r in records]
    t2 = time.process_time()
    times[0] += t1 - t0
    times[1] += t2 - t1
print(1e6 * times[0] / (sites * steps), 1e6 * times[1] / (sites * steps))
"""


def core_cost(tree: Path, sites: int, steps: int) -> tuple[float, float]:
    """(physics, encoding) CPU microseconds per site-step of ``tree``'s simulator core, in-process."""
    out = subprocess.run([sys.executable, "-c", _CORE, str(sites), str(steps)], env={
        **os.environ, "PYTHONPATH": str(tree)}, cwd=tree, check=True, capture_output=True, text=True).stdout
    physics_us, encode_us = (float(x) for x in out.split())
    return physics_us, encode_us


def run(quick: bool) -> dict[str, float]:
    """Alternate the trees for every size; figures as in the module docstring."""
    given = os.environ.get("VPP_BENCH_SIM_SITES")
    sizes = [int(x) for x in given.split(",")] if given else [200] if quick else [1_000, 5_000]
    window_s = float(os.environ.get("VPP_BENCH_SIM_WINDOW_S", "5" if quick else "20"))
    baseline = os.environ.get("VPP_BENCH_SIM_BASELINE")
    trees = {"new": THIS_TREE, **({"base": Path(baseline).resolve()} if baseline else {})}
    raise_fd_limit()
    figures: dict[str, float] = {"window_s": window_s, "load_avg_1m": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="vpp-bench-sim-") as directory:
        env = {**os.environ, **settings_env(private_settings(Path(directory)))}
        sink = Sink()
        try:
            for sites in sizes:
                for _ in range(ROUNDS):  # the core alone: no sockets, so little noise from the sink
                    for name in sorted(trees):
                        physics_us, encode_us = core_cost(trees[name], sites, 5 if quick else 20)
                        figures[f"physics_us_per_site_s_{name}_{sites}"] = min(
                            physics_us, figures.get(f"physics_us_per_site_s_{name}_{sites}", physics_us))
                        figures[f"encode_us_per_site_s_{name}_{sites}"] = min(
                            encode_us, figures.get(f"encode_us_per_site_s_{name}_{sites}", encode_us))
                costs: dict[str, list[float]] = {name: [] for name in trees}
                rates: dict[str, list[float]] = {name: [] for name in trees}
                for _ in range(1 if quick else ROUNDS):
                    for name in sorted(trees):  # base before new in every round
                        cost, rate = measure(trees[name], sink, env, sites, window_s)
                        costs[name].append(cost)
                        rates[name].append(rate)
                for name in trees:
                    figures[f"cpu_us_per_site_s_{name}_{sites}"] = statistics.median(costs[name])
                    figures[f"frames_per_s_{name}_{sites}"] = statistics.median(rates[name])
                if "base" in trees:
                    figures[f"speedup_{sites}"] = (figures[f"cpu_us_per_site_s_base_{sites}"]
                                                   / figures[f"cpu_us_per_site_s_new_{sites}"])
        finally:
            sink.stop()
    figures["load_avg_1m_end"] = os.getloadavg()[0]
    return figures


if __name__ == "__main__":
    if sys.argv[1:2] == ["--sink"]:
        raise_fd_limit()
        asyncio.run(_sink(int(sys.argv[2])))
