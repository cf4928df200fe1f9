"""``vpp storm``: raise, list and clear storm watches from the shell.

    vpp storm raise NODE --hours 12 [--start ISO]   the node's sites plan a full battery from the start
                                                    (default now) until the watch lapses
    vpp storm list [--json]                         the watches in force
    vpp storm clear NODE                            lift the watch at the node's sites

The same checks and delivery as ``POST/GET/DELETE /v1/storm-watch`` (:mod:`core.storm`).
"""

from __future__ import annotations

import getpass
import json
from datetime import UTC, datetime, timedelta

import typer
from rich.console import Console
from rich.table import Table

from core.config import Settings

storm_app = typer.Typer(no_args_is_help=True, help="Storm watches: sites under a node hold a full battery.")
console = Console()
err_console = Console(stderr=True)


def _start(value: str | None) -> datetime | None:
    if value is None:
        return None
    parsed = datetime.fromisoformat(value)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


@storm_app.command("raise")
def raise_command(
    node: str = typer.Argument(help="The node whose member sites the watch reaches."),
    hours: float = typer.Option(12.0, "--hours", min=0.01, help="How long the watch lasts from its start."),
    start: str = typer.Option(None, "--start", help="When it begins (ISO 8601, UTC if no zone)."),
) -> None:
    """Raise (or replace) a storm watch over NODE."""
    import redis
    from confluent_kafka import Producer

    from core import kafka, storm

    settings = Settings()
    client = redis.Redis.from_url(settings.redis)
    producer = Producer(kafka.client_config(settings))
    try:
        begins = _start(start) or datetime.now(UTC)
        watch = storm.raise_watch(client, producer, node, begins, begins + timedelta(hours=hours),
                                  f"cli:{getpass.getuser()}")
    except storm.StormWatchError as exc:
        err_console.print(f"[red]refused:[/red] {exc}")
        raise typer.Exit(2) from None
    finally:
        client.close()
    console.print(f"storm watch over {watch.node_id}: {watch.sites} site(s) hold a full battery from "
                  f"{watch.starts.isoformat()} until {watch.until.isoformat()}")


@storm_app.command("list")
def list_command(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """The storm watches in force."""
    import redis

    from core import storm

    client = redis.Redis.from_url(Settings().redis)
    try:
        watches = storm.list_watches(client)
    finally:
        client.close()
    if as_json:
        typer.echo(json.dumps([json.loads(w.to_json()) for w in watches]))
        return
    table = Table("node", "starts", "until", "sites", "raised by")
    for w in watches:
        table.add_row(w.node_id, w.starts.isoformat(), w.until.isoformat(), str(w.sites), w.raised_by)
    console.print(table)


@storm_app.command("clear")
def clear_command(node: str = typer.Argument(help="The node whose watch to lift.")) -> None:
    """Clear the storm watch over NODE (exit 1 if none is in force)."""
    import redis
    from confluent_kafka import Producer

    from core import kafka, storm

    settings = Settings()
    client = redis.Redis.from_url(settings.redis)
    producer = Producer(kafka.client_config(settings))
    try:
        watch = storm.clear_watch(client, producer, node, f"cli:{getpass.getuser()}")
    except storm.StormWatchNotFoundError as exc:
        err_console.print(str(exc))
        raise typer.Exit(1) from None
    finally:
        client.close()
    console.print(f"storm watch over {watch.node_id} cleared at its sites")
