"""``vpp bid``: ask for bidding runs, watch them, replay them, and run the worker pool.

    vpp bid run ASSET [--region R] [--power-mw 1] [--energy-mwh 2] [--soc-mwh 1] [--wait]
                                        bid the asset into the next interval whose gate is open
                                        (ASSET node:NODE_ID bids a VPP node, sized from its aggregate)
    vpp bid status [--json]             every run on workflow.events: status, flags, tasks
    vpp bid replay WF_ID                replay the journal (the state it rebuilds), re-run optimise from
                                        the stored artifacts and compare hashes
    vpp bid worker                      one member of the worker pool (run several for more)
    vpp bid schedule                    a run of every asset in VPP_BID_ASSETS every VPP_BID_EVERY_S

The orchestrator is the ``bidding`` dataflow (``python -m bytewax.run dataflows.bidding:flow``).
"""

from __future__ import annotations

import json
import logging
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from core.config import Settings
from core.logs import configure_logging

if TYPE_CHECKING:
    from bidding.workflow import Workflow
    from vpp.bid_worker import Faults

#: The names ``--with-model`` takes: the keys of :data:`bidding.remodel.FORECAST_MODELS` (a test keeps them
#: equal), spelt out here so ``vpp --help`` need not import the optimiser.
MODEL_NAMES = ("daily", "naive", "mstl")

bid_app = typer.Typer(no_args_is_help=True, help="The Autobidder: bidding runs, their journal, the workers.")
console = Console()
err_console = Console(stderr=True)


def _state_row(state: Workflow) -> dict[str, object]:
    start = state.start
    return {"workflow_id": state.workflow_id, "status": state.status.value,
            "interval_start": start.interval_start.isoformat() if start else None,
            "flags": list(state.flags), "ignored": state.ignored,
            "tasks": [{"step": t.step, "attempt": t.attempt, "output": t.output, "failed": t.failed}
                      for t in state.tasks]}


@bid_app.command("run")
def run_command(
    asset_id: str = typer.Argument(help="The asset to bid: a battery (its figures are the options), or a VPP "
                                   "node as node:NODE_ID (sized from its live aggregate and plan)."),
    region: str = typer.Option(None, "--region", help="Price region; default the first with prices."),
    power_mw: float = typer.Option(1.0, "--power-mw", min=0.0),
    energy_mwh: float = typer.Option(2.0, "--energy-mwh", min=0.0),
    soc_mwh: float = typer.Option(None, "--soc-mwh", help="State of charge now; default half full."),
    rebid: int = typer.Option(0, "--rebid", min=0, help="Resubmission number for the same interval."),
    wait: float = typer.Option(0.0, "--wait", help="Seconds to wait for the run to end (0: do not wait)."),
) -> None:
    """Bid the asset into the next interval whose gate closes after the run's deadlines."""
    import redis
    from confluent_kafka import Producer

    from bidding.node_asset import NodeUnavailableError
    from bidding.workflow import FINAL
    from core import kafka
    from core.bid_history import BidStore
    from core.history import HistoryStore, connect
    from vpp.bid_runs import next_interval, read_journal, request_run, run_inputs, runs

    settings = Settings()
    client = connect(settings)
    history = HistoryStore(client, settings.clickhouse_database)
    chosen = region or next(iter(history.market_regions()), None)
    if chosen is None:
        err_console.print("[red]error:[/] no market prices stored: start the market feed (`vpp up`)")
        raise typer.Exit(code=2)
    now = datetime.now(UTC)
    recent = history.market_prices(chosen, now - timedelta(days=2), now + timedelta(days=2))
    step = timedelta(minutes=recent[-1].interval_minutes if recent else 60)
    lead = timedelta(seconds=settings.bid_gate_lead_s + settings.bid_forecast_deadline_s + 30)
    interval = next_interval(now, step, lead)
    live = redis.Redis.from_url(settings.redis)
    try:
        run = run_inputs(settings, live, asset_id, chosen, interval, step, power_mw=power_mw,
                         energy_mwh=energy_mwh, soc_mwh=soc_mwh)
    except NodeUnavailableError as exc:
        err_console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(code=2) from None
    for note in run.notes:
        err_console.print(f"[yellow]{asset_id}:[/] {note}")
    store = BidStore(client, settings.clickhouse_database)
    producer = Producer(kafka.client_config(settings))
    requested = request_run(settings, store, producer, live, run, now, rebid)
    gate = requested.start.gate_closure
    console.print(f"requested {requested.workflow_id}: gate closes {gate:%H:%M:%S} UTC")
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        state = runs(read_journal(settings, requested.workflow_id)).get(requested.workflow_id)
        if state is not None and state.status in FINAL:
            console.print_json(json.dumps(_state_row(state)))
            return
        time.sleep(1)
    if wait:
        err_console.print("[yellow]the run has not ended yet[/]")
        raise typer.Exit(code=1)


