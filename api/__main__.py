"""``python -m api``: serve the API and dashboard on ``VPP_HOST:VPP_API_PORT`` with uvicorn."""

from __future__ import annotations

import uvicorn

from api.app import create_app
from core.config import get_settings
from core.local_secrets import MissingSecretError


def main() -> None:
    """Run in the foreground until interrupted; refuse to start without the token secrets."""
    settings = get_settings()
    try:
        app = create_app(settings)
    except MissingSecretError as exc:
        raise SystemExit(f"error: the API refuses to start: {exc}") from exc
    uvicorn.run(app, host=settings.host, port=settings.api_port, log_level="warning",
                access_log=False)


if __name__ == "__main__":
    main()
