"""``vpp dispatch``: ask a node for power from the shell, and watch the fleet converge.

    vpp dispatch send NODE --kw 2000 --minutes 30  discharge 2 MW from NODE (negative kW charges);
        [--id ID [--replace]] [--priority P]       name it (a used id exits 2 unless --replace);
                                                   a higher priority wins sites wanted at once
    vpp dispatch NODE --kw 2000 ...                the same (send is the default subcommand)
    vpp dispatch status ID [--follow] [--json]     where a dispatch stands (exit 1 if there is none)
    vpp dispatch cancel ID                         stop it; its sites return to their own plans
    vpp dispatch list [--limit N] [--json]         recent dispatches, newest window first

The request is checked (known node, sane window and magnitude) before anything
is sent, and a cancel goes the same way as the API's (:mod:`core.dispatch`).
Following on a terminal redraws one table; piped (or with ``--json``) it
writes one line per change and flushes it, so ``| tee`` or ``| jq`` see each
as it happens. Tables fit 80 columns.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table
from typer.core import TyperGroup

from core.config import Settings
from core.dispatch_spec import (
    STRATEGIES,
    DispatchNotFoundError,
    DispatchRejectedError,
    DispatchSpec,
    new_dispatch_id,
)
from schemas.times import from_epoch_ms
from vpp.tables import narrow_table

if TYPE_CHECKING:
    import redis

console = Console()
err_console = Console(stderr=True)
#: A dispatch counts as converged once its error stays within this share of the target.
CONVERGED = 0.02
#: States a dispatch never leaves.
ENDED = ("COMPLETED", "PARTIAL", "CANCELLED", "FAILED")
#: Seconds between two reads of a followed dispatch's status.
POLL_S = 1.0
JSON_HELP = "Print JSON instead of a table (with --follow: one document per line, JSON Lines)."


class _SendByDefault(TyperGroup):
    """A group whose first word, when it names no subcommand, is a node: ``vpp dispatch NODE`` sends."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:  # Any: the Context of typer's own click
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["send", *args]
        return super().parse_args(ctx, args)


dispatch_app = typer.Typer(
    cls=_SendByDefault, no_args_is_help=True,
    help="Dispatch a node (send, the default), and look at, cancel or list dispatches.")


@contextmanager
def _errors() -> Iterator[None]:
    """Refusals exit 2 (an unknown dispatch 1), an unreachable system 1, each with one line on stderr."""
    import redis

    try:
        yield
    except DispatchNotFoundError as exc:
        err_console.print(f"[red]error:[/] {exc}", highlight=False)
        raise typer.Exit(code=1) from exc
    except DispatchRejectedError as exc:
        err_console.print(f"[red]rejected:[/] {exc}", highlight=False)
        raise typer.Exit(code=2) from exc
    except (redis.ConnectionError, RuntimeError) as exc:
        err_console.print(f"[red]error:[/] {exc}\nis the system running? start it with `vpp up`",
                          highlight=False)
        raise typer.Exit(code=1) from exc


def _client(settings: Settings) -> redis.Redis:
    import redis

    return redis.Redis.from_url(settings.redis)


@dispatch_app.command("send")
def send(
    node: str = typer.Argument(help="The node to dispatch (see `vpp live`)."),
    kw: float = typer.Option(None, "--kw", help="Target battery power in kW: positive discharges."),
    minutes: float = typer.Option(30.0, "--minutes", min=0.1, help="How long, from the start."),
    start: str = typer.Option(None, "--start", help="When to start, ISO 8601 (UTC if no zone); default now."),
    strategy: str = typer.Option("waterfill", "--strategy", help=f"One of {', '.join(STRATEGIES)}."),
    follow: bool = typer.Option(True, "--follow/--no-follow", help="Watch it converge."),
    wait_s: float = typer.Option(120.0, "--wait", help="How long to watch, in seconds."),
    ident: str = typer.Option(None, "--id", help="The dispatch id; default a fresh one."),
    replace: bool = typer.Option(False, "--replace", help="Replace the running dispatch of --id."),
    priority: int = typer.Option(0, "--priority", help="0..1000: wins sites other dispatches want at once."),
) -> None:
    """Ask NODE for power over a window; watch it converge unless --no-follow."""
    from core.dispatch import read_status, submit

    settings = Settings()
    client = _client(settings)
    with _errors():
        if kw is None:
            raise DispatchRejectedError("say how much: --kw 2000 (positive discharges, negative charges)")
        begin = _start(start)
        spec = DispatchSpec(kw, begin, begin + timedelta(minutes=minutes), node_id=node, strategy=strategy,
                            priority=priority, dispatch_id=ident if ident is not None else new_dispatch_id())
        sent = submit(settings, spec, "cli", client, replace=replace)
        console.print(f"dispatch [bold]{sent}[/]: {kw:,.0f} kW from {node} for {minutes:g} min",
                      soft_wrap=True)
        if follow:
            _follow(client, sent, _converged, wait_s, as_json=False)
        else:
            console.print(_table(sent, read_status(client, sent)))