@bid_app.command("status")
def status_command(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Every run on workflow.events, replayed from its journal."""
    from vpp.bid_runs import read_journal, runs

    states = runs(read_journal(Settings()))
    rows = [_state_row(s) for s in states.values()]
    if as_json:
        typer.echo(json.dumps(rows))
        return
    table = Table(title=f"{len(rows)} bidding run(s)")
    for column in ("workflow", "interval (UTC)", "status", "steps done", "flags"):
        table.add_column(column)
    for state in states.values():
        done = sum(1 for t in state.tasks if t.output)
        when = f"{state.start.interval_start:%Y-%m-%d %H:%M}" if state.start else ""
        table.add_row(state.workflow_id, when, state.status.value, str(done), "; ".join(state.flags))
    console.print(table)


@bid_app.command("replay")
def replay_command(workflow_id: str = typer.Argument(help="The run to replay.")) -> None:
    """Replay the run's journal; re-run optimise from its stored inputs and compare output hashes."""
    from bidding import journal
    from core.bid_history import BidStore
    from core.history import connect
    from vpp.bid_runs import read_journal, replay_optimise

    settings = Settings()
    entries = read_journal(settings, workflow_id)
    if not entries:
        err_console.print(f"[red]error:[/] no journal for {workflow_id} on workflow.events")
        raise typer.Exit(code=1)
    state = journal.replay_entries(workflow_id, entries)
    recoveries = [e for e in journal.effective(entries) if e.event_type == journal.RECOVERED]
    console.print_json(json.dumps({**_state_row(state), "journal_entries": len(journal.effective(entries)),
                                   "recoveries": len(recoveries)}))
    client = connect(settings)
    replayed = replay_optimise(BidStore(client, settings.clickhouse_database), state)
    if replayed is None:
        console.print("optimise did not run in this run: nothing to re-run")
        return
    verdict = "identical" if replayed.identical else "DIFFERENT"
    console.print(f"optimise re-run from stored artifacts: {verdict} (stored {replayed.stored[:12]}, "
                  f"now {replayed.recomputed[:12]})")
    if not replayed.identical:
        raise typer.Exit(code=1)


def _when(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not an ISO 8601 time") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def backtest_command(
    start: Annotated[str, typer.Option("--from", help="Decisions made from this time (ISO 8601, UTC).")],
    end: Annotated[str, typer.Option("--to", help="... up to this time (exclusive).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    with_model: Annotated[str | None, typer.Option(
        "--with-model", help=f"Re-forecast energy with this model ({', '.join(MODEL_NAMES)}) from each "
        "run's own market data before deciding again.")] = None,
) -> None:
    """Replay the stored bidding decisions of a window through today's logic: what would change."""
    from bidding.remodel import model_named
    from core.bid_history import BidStore
    from core.history import HistoryStore, connect
    from vpp.bid_backtest import backtest, decision_rows, report

    try:
        model = None if with_model is None else model_named(with_model)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--with-model") from None
    settings = Settings()
    client = connect(settings)
    store = BidStore(client, settings.clickhouse_database)
    replayed = backtest(store, HistoryStore(client, settings.clickhouse_database), _when(start), _when(end),
                        model)
    changed = [r for r in replayed if not r.identical]
    rows = decision_rows(replayed)
    # kept, so the API (GET /v1/bidding/backtests) and the console can show it later
    kept = report(replayed, _when(start), _when(end), datetime.now(UTC))
    store.put_backtest(kept)
    both = [r for r in replayed if r.stored_revenue_eur is not None and r.replayed_revenue_eur is not None]
    totals = {"stored_revenue_eur": sum(r.stored_revenue_eur or 0.0 for r in both),
              "replayed_revenue_eur": sum(r.replayed_revenue_eur or 0.0 for r in both), "compared": len(both)}
    if as_json:
        typer.echo(json.dumps({"report_id": kept.report_id, "decisions": len(rows), "changed": len(changed),
                               "model": with_model or "stored", **totals, "runs": rows}))
    else:
        title = f"{len(rows)} decision(s) replayed with {with_model or 'the stored forecasts'}, " \
                f"{len(changed)} would change (report {kept.report_id})"
        table = Table(title=title)
        for column in ("workflow", "interval (UTC)", "same bid", "stored EUR", "today EUR", "note"):
            table.add_column(column)
        for r in replayed:
            table.add_row(r.workflow_id, f"{r.interval_start:%Y-%m-%d %H:%M}", "yes" if r.identical else "NO",
                          _eur(r.stored_revenue_eur), _eur(r.replayed_revenue_eur), r.note)
        console.print(table)
        console.print(f"cleared both ways: {totals['compared']} run(s), stored "
                      f"{totals['stored_revenue_eur']:,.2f} EUR, "
                      f"replayed {totals['replayed_revenue_eur']:,.2f} EUR")


def _eur(value: float | None) -> str:
    return "not cleared" if value is None else f"{value:,.2f}"


def _faults(delay: list[str], corrupt: list[str], scope: str) -> Faults:
    from vpp.bid_worker import Faults

    delays: dict[str, float] = {}
    for item in delay:
        step, _, seconds = item.partition("=")
        try:
            delays[step] = float(seconds)
        except ValueError:
            raise typer.BadParameter(f"{item!r} is not STEP=SECONDS") from None
    return Faults(delays, frozenset(corrupt), scope)


def _until_signalled() -> Callable[[], bool]:
    """Whether SIGTERM or SIGINT has come, for a service loop that ends between two pieces of work."""
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    return lambda: stopping


@bid_app.command("schedule")
def schedule_command() -> None:
    """Ask for a run of every asset in VPP_BID_ASSETS in every VPP_BID_EVERY_S slot, until SIGTERM."""
    import redis
    from confluent_kafka import Producer

    from core import kafka
    from core.bid_history import BidStore
    from core.history import HistoryStore, connect
    from core.metrics_server import serve_metrics
    from vpp.bid_scheduler import Scheduler, assets

    stopped = _until_signalled()
    settings = Settings()
    configure_logging(settings)
    serve_metrics(settings)
    client = connect(settings)
    scheduler = Scheduler(settings, BidStore(client, settings.clickhouse_database),
                          HistoryStore(client, settings.clickhouse_database),
                          Producer(kafka.client_config(settings)), redis.Redis.from_url(settings.redis))
    if not assets(settings):
        logging.getLogger(__name__).info("VPP_BID_ASSETS is empty: no runs will be asked for")
    scheduler.run(stopped)


@bid_app.command("worker")
def worker_command(
    delay: Annotated[list[str] | None, typer.Option(
        "--delay", help="Test hook: STEP=SECONDS to sleep before the work.")] = None,
    corrupt: Annotated[list[str] | None, typer.Option(
        "--corrupt", help="Test hook: corrupt STEP's first attempt.")] = None,
    scope: Annotated[str, typer.Option(
        "--fault-scope", help="Test hook: the hooks apply only to runs whose id contains this.")] = "",
) -> None:
    """One member of the worker pool: take tasks from workflow.tasks until SIGTERM."""
    from core.metrics_server import serve_metrics
    from vpp.bid_worker import Worker

    stopped = _until_signalled()
    settings = Settings()
    configure_logging(settings)
    serve_metrics(settings)
    Worker(settings, _faults(delay or [], corrupt or [], scope)).run(stopped)
