"""``vpp peak``: plan a node's peak day, print the plan, and send it to the control loop.

    vpp peak plan NODE [--day 2026-12-02]    plan the day (default tomorrow, UTC) and record it
    vpp peak run NODE [--day D]              execute the day (default today): follow the measured load,
                                             re-plan when it moves, record the day when it ends
    vpp peak run NODE --once                 plan it and send the rest of the plan as dispatches, once
    vpp peak record NODE [--day D]           complete the day's row from node_minute (default yesterday)

A day without a plan (no forecast, no live aggregate, a reserve at risk) prints
why and exits 1.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from core.config import Settings
from core.dispatch_spec import DispatchRejectedError

if TYPE_CHECKING:
    import redis

    from peak.day import NodePlan

peak_app = typer.Typer(no_args_is_help=True, help="Peak shaving: plan a node's day and run it.")
console = Console()
err_console = Console(stderr=True)


def _day(text: str | None) -> date:
    if text is None:
        return datetime.now(UTC).date() + timedelta(days=1)
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a day like 2026-12-02") from None


def plan_table(planned: NodePlan) -> Table:
    """The threshold and every interval where the fleet gives or takes power."""
    from peak.planner import Plan

    plan = planned.plan
    assert isinstance(plan, Plan)
    table = Table(title=f"{planned.plan_id}: threshold {plan.threshold_kw:,.1f} kW, forecast peak "
                        f"{plan.forecast_peak_kw:,.1f} kW, {plan.energy_delivered_kwh:,.1f} kWh delivered")
    for column in ("interval (UTC)", "load kW", "discharge kW", "recharge kW", "net kW", "energy kWh"):
        table.add_column(column, justify="right")
    for i in range(len(plan.discharge_kw)):
        if plan.discharge_kw[i] > 1e-3 or plan.charge_kw[i] > 1e-3:
            values = (plan.planning_load_kw[i], plan.discharge_kw[i], plan.charge_kw[i], plan.net_kw[i],
                      plan.energy_kwh[i + 1])
            table.add_row(f"{plan.start + i * plan.step:%H:%M}", *(f"{v:,.1f}" for v in values))
    return table


def _plan(node_id: str, day: date) -> tuple[Settings, redis.Redis, NodePlan]:
    import redis

    from core.history import store_for
    from peak.planner import Plan
    from vpp.peak_service import plan_node

    settings = Settings()
    client = redis.Redis.from_url(settings.redis)
    with store_for(settings) as store:
        planned = plan_node(store, client, node_id, day)
    if not isinstance(planned.plan, Plan):
        err_console.print(f"[yellow]no event[/] for {node_id} on {day}: {planned.plan.reason}")
        raise typer.Exit(code=1)
    console.print(plan_table(planned))
    for note in planned.plan.notes:
        console.print(f"note: {note}")
    return settings, client, planned


@peak_app.command("plan")
def plan_command(node_id: str = typer.Argument(help="The node (feeder, substation, ...) to plan."),
                 day: str = typer.Option(None, "--day", help="The UTC day, ISO 8601; default tomorrow."),
                 ) -> None:
    """Plan the node's day from its load forecast and its live fleet; record it in peak_events."""
    _plan(node_id, _day(day))


@peak_app.command("run")
def run_command(node_id: str = typer.Argument(help="The node to execute the day on."),
                day: str = typer.Option(None, "--day", help="The UTC day; default today."),
                once: bool = typer.Option(False, "--once", help="Plan once and send the rest of the plan's "
                                          "schedule as dispatches, then exit (no following, no re-plans)."),
                poll_s: float = typer.Option(5.0, "--poll", min=0.05, help="Wall seconds between readings."),
                lead_s: float = typer.Option(30.0, "--lead", min=0.0,
                                             help="Send each interval's dispatch this many seconds early."),
                ) -> None:
    """Execute the day: follow the measured net load under the threshold, re-plan when the forecast,
    the load or the fleet moves, and record the day when it ends (Ctrl-C stops; what was sent runs on)."""
    import redis

    from core.history import store_for
    from vpp.peak_intraday import DayExecutor, stored_forecast
    from vpp.peak_service import run_plan

    when = _day(day) if day else datetime.now(UTC).date()
    if once:
        settings, client, planned = _plan(node_id, when)
        try:
            sent = run_plan(settings, client, planned)
        except (DispatchRejectedError, RuntimeError) as exc:
            err_console.print(f"[red]error:[/] {exc}")
            raise typer.Exit(code=2) from exc
        console.print(f"sent {len(sent)} dispatch(es): {', '.join(sent) or 'nothing left of the day'}")
        return
    settings = Settings()
    client = redis.Redis.from_url(settings.redis)
    with store_for(settings) as store:
        day_start = datetime(when.year, when.month, when.day, tzinfo=UTC)
        executor = DayExecutor(settings, client, store, node_id, when,
                               stored_forecast(store, node_id, day_start), lead=timedelta(seconds=lead_s),
                               log=console.print)
        console.print(f"executing {executor.plan_id} (Ctrl-C stops; what was sent runs to its end)")
        try:
            event = executor.run(poll_s)
        except ValueError as exc:
            err_console.print(f"[red]error:[/] {exc}")
            raise typer.Exit(code=1) from exc
        except KeyboardInterrupt:
            err_console.print(f"stopped after {len(executor.intraday.replans)} plan(s) and "
                              f"{len(executor.dispatched)} dispatch(es); record the day after it ends with "
                              f"`vpp peak record {node_id} --day {when}`")
            raise typer.Exit(code=130) from None
    if event is None:
        raise typer.Exit(code=1)


@peak_app.command("record")
def record_command(node_id: str = typer.Argument(help="The node whose day to record."),
                   day: str = typer.Option(None, "--day", help="The UTC day; default yesterday.")) -> None:
    """Complete the day's peak_events row from node_minute: both peaks, energy, the rebound check."""
    from core.history import store_for
    from vpp.peak_service import record_day

    when = _day(day) if day else datetime.now(UTC).date() - timedelta(days=1)
    try:
        with store_for(Settings()) as store:
            event = record_day(store, node_id, when)
    except ValueError as exc:
        err_console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(code=1) from exc
    console.print(f"{event.plan_id} ({event.status}): peak {event.actual_peak_kw:,.1f} kW with the fleet, "
                  f"{event.counterfactual_peak_kw:,.1f} kW without; {event.energy_delivered_kwh:,.1f} kWh "
                  f"delivered, {event.energy_recharged_kwh:,.1f} kWh recharged; "
                  f"{'REBOUND' if event.rebound else 'no rebound'}")
