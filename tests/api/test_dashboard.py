"""The dashboard in headless Chromium over the live fleet: it renders its plotly charts.

Chromium comes from the system (Debian's ``chromium``; CI installs it when it
runs as root, see scripts/test); without it the tests skip and say so. One
browser serves the module (tests/api/browser.py); each test's assertions are
retried on its page until they pass, so nothing waits a fixed time. The
page gets its token in the URL fragment, as `vpp up` prints it, and reads
only the public API, so what it shows is what any client could see.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from core import history
from core.rows import NodeWindow, PeakEvent
from tests.api.browser import CHROMIUM, Browser, Check
from tests.api.conftest import Api

pytestmark = pytest.mark.integration

CHARTS = ("chart-live", "chart-history", "chart-dispatch")
#: How long a page may take to show what its test expects (it polls the API every 5 s).
PAGE_TIMEOUT_S = 90


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    """One headless Chromium for the module's tests."""
    assert CHROMIUM is not None
    started = Browser(CHROMIUM, tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield started
    finally:
        started.close()


OUTAGE = range(600, 640)  # minutes of the past day with no window at all: the pipeline was down
LOW_COVERAGE = range(700, 760)  # minutes where only 96 of 120 sites reported (80 %)
ALARM_RGB = "rgb(179, 38, 30)"  # the console's alarm colour, #b3261e, as the browser renders it
# 23 h of measured minutes under the plans: 92 quarter-hours to set against their plan (and the live
# fleet's latest minutes, one or two more)
DIFFERS = r"measured differs from plan by [\d.]+ kW on average over 9[2-5] intervals"


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


def _drawn(dom: str, chart: str) -> bool:
    """Whether plotly has drawn into the chart element with id ``chart``."""
    return re.search(rf'<div id="{chart}" class="chart[^"]*js-plotly-plot', dom) is not None


def _element(dom: str, ident: str) -> str:
    """The DOM from the element with id ``ident`` to the next element with an id of the console's."""
    assert f'id="{ident}"' in dom, f"the page has no element {ident}"
    at = dom.index(f'id="{ident}"')
    following = re.search(r'<(?:div|section|table|span) id="', dom[at + 1:])
    return dom[at:at + 1 + following.start()] if following else dom[at:]


def _screenshots(browser: Browser, url: str, pages: dict[str, str], check: Check) -> None:
    """Screenshots of the console's main views, into $VPP_DASHBOARD_SCREENSHOTS if set (docs/screenshots),
    each once ``check`` passes on its page."""
    target = os.environ.get("VPP_DASHBOARD_SCREENSHOTS")
    if not target:
        return
    Path(target).mkdir(parents=True, exist_ok=True)
    for name, fragment in pages.items():
        with browser.tab(f"{url}{fragment}", width=1280, height=900) as tab:
            tab.settle(check, PAGE_TIMEOUT_S)
            tab.screenshot(Path(target) / f"{name}.png")


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium binary on PATH (apt-get install chromium)")
def test_the_console_shows_sites_dispatches_outages_alarms_and_the_peak_day(api: Api, browser: Browser,
                                                                             tmp_path: Path) -> None:
    first = _past_day_of_minutes(api, "feeder-0-0", "electrical", OUTAGE, LOW_COVERAGE)
    day = (first + timedelta(hours=12)).date()
    _record_peak_day(api, "feeder-0-0", day)

    def shows_the_node(dom: str) -> None:
        for chart in CHARTS:
            assert _drawn(dom, chart), f"{chart} was not drawn"
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
        assert _drawn(dom, "chart-peak"), "no peak chart drawn"
        peak = _element(dom, "peak-note")
        assert "threshold 71.5 kW" in peak and "measured peak" in peak, peak
        assert "net load without VPP kW" in dom and "fleet SoC % (usable)" in dom

    def shows_the_state_and_the_site(site_dom: str) -> None:
        # the state's panel flags its dispatch, short of what it asked for; and the site page
        flagged = _element(site_dom, "dispatch-list")
        assert other in flagged and ours not in flagged, flagged[:2000]
        assert re.search(rf'<tr data-dispatch="{other}" class="flagged', flagged), flagged[:2000]
        assert re.search(r"⚠ shortfall: its sites can give [\d,.]+ of 3,000 kW", flagged), flagged[:2000]
        commands = _element(site_dom, "command-rows")
        assert ours in commands, commands[:2000]
        assert _drawn(site_dom, "chart-site"), "no site history"
        assert re.search(r'id="site-twin"[^>]*><div class="card status-(ONLINE|DELAYED)', site_dom)

    def lists_both_dispatches(dom: str) -> None:  # every node's dispatches (the screenshot's view)
        panel = _element(dom, "dispatch-list")
        assert ours in panel and other in panel, panel[:2000]

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
            # The page polls rather than streams (as in a plain `chromium --dump-dom`, whose virtual
            # clock stands still while a fetch is open); the stream itself is tested in
            # test_dispatch_and_stream.
            url = f"{api.url}/dashboard/#token={api.tokens['read']}&stream=off"
            # node, time range (the synthetic day) and peak day come from the URL, as after a reload
            until = first + timedelta(hours=23)
            main = (f"&node=feeder-0-0&from={first.isoformat().replace('+00:00', 'Z')}"
                    f"&to={until.isoformat().replace('+00:00', 'Z')}&day={day.isoformat()}")
            elsewhere = f"&node=state-0&site={site}"
            screenshot = tmp_path / "dashboard.png"
            with browser.tab(url + main) as tab:
                dom = tab.settle(shows_the_node, PAGE_TIMEOUT_S)
                tab.screenshot(screenshot)
            with browser.tab(url + elsewhere) as tab:
                site_dom = tab.settle(shows_the_state_and_the_site, PAGE_TIMEOUT_S)
            _screenshots(browser, url, {"console-node": f"{main}&view=node",
                                        "console-sites": f"{main}&view=sites",
                                        "console-site": f"{main}&site={site}&view=sites",
                                        "console-peak": f"{main}&view=peak"}, shows_the_node)
            _screenshots(browser, url, {"console-dispatch": f"{elsewhere}&view=dispatch&dispatches=all"},
                         lists_both_dispatches)
        finally:
            client.delete(f"/v1/dispatch/{ours}")
            client.delete(f"/v1/dispatch/{other}")
    assert screenshot.stat().st_size > 20_000, "the screenshot is too small to show the console"
    (tmp_path / "dashboard.html").write_text(dom)
    (tmp_path / "dashboard-site.html").write_text(site_dom)


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium binary on PATH (apt-get install chromium)")
def test_a_region_shows_its_price_forecast_against_the_published_prices(api: Api, browser: Browser,
                                                                        tmp_path: Path) -> None:
    from vpp.forecast_service import forecast_price
    from vpp.market_feed import MarketFeed

    client = history.connect(api.settings)
    store = history.HistoryStore(client, api.settings.clickhouse_database)
    now = datetime.now(UTC)
    MarketFeed.from_settings(api.settings, ["region-0"]).publish(store, now - timedelta(days=1), weeks=8)
    forecast_price(store, "region-0", now - timedelta(days=1))
    client.close()
    url = f"{api.url}/dashboard/#token={api.tokens['read']}&node=region-0&stream=off"

    def shows_the_price_forecast(dom: str) -> None:
        assert _drawn(dom, "chart-price"), "no price chart drawn"
        assert "smard:DE:2018 (simulated market)" in dom

    with browser.tab(url) as tab:
        dom = tab.settle(shows_the_price_forecast, PAGE_TIMEOUT_S)
    (tmp_path / "dashboard-price.html").write_text(dom)


def _bidding_record(api: Api, asset: str) -> datetime:
    """Half a day of an asset's 15-minute bidding runs as the workers and the market record them.

    Every run fetches, optimises and submits; every tenth fell back to a safe bid (no forecast), one
    run's optimise failed for good. Each interval's energy curve is cleared against a price that
    moves through the day. Returns the first interval.
    """
    from core.bid_history import BidStore
    from core.rows import BacktestReportRow, BidRow, MarketResultRow, WorkflowStepRow

    now = datetime.now(UTC).replace(second=0, microsecond=0)
    first = now.replace(minute=now.minute // 15 * 15) - timedelta(hours=12)
    store = BidStore(history.connect(api.settings), api.settings.clickhouse_database)
    bids, results = [], []
    for i in range(48):
        interval = first + timedelta(minutes=15 * i)
        run = f"{asset}@{interval:%Y%m%dT%H%MZ}#0"
        done = interval - timedelta(minutes=10)
        safe, failed = i % 10 == 3, i == 17
        decide = "safe_bid" if safe else "optimise"
        steps = ["fetch", "forecast:energy", decide] + ([] if failed else ["submit"])
        for k, step in enumerate(steps):
            error = "infeasible" if failed and step == "optimise" else None
            store.put_step(WorkflowStepRow(run, step, 1, None if error else f"{step}-{i}", error, "worker-a",
                                           done + timedelta(seconds=k)))
        if failed:
            continue
        price = 50 + 40 * math.sin(i / 8)
        quantity = 0.0 if safe else (1.0 if price > 60 else -1.0 if price < 40 else 0.5)
        curve = "[[-500.0,0.0]]" if safe else f"[[-500.0,-1.0],[{price - 5:.1f},0.0],[{price + 5:.1f},1.0]]"
        bids.append(BidRow(asset, interval, "energy", "DE", run, curve,
                           "safe bid: no forecast" if safe else "", f"bid-{i}", done + timedelta(seconds=5)))
        if interval < now:
            revenue = quantity * price / 4  # MW for a quarter of an hour at EUR/MWh
            results.append(MarketResultRow(asset, interval, "energy", price, quantity, revenue, run,
                                           interval + timedelta(minutes=15)))
    store.put_bids(bids)
    store.put_results(results)
    kept = BacktestReportRow("backtest-console", datetime.now(UTC), first, now, 46, 3, 290.0, 301.5, "[]")
    store.put_backtest(kept)
    store.client.close()
    return first


def _plans_and_actuals(api: Api, node: str, site: str) -> datetime:
    """A node's aggregate plan and a site's plans over the past day and the next 6 h, with measurements.

    The node's minutes follow its plan with an error; the site sends a 24 h plan every 6 hours.
    Returns the first minute of the node's history.
    """
    from core.rows import NodePlanRow, SitePlanRow, SiteWindow

    first = _past_day_of_minutes(api, node, "electrical")
    store = history.HistoryStore(history.connect(api.settings), api.settings.clickhouse_database)
    quarter = timedelta(minutes=15)
    node_rows = []
    for i in range(30 * 4):
        at = first + i * quarter
        minute = 15 * i + 7
        coverage = 0.9 if 40 <= i < 48 else 1.0
        planned = 40 * math.sin(minute / 90) + 5
        carried = 0 if coverage == 1 else 12
        node_rows.append(NodePlanRow(node, "electrical", at, 15, planned, planned + 0.25 * carried, 120,
                                     120 - carried, carried, 0, coverage, at - quarter))
    store.insert_node_plans(node_rows)
    plans = [SitePlanRow(site, f"plan-{k}", first + timedelta(hours=6 * k) - timedelta(minutes=3),
                         first + timedelta(hours=6 * k), 15,
                         [round(3 * math.sin((6 * k * 4 + j) / 6), 3) for j in range(96)], None,
                         first + timedelta(hours=6 * k)) for k in range(5)]
    store.insert_site_plans(plans)
    store.insert_site_minutes([
        SiteWindow(site, first + timedelta(minutes=m), 3 * math.sin(m / 90) + 0.3, -5.0, 5.0, 1.0, 0.8, 0.2,
                   50 + 20 * math.sin(m / 200), 6.0, 60, 1.0, 1)
        for m in range(23 * 60)])
    store.client.close()
    return first


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium binary on PATH (apt-get install chromium)")
def test_the_console_shows_bids_clearing_revenue_runs_and_plan_against_actual(api: Api, browser: Browser,
                                                                                tmp_path: Path) -> None:
    asset = "bess-console"
    node = "substation-0-0"  # the other test's minutes are feeder-0-0's
    with api.client("read") as client:
        site = client.get(f"/v1/nodes/{node}/sites", params={"limit": 1}).json()["data"][0]
    _bidding_record(api, asset)
    first = _plans_and_actuals(api, node, site)
    url = f"{api.url}/dashboard/#token={api.tokens['read']}&stream=off"
    # one page load draws both views (the same day-long range); the screenshots show one each
    both = f"&node={node}&site={site}&asset={asset}&from={first.isoformat().replace('+00:00', 'Z')}"

    def shows_bids_runs_and_plans(dom: str) -> None:
        # bids as the range each curve offers, what cleared and at what price; revenue over time; the runs
        for chart in ("chart-bids", "chart-revenue", "chart-runs"):
            assert _drawn(dom, chart), f"{chart} was not drawn"
        note = _element(dom, "bidding-note")
        assert "47 intervals bid (energy)" in note and "5 safe bids" in note, note
        assert "47 cleared" in note and "revenue " in note, note
        assert "energy: offered MW (lowest\u2013highest band)" in dom and "energy: cleared MW" in dom
        assert "energy: clearing price" in dom and "safe bid (holds SoC)" in dom
        assert "cumulative revenue EUR" in dom and "revenue per interval EUR" in dom
        runs = _element(dom, "runs-note")
        assert "48 runs: 47 submitted, 1 failed, 0 running · 5 fell back to a safe bid" in runs, runs
        backtest = _element(dom, "backtest-summary")
        assert "would change<b>3</b>" in backtest and "today's logic EUR<b>301.5</b>" in backtest, backtest
        flagged = _element(dom, "run-rows")
        assert f"{asset}@" in flagged and "⚠ safe bid" in flagged
        assert "optimise attempt 1: infeasible" in flagged, flagged

        # the node's aggregate plan against its measured power, with plan coverage; a site's plan against
        # its own
        for chart in ("chart-plan-node", "chart-plan-site"):
            assert _drawn(dom, chart), chart
        node_note = _element(dom, "plan-note")
        coverage = "120 planned intervals · plan coverage 90\u2013100 % · below 95 % in 8"
        assert coverage in node_note, node_note
        assert re.search(DIFFERS, node_note), node_note
        assert "planned kW" in dom and "measured battery kW" in dom and "plan coverage %" in dom
        site_note = _element(dom, "plan-site-note")
        assert re.search(rf"site {site}: \d+ planned intervals from [45] plans", site_note), site_note
        assert re.search(DIFFERS, site_note), site_note

    try:
        with browser.tab(url + both) as tab:
            dom = tab.settle(shows_bids_runs_and_plans, PAGE_TIMEOUT_S)
        _screenshots(browser, url, {"console-bidding": f"{both}&view=bidding",
                                    "console-plan": f"{both}&view=plan"}, shows_bids_runs_and_plans)
    finally:
        client_ = history.connect(api.settings)
        for table in ("node_plan", "site_plan"):
            client_.command(f"TRUNCATE TABLE {api.settings.clickhouse_database}.{table}")
        client_.close()
    (tmp_path / "dashboard-decisions.html").write_text(dom)
