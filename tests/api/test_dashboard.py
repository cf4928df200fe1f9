"""The dashboard in headless Chromium over the live fleet: it renders its plotly charts.

Chromium comes from the system (Debian's ``chromium``; CI installs it when it
runs as root, see scripts/test); without it the test skips and says so. The
page gets its token in the URL fragment, as `vpp up` prints it, and reads
only the public API, so what it shows is what any client could see.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from core import history
from core.rows import NodeWindow, PeakEvent
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


OUTAGE = range(600, 640)  # minutes of the past day with no window at all: the pipeline was down
LOW_COVERAGE = range(700, 760)  # minutes where only 96 of 120 sites reported (80 %)
ALARM_RGB = "rgb(179, 38, 30)"  # the console's alarm colour, #b3261e, as the browser renders it


def _past_day_of_minutes(api: Api, node: str, hierarchy: str = "geographic", outage: range = range(0),
                         low: range = range(0)) -> datetime:
    """Node minutes over the day before the fleet started, as the telemetry dataflow would have written.

    Minutes in ``outage`` are missing; in ``low`` only 80 % of the sites reported. Returns the first minute.
    """
    first = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=24)
    rows = [NodeWindow(node, hierarchy, first + timedelta(minutes=i), 40 * math.sin(i / 90), -60.0, 60.0,
                       30.0, 25.0, 50 + 30 * math.sin(i / 120), 500 + 100 * math.cos(i / 200), 300.0, 120,
                       96 if i in low else 118, 0.8 if i in low else 118 / 120, 1)
            for i in range(23 * 60) if i not in outage]
    client = history.connect(api.settings)
    history.HistoryStore(client, api.settings.clickhouse_database).insert_node_minutes(rows)
    client.close()
    return first


def _record_peak_day(api: Api, node: str, day: date) -> None:
    client = history.connect(api.settings)
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    event = PeakEvent(node, start, f"peak-{node}-{day:%Y%m%d}", "planned", 92.0, 71.5, math.nan, math.nan,
                      0.0, 0.0, False, "", datetime.now(UTC))
    history.HistoryStore(client, api.settings.clickhouse_database).insert_peak_events([event])
    client.close()


def _poll(client: httpx.Client, path: str, until: Any, timeout_s: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = client.get(path)
        if response.status_code == 200 and until(body := response.json()):
            return body
        time.sleep(0.5)
    raise AssertionError(f"{path} never got there; last answer {body}")


def _element(dom: str, ident: str) -> str:
    """The DOM from the element with id ``ident`` to the next element with an id of the console's."""
    at = dom.index(f'id="{ident}"')
    following = re.search(r'<(?:div|section|table|span) id="', dom[at + 1:])
    return dom[at:at + 1 + following.start()] if following else dom[at:]


