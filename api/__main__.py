"""``python -m api``: serve the API and dashboard on ``VPP_HOST:VPP_API_PORT`` with uvicorn."""

from __future__ import annotations

import uvicorn

from api.app import create_app
from core.config import get_settings


def main() -> None:
    """Run in the foreground until interrupted."""
    settings = get_settings()
    uvicorn.run(create_app(settings), host=settings.host, port=settings.api_port, log_level="warning",
                access_log=False)


if __name__ == "__main__":
    main()
