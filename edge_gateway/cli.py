"""Command lines of the edge: ``vpp token``, ``vpp gateway``, ``vpp simulate`` (also as ``python -m``)."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import typer
from rich.console import Console

from core.config import Settings
from core.logs import configure_logging

console = Console()
err_console = Console(stderr=True)

T = TypeVar("T")

#: Net allocations of tracked objects between collections of the young generation (see run_on_uvloop).
GC_YOUNG_THRESHOLD = 20_000


def run_on_uvloop(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` as ``asyncio.run`` would, on uvloop's event loop.

    The gateway and the simulator hold thousands of connections that each carry a frame or two a
    second, so the loop's own work per connection (a readiness event, a read, a callback, a write)
    is a large part of what they spend; uvloop does it in C. Ctrl-C cancels ``main`` and raises
    KeyboardInterrupt, as with ``asyncio.run``.

    The garbage collector's young generation is collected every ``GC_YOUNG_THRESHOLD`` net
    allocations instead of CPython's 700: the frames in flight (each a few small objects, alive
    until Kafka confirms them) crossed 700 several times a second, and each young collection
    promoted them towards the old generation, whose full collections (every half minute or so,
    ~0.14 s each over the connections' quarter million objects at 2,000 sites) stalled the loop.
    Together about 3 us of the gateway's CPU per reading; with the higher threshold, none ran
    in a 40 s window. Nothing here relies on cycles being freed early.
    """
    import uvloop

    gc.set_threshold(GC_YOUNG_THRESHOLD)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


token_app = typer.Typer(no_args_is_help=True, help="Device tokens for the edge gateway: issue and revoke.")


@token_app.command("issue")
def token_issue(
    site_id: str = typer.Argument(help="The site the token speaks for."),
    ttl_hours: float | None = typer.Option(None, "--ttl-hours", min=0.001,
                                           help="Lifetime (default: settings)."),
    region: str | None = typer.Option(None, "--region", help="Price region the site's forecasts come from."),
) -> None:
    """Sign a device token for SITE_ID and print it with its jti (what `vpp token revoke` takes)."""
    from core.device_tokens import issue_token

    ttl = timedelta(hours=ttl_hours) if ttl_hours is not None else None
    issued = issue_token(Settings(), site_id, region=region, ttl=ttl)
    console.print(f"jti {issued.claims.jti}, expires {issued.claims.expires_at.isoformat()}", highlight=False)
    print(issued.token)  # noqa: T201 - the token alone on stdout, for scripts


@token_app.command("revoke")
def token_revoke(jti: str = typer.Argument(help="The jti of the token to revoke.")) -> None:
    """Revoke a token: refused at connect, and open connections holding it close within a heartbeat."""
    from clickhouse_connect.driver.exceptions import ClickHouseError
    from redis.exceptions import RedisError

    from core.revocations import revoke_token

    try:
        fresh = revoke_token(Settings(), jti)
    except (RedisError, ClickHouseError, OSError) as exc:
        err_console.print(f"[red]error:[/] cannot record the revocation: {exc}; is the stack running "
                          "(`vpp stack up`)?")
        raise typer.Exit(code=1) from exc
    console.print(f"revoked {jti}" if fresh else f"{jti} was already revoked", highlight=False)


def serve_gateway(
    host: str | None = typer.Option(None, "--host", help="Interface to bind (default: settings host)."),
    port: int | None = typer.Option(None, "--port", help="WebSocket port (default: VPP_GATEWAY_PORT)."),
    metrics_port: int | None = typer.Option(
        None, "--metrics-port", help="/healthz and /metrics port (default: VPP_GATEWAY_METRICS_PORT)."),
    instance_id: str | None = typer.Option(
        None, "--instance-id", help="Unique per instance (default: host-pid)."),
) -> None:
    """Run one edge gateway instance until interrupted (refuses to start without its token secret)."""
    from core.local_secrets import MissingSecretError
    from edge_gateway.service import run_gateway

    settings = Settings()
    configure_logging(settings)
    try:
        run_on_uvloop(run_gateway(settings, host=host, port=port, metrics_port=metrics_port,
                                  instance_id=instance_id))
    except MissingSecretError as exc:
        err_console.print(f"[red]error:[/] the gateway refuses to start: {exc}", highlight=False)
        raise typer.Exit(code=2) from exc


gateway_app = typer.Typer(help="The edge gateway.")
gateway_app.command()(serve_gateway)


def simulate(
    sites: int = typer.Option(100, "--sites", min=1, max=1_000_000, help="How many sites of the fleet."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same fleet behaviour and faults."),
    speed: float | None = typer.Option(None, "--speed", min=0.001,
                                       help="Simulated time runs this many times faster."),
    interval: float | None = typer.Option(None, "--interval", min=0.001,
                                          help="Simulated seconds between samples."),
    transport: str = typer.Option("websocket", "--transport", help="websocket (via the gateway) or kafka."),
    encoding: str = typer.Option("avro", "--encoding", help="avro or json frames (websocket transport)."),
    url: str | None = typer.Option(None, "--url", help="Gateway URL (default: ws://host:gateway_port)."),
    duration: float | None = typer.Option(None, "--duration", min=0.0, help="Wall seconds to run."),
    offline: float = typer.Option(0.0, "--offline", min=0.0, max=1.0, help="Share never online."),
    flapping: float = typer.Option(0.0, "--flapping", min=0.0, max=1.0, help="Share that keep reconnecting."),
    delayed: float = typer.Option(0.0, "--delayed", min=0.0, max=1.0, help="Share whose samples come late."),
    noncompliant: float = typer.Option(0.0, "--noncompliant", min=0.0, max=1.0,
                                       help="Share that ack commands but ignore them."),
    corrupt: float = typer.Option(0.0, "--corrupt", min=0.0, max=1.0, help="Share sending some bad frames."),
) -> None:
    """Simulate a fleet of home batteries talking to the platform."""
    from edge_gateway.sim_transports import KafkaTransport, WebSocketTransport, fleet_sites, raise_fd_limit
    from edge_gateway.simulator import FaultMix, FleetSimulator, SimClock
    from edge_gateway.wire import Encoding

    if transport not in ("websocket", "kafka") or encoding not in ("avro", "json"):
        err_console.print("[red]error:[/] --transport is websocket or kafka; --encoding is avro or json")
        raise typer.Exit(code=2)
    settings = Settings()
    configure_logging(settings)
    raise_fd_limit()
    step = interval or settings.simulator_interval_s
    start = datetime.now(UTC)
    fleet = FleetSimulator(fleet_sites(settings, sites, seed), seed, start,
                           FaultMix(offline, flapping, delayed, noncompliant, corrupt))
    clock = SimClock(start, speed or settings.simulator_speed)
    runner: WebSocketTransport | KafkaTransport
    if transport == "kafka":
        runner = KafkaTransport(fleet, clock, settings, step, seed)
    else:
        target = url or f"ws://{settings.host}:{settings.gateway_port}"
        runner = WebSocketTransport(fleet, clock, settings, target, Encoding(encoding), step, seed)
    console.print(f"simulating {len(fleet.sites):,} sites over {transport}; Ctrl-C stops")
    try:
        stats = run_on_uvloop(runner.run(duration))
    except KeyboardInterrupt:
        stats = runner.stats
    console.print(stats)


simulate_app = typer.Typer(help="The fleet simulator.")
simulate_app.command()(simulate)
