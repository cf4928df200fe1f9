"""The sites' registered power ratings, as the gateway sees them: a cached, background-refreshed view.

Telemetry is checked against a site's rating on every frame, so the lookup
is a dict read; the dict is replaced whole from the asset registry's durable
table (``asset_sites`` in the history store) every
``VPP_GATEWAY_LIMITS_REFRESH_S``, off the event loop. A site the view does not
know (not registered yet, or the registry unreachable since start) gets the
physics bounds only.
"""

from __future__ import annotations

import asyncio

from core import history
from core.config import Settings
from core.plausibility import SiteLimits


class SiteRatings:
    """Registered charge and discharge ratings by site id."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._limits: dict[str, SiteLimits] = {}

    def __len__(self) -> int:
        return len(self._limits)

    def get(self, site_id: str) -> SiteLimits | None:
        """The site's registered ratings, or None if the registry does not know it (yet)."""
        return self._limits.get(site_id)

    async def refresh(self) -> None:
        """Re-read every site's ratings (raises the store's error; the previous view stays)."""
        self._limits = await asyncio.to_thread(self._read)

    def _read(self) -> dict[str, SiteLimits]:
        with history.store_for(self._settings) as store:
            return store.site_limits()
