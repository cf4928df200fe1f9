"""The API's commands: ``vpp api`` (serve in the foreground) and ``vpp token api`` (issue a token)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.console import Console

from core.config import Settings

if TYPE_CHECKING:
    from api.auth import Scope

console = Console()


def dashboard_url(settings: Settings) -> str:
    """The local dashboard's address with a fresh read token in the fragment (never sent to a server)."""
    from api.auth import Scope, issue_api_token

    token = issue_api_token(settings, "local-dashboard", {Scope.READ}).token
    return f"http://{settings.host}:{settings.api_port}/dashboard/#token={token}"


def serve_api() -> None:
    """Serve the HTTP API and the dashboard in the foreground (VPP_HOST:VPP_API_PORT)."""
    from api.__main__ import main

    settings = Settings()
    console.print(f"API on http://{settings.host}:{settings.api_port} (docs at /docs); "
                  f"dashboard: {dashboard_url(settings)}")
    main()


def _scopes(text: str) -> set[Scope]:
    from api.auth import Scope

    names = {s.strip() for s in text.split(",") if s.strip()}
    unknown = names - {scope.value for scope in Scope}
    if unknown:
        raise ValueError(f"unknown scope(s) {', '.join(sorted(unknown))}: use {', '.join(Scope)}")
    return {Scope(name) for name in names}


def issue_api_token_command(
    subject: str = typer.Argument(help="Who holds the token (a program, an operator, a customer)."),
    scopes: str = typer.Option("read", "--scopes", help="Comma-separated: read, assets, dispatch, admin."),
    sites: str | None = typer.Option(None, "--sites",
                                     help="Comma-separated site ids: a customer token, read only, "
                                          "that sees only these sites."),
    ttl_hours: float | None = typer.Option(None, "--ttl-hours", min=0.001,
                                           help="Lifetime (default 30 days)."),
) -> None:
    """Issue an API bearer token."""
    from datetime import timedelta

    from api.auth import issue_api_token

    try:
        issued = issue_api_token(
            Settings(), subject, _scopes(scopes),
            sites={s.strip() for s in sites.split(",") if s.strip()} if sites is not None else None,
            ttl=timedelta(hours=ttl_hours) if ttl_hours is not None else None)
    except ValueError as exc:
        Console(stderr=True).print(f"[red]error:[/] {exc}")
        raise typer.Exit(code=2) from exc
    console.print(issued.token, soft_wrap=True)
    Console(stderr=True).print(f"scopes {', '.join(sorted(issued.principal.scopes))}; "
                               f"expires {issued.expires_at.isoformat(timespec='seconds')}")
