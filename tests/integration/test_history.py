"""History round trips through clickhouse-connect against the embedded history server."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError
from hypothesis import given, settings
from hypothesis import strategies as st

from core import history
from core.config import Settings
from core.history import HistoryStore
from core.rows import MembershipEdge, NodeWindow, SiteWindow
from tests.conftest import free_port
from vpp.stack import probe_history

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def store(stack_settings: Settings) -> HistoryStore:
    return HistoryStore(history.connect(stack_settings))


def _site_minute(site_id: str, minute: int, battery_kw: float, samples: int = 60) -> SiteWindow:
    return SiteWindow(
        site_id=site_id,
        start=T0 + timedelta(minutes=minute),
        battery_kw_mean=battery_kw,
        battery_kw_min=battery_kw - 1,
        battery_kw_max=battery_kw + 1,
        solar_kw_mean=2.0,
        load_kw_mean=1.5,
        grid_kw_mean=-0.5,
        soc_pct_last=40.0 + minute % 50,
        energy_available_kwh_last=6.0,
        samples=samples,
        coverage=samples / 60,
        version=1,
    )


def test_ddl_is_idempotent(store: HistoryStore) -> None:
    first = history.apply_ddl(store.client)
    assert history.apply_ddl(store.client) == first
    assert {
        "vpp.site_minute",
        "vpp.node_minute",
        "vpp.asset_membership",
        "vpp.dispatch_log",
        "vpp.command_log",
        "vpp.workflow_artifacts",
        "vpp.site_hour",
        "vpp.node_day",
    } <= set(first)
    assert store.client.query("SELECT version()").result_rows[0][0].startswith("26.")


def test_replayed_minutes_replace_and_rollups_do_not_double(store: HistoryStore) -> None:
    site = f"site-{uuid.uuid4().hex[:8]}"
    rows = [_site_minute(site, m, float(m)) for m in range(130)]
    store.insert_site_minutes(rows)
    before = store.site_history(site, T0, T0 + timedelta(days=1), "hour")
    store.insert_site_minutes(rows)  # a replay after a crash
    assert store.site_history(site, T0, T0 + timedelta(days=1), "minute") == rows
    after = store.site_history(site, T0, T0 + timedelta(days=1), "hour")
    assert [(r.start, r.samples, r.battery_kw_mean) for r in after] == [
        (r.start, r.samples, r.battery_kw_mean) for r in before
    ]
    assert [r.samples for r in after] == [3600, 3600, 600]


def test_a_batch_refreshes_only_the_rollups_of_its_own_ids(store: HistoryStore) -> None:
    quiet, busy = (f"site-{uuid.uuid4().hex[:8]}" for _ in range(2))
    store.insert_site_minutes([_site_minute(quiet, 0, 1.0)])

    def hour_versions(site: str) -> list[int]:
        return [row[0] for row in store.client.query(
            "SELECT version FROM vpp.site_hour WHERE site_id = %(s)s", parameters={"s": site}).result_rows]

    quiet_before = hour_versions(quiet)
    store.insert_site_minutes([_site_minute(busy, 1, 2.0)])  # same hour, another site
    assert hour_versions(quiet) == quiet_before  # not recomputed: the batch did not touch it
    assert store.site_history(busy, T0, T0 + timedelta(hours=1), "hour")[0].samples == 60


@settings(max_examples=15, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 3 * 24 * 60 - 1), st.floats(-10, 10), st.integers(1, 60)),
        min_size=1,
        max_size=40,
        unique_by=lambda t: t[0],
    )
)
def test_rollups_agree_with_brute_force(store: HistoryStore, minutes: list[tuple[int, float, int]]) -> None:
    site = f"site-{uuid.uuid4().hex[:8]}"
    rows = [_site_minute(site, m, kw, n) for m, kw, n in minutes]
    store.insert_site_minutes(rows)
    for resolution, width in (("hour", timedelta(hours=1)), ("day", timedelta(days=1))):
        expected: dict[datetime, list[SiteWindow]] = {}
        for row in rows:
            period = T0 + ((row.start - T0) // width) * width
            expected.setdefault(period, []).append(row)
        got = store.site_history(site, T0, T0 + timedelta(days=3), resolution)  # type: ignore[arg-type]
        assert [r.start for r in got] == sorted(expected)
        for r in got:
            group = expected[r.start]
            samples = sum(g.samples for g in group)
            assert r.samples == samples
            assert r.battery_kw_mean == pytest.approx(
                sum(g.battery_kw_mean * g.samples for g in group) / samples
            )
            assert r.battery_kw_min == min(g.battery_kw_min for g in group)
            assert r.battery_kw_max == max(g.battery_kw_max for g in group)
            assert r.soc_pct_last == max(group, key=lambda g: g.start).soc_pct_last


def test_node_minutes_membership_round_trip(store: HistoryStore) -> None:
    node = f"feeder-{uuid.uuid4().hex[:8]}"
    rows = [
        NodeWindow(
            node,
            "electrical",
            T0 + timedelta(minutes=m),
            100.0 + m,
            90.0,
            120.0,
            5.0,
            3.0,
            -2.0,
            400.0,
            100.0,
            200,
            190,
            0.95,
            1,
        )
        for m in range(3)
    ]
    store.insert_node_minutes(rows)
    assert store.node_history(node, T0, T0 + timedelta(hours=1)) == rows  # auto: minute resolution
    day = store.node_history(node, T0, T0 + timedelta(days=365))  # auto: day resolution
    assert len(day) == 1
    assert day[0].battery_kw == pytest.approx(101.0)
    edge = MembershipEdge("site-1", "site", node, "electrical", T0, None, "chg-1", T0)
    store.insert_membership([edge, edge])
    count = store.client.query(
        "SELECT count() FROM vpp.asset_membership FINAL WHERE parent_id = %(p)s", parameters={"p": node}
    ).result_rows[0][0]
    assert count == 1


def test_concurrent_readers_and_a_writer(stack_settings: Settings) -> None:
    site = f"site-{uuid.uuid4().hex[:8]}"
    errors: list[BaseException] = []

    def write() -> None:
        writer = HistoryStore(history.connect(stack_settings))
        for batch in range(10):
            writer.insert_site_minutes([_site_minute(site, batch * 10 + m, 1.0) for m in range(10)])

    def read() -> None:
        reader = history.connect(stack_settings)
        for _ in range(20):
            reader.query(
                "SELECT count() FROM vpp.site_minute FINAL WHERE site_id = %(s)s", parameters={"s": site}
            )

    def guarded(target: object) -> None:
        try:
            target()  # type: ignore[operator]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(write,))]
    threads += [threading.Thread(target=guarded, args=(read,)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    final = history.connect(stack_settings).query(
        "SELECT count() FROM vpp.site_minute FINAL WHERE site_id = %(s)s", parameters={"s": site}
    )
    assert final.result_rows[0][0] == 100


def test_clickhouse_errors_are_clear_and_the_server_keeps_serving(store: HistoryStore) -> None:
    with pytest.raises(DatabaseError, match=r"UNKNOWN_TABLE"):
        store.client.query("SELECT * FROM vpp.no_such_table")
    with pytest.raises(DatabaseError, match=r"SYNTAX_ERROR"):
        store.client.query("SELEKT 1")
    with pytest.raises(ValueError, match="range is empty"):
        store.site_history("s", T0, T0)
    assert store.client.query("SELECT 1").result_rows == [(1,)]


def test_a_second_server_on_the_same_directory_says_who_holds_it(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "VPP_CLICKHOUSE_PASSWORD": "second-server-test"}
    first = subprocess.Popen(
        [sys.executable, "-m", "vpp.history_server", "--data-dir", str(tmp_path), "--port", str(port)],
        stderr=subprocess.PIPE, env=env,
    )
    try:
        settings = Settings(clickhouse_url=None, clickhouse_port=port,
                            clickhouse_password="second-server-test")  # type: ignore[arg-type]
        deadline = time.monotonic() + 120
        while not probe_history(settings):
            assert time.monotonic() < deadline, "history server did not start"
            time.sleep(0.05)
        client = history.connect(settings)
        assert client.query("SELECT 1").result_rows == [(1,)]
        second = subprocess.run(
            [
                sys.executable,
                "-m",
                "vpp.history_server",
                "--data-dir",
                str(tmp_path),
                "--port",
                str(free_port()),
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
            env=env,
        )
        assert second.returncode == 2
        assert "in use by another process" in second.stderr
        assert "vpp stack down" in second.stderr
    finally:
        first.terminate()
        first.wait(timeout=30)
    assert first.returncode == 0


def test_rowbinary_insert_body(store: HistoryStore) -> None:
    """Not only Native: a RowBinary body (as the Grafana plugin and other clients send) loads too."""
    table = f"vpp.rowbinary_{uuid.uuid4().hex[:8]}"
    store.client.command(f"CREATE TABLE {table} (name String, value UInt32) ENGINE = MergeTree ORDER BY name")
    rows = [("alpha", 1), ("beta", 70000)]
    body = b"".join(bytes([len(n)]) + n.encode() + v.to_bytes(4, "little") for n, v in rows)
    store.client.raw_insert(table, ["name", "value"], insert_block=body, fmt="RowBinary")
    assert store.client.query(f"SELECT name, value FROM {table} ORDER BY name").result_rows == rows
