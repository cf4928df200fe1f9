"""The history store: clickhouse-connect clients, the DDL, batched inserts and typed queries.

Every process reaches ClickHouse through :func:`connect`, locally the embedded
history server and in production a real server (``VPP_CLICKHOUSE_URL``). Rows
are frozen dataclasses whose field names are the table's columns, so an insert
is one ``client.insert`` per batch.

Replays are harmless by design: the minute tables are ReplacingMergeTree keyed
by id and minute and read with ``FINAL``; the hour and day rollups are
recomputed from them for the ids and periods a batch touched
(:meth:`HistoryStore.refresh_rollups`), so a replayed window replaces its
rollup rather than adding to it.

Errors from ClickHouse surface as ``clickhouse_connect.driver.exceptions.DatabaseError``
carrying the server's message (``Code: 60. DB::Exception: ... (UNKNOWN_TABLE)``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any, Literal, TypeVar

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from core.config import Settings, get_settings
from core.plausibility import SiteLimits
from core.rows import (
    CommandLogEntry,
    DispatchLogEntry,
    ForecastPoint,
    ForecastRunRow,
    MarketPrice,
    MembershipEdge,
    NodePlanRow,
    NodeWindow,
    PeakEvent,
    Revocation,
    SitePlanRow,
    SiteWindow,
)

Resolution = Literal["minute", "hour", "day"]
QuarterHourColumn = Literal["load_kw", "solar_kw", "grid_kw", "battery_kw"]
_CREATE_TABLE = re.compile(r"CREATE TABLE IF NOT EXISTS\s+([\w.]+)", re.IGNORECASE)


def connect(settings: Settings | None = None) -> Client:
    """A client for the configured ClickHouse as its user (compression off: on loopback it only costs CPU)."""
    settings = settings or get_settings()
    user, password = settings.clickhouse_credentials() or (None, "")
    return clickhouse_connect.get_client(
        dsn=settings.clickhouse, username=user, password=password,
        compress=False,
        connect_timeout=5,
        send_receive_timeout=60,
        query_retries=1,
    )


@contextmanager
def store_for(settings: Settings) -> Iterator[HistoryStore]:
    """A history store on a client of its own for one piece of work, closed after it."""
    client = connect(settings)
    try:
        yield HistoryStore(client, settings.clickhouse_database)
    finally:
        client.close()


def ddl_statements() -> list[str]:
    """Every DDL statement of schemas/clickhouse, files in lexical order."""
    folder = resources.files("schemas").joinpath("clickhouse")
    statements: list[str] = []
    for name in sorted(entry.name for entry in folder.iterdir() if entry.name.endswith(".sql")):
        text = folder.joinpath(name).read_text()
        body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
        statements.extend(stmt.strip() for stmt in body.split(";") if stmt.strip())
    return statements


def apply_ddl(client: Client) -> list[str]:
    """Apply the DDL (idempotent); return the tables it defines."""
    tables = []
    for statement in ddl_statements():
        client.command(statement)
        match = _CREATE_TABLE.search(statement)
        if match:
            tables.append(match.group(1))
    return tables


Row = TypeVar("Row", SiteWindow, NodeWindow)

_SITE_VALUES = (
    "sum(battery_kw_mean * samples) / greatest(sum(samples), 1) AS battery_kw_mean, "
    "min(battery_kw_min) AS battery_kw_min, max(battery_kw_max) AS battery_kw_max, "
    "sum(solar_kw_mean * samples) / greatest(sum(samples), 1) AS solar_kw_mean, "
    "sum(load_kw_mean * samples) / greatest(sum(samples), 1) AS load_kw_mean, "
    "sum(grid_kw_mean * samples) / greatest(sum(samples), 1) AS grid_kw_mean, "
    "argMax(soc_pct_last, {t}) AS soc_pct_last, "
    "argMax(energy_available_kwh_last, {t}) AS energy_available_kwh_last, "
    "sum(samples) AS samples, avg(coverage) AS coverage"
)
_NODE_VALUES = (
    "any(hierarchy) AS hierarchy, "
    "avg(battery_kw) AS battery_kw, min(battery_kw_min) AS battery_kw_min, "
    "max(battery_kw_max) AS battery_kw_max, avg(solar_kw) AS solar_kw, avg(load_kw) AS load_kw, "
    "avg(grid_kw) AS grid_kw, argMax(energy_available_kwh, {t}) AS energy_available_kwh, "
    "argMax(charge_headroom_kwh, {t}) AS charge_headroom_kwh, "
    "toUInt32(round(avg(expected_sites))) AS expected_sites, "
    "toUInt32(round(avg(reporting_sites))) AS reporting_sites, avg(coverage) AS coverage"
)


def _rollup_columns(values: str, key: str, kind: str) -> str:
    """The target columns of a rollup INSERT ... SELECT, in the SELECT's order."""
    aliases = re.findall(r"AS (\w+)", values)
    extra = ["minutes"] if kind == "node" else []
    return ", ".join([key, "period", *aliases, *extra, "version"])


