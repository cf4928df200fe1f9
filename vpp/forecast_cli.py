"""``vpp forecast backtest``: a rolling-origin backtest on a pinned real series, as a table by horizon."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from core.config import Settings

if TYPE_CHECKING:
    from bench import forecast as forecast_bench

forecast_app = typer.Typer(no_args_is_help=True, help="Forecasts: backtests on real series.")
console = Console()
log = logging.getLogger("vpp.forecast")
err_console = Console(stderr=True)


def report_table(report: forecast_bench.Report) -> Table:
    """One row per model and horizon bucket; MAPE blank where the series crosses zero."""
    from bench.forecast import REFIT_EVERY

    table = Table(title=f"{report.dataset}: {report.origins} daily origins, {report.horizon} steps of "
                        f"{report.step_min:g} min ahead, refit every {REFIT_EVERY} origins")
    columns = ("model", "horizon", "MAE", "MAPE%", "MASE", "rMAE", "in 80%", "refit s", "fc ms")
    for column in columns:
        text = column in ("model", "horizon")
        table.add_column(column, justify="left" if text else "right", no_wrap=text)
    for model in report.models:
        for i, row in enumerate(model.buckets):
            first = i == 0
            table.add_row(
                model.model if first else "", row.label, f"{row.mae:.4g}",
                "" if row.mape_pct is None else f"{row.mape_pct:.2f}", f"{row.mase:.3f}", f"{row.rmae:.3f}",
                f"{row.coverage_80:.0%}", f"{model.refit_s:.2f}" if first else "",
                f"{model.forecast_ms:.1f}" if first else "",
                end_section=row.label == "all",
            )
    return table


@forecast_app.command("backtest")
def backtest_command(
    dataset: str = typer.Option(..., "--dataset", help="taylor, simbench:COLUMN (e.g. "
                                "simbench:mv_urban_pload) or smard:ZONE:YEAR (e.g. smard:DE:2018)."),
    models: Annotated[list[str] | None, typer.Option(
        "--model", help="Model(s) beside the naive: mstl, holt-winters, sarimax (default all); repeatable.",
    )] = None,
    days: int | None = typer.Option(None, "--days", min=1,
                                    help="Daily origins at the end of the series; default every day after "
                                    "an 8-week warm-up (28 for taylor)."),
) -> None:
    """Rolling-origin backtest with no look-ahead: error by horizon against the naive, to bench/results/."""
    from bench import forecast as forecast_bench
    from vpp.datasets import DatasetError

    try:
        loaded = forecast_bench.load(dataset, Settings().datasets_dir)
        with console.status(f"backtesting {dataset}") as status:
            origins = days or (28 if dataset == "taylor" else None)
            report = forecast_bench.run_backtest(loaded, models or list(forecast_bench.MODELS), origins,
                                                 status.update)
    except (DatasetError, ValueError) as exc:
        err_console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(code=1) from exc
    console.print(report_table(report))
    for model in report.models:
        for note in model.notes:
            console.print(f"[yellow]{model.model}:[/] {note}")
    console.print(f"written to {forecast_bench.write_report(report)}")


@forecast_app.command("node")
def node_command(
    node_id: str = typer.Argument(help="The node whose history to forecast (node_minute)."),
    series: str = typer.Option("load", "--series", help="load or solar."),
) -> None:
    """Forecast a node's load or solar a day ahead at 15 minutes now, and store the run in ClickHouse."""
    from datetime import UTC, datetime

    from core import history
    from forecast.clean import GapTooLongError, InsufficientHistoryError
    from vpp.forecast_service import SERIES_KINDS, forecast_node

    by_name = {kind.removeprefix("node_"): kind for kind in SERIES_KINDS}
    if series not in by_name:
        err_console.print(f"[red]error:[/] --series is load or solar, not {series!r}")
        raise typer.Exit(code=2)
    settings = Settings()
    try:
        with history.store_for(settings) as store:
            issued = forecast_node(store, node_id, by_name[series], datetime.now(UTC))
    except (GapTooLongError, InsufficientHistoryError) as exc:
        err_console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(code=1) from exc
    run = issued.run
    console.print(f"run {run.run_id}: {run.model}, {run.horizon_steps} x {run.step_s // 60} min from "
                  f"{run.first_target.isoformat()}; {issued.filled.describe()}")
    if run.note:
        console.print(f"[yellow]{run.note}[/]")


def _regions(settings: Settings) -> list[str]:
    """The price regions: the asset registry's region nodes."""
    from assets.loader import restore_fleet

    fleet = restore_fleet(settings)
    return [] if fleet is None else sorted(
        n.node_id for n in fleet.registry.nodes.values() if n.kind == "region")