def _screenshots(url: str, pages: dict[str, str]) -> None:
    """Screenshots of the console's main views, into $VPP_DASHBOARD_SCREENSHOTS if set (docs/screenshots)."""
    target = os.environ.get("VPP_DASHBOARD_SCREENSHOTS")
    if not target:
        return
    Path(target).mkdir(parents=True, exist_ok=True)
    for name, fragment in pages.items():
        shot = Path(target) / f"{name}.png"
        _chromium(f"--screenshot={shot}", "--window-size=1280,900", f"{url}{fragment}")


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium binary on PATH (apt-get install chromium)")
def test_the_console_shows_sites_dispatches_outages_alarms_and_the_peak_day(api: Api, tmp_path: Path) -> None:
    first = _past_day_of_minutes(api, "feeder-0-0", "electrical", OUTAGE, LOW_COVERAGE)
    day = (first + timedelta(hours=12)).date()
    _record_peak_day(api, "feeder-0-0", day)
    with api.client("dispatch") as client:
        now = datetime.now(UTC)
        accepted = client.post("/v1/dispatch", json={"node_id": "feeder-0-0", "target_kw": -20,
                                                     "end": (now + timedelta(minutes=5)).isoformat()})
        assert accepted.status_code == 202, accepted.text
        # elsewhere (a state, not below the feeder): far more than its sites can give, a large shortfall
        _poll(client, f"/v1/dispatch/{accepted.json()['dispatch_id']}", lambda b: b["state"] == "ACTIVE")
        short = client.post("/v1/dispatch", json={"node_id": "state-0", "target_kw": 3000,
                                                  "end": (now + timedelta(minutes=5)).isoformat()})
        assert short.status_code == 202, short.text
        ours, other = accepted.json()["dispatch_id"], short.json()["dispatch_id"]
        try:
            _poll(client, f"/v1/dispatch/{ours}", lambda b: len(b["history"]) >= 2)
            _poll(client, f"/v1/dispatch/{other}", lambda b: (b["requested_kwh"] or 0) > 0)
            def commanded(twin: dict[str, Any]) -> bool:
                return str(twin["active_command_id"] or "").startswith(f"{ours}/")

            page = _poll(client, "/v1/nodes/feeder-0-0/sites/twins?limit=1000",
                         lambda p: any(commanded(s) for s in p["data"]))
            site = next(s["site_id"] for s in page["data"] if commanded(s))
            _poll(client, f"/v1/sites/{site}/commands", lambda p: p["count"] > 0)
            # Virtual time (the budget) stands still while a fetch is open, so the page polls instead of
            # streaming here; the stream itself is tested in test_dispatch_and_stream.
            url = f"{api.url}/dashboard/#token={api.tokens['read']}&stream=off"
            # node, time range (the synthetic day) and peak day come from the URL, as after a reload
            until = first + timedelta(hours=23)
            main = (f"&node=feeder-0-0&from={first.isoformat().replace('+00:00', 'Z')}"
                    f"&to={until.isoformat().replace('+00:00', 'Z')}&day={day.isoformat()}")
            elsewhere = f"&node=state-0&site={site}"
            screenshot = tmp_path / "dashboard.png"
            shot = _chromium(f"--screenshot={screenshot}", url + main)
            dom = _chromium("--dump-dom", url + main).stdout
            site_dom = _chromium("--dump-dom", url + elsewhere).stdout
            _screenshots(url, {"console-node": f"{main}&view=node",
                               "console-sites": f"{main}&view=sites",
                               "console-site": f"{main}&site={site}&view=sites",
                               "console-peak": f"{main}&view=peak",
                               "console-dispatch": f"{elsewhere}&view=dispatch&dispatches=all"})
        finally:
            client.delete(f"/v1/dispatch/{ours}")
            client.delete(f"/v1/dispatch/{other}")
    assert screenshot.exists() and screenshot.stat().st_size > 20_000, shot.stderr[-2000:]
    (tmp_path / "dashboard.html").write_text(dom)
    (tmp_path / "dashboard-site.html").write_text(site_dom)
    for chart in CHARTS:
        assert re.search(rf'<div id="{chart}" class="chart[^"]*js-plotly-plot', dom), f"{chart} was not drawn"
    assert dom.count('class="main-svg"') >= 2 * len(CHARTS)

    # the site list of the node: status, last seen and power of each site, paged
    sites = _element(dom, "site-rows")
    assert len(re.findall(r'<tr data-site="site-', sites)) == 50 and "1\u201350 of 120" in dom
    assert 'class="status-ONLINE">ONLINE<' in sites and " s ago<" in sites

    # the dispatch panel follows the node: ours, named by node and window, not the other feeder's
    panel = _element(dom, "dispatch-list")
    assert ours in panel and other not in panel, panel[:2000]
    assert re.search("feeder-0-0 · \\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d\u2013\\d\\d:\\d\\d", panel)
    assert re.search(rf"dispatch {ours}: ACTIVE", dom), "the dispatch view shows no active dispatch"
    assert "target kW" in dom and "measured kW" in dom

    # the outage is a gap (and named), not a zero; low coverage is drawn in the alarm colour
    note = _element(dom, "history-note")
    windows = re.search(r'id="history-note"[^>]*>(\d+) minute windows', note)
    assert windows and int(windows.group(1)) == 23 * 60 - len(OUTAGE), note
    assert f"{first:%Y-%m-%d %H:%M}\u2013" in note, "the range from the URL is not the one shown"
    assert "(40 min)" in note and "drawn as gaps" in note, note
    outages = re.search(r'data-outages="(\d+)"', _element(dom, "chart-history"))
    assert outages and int(outages.group(1)) >= 1
    assert "coverage below 95 % in 60" in note, note
    chart = _element(dom, "chart-history")
    assert f"fill: {ALARM_RGB}" in chart, "no coverage point is drawn in the alarm colour"
    assert "coverage %" in chart and "estimate (not measured)" in chart

    # the peak day: net load with and without the VPP, the planned threshold, the fleet's charge
    assert re.search(r'<div id="chart-peak" class="chart[^"]*js-plotly-plot', dom), "no peak chart drawn"
    peak = _element(dom, "peak-note")
    assert "threshold 71.5 kW" in peak and "measured peak" in peak, peak
    assert "net load without VPP kW" in dom and "fleet SoC % (usable)" in dom

    # the state's panel flags its dispatch, short of what it asked for; and the site page
    flagged = _element(site_dom, "dispatch-list")
    assert other in flagged and ours not in flagged, flagged[:2000]
    assert re.search(rf'<tr data-dispatch="{other}" class="flagged', flagged), flagged[:2000]
    assert re.search(r"⚠ shortfall: its sites can give [\d,.]+ of 3,000 kW", flagged), flagged[:2000]
    commands = _element(site_dom, "command-rows")
    assert ours in commands, commands[:2000]
    assert re.search(r'<div id="chart-site" class="chart[^"]*js-plotly-plot', site_dom), "no site history"
    assert re.search(r'id="site-twin"[^>]*><div class="card status-(ONLINE|DELAYED)', site_dom)


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
