"""``vpp dispatch``: ask a node for power from the shell, and watch the fleet converge.

    vpp dispatch NODE --kw 2000 --minutes 30     discharge 2 MW from NODE (negative kW charges)
        [--id ID [--replace]] [--priority P]     name it (a used id exits 2 unless --replace);
                                                 a higher priority wins sites wanted at once
    vpp dispatch status ID [--follow] [--json]   where a dispatch stands (exit 1 if there is none)
    vpp dispatch cancel ID                       stop it; its sites return to their own plans
    vpp dispatch list [--json]                   recent dispatches

The request is checked (known node, sane window and magnitude) before anything
is sent; see :mod:`core.dispatch`.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from core.config import Settings
from core.dispatch import cancel, list_dispatches, read_status, submit
from core.dispatch_spec import STRATEGIES, DispatchRejectedError, DispatchSpec, new_dispatch_id
from schemas.times import from_epoch_ms

console = Console()
err_console = Console(stderr=True)
WORDS = ("status", "cancel", "list")
#: A dispatch counts as converged once its error stays within this share of the target.
CONVERGED = 0.02


def dispatch(
    what: str = typer.Argument(help="A node id to dispatch, or one of: status ID, cancel ID, list"),
    dispatch_id: str = typer.Argument(None, help="The dispatch, after status or cancel."),
    kw: float = typer.Option(None, "--kw", help="Target battery power in kW: positive discharges."),
    minutes: float = typer.Option(30.0, "--minutes", min=0.1, help="How long, from the start."),
    start: str = typer.Option(None, "--start", help="When to start, ISO 8601 (UTC if no zone); default now."),
    strategy: str = typer.Option("waterfill", "--strategy", help=f"One of {', '.join(STRATEGIES)}."),
    follow: bool = typer.Option(True, "--follow/--no-follow", help="Watch it converge."),
    wait_s: float = typer.Option(120.0, "--wait", help="How long to watch, in seconds."),
    ident: str = typer.Option(None, "--id", help="The dispatch id; default a fresh one."),
    replace: bool = typer.Option(False, "--replace", help="Replace the running dispatch of --id."),
    priority: int = typer.Option(0, "--priority", help="0..1000: wins sites other dispatches want at once."),
    as_json: bool = typer.Option(False, "--json", help="status and list: print JSON (no following)."),
) -> None:
    """Dispatch a node, or look at, cancel or list dispatches."""
    settings = Settings()
    client = redis.Redis.from_url(settings.redis)
    try:
        if what == "list":
            _list(client, as_json)
        elif what in ("status", "cancel"):
            if dispatch_id is None:
                raise DispatchRejectedError(f"say which dispatch: vpp dispatch {what} ID")
            if what == "status" and read_status(client, dispatch_id) is None:
                err_console.print(f"[red]error:[/] no dispatch {dispatch_id!r} (or control has not read it "
                                  "yet): see `vpp dispatch list`")
                raise typer.Exit(code=1)
            if what == "status" and as_json:
                typer.echo(json.dumps(_document(dispatch_id, read_status(client, dispatch_id) or {})))
                return
            if what == "cancel":
                cancel(settings, dispatch_id, "cli", client)
                console.print(f"asked to cancel {dispatch_id}")
            _watch(client, dispatch_id, follow and what == "status", wait_s)
        else:
            if kw is None:
                raise DispatchRejectedError("say how much: --kw 2000 (positive discharges, negative charges)")
            begin = _start(start)
            end = begin + timedelta(minutes=minutes)
            spec = DispatchSpec(kw, begin, end, node_id=what, strategy=strategy, priority=priority,
                                dispatch_id=ident if ident is not None else new_dispatch_id())
            ident = submit(settings, spec, "cli", client, replace=replace)
            console.print(f"dispatch [bold]{ident}[/]: {kw:,.0f} kW from {what} for {minutes:g} min")
            _watch(client, ident, follow, wait_s)
    except DispatchRejectedError as exc:
        err_console.print(f"[red]rejected:[/] {exc}")
        raise typer.Exit(code=2) from exc
    except (redis.ConnectionError, RuntimeError) as exc:
        err_console.print(f"[red]error:[/] {exc}\nis the system running? start it with `vpp up`")
        raise typer.Exit(code=1) from exc


def _start(text: str | None) -> datetime:
    if text is None:
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise DispatchRejectedError(f"--start {text!r} is not an ISO time like 2026-11-26T17:00") from exc
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _table(dispatch_id: str, status: dict[str, str] | None) -> Table:
    table = Table(title=f"dispatch {dispatch_id}")
    columns = ("state", "target kW", "measured kW", "error", "shortfall kW", "sites acked/pending/rejected")
    for column in columns:
        table.add_column(column, justify="right")
    if status is None:
        table.add_row("waiting for the control dataflow", "", "", "", "", "")
        return table
    target, error = float(status["target_kw"]), float(status["error_kw"])
    share = f"{100 * error / target:+.1f} %" if target else f"{error:+,.1f} kW"
    table.add_row(status["state"], f"{target:,.1f}", f"{float(status['measured_kw']):,.1f}", share,
                  f"{float(status['shortfall_kw']):,.1f}",
                  f"{status['sites_acked']}/{status['sites_pending']}/{status['sites_rejected']} "
                  f"of {status['sites_total']}")
    return table


def _converged(status: dict[str, str] | None) -> bool:
    if status is None:
        return False
    if status["state"] in ("COMPLETED", "PARTIAL", "CANCELLED", "FAILED"):
        return True
    target = float(status["target_kw"])
    return status["state"] == "ACTIVE" and target != 0 and abs(float(status["error_kw"])) <= CONVERGED * abs(
        target)


def _watch(client: redis.Redis, dispatch_id: str, follow: bool, wait_s: float) -> None:
    """Show the status; with ``follow``, keep showing it until it converges, ends or ``wait_s`` passes."""
    status = read_status(client, dispatch_id)
    if not follow:
        console.print(_table(dispatch_id, status))
        return
    deadline = time.monotonic() + wait_s
    with Live(_table(dispatch_id, status), console=console, refresh_per_second=2) as live:
        while time.monotonic() < deadline and not _converged(status):
            time.sleep(1.0)
            status = read_status(client, dispatch_id)
            live.update(_table(dispatch_id, status))
    if status is not None and status.get("delivered_kwh") and status["state"] not in ("PENDING", "ACTIVE"):
        console.print(f"outcome: {status['state']}, delivered {float(status['delivered_kwh']):,.2f} of "
                      f"{float(status.get('requested_kwh') or 0):,.2f} kWh requested; tracking error mean "
                      f"{float(status.get('tracking_error_mean_kw') or 0):,.1f} kW, p95 "
                      f"{float(status.get('tracking_error_p95_kw') or 0):,.1f} kW")
    if status is not None and status.get("reason"):
        console.print(f"reason: {status['reason']}")


#: Status fields that are numbers, for JSON.
_NUMBERS = ("target_kw", "measured_kw", "error_kw", "shortfall_kw", "requested_kwh", "delivered_kwh",
            "tracking_error_mean_kw", "tracking_error_p95_kw")
_COUNTS = ("sites_total", "sites_acked", "sites_pending", "sites_rejected", "sites_unavailable",
           "sites_acknowledged", "sites_following", "priority", "acks_refused")
_TIMES = ("start", "end", "event_time")


def _document(dispatch_id: str, status: dict[str, str]) -> dict[str, Any]:
    """A stored status as JSON: numbers as numbers, times as ISO 8601 UTC."""
    document: dict[str, Any] = {"dispatch_id": dispatch_id, **status}
    for name in _NUMBERS:
        if status.get(name):
            document[name] = float(status[name])
    for name in _COUNTS:
        if status.get(name):
            document[name] = int(float(status[name]))
    for name in _TIMES:
        if status.get(name):
            document[name] = from_epoch_ms(int(float(status[name]))).isoformat()
    return document


def _list(client: redis.Redis, as_json: bool = False) -> None:
    if as_json:
        typer.echo(json.dumps([_document(ident, read_status(client, ident) or {})
                               for ident in list_dispatches(client)]))
        return
    table = Table(title="dispatches (newest first)")
    for column in ("id", "node", "state", "target kW", "start (UTC)"):
        table.add_column(column)
    for ident in list_dispatches(client):
        status = read_status(client, ident) or {}
        began = from_epoch_ms(int(status.get("start", 0))).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(ident, status.get("node_id", ""), status.get("state", ""),
                      status.get("target_kw", ""), began)
    console.print(table)
