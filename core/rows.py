"""The rows of the history tables: frozen dataclasses whose field names are the columns.

Pure data with no client attached, so the decision logic that produces rows
(twin windows, rollups, the dispatch journal) imports them without loading
clickhouse-connect; :mod:`core.history` inserts and reads them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class SiteWindow:
    """One site over one window (a minute, or an hour/day rollup); powers in kW."""

    site_id: str
    start: datetime
    battery_kw_mean: float
    battery_kw_min: float
    battery_kw_max: float
    solar_kw_mean: float
    load_kw_mean: float
    grid_kw_mean: float
    soc_pct_last: float
    energy_available_kwh_last: float
    samples: int
    coverage: float
    version: int


@dataclass(frozen=True)
class NodeWindow:
    """One node's aggregate over one window; powers are the node's summed kW."""

    node_id: str
    hierarchy: str
    start: datetime
    battery_kw: float
    battery_kw_min: float
    battery_kw_max: float
    solar_kw: float
    load_kw: float
    grid_kw: float
    energy_available_kwh: float
    charge_headroom_kwh: float
    expected_sites: int
    reporting_sites: int
    coverage: float
    version: int


@dataclass(frozen=True)
class MembershipEdge:
    """One effective-dated edge of a hierarchy; ``valid_to`` None means still valid."""

    child_id: str
    child_kind: str
    parent_id: str
    hierarchy: str
    valid_from: datetime
    valid_to: datetime | None
    change_id: str
    recorded_at: datetime


@dataclass(frozen=True)
class DispatchLogEntry:
    """One status of a dispatch, as published on dispatch.status."""

    dispatch_id: str
    event_time: datetime
    state: str
    node_id: str | None
    target_kw: float
    measured_kw: float
    error_kw: float
    shortfall_kw: float
    sites_total: int
    sites_acked: int
    sites_pending: int
    sites_rejected: int


@dataclass(frozen=True)
class CommandLogEntry:
    """One command to a site and what became of it."""

    command_id: str
    dispatch_id: str
    site_id: str
    setpoint_kw: float
    valid_from: datetime
    valid_until: datetime
    attempt: int
    status: str
    event_time: datetime


@dataclass(frozen=True)
class Revocation:
    """A revoked device token (by its jti), when and by whom: the durable side of ``gateway:revoked``."""

    jti: str
    revoked_at: datetime
    revoked_by: str


@dataclass(frozen=True)
class ForecastRunRow:
    """One forecast of one series by one model at one time (``forecast_runs``)."""

    run_id: str
    series_kind: str  # node_load, node_solar, price
    series_id: str  # node id or price region
    model: str
    issued_at: datetime
    first_target: datetime
    step_s: int
    horizon_steps: int
    history_steps: int
    filled_steps: int
    note: str  # why the naive served, if it did


@dataclass(frozen=True)
class ForecastPoint:
    """One target of a forecast run (``forecast_points``): the mean and the 10/50/90% quantiles."""

    run_id: str
    series_kind: str
    series_id: str
    model: str
    issued_at: datetime
    target_time: datetime
    horizon_steps: int
    value: float
    q10: float
    q50: float
    q90: float


@dataclass(frozen=True)
class MarketPrice:
    """One interval's day-ahead price of a price region (``market_prices``), and where it came from."""

    region: str
    interval_start: datetime
    interval_minutes: int
    price_eur_mwh: float
    published_at: datetime
    source: str  # the adapter or replayed series, e.g. smard:DE:2018


@dataclass(frozen=True)
class PeakEvent:
    """One node's peak-shaving day (``peak_events``): what was planned and what was delivered.

    ``counterfactual_peak_kw`` is the day's peak without the fleet, measured: net load
    plus the fleet's measured discharge. ``rebound`` is true when the day's peak with
    the fleet exceeds it. A day without an event keeps its reason in ``note``.
    """

    node_id: str
    day: datetime  # local midnight of the day, in UTC
    plan_id: str
    status: str  # planned, no_event, refused, completed
    forecast_peak_kw: float
    threshold_kw: float
    actual_peak_kw: float
    counterfactual_peak_kw: float
    energy_delivered_kwh: float
    energy_recharged_kwh: float
    rebound: bool
    note: str
    recorded_at: datetime


@dataclass(frozen=True)
class SitePlanRow:
    """One plan a site sent and the plans dataflow accepted (``site_plan``); powers in kW, + = discharge."""

    site_id: str
    plan_id: str
    issued_at: datetime
    start: datetime
    interval_minutes: int
    power_kw: list[float]
    forecast_issued_at: datetime | None
    received_at: datetime


@dataclass(frozen=True)
class NodePlanRow:
    """A node's aggregate plan for one interval as computed at ``computed_at`` (``node_plan``).

    ``planned_kw`` sums the plans of online sites, ``estimate_kw`` adds the last plans of
    offline sites (``carried_sites`` of them); coverage = planned_sites / expected_sites.
    """

    node_id: str
    hierarchy: str
    interval_start: datetime
    interval_minutes: int
    planned_kw: float
    estimate_kw: float
    expected_sites: int
    planned_sites: int
    carried_sites: int
    stale_sites: int
    coverage: float
    computed_at: datetime


@dataclass(frozen=True)
class WorkflowArtifactRow:
    """One immutable task input or output of a bidding workflow (``workflow_artifacts``).

    ``artifact_id`` (and ``content_sha256``) is the sha256 of ``content`` (canonical JSON,
    :mod:`bidding.artifacts`); ``workflow_id`` and ``step`` say which task made it.
    """

    workflow_id: str
    step: str
    artifact_id: str
    kind: str
    created_at: datetime
    content: str
    content_sha256: str


@dataclass(frozen=True)
class WorkflowStepRow:
    """What one (workflow, step, attempt) produced (``workflow_steps``): the worker's idempotency record."""

    workflow_id: str
    step: str
    attempt: int
    output: str | None
    error: str | None
    worker: str
    finished_at: datetime


@dataclass(frozen=True)
class BidRow:
    """One accepted curve (``bids``): bands as JSON ``[[price, MW], ...]``."""

    asset_id: str
    interval_start: datetime
    product: str
    region: str
    workflow_id: str
    bands_json: str
    note: str
    artifact_id: str
    submitted_at: datetime


@dataclass(frozen=True)
class MarketResultRow:
    """What the market cleared for one asset, interval and product (``market_results``)."""

    asset_id: str
    interval_start: datetime
    product: str
    price: float
    quantity_mw: float
    revenue_eur: float
    workflow_id: str
    cleared_at: datetime


@dataclass(frozen=True)
class BacktestReportRow:
    """One ``vpp backtest`` run (``backtest_reports``): the window replayed, how many decisions would
    change, both revenues (EUR, cleared decisions only) and every decision's row as JSON."""

    report_id: str
    ran_at: datetime
    window_start: datetime
    window_end: datetime
    decisions: int
    changed: int
    stored_revenue_eur: float
    replayed_revenue_eur: float
    decisions_json: str
