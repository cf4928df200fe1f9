"""The dashboard in headless Chromium over the live fleet: it renders its plotly charts.

Chromium comes from the system (Debian's ``chromium``; CI installs it when it
runs as root, see scripts/test); without it the test skips and says so. The
page gets its token in the URL fragment, as `vpp up` prints it, and reads
only the public API, so what it shows is what any client could see.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from core import history
from core.rows import NodeWindow
from tests.api.conftest import Api

pytestmark = pytest.mark.integration

CHROMIUM = next((path for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
                 if (path := shutil.which(name))), None)
CHARTS = ("chart-live", "chart-history", "chart-dispatch")


def _chromium(*args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    return subprocess.run([CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", "--disable-dev-shm-usage",
                           "--no-first-run", "--window-size=1400,1500", "--virtual-time-budget=15000", *args],
                          capture_output=True, text=True, timeout=120, check=False)


def _past_day_of_minutes(api: Api, node: str) -> None:
    """Node minutes over the day before the fleet started, as the telemetry dataflow would have written."""
    first = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=24)
    rows = [NodeWindow(node, "geographic", first + timedelta(minutes=i), 40 * math.sin(i / 90), -60.0, 60.0,
                       30.0, 25.0, -5.0, 500 + 100 * math.cos(i / 200), 300.0, 120, 118, 118 / 120, 1)
            for i in range(23 * 60)]
    client = history.connect(api.settings)
    history.HistoryStore(client, api.settings.clickhouse_database).insert_node_minutes(rows)
    client.close()


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium binary on PATH (apt-get install chromium)")
def test_dashboard_renders_live_history_and_dispatch_charts(api: Api, tmp_path: Path) -> None:
    _past_day_of_minutes(api, "state-0")
    with api.client("dispatch") as client:
        end = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
        accepted = client.post("/v1/dispatch", json={"node_id": "feeder-0-0", "target_kw": -20, "end": end})
        assert accepted.status_code == 202, accepted.text
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status = client.get(accepted.json()["status_url"])
            if status.status_code == 200 and len(status.json()["history"]) >= 2:
                break
            time.sleep(0.5)
    # Virtual time (the budget) stands still while a fetch is open, so the page polls instead of
    # streaming here; the stream itself is tested in test_dispatch_and_stream.
    url = f"{api.url}/dashboard/#token={api.tokens['read']}&node=state-0&stream=off"
    screenshot = tmp_path / "dashboard.png"
    try:
        shot = _chromium(f"--screenshot={screenshot}", url)
        dom = _chromium("--dump-dom", url).stdout
    finally:
        with api.client("dispatch") as client:
            client.delete(accepted.json()["status_url"])
    assert screenshot.exists() and screenshot.stat().st_size > 20_000, shot.stderr[-2000:]
    (tmp_path / "dashboard.html").write_text(dom)
    for chart in CHARTS:
        match = re.search(rf'<div id="{chart}" class="chart[^"]*js-plotly-plot', dom)
        assert match, f"{chart} was not drawn by plotly"
    assert dom.count('class="main-svg"') >= 2 * len(CHARTS)
    assert "coverage" in dom and "state-0" in dom
    assert re.search(r"dispatch d-[0-9a-f]+: ACTIVE", dom), "the dispatch view shows no active dispatch"
    assert "target kW" in dom and "measured kW" in dom
    windows = re.search(r'id="history-note">(\d+) minute windows', dom)
    assert windows and int(windows.group(1)) > 22 * 60, "the history chart has no data"


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium binary on PATH (apt-get install chromium)")
def test_a_region_shows_its_price_forecast_against_the_published_prices(api: Api, tmp_path: Path) -> None:
    from vpp.forecast_service import forecast_price
    from vpp.market_feed import MarketFeed

    client = history.connect(api.settings)
    store = history.HistoryStore(client, api.settings.clickhouse_database)
    now = datetime.now(UTC)
    MarketFeed.from_settings(api.settings, ["region-0"]).publish(store, now - timedelta(days=1), weeks=8)
    forecast_price(store, "region-0", now - timedelta(days=1))
    client.close()
    url = f"{api.url}/dashboard/#token={api.tokens['read']}&node=region-0&stream=off"
    dom = _chromium("--dump-dom", url).stdout
    (tmp_path / "dashboard-price.html").write_text(dom)
    assert re.search(r'<div id="chart-price" class="chart[^"]*js-plotly-plot', dom), "no price chart drawn"
    assert "smard:DE:2018 (simulated market)" in dom