@forecast_app.command("market")
def market_command(
    regions: Annotated[list[str] | None, typer.Option(
        "--region", help="Price region(s); default every region node of the asset registry.")] = None,
    once: bool = typer.Option(False, "--once", help="Write what is published now, then exit."),
) -> None:
    """The simulated day-ahead market: replay VPP_MARKET_PRICE_SERIES into market_prices, day by day."""
    import time
    from datetime import UTC, datetime

    from core import history
    from core.metrics_server import serve_metrics
    from vpp.market_feed import MarketFeed, MarketFeedError, next_publication

    settings = Settings()
    if not once:
        serve_metrics(settings)
    try:
        feed = MarketFeed.from_settings(settings, regions or _regions(settings))
    except MarketFeedError as exc:
        err_console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(code=1) from exc
    with history.store_for(settings) as store:
        end = feed.publish(store, datetime.now(UTC), weeks=settings.market_history_weeks)
        while True:
            # A long-running service: its events are log lines (VPP_LOG_FORMAT), one per publication.
            log.info("%s (simulated) for %s: prices published up to %s", feed.series.name,
                     ", ".join(feed.regions), end.isoformat())
            if once:
                return
            due = next_publication(datetime.now(UTC), feed.series.tz, feed.publish_at)
            time.sleep(max(0.0, (due - datetime.now(UTC)).total_seconds()) + 1)
            end = feed.publish(store, datetime.now(UTC), since=end)


@forecast_app.command("price")
def price_command(region: str = typer.Argument(help="The price region (market_prices.region).")) -> None:
    """Forecast a region's price for the 48 hours after the last published one; store and publish it."""
    from datetime import UTC, datetime

    from confluent_kafka import Producer

    from core import history, kafka
    from forecast.clean import GapTooLongError, InsufficientHistoryError
    from schemas import packaged_codec
    from vpp.forecast_service import PublishError, forecast_price, publish_price

    settings = Settings()
    try:
        with history.store_for(settings) as store:
            issued = forecast_price(store, region, datetime.now(UTC))
        publish_price(Producer(kafka.client_config(settings)), packaged_codec(), issued)
    except (GapTooLongError, InsufficientHistoryError, PublishError) as exc:
        err_console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(code=1) from exc
    run = issued.run
    console.print(f"run {run.run_id}: {run.model}, {run.horizon_steps} h from "
                  f"{run.first_target.isoformat()}, published on prices.forecast; {issued.filled.describe()}")
    if run.note:
        console.print(f"[yellow]{run.note}[/]")


@forecast_app.command("serve")
def serve_command(
    kinds: str = typer.Option("feeder,substation,region", "--kinds",
                              help="Comma-separated node kinds to forecast."),
    series: str = typer.Option("load,solar", "--series", help="load, solar or both."),
    every_min: int | None = typer.Option(None, "--every-min", min=1,
                                         help="Minutes between rounds (default VPP_FORECAST_EVERY_MIN)."),
    prices: bool = typer.Option(True, "--prices/--no-prices",
                                help="Also forecast and publish each priced region's price."),
    once: bool = typer.Option(False, "--once", help="One round now, then exit."),
) -> None:
    """Forecast every node of the given kinds, and every priced region, on a schedule, until stopped."""
    import time
    from datetime import UTC, datetime

    from confluent_kafka import Producer

    from assets.loader import restore_fleet
    from core import history, kafka
    from core.metrics_server import serve_metrics
    from forecast.clean import GapTooLongError, InsufficientHistoryError
    from schemas import packaged_codec
    from vpp.forecast_service import SERIES_KINDS, PublishError, forecast_price, forecast_round, publish_price

    settings = Settings()
    if not once:
        serve_metrics(settings)
    wanted = [kind for kind in SERIES_KINDS if kind.removeprefix("node_") in series.split(",")]
    if not wanted:
        err_console.print(f"[red]error:[/] --series is load, solar or both, not {series!r}")
        raise typer.Exit(code=2)
    producer, codec = Producer(kafka.client_config(settings)), packaged_codec()
    with history.store_for(settings) as store:
        while True:
            fleet = restore_fleet(settings)
            nodes = [] if fleet is None else sorted(
                n.node_id for n in fleet.registry.nodes.values() if n.kind in kinds.split(","))
            now = datetime.now(UTC)
            done = forecast_round(store, nodes, wanted, now)
            # A long-running service: one log line per event (VPP_LOG_FORMAT), not wrapped console text.
            log.info("round at %s: %d run(s) for %d node(s); %d refused", now.isoformat(timespec="seconds"),
                     len(done.issued), len(nodes), len(done.refused))
            for key, reason in sorted(done.refused.items())[:10]:
                log.warning("%s refused: %s", key, reason)
            for region in store.market_regions() if prices else []:
                try:
                    issued = forecast_price(store, region, now)
                    publish_price(producer, codec, issued)
                    log.info("price %s: %s from %s", region, issued.run.model,
                             issued.run.first_target.isoformat())
                except (GapTooLongError, InsufficientHistoryError, PublishError) as exc:
                    log.warning("price %s: %s", region, exc)  # the next round tries again
            if once:
                return
            period = (every_min or settings.forecast_every_min) * 60
            time.sleep(period - time.time() % period)
