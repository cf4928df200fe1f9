"""History at each resolution agrees with the rows stored in ClickHouse."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from core import history
from core.rows import NodeWindow, SiteWindow
from tests.api.conftest import Api

pytestmark = pytest.mark.integration

FIRST = datetime(2025, 1, 10, tzinfo=UTC)
DAYS = 3
STEP = timedelta(minutes=10)
NODE = "feeder-0-0"


@pytest.fixture(scope="module")
def stored(api: Api) -> str:
    """Three days of ten-minute windows for one site and one node, with their hour and day rollups."""
    site = sorted(api.fleet.sites)[10]
    count = int(timedelta(days=DAYS) / STEP)
    times = [FIRST + i * STEP for i in range(count)]
    client = history.connect(api.settings)
    store = history.HistoryStore(client, api.settings.clickhouse_database)
    store.insert_site_minutes([SiteWindow(site, t, i % 7 - 3.0, i % 7 - 4.0, i % 7 - 2.0, 1.5, 0.7, -0.8,
                                          50 + i % 40, 4.0 + i % 5, 60, 1.0, 1) for i, t in enumerate(times)])
    store.insert_node_minutes([NodeWindow(NODE, "electrical", t, 10.0 + i % 11, 5.0, 20.0, 30.0, 12.0, -18.0,
                                          400.0 + i % 13, 300.0, 150, 140 + i % 10, (140 + i % 10) / 150, 1)
                               for i, t in enumerate(times)])
    client.close()
    return site


def _stored(api: Api, table: str, key: str, ident: str, start: datetime,
            end: datetime) -> list[dict[str, Any]]:
    time_col = "minute" if table.endswith("minute") else "period"
    client = history.connect(api.settings)
    result = client.query(f"SELECT * FROM {api.settings.clickhouse_database}.{table} FINAL "
                          f"WHERE {key} = %(id)s AND {time_col} >= %(s)s AND {time_col} < %(e)s "
                          f"ORDER BY {time_col}", parameters={"id": ident, "s": start, "e": end})
    rows = [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]
    client.close()
    for row in rows:
        row["start"] = row.pop(time_col).replace(tzinfo=UTC)
    return rows


def _same(answer: list[dict[str, Any]], rows: list[dict[str, Any]]) -> None:
    assert len(answer) == len(rows) > 0
    for point, row in zip(answer, rows, strict=True):
        assert datetime.fromisoformat(point["start"]) == row["start"]
        for name, value in point.items():
            if name != "start":
                assert value == pytest.approx(row[name]), name


@pytest.mark.parametrize(("resolution", "span"), [("minute", timedelta(hours=6)), ("hour", timedelta(days=2)),
                                                  ("day", timedelta(days=DAYS))])
def test_each_resolution_returns_the_stored_rows(api: Api, stored: str, resolution: str,
                                                 span: timedelta) -> None:
    start, end = FIRST + timedelta(hours=1), FIRST + timedelta(hours=1) + span
    if resolution == "day":
        start, end = FIRST, FIRST + span
    params = {"start": start.isoformat(), "end": end.isoformat(), "resolution": resolution}
    with api.client("read") as client:
        site = client.get(f"/v1/sites/{stored}/history", params=params).json()
        node = client.get(f"/v1/nodes/{NODE}/history", params=params).json()
    assert site["resolution"] == node["resolution"] == resolution
    _same(site["data"], _stored(api, f"site_{resolution}", "site_id", stored, start, end))
    _same(node["data"], _stored(api, f"node_{resolution}", "node_id", NODE, start, end))
    assert site["count"] == len(site["data"])


@pytest.mark.parametrize(("span", "expected"), [(timedelta(hours=12), "minute"), (timedelta(days=10), "hour"),
                                                (timedelta(days=200), "day")])
def test_auto_resolution_follows_the_range(api: Api, stored: str, span: timedelta, expected: str) -> None:
    params = {"start": FIRST.isoformat(), "end": (FIRST + span).isoformat()}
    with api.client("read") as client:
        answer = client.get(f"/v1/nodes/{NODE}/history", params=params).json()
    assert answer["resolution"] == expected and answer["count"] > 0


def test_the_customer_reads_its_own_history(api: Api, stored: str) -> None:
    with api.client("customer_a") as client:
        own = client.get(f"/v1/sites/{api.site_of('customer_a')}/history",
                         params={"start": FIRST.isoformat(), "end": (FIRST + timedelta(days=1)).isoformat()})
    assert own.status_code == 200 and own.json()["resolution"] == "minute"


@pytest.mark.parametrize(("params", "message"), [
    ({"start": "2025-01-02T00:00:00Z", "end": "2025-01-01T00:00:00Z"}, "must be after"),
    ({"start": "1900-01-01T00:00:00Z", "end": "2025-01-01T00:00:00Z"}, "outside the history"),
    ({"start": "2000-01-01T00:00:00Z", "end": "2025-01-01T00:00:00Z", "resolution": "minute"}, "coarser"),
])
def test_bad_ranges_are_422_with_what_to_change(api: Api, params: dict[str, str], message: str) -> None:
    with api.client("read") as client:
        response = client.get(f"/v1/nodes/{NODE}/history", params=params)
    assert response.status_code == 422 and message in response.json()["detail"]
    with api.client("read") as client:
        assert client.get(f"/v1/nodes/{NODE}/history", params={"resolution": "week"}).status_code == 422
