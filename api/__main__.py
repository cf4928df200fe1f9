"""``python -m api``: serve the API and dashboard on ``VPP_HOST:VPP_API_PORT`` with uvicorn."""

from __future__ import annotations

import uvicorn

from api.app import create_app
from core.config import get_settings
from core.local_secrets import MissingSecretError
from core.logs import configure_logging


def main() -> None:
    """Run in the foreground until interrupted; refuse to start without the token secrets."""
    settings = get_settings()
    configure_logging(settings)
    try:
        app = create_app(settings)
    except MissingSecretError as exc:
        raise SystemExit(f"error: the API refuses to start: {exc}") from exc
    # uvicorn logs through our handler (log_config=None) at our level; the access log is the API's own.
    uvicorn.run(app, host=settings.host, port=settings.api_port, log_config=None, log_level=None,
                access_log=False)


if __name__ == "__main__":
    main()