def choose_resolution(start: datetime, end: datetime) -> Resolution:
    """Minutes up to two days, hours up to 90 days, days beyond: a few thousand points at most."""
    span = end - start
    if span <= timedelta(days=2):
        return "minute"
    if span <= timedelta(days=90):
        return "hour"
    return "day"


def _utc(value: datetime) -> datetime:
    """clickhouse-connect returns naive datetimes for UTC columns; make them aware."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class HistoryStore:
    """Batched inserts and typed queries over the history tables."""

    def __init__(self, client: Client, database: str = "vpp") -> None:
        self.client = client
        self.db = database

    def _insert(self, table: str, rows: list[Any], columns: list[str] | None = None) -> None:
        if not rows:
            return
        attributes = [f.name for f in fields(rows[0])]
        # Shallow tuples: dataclasses.astuple deep-copies every list (a plan's 96 powers), which cost
        # more than the insert itself.
        data = [tuple(getattr(row, name) for name in attributes) for row in rows]
        self.client.insert(f"{self.db}.{table}", data, column_names=columns or attributes)

    def insert_site_minutes(self, rows: list[SiteWindow]) -> None:
        """Insert minute windows and refresh the hour/day rollups they touch."""
        names = ["minute" if f.name == "start" else f.name for f in fields(SiteWindow)]
        self._insert("site_minute", rows, names)
        if rows:
            self.refresh_rollups("site", min(r.start for r in rows), max(r.start for r in rows),
                                 {r.site_id for r in rows})

    def insert_node_minutes(self, rows: list[NodeWindow]) -> None:
        """Insert node minute windows and refresh the hour/day rollups they touch."""
        names = ["minute" if f.name == "start" else f.name for f in fields(NodeWindow)]
        self._insert("node_minute", rows, names)
        if rows:
            self.refresh_rollups("node", min(r.start for r in rows), max(r.start for r in rows),
                                 {r.node_id for r in rows})

    def insert_membership(self, rows: list[MembershipEdge]) -> None:
        """Record effective-dated hierarchy edges."""
        self._insert("asset_membership", rows)

    def insert_dispatch_log(self, rows: list[DispatchLogEntry]) -> None:
        """Journal dispatch statuses."""
        self._insert("dispatch_log", rows)

    def insert_command_log(self, rows: list[CommandLogEntry]) -> None:
        """Journal commands and their outcomes."""
        self._insert("command_log", rows)

    def insert_revocations(self, rows: list[Revocation]) -> None:
        """Record revoked device tokens (durable; a repeat replaces itself)."""
        self._insert("revoked_tokens", rows)

    def is_revoked(self, jti: str) -> bool:
        """True if ``jti`` has been revoked."""
        result = self.client.query(f"SELECT count() FROM {self.db}.revoked_tokens WHERE jti = %(jti)s",
                                   parameters={"jti": jti})
        return bool(result.result_rows[0][0])

    def revoked_jtis(self) -> list[str]:
        """Every revoked device-token id."""
        result = self.client.query(f"SELECT DISTINCT jti FROM {self.db}.revoked_tokens")
        return [str(row[0]) for row in result.result_rows]

    def site_limits(self) -> dict[str, SiteLimits]:
        """The registered charge and discharge ratings of every site not retired, by site id."""
        result = self.client.query(
            f"SELECT site_id, max_charge_kw, max_discharge_kw FROM {self.db}.asset_sites FINAL "
            "WHERE retired_at IS NULL")
        return {str(site): SiteLimits(float(charge), float(discharge))
                for site, charge, discharge in result.result_rows}

    def insert_forecast(self, run: ForecastRunRow, points: list[ForecastPoint]) -> None:
        """Record a forecast run and its points (a rewrite of the same run replaces them)."""
        self._insert("forecast_runs", [run])
        self._insert("forecast_points", points)

    def insert_peak_events(self, rows: list[PeakEvent]) -> None:
        """Record peak days (a later ``recorded_at`` for the same node and day replaces the row)."""
        self._insert("peak_events", rows)

    def peak_events(self, node_id: str, start: datetime, end: datetime) -> list[PeakEvent]:
        """A node's peak days in [start, end), the latest record of each, oldest first."""
        names = [f.name for f in fields(PeakEvent)]
        result = self.client.query(
            f"SELECT {', '.join(names)} FROM {self.db}.peak_events FINAL WHERE node_id = %(id)s "
            "AND day >= %(start)s AND day < %(end)s ORDER BY day",
            parameters={"id": node_id, "start": start, "end": end})
        rows = []
        for raw in result.result_rows:
            values: list[Any] = list(raw)
            for name in ("day", "recorded_at"):
                values[names.index(name)] = _utc(values[names.index(name)])
            values[names.index("rebound")] = bool(values[names.index("rebound")])
            rows.append(PeakEvent(*values))
        return rows

    def node_quarter_hours(self, node_id: str, column: QuarterHourColumn, start: datetime,
                           end: datetime) -> tuple[list[datetime], list[float]]:
        """A node's ``column`` averaged over each 15 minutes in [start, end) that has minute rows."""
        result = self.client.query(
            f"SELECT toStartOfFifteenMinutes(minute) AS slot, avg({column}) FROM {self.db}.node_minute FINAL "
            "WHERE node_id = %(id)s AND minute >= %(start)s AND minute < %(end)s GROUP BY slot ORDER BY slot",
            parameters={"id": node_id, "start": start, "end": end})
        return [_utc(r[0]) for r in result.result_rows], [float(r[1]) for r in result.result_rows]

    def latest_forecast(self, series_kind: str, series_id: str,
                        ) -> tuple[ForecastRunRow, list[ForecastPoint]] | None:
        """The latest run of a series that is not a baseline, with its points; None if there is none."""
        run_names = [f.name for f in fields(ForecastRunRow)]
        result = self.client.query(
            f"SELECT {', '.join(run_names)} FROM {self.db}.forecast_runs FINAL WHERE series_kind = %(kind)s "
            "AND series_id = %(id)s AND note != 'baseline' ORDER BY issued_at DESC LIMIT 1",
            parameters={"kind": series_kind, "id": series_id})
        if not result.result_rows:
            return None
        values: list[Any] = list(result.result_rows[0])
        for name in ("issued_at", "first_target"):
            values[run_names.index(name)] = _utc(values[run_names.index(name)])
        run = ForecastRunRow(*values)
        point_names = [f.name for f in fields(ForecastPoint)]
        rows = self.client.query(
            f"SELECT {', '.join(point_names)} FROM {self.db}.forecast_points FINAL WHERE run_id = %(run)s "
            "ORDER BY horizon_steps", parameters={"run": run.run_id}).result_rows
        points = []
        for raw in rows:
            point: list[Any] = list(raw)
            for name in ("issued_at", "target_time"):
                point[point_names.index(name)] = _utc(point[point_names.index(name)])
            points.append(ForecastPoint(*point))
        return run, points

    def forecast_node_errors(self, series_id: str) -> list[tuple[str, str, int, int, float, float]]:
        """(series_kind, model, horizon_steps, points, mae, coverage_80) of a node's scored forecasts."""
        result = self.client.query(
            "SELECT series_kind, model, horizon_steps, points, mae, coverage_80 "
            f"FROM {self.db}.forecast_node_errors WHERE series_id = %(id)s "
            "ORDER BY series_kind, model, horizon_steps", parameters={"id": series_id})
        return [(str(r[0]), str(r[1]), int(r[2]), int(r[3]), float(r[4]), float(r[5]))
                for r in result.result_rows]

    def insert_market_prices(self, rows: list[MarketPrice]) -> None:
        """Record published interval prices (a re-published interval replaces the earlier row)."""
        self._insert("market_prices", rows)

    def market_prices(self, region: str, start: datetime, end: datetime) -> list[MarketPrice]:
        """A region's published prices with interval_start in [start, end), oldest first."""
        names = [f.name for f in fields(MarketPrice)]
        result = self.client.query(
            f"SELECT {', '.join(names)} FROM {self.db}.market_prices FINAL WHERE region = %(region)s "
            "AND interval_start >= %(start)s AND interval_start < %(end)s ORDER BY interval_start",
            parameters={"region": region, "start": start, "end": end})
        return [MarketPrice(str(r[0]), _utc(r[1]), int(r[2]), float(r[3]), _utc(r[4]), str(r[5]))
                for r in result.result_rows]

    def market_regions(self) -> list[str]:
        """Every region with a published price."""
        result = self.client.query(f"SELECT DISTINCT region FROM {self.db}.market_prices ORDER BY region")
        return [str(row[0]) for row in result.result_rows]

    def forecast_price_errors(self, region: str) -> list[tuple[str, str, int, int, float, float]]:
        """(series_kind, model, horizon_steps, points, mae, coverage_80) of scored price forecasts."""
        result = self.client.query(
            "SELECT 'price', model, horizon_steps, points, mae, coverage_80 "
            f"FROM {self.db}.forecast_price_errors WHERE series_id = %(id)s ORDER BY model, horizon_steps",
            parameters={"id": region})
        return [(str(r[0]), str(r[1]), int(r[2]), int(r[3]), float(r[4]), float(r[5]))
                for r in result.result_rows]

    def insert_site_plans(self, rows: list[SitePlanRow]) -> None:
        """Record accepted site plans (a replayed plan replaces itself)."""
        self._insert("site_plan", rows)

    def insert_node_plans(self, rows: list[NodePlanRow]) -> None:
        """Record aggregate plans per node and interval (a later computation replaces the row)."""
        self._insert("node_plan", rows)

    def node_plan(self, node_id: str, start: datetime, end: datetime) -> list[NodePlanRow]:
        """A node's latest aggregate plan for the intervals starting in [start, end), oldest first."""
        names = [f.name for f in fields(NodePlanRow)]
        result = self.client.query(
            f"SELECT {', '.join(names)} FROM {self.db}.node_plan FINAL WHERE node_id = %(id)s "
            "AND interval_start >= %(start)s AND interval_start < %(end)s ORDER BY interval_start",
            parameters={"id": node_id, "start": start, "end": end})
        rows = []
        for raw in result.result_rows:
            values: list[Any] = list(raw)
            for name in ("interval_start", "computed_at"):
                values[names.index(name)] = _utc(values[names.index(name)])
            rows.append(NodePlanRow(*values))
        return rows

    def site_plans(self, site_id: str, start: datetime, end: datetime,
                   latest_only: bool = False) -> list[SitePlanRow]:
        """The plans a site sent with ``issued_at`` in [start, end), oldest first (the newest alone)."""
        names = [f.name for f in fields(SitePlanRow)]
        order = "issued_at DESC, plan_id DESC LIMIT 1" if latest_only else "issued_at, plan_id"
        result = self.client.query(
            f"SELECT {', '.join(names)} FROM {self.db}.site_plan FINAL WHERE site_id = %(id)s "
            f"AND issued_at >= %(start)s AND issued_at < %(end)s ORDER BY {order}",
            parameters={"id": site_id, "start": start, "end": end})
        rows = []
        for raw in result.result_rows:
            values: list[Any] = list(raw)
            for name in ("issued_at", "start", "received_at"):
                values[names.index(name)] = _utc(values[names.index(name)])
            forecast = values[names.index("forecast_issued_at")]
            values[names.index("forecast_issued_at")] = None if forecast is None else _utc(forecast)
            values[names.index("power_kw")] = [float(p) for p in values[names.index("power_kw")]]
            rows.append(SitePlanRow(*values))
        return rows

    def refresh_rollups(self, kind: Literal["site", "node"], first: datetime, last: datetime,
                        ids: Collection[str] | None = None) -> None:
        """Recompute the hour and day rows of ``ids`` covering [first, last] from the minute rows.

        Only the ids a batch touched are recomputed, so a flush costs O(batch), not
        O(fleet): the rollups of an id change only when its minutes do. ``ids``
        None recomputes every id in the range (a repair after a manual edit).
        The new rows carry a higher version than any before, so they replace
        earlier rollups of the same periods: replaying a minute batch and
        refreshing again gives the same rollups, never doubled ones.
        """
        if ids is not None and not ids:
            return
        version = time.time_ns()
        values = _SITE_VALUES if kind == "site" else _NODE_VALUES
        key = f"{kind}_id"
        day_from = first.replace(hour=0, minute=0, second=0, microsecond=0)
        day_to = last.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
        hour_from = first.replace(minute=0, second=0, microsecond=0)
        hour_to = last.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        parameters: dict[str, Any] = {"ids": sorted(ids)} if ids is not None else {}
        only_ids = f"{key} IN %(ids)s AND " if ids is not None else ""
        for target, source, time_col, bucket, lo, hi in (
            ("hour", "minute", "minute", "toStartOfHour", hour_from, hour_to),
            ("day", "hour", "period", "toStartOfDay", day_from, day_to),
        ):
            self.client.command(
                f"INSERT INTO {self.db}.{kind}_{target} ({_rollup_columns(values, key, kind)}) "
                f"SELECT {key}, {bucket}({time_col}) AS period, {values.format(t=time_col)}, "
                + ("count() AS minutes, " if kind == "node" and target == "hour" else "")
                + ("sum(minutes) AS minutes, " if kind == "node" and target == "day" else "")
                + f"{version} AS version FROM {self.db}.{kind}_{source} FINAL "
                f"WHERE {only_ids}{time_col} >= %(lo)s AND {time_col} < %(hi)s "
                f"GROUP BY {key}, {bucket}({time_col}) "
                # Aliases reuse the column names; aggregate over the columns, not the aliases.
                "SETTINGS prefer_column_name_to_alias = 1",
                parameters={**parameters, "lo": lo, "hi": hi},
            )

    def site_history(self, site_id: str, start: datetime, end: datetime,
                     resolution: Resolution | Literal["auto"] = "auto") -> list[SiteWindow]:
        """Windows of one site in [start, end), at the requested or an automatic resolution."""
        return self._history(SiteWindow, "site", site_id, start, end, resolution)

    def node_history(self, node_id: str, start: datetime, end: datetime,
                     resolution: Resolution | Literal["auto"] = "auto") -> list[NodeWindow]:
        """Windows of one node in [start, end), at the requested or an automatic resolution."""
        return self._history(NodeWindow, "node", node_id, start, end, resolution)

    def dispatch_log(self, dispatch_id: str, limit: int = 100_000) -> list[DispatchLogEntry]:
        """Every status of a dispatch logged so far, oldest first: its error over time."""
        names = [f.name for f in fields(DispatchLogEntry)]
        result = self.client.query(
            f"SELECT {', '.join(names)} FROM {self.db}.dispatch_log FINAL WHERE dispatch_id = %(id)s "
            "ORDER BY event_time LIMIT %(limit)s", parameters={"id": dispatch_id, "limit": limit})
        at = names.index("event_time")
        entries = []
        for raw in result.result_rows:
            values: list[Any] = list(raw)
            values[at] = _utc(values[at])
            entries.append(DispatchLogEntry(*values))
        return entries

    def site_commands(self, site_id: str, start: datetime, end: datetime,
                      limit: int = 1000) -> list[CommandLogEntry]:
        """What a site was commanded in [start, end) (by event time) and what became of it, newest first."""
        names = [f.name for f in fields(CommandLogEntry)]
        result = self.client.query(
            f"SELECT {', '.join(names)} FROM {self.db}.command_log FINAL WHERE site_id = %(id)s "
            "AND event_time >= %(start)s AND event_time < %(end)s ORDER BY event_time DESC LIMIT %(limit)s",
            parameters={"id": site_id, "start": start, "end": end, "limit": limit})
        times = [names.index(n) for n in ("valid_from", "valid_until", "event_time")]
        entries = []
        for raw in result.result_rows:
            values: list[Any] = list(raw)
            for at in times:
                values[at] = _utc(values[at])
            entries.append(CommandLogEntry(*values))
        return entries

    def _history(self, row_type: type[Row], kind: str, ident: str, start: datetime, end: datetime,
                 resolution: Resolution | Literal["auto"]) -> list[Row]:
        if end <= start:
            raise ValueError(
                f"history range is empty: end {end.isoformat()} is not after {start.isoformat()}"
            )
        chosen = choose_resolution(start, end) if resolution == "auto" else resolution
        time_col = "minute" if chosen == "minute" else "period"
        columns = [time_col if f.name == "start" else f.name for f in fields(row_type)]
        result = self.client.query(
            f"SELECT {', '.join(columns)} FROM {self.db}.{kind}_{chosen} FINAL "
            f"WHERE {kind}_id = %(id)s AND {time_col} >= %(start)s AND {time_col} < %(end)s "
            f"ORDER BY {time_col}",
            parameters={"id": ident, "start": start, "end": end},
        )
        start_index = columns.index(time_col)
        rows = []
        for raw in result.result_rows:
            values: list[Any] = list(raw)
            values[start_index] = _utc(values[start_index])
            rows.append(row_type(*values))
        return rows