@dispatch_app.command("status")
def status(
    dispatch_id: str = typer.Argument(help="The dispatch."),
    follow: bool = typer.Option(
        False, "--follow/--no-follow",
        help="Keep showing it until it ends (or --wait passes); piped: a line per change."),
    wait_s: float | None = typer.Option(None, "--wait", help="Stop following after this many seconds."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Where a dispatch stands: state, power against target, sites, outcome. Exit 1 if there is none."""
    from core.dispatch import read_status

    client = _client(Settings())
    with _errors():
        current = read_status(client, dispatch_id)
        if current is None:
            raise DispatchNotFoundError(f"no dispatch {dispatch_id!r} (or control has not read it yet): "
                                        "see `vpp dispatch list`")
        if follow:
            _follow(client, dispatch_id, _ended, wait_s, as_json)
        elif as_json:
            typer.echo(json.dumps(_document(dispatch_id, current)))
        else:
            console.print(_table(dispatch_id, current))
            _outcome(current)


@dispatch_app.command("cancel")
def cancel_command(dispatch_id: str = typer.Argument(help="The dispatch to stop.")) -> None:
    """Stop a dispatch (as DELETE /v1/dispatch/ID does); its sites return to their own plans."""
    from core.dispatch import cancel

    settings = Settings()
    client = _client(settings)
    with _errors():
        cancel(settings, dispatch_id, "cli", client)
    console.print(f"asked to cancel {dispatch_id}; `vpp dispatch status {dispatch_id} --follow` shows it end",
                  soft_wrap=True)


@dispatch_app.command("list")
def list_command(
    limit: int = typer.Option(20, "--limit", min=1, max=1000, help="How many, newest window first."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (one document on stdout)."),
) -> None:
    """Recent dispatches: node, state, target and window."""
    from core.dispatch import list_dispatches, read_status

    client = _client(Settings())
    with _errors():
        statuses = [(ident, read_status(client, ident) or {})
                    for ident in list_dispatches(client, limit=limit)]
    if as_json:
        typer.echo(json.dumps([_document(ident, found) for ident, found in statuses]))
        return
    table = narrow_table("dispatches, newest first (UTC)")
    for column, justify in (("id", "left"), ("node", "left"), ("state", "left"), ("kW", "right"),
                            ("window", "left")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for ident, found in statuses:
        table.add_row(ident, found.get("node_id", "") or "(sites)", found.get("state", ""),
                      _number(found.get("target_kw"), "{:,.0f}"), _window(found))
    console.print(table)


def _start(text: str | None) -> datetime:
    if text is None:
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise DispatchRejectedError(f"--start {text!r} is not an ISO time like 2026-11-26T17:00") from exc
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _number(value: str | None, pattern: str) -> str:
    return pattern.format(float(value)) if value else ""


def _window(status: dict[str, str]) -> str:
    """``MM-DD HH:MM-HH:MM`` (the end's date too when it is another day)."""
    if not status.get("start") or not status.get("end"):
        return ""
    begin, end = (from_epoch_ms(int(float(status[k]))) for k in ("start", "end"))
    tail = end.strftime("%H:%M") if end.date() == begin.date() else end.strftime("%m-%d %H:%M")
    return f"{begin:%m-%d %H:%M}-{tail}"


def _error_share(status: dict[str, str]) -> str:
    target, error = float(status["target_kw"]), float(status["error_kw"])
    return f"{100 * error / target:+.1f} %" if target else f"{error:+,.1f} kW"


def _sites(status: dict[str, str]) -> str:
    return (f"{status.get('sites_acked', '0')} acked, {status.get('sites_pending', '0')} pending, "
            f"{status.get('sites_rejected', '0')} rejected of {status.get('sites_total', '0')}")


def _table(dispatch_id: str, status: dict[str, str] | None) -> Table:
    """One field per row: fits 80 columns whatever the figures."""
    table = narrow_table(f"dispatch {dispatch_id}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    if status is None:
        table.add_row("state", "waiting for the control dataflow")
        return table
    rows = [("state", status.get("state", "")), ("node", status.get("node_id", "") or "(sites)"),
            ("window (UTC)", _window(status)),
            ("target", _number(status.get("target_kw"), "{:,.1f} kW")),
            ("measured", _number(status.get("measured_kw"), "{:,.1f} kW"))]
    if status.get("target_kw") and status.get("error_kw"):
        rows.append(("error", _error_share(status)))
    rows += [("shortfall", _number(status.get("shortfall_kw"), "{:,.1f} kW")), ("sites", _sites(status))]
    for name, value in rows:
        if value:
            table.add_row(name, value)
    return table


def _line(status: dict[str, str] | None) -> str:
    """One status as one line of at most 80 characters, for a pipe."""
    now = datetime.now(UTC).strftime("%H:%M:%S")
    if status is None:
        return f"{now} waiting for the control dataflow"
    error = f" error {_error_share(status)}" if status.get("target_kw") and status.get("error_kw") else ""
    return (f"{now} {status.get('state', '')} {_number(status.get('measured_kw'), '{:,.1f}')}/"
            f"{_number(status.get('target_kw'), '{:,.1f}')} kW{error} acked "
            f"{status.get('sites_acked', '0')}/{status.get('sites_total', '0')}")


def _converged(status: dict[str, str] | None) -> bool:
    if status is None:
        return False
    if status["state"] in ENDED:
        return True
    target = float(status["target_kw"])
    return status["state"] == "ACTIVE" and target != 0 and abs(float(status["error_kw"])) <= CONVERGED * abs(
        target)


def _ended(status: dict[str, str] | None) -> bool:
    return status is not None and status.get("state") in ENDED


def _follow(client: redis.Redis, dispatch_id: str, done: Callable[[dict[str, str] | None], bool],
            wait_s: float | None, as_json: bool) -> None:
    """Show the status until ``done`` says so or ``wait_s`` passes: a redrawn table on a terminal, else a
    line (or JSON document) per change, flushed as it is written."""
    from core.dispatch import read_status

    deadline = None if wait_s is None else time.monotonic() + wait_s

    def more(current: dict[str, str] | None) -> bool:
        return not done(current) and (deadline is None or time.monotonic() < deadline)

    current = read_status(client, dispatch_id)
    if console.is_terminal and not as_json:
        with Live(_table(dispatch_id, current), console=console, refresh_per_second=2) as live:
            while more(current):
                time.sleep(POLL_S)
                current = read_status(client, dispatch_id)
                live.update(_table(dispatch_id, current))
    else:
        shown: dict[str, str] | bool | None = False
        while True:
            if current != shown:
                typer.echo(json.dumps(_document(dispatch_id, current or {})) if as_json else _line(current))
                shown = current
            if not more(current):
                break
            time.sleep(POLL_S)
            current = read_status(client, dispatch_id)
    if not as_json and current is not None:
        _outcome(current)


def _outcome(status: dict[str, str]) -> None:
    """The final figures of an ended dispatch, and why it ended so."""
    if status.get("delivered_kwh") and status["state"] not in ("PENDING", "ACTIVE"):
        console.print(f"outcome: {status['state']}, delivered {float(status['delivered_kwh']):,.2f} of "
                      f"{float(status.get('requested_kwh') or 0):,.2f} kWh requested; tracking error mean "
                      f"{float(status.get('tracking_error_mean_kw') or 0):,.1f} kW, p95 "
                      f"{float(status.get('tracking_error_p95_kw') or 0):,.1f} kW")
    if status.get("reason"):
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
