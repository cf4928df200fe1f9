"""Request and response bodies of the API, and how a Redis hash becomes one.

Times are ISO 8601 UTC datetimes on the wire (Redis and Kafka keep epoch
milliseconds); powers are kW (positive battery power discharges), energies
kWh, coverage a fraction 0..1. The internal version fields of the twin
(``_va``/``_vb``, sequence numbers) never leave the API.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Generic, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, Field

from api.auth import Scope
from core.live import is_stale, vouched_coverage

T = TypeVar("T")

#: Ids as the registry makes them; anything else is refused before it reaches Redis or ClickHouse.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
Id = Annotated[str, Field(pattern=ID_PATTERN, examples=["feeder-0-3"])]


#: Times the stores can hold (ClickHouse DateTime and DateTime64 columns); others are refused as input.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)


def utc(value: datetime) -> datetime:
    """A datetime from a query or body in UTC (naive ones are taken as UTC); ValueError (a 422 in a
    model) for one that has no UTC time (``0001-01-01T00:04:00+04:00`` would be in year 0)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{value.isoformat()} has no UTC time between years 1 and 9999") from None


#: A query time, in UTC (:func:`utc`): one with no UTC time is a 422, not an error in the route.
UtcTime = Annotated[datetime, AfterValidator(utc)]


def storable(value: datetime | None) -> datetime | None:
    """``value`` in UTC if the stores can hold it; ValueError (a 422) naming the range otherwise."""
    if value is None:
        return None
    value = utc(value)
    if not EARLIEST <= value <= LATEST:
        raise ValueError(f"{value.isoformat()} is outside {EARLIEST.year}-{LATEST.year}")
    return value


#: An effective time of an asset change; default now.
EffectiveAt = Annotated[datetime | None, AfterValidator(storable),
                        Field(description="Effective time (1970-2200); default now.")]


class Page(BaseModel, Generic[T]):
    """A list with its total size (``count`` may exceed ``len(data)`` when paged)."""

    data: list[T]
    count: int


def from_ms(value: str | None) -> datetime | None:
    """An epoch-millisecond string from Redis as a UTC datetime (None for empty or absent)."""
    if not value:
        return None
    return datetime.fromtimestamp(int(float(value)) / 1000, UTC)


_NODE_TIMES = frozenset({"event_time", "updated_at"})
_NODE_COUNTS = frozenset({"expected_sites", "reporting_sites", "delayed_sites", "offline_sites"})
_SITE_FIXED = frozenset({"site_id", "status", "last_seen", "as_of"})
_SITE_TEXTS = frozenset({"mode", "active_command_id", "region"})


class NodeAggregate(BaseModel):
    """A node's live rollup: measured over reporting sites, estimated over all, and coverage."""

    event_time: datetime | None = Field(description="Event time the aggregate is valid at.")
    updated_at: datetime | None = Field(description="When the telemetry dataflow wrote it.")
    expected_sites: int
    reporting_sites: int
    delayed_sites: int
    offline_sites: int
    coverage: float = Field(description="reporting_sites / expected_sites, 0..1, as far as it can be vouched "
                            "for now: 0 when `stale`.")
    battery_kw: float
    solar_kw: float
    load_kw: float
    grid_kw: float
    energy_available_kwh: float
    charge_headroom_kwh: float
    available_discharge_kw: float
    available_charge_kw: float
    est_battery_kw: float
    est_energy_available_kwh: float
    est_charge_headroom_kwh: float
    est_available_discharge_kw: float
    est_available_charge_kw: float
    oldest_knowledge_age_s: float
    pipeline_lag_s: float | None = Field(
        default=None, description="Wall clock minus event_time when answered, seconds: how far behind the "
        "pipeline is (it grows while the telemetry dataflow is stopped), next to the data's own age "
        "(oldest_knowledge_age_s).")
    stale: bool = Field(
        default=False, description="The pipeline is further behind than a site may be silent before it is "
        "OFFLINE (pipeline_lag_s > VPP_OFFLINE_AFTER_S): no site can be vouched for now, so `coverage` is 0; "
        "counts and values are as of event_time.")

    @classmethod
    def from_hash(cls, fields: dict[str, str], offline_after_s: float) -> NodeAggregate:
        """The ``node:{id}`` hash the telemetry dataflow writes, with the pipeline's lag now and the
        coverage that can be vouched for now (:func:`core.live.vouched_coverage`)."""
        event_time = from_ms(fields.get("event_time"))
        lag_s = (datetime.now(UTC) - event_time).total_seconds() if event_time else None
        values: dict[str, object] = {
            "event_time": event_time, "updated_at": from_ms(fields.get("updated_at")),
            "pipeline_lag_s": lag_s, "stale": is_stale(lag_s, offline_after_s)}
        for name in cls.model_fields:
            if name in _NODE_TIMES or name in ("pipeline_lag_s", "stale"):
                continue
            number = float(fields.get(name) or 0.0)
            values[name] = int(number) if name in _NODE_COUNTS else number
        values["coverage"] = vouched_coverage(float(fields.get("coverage") or 0.0), lag_s, offline_after_s)
        return cls.model_validate(values)


class NodeRef(BaseModel):
    """A node or site named in navigation."""

    id: str
    kind: str = Field(description="feeder, substation, region, postcode, county, state, program or site.")


class Node(BaseModel):
    """A hierarchy node and its live aggregate (None until the dataflow has written one)."""

    node_id: str
    kind: str
    name: str
    hierarchy: str
    live: NodeAggregate | None


class SiteTwin(BaseModel):
    """A site's live twin: latest telemetry, liveness and limits."""

    site_id: str
    status: str = Field(description="ONLINE, DELAYED, OFFLINE, or UNKNOWN before the first reading.")
    last_seen: datetime | None
    as_of: datetime | None
    soc_pct: float | None = None
    battery_kw: float | None = None
    solar_kw: float | None = None
    load_kw: float | None = None
    grid_kw: float | None = None
    mode: str | None = None
    battery_temp_c: float | None = None
    active_command_id: str | None = None
    capacity_kwh: float | None = None
    reserve_pct: float | None = None
    max_charge_kw: float | None = None
    max_discharge_kw: float | None = None
    region: str | None = None
    energy_available_kwh: float | None = None
    charge_headroom_kwh: float | None = None

    @classmethod
    def from_hash(cls, site_id: str, fields: dict[str, str]) -> SiteTwin:
        """The ``site:{id}`` hash (an empty one: a known site never heard from)."""
        values: dict[str, object] = {"site_id": site_id, "status": fields.get("status") or "UNKNOWN",
                                     "last_seen": from_ms(fields.get("last_seen")),
                                     "as_of": from_ms(fields.get("as_of"))}
        for name in cls.model_fields:
            raw = fields.get(name)
            if name in _SITE_FIXED or raw is None or raw == "":
                continue
            values[name] = raw if name in _SITE_TEXTS else float(raw)
        return cls.model_validate(values)


class SiteCommand(BaseModel):
    """One command sent to a site, and what became of it (a ``command_log`` row)."""

    command_id: str
    dispatch_id: str
    setpoint_kw: float = Field(description="Battery setpoint, kW; positive = discharge.")
    valid_from: datetime
    valid_until: datetime
    attempt: int
    status: str = Field(description="SENT (by control), ACCEPTED, REJECTED or EXPIRED (the device's answer), "
                        "or UNANSWERED (no answer in time).")
    event_time: datetime


class Ancestry(BaseModel):
    """A site's ancestors per hierarchy at a time, nearest first (programs: all enrolments)."""

    site_id: str
    at: datetime
    electrical: list[str]
    geographic: list[str]
    program: list[str]


ResolutionChoice = Literal["auto", "minute", "hour", "day"]


class SitePoint(BaseModel):
    """One window of a site's history."""

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


class NodePoint(BaseModel):
    """One window of a node's history (summed powers of its sites)."""

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


class History(BaseModel, Generic[T]):
    """A history query's answer: the resolution actually used and the windows, oldest first."""

    id: str
    start: datetime
    end: datetime
    resolution: Literal["minute", "hour", "day"]
    data: list[T]
    count: int


# -- forecasts ---------------------------------------------------------------------------------------


class ForecastPointPublic(BaseModel):
    """One target of a forecast: the mean and the 10/50/90% quantiles (the 80% band is q10..q90)."""

    target_time: datetime
    horizon_steps: int
    value: float
    q10: float
    q50: float
    q90: float


class ForecastQuality(BaseModel):
    """The series' scored error so far: this model against the naive issued beside it."""

    points: int = Field(description="Targets of this model whose actuals have arrived.")
    mae: float | None
    naive_mae: float | None
    coverage_80: float | None = Field(description="Share of actuals inside the 80% band.")
    worse_than_naive: bool | None = Field(description="The model's error exceeds the naive's (None: "
                                                      "not scored yet).")


class NodeForecast(BaseModel):
    """The latest forecast of a node series, with its band and how good this model has been."""

    node_id: str
    series: Literal["load", "solar"]
    run_id: str
    model: str
    issued_at: datetime
    step_s: int
    filled_steps: int = Field(description="History slots the cleaner interpolated for this run.")
    note: str = Field(description="Why the naive served instead of the model, if it did.")
    quality: ForecastQuality
    data: list[ForecastPointPublic]
    count: int


class PublishedPrice(BaseModel):
    """One published interval price (``market_prices``): the actual a price forecast is scored against."""

    interval_start: datetime
    price_eur_mwh: float


class PriceForecastPublic(BaseModel):
    """The latest price forecast of a region, with its band, its quality and where the prices come from."""

    region: str
    run_id: str
    model: str
    issued_at: datetime
    step_s: int
    filled_steps: int = Field(description="History hours the cleaner interpolated for this run.")
    note: str = Field(description="Why the naive served instead of the model, if it did.")
    source: str = Field(description="What published the region's prices, e.g. smard:DE:2018.")
    simulated: bool = Field(description="The prices are a replayed real series (the local simulated "
                                        "day-ahead market), not a live market.")
    currency: str
    quality: ForecastQuality
    data: list[ForecastPointPublic]
    count: int
    actual: list[PublishedPrice] = Field(description="Published prices from a day before the first target "
                                                     "to the last target, to draw against the forecast.")


# -- assets ------------------------------------------------------------------------------------------


class SiteCreate(BaseModel):
    """A new site: its record, its parents (a feeder and a postcode) and programs, from ``at``."""

    site_id: Id
    customer_id: Id
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    capacity_kwh: float = Field(gt=0, le=1000)
    max_charge_kw: float = Field(gt=0, le=1000)
    max_discharge_kw: float = Field(gt=0, le=1000)
    reserve_pct: float = Field(ge=0, le=100)
    solar_kwp: float = Field(ge=0, le=1000)
    tariff: str = Field(min_length=1, max_length=64)
    region: Id
    feeder_id: Id
    postcode_id: Id
    programs: list[Id] = Field(default_factory=list, max_length=32)
    at: EffectiveAt = None


class SiteMove(BaseModel):
    """Move a site to another feeder (electrical) or postcode (geographic) from ``at``."""

    hierarchy: Literal["electrical", "geographic"]
    parent_id: Id
    at: EffectiveAt = None


class NodeReparent(BaseModel):
    """Put a node under another parent from ``at`` (every site below follows)."""

    parent_id: Id
    at: EffectiveAt = None


class Effective(BaseModel):
    """Just an effective time (retire, enrol)."""

    at: EffectiveAt = None


class Enrollment(BaseModel):
    """Enrol a site in a program from ``at``."""

    program_id: Id
    at: EffectiveAt = None


class Change(BaseModel):
    """What an asset operation did."""

    change_id: str
    at: datetime


# -- dispatch ----------------------------------------------------------------------------------------


class DispatchCreate(BaseModel):
    """Ask a node (or a list of sites) for ``target_kw`` over [start, end); positive discharges."""

    target_kw: float
    start: datetime | None = Field(default=None, description="Default now.")
    end: datetime
    node_id: Id | None = None
    site_ids: list[Id] | None = Field(default=None, max_length=100_000)
    strategy: str = "waterfill"
    dispatch_id: Id | None = Field(default=None, description="Default: a fresh id.")
    replace: bool = Field(default=False, description="Replace the running dispatch of this id (else a "
                          "used id is a 409).")
    priority: int = Field(default=0, ge=0, le=1000, description="Among dispatches that want the same sites "
                          "at once, the higher priority gets them, then the earlier request.")


class DispatchAccepted(BaseModel):
    """A request on its way to the control dataflow."""

    dispatch_id: str
    status_url: str


class DispatchPoint(BaseModel):
    """One status of a dispatch (ClickHouse dispatch_log): the error over time."""

    event_time: Annotated[datetime, AfterValidator(utc)]  # ClickHouse gives UTC columns as naive datetimes
    state: str
    target_kw: float
    measured_kw: float
    error_kw: float
    shortfall_kw: float
    sites_acked: int
    sites_pending: int
    sites_rejected: int


class DispatchSummary(BaseModel):
    """One dispatch in a list: what it is (node, window, target) and where it stands."""

    dispatch_id: str
    state: str | None = Field(default=None, description="PENDING, ACTIVE, COMPLETED, PARTIAL, CANCELLED or "
                              "FAILED; null until control has read the request.")
    node_id: str | None = Field(default=None, description="The dispatched node; null for a list of sites.")
    start: datetime | None = Field(default=None, description="Start of the window (UTC).")
    end: datetime | None = Field(default=None, description="End of the window (UTC).")
    target_kw: float | None = Field(default=None, description="Target battery power, kW; positive = "
                                    "discharge.")
    requested_kwh: float | None = Field(default=None, description="Energy asked for so far, kWh.")
    delivered_kwh: float | None = Field(default=None, description="Energy delivered so far, kWh.")
    reason: str | None = Field(default=None, description="Why it is PARTIAL or FAILED.")
    sites_total: int | None = Field(default=None, description="Sites the dispatch commands (0: none was "
                                    "eligible); null until control has read the request.")
    shortfall_kw: float | None = Field(default=None, description="The part of the target, kW, that the "
                                       "commanded sites cannot give within their limits (0: they can).")


class DispatchStatus(BaseModel):
    """Where a dispatch stands now, and its statuses so far."""

    dispatch_id: str
    state: str
    node_id: str | None
    strategy: str | None
    requested_by: str | None
    start: datetime | None
    end: datetime | None
    event_time: datetime | None
    target_kw: float | None
    measured_kw: float | None
    error_kw: float | None
    shortfall_kw: float | None
    sites_total: int | None
    sites_acked: int | None
    sites_pending: int | None
    sites_rejected: int | None
    sites_unavailable: int | None = Field(
        default=None, description="Member sites another dispatch held when this one planned (it planned "
        "around them).")
    priority: int | None = None
    reason: str | None = Field(default=None, description="Why it ended PARTIAL or FAILED, or which "
                               "dispatches hold its unavailable sites.")
    requested_kwh: float | None = Field(
        default=None, description="Energy asked for over the window so far (the whole window once it is "
        "over), kWh; positive = discharge.")
    delivered_kwh: float | None = Field(
        default=None, description="Energy the dispatched sites delivered over the window so far, kWh; "
        "positive = discharge. COMPLETED needs it within VPP_CONTROL_OUTCOME_TOLERANCE of requested_kwh.")
    tracking_error_mean_kw: float | None = Field(
        default=None, description="Mean of |target - measured| over the ACTIVE statuses, kW.")
    tracking_error_p95_kw: float | None = Field(
        default=None, description="95th percentile (nearest rank) of |target - measured| over the ACTIVE "
        "statuses, kW.")
    sites_acknowledged: int | None = Field(
        default=None, description="Commanded sites that accepted a command of this dispatch at least once.")
    sites_following: int | None = Field(
        default=None, description="Sites that accepted their current command and whose power follows it.")
    history: list[DispatchPoint]


# -- tokens ------------------------------------------------------------------------------------------


class DeviceTokenCreate(BaseModel):
    """A device token for one site, for the edge gateway."""

    site_id: Id
    region: Id | None = None
    ttl_hours: float | None = Field(default=None, gt=0, le=24 * 366)


class DeviceToken(BaseModel):
    """A signed device token; keep ``jti`` to revoke it."""

    token: str
    site_id: str
    jti: str
    expires_at: datetime


class ApiTokenCreate(BaseModel):
    """An API token: fleet scopes, or a customer's sites (then read only)."""

    subject: str = Field(min_length=1, max_length=128)
    scopes: list[Scope] = Field(min_length=1)
    sites: list[Id] | None = Field(default=None, min_length=1, max_length=1000)
    ttl_hours: float | None = Field(default=None, gt=0, le=24 * 366)


class ApiToken(BaseModel):
    """A signed API bearer token."""

    token: str
    subject: str
    scopes: list[Scope]
    sites: list[str] | None
    expires_at: datetime


class Revoked(BaseModel):
    """The outcome of a revocation (``already`` when it was revoked before)."""

    jti: str
    already: bool


class PeakPlanCreate(BaseModel):
    """Plan a node's peak day (and, with ``dispatch``, send what is left of it to the control loop)."""

    node_id: Id
    day: date | None = Field(default=None, ge=date(1970, 1, 1), le=date(2105, 12, 31),
                             description="The UTC day (1970-2105); default tomorrow.")
    dispatch: bool = Field(default=False, description="Also send the rest of the day's schedule as "
                           "dispatches of the node (dispatch ids: the plan id and the start, HHMM).")


class PeakInterval(BaseModel):
    """One interval of a plan: the load planned against and what the fleet gives (+) or takes."""

    start: datetime
    load_kw: float
    discharge_kw: float
    charge_kw: float
    net_kw: float
    energy_kwh: float = Field(description="Energy above the reserves at the interval's end.")


class PeakPlanPublic(BaseModel):
    """A node's planned day, or why it has no event (``status`` no_event or refused, ``reason``)."""

    plan_id: str
    node_id: str
    day: datetime
    status: str
    reason: str | None = None
    threshold_kw: float | None = None
    forecast_peak_kw: float | None = None
    energy_delivered_kwh: float | None = None
    notes: list[str] = Field(default_factory=list)
    intervals: list[PeakInterval] = Field(default_factory=list)
    dispatch_ids: list[str] = Field(default_factory=list)


class PeakEventPublic(BaseModel):
    """A recorded peak day (ClickHouse ``peak_events``); measured figures are null until measured."""

    node_id: str
    day: datetime
    plan_id: str
    status: str
    forecast_peak_kw: float | None
    threshold_kw: float | None
    actual_peak_kw: float | None
    counterfactual_peak_kw: float | None
    energy_delivered_kwh: float
    energy_recharged_kwh: float
    rebound: bool
    note: str
    recorded_at: datetime


class NodePlanPublic(BaseModel):
    """A node's live aggregate plan (plans dataflow): one value per interval from ``start``.

    ``planned_kw`` sums the latest plans of online member sites (+ = discharge); ``estimate_kw``
    adds the last plans of offline sites, carried forward (``carried_sites`` per interval);
    ``coverage`` is the share of ``expected_sites`` with a current plan for the interval;
    ``stale_sites`` planned from a price forecast older than VPP_PLANS_STALE_AFTER_S.
    """

    node_id: str
    hierarchy: str
    start: datetime
    interval_minutes: int
    planned_kw: list[float]
    estimate_kw: list[float]
    planned_sites: list[int]
    carried_sites: list[int]
    coverage: list[float]
    expected_sites: int
    stale_sites: int
    computed_at: datetime


class SitePlanPublic(BaseModel):
    """The latest plan a site sent that the plans dataflow accepted (+ = discharge, kW per interval)."""

    site_id: str
    plan_id: str
    issued_at: datetime
    start: datetime
    interval_minutes: int
    power_kw: list[float]
    forecast_issued_at: datetime | None
    received_at: datetime


class StormWatchCreate(BaseModel):
    """Raise a storm watch over a node: its sites plan a full battery from ``starts`` until ``until``."""

    node_id: Id
    starts: datetime | None = Field(default=None, description="When the watch begins (default now).")
    until: datetime = Field(description="When it lapses (after it begins, at most 7 days ahead).")


class StormWatchPublic(BaseModel):
    """A storm watch in force over a node, and the sites it reached."""

    node_id: str
    starts: datetime
    until: datetime
    sites: int
    raised_by: str
    raised_at: datetime


class BidBand(BaseModel):
    """At clearing prices of ``price`` (EUR/MWh, or EUR/MW/h for reserve) or more, deliver ``quantity_mw``."""

    price: float
    quantity_mw: float


class BidPublic(BaseModel):
    """One accepted curve (ClickHouse ``bids``) and, once cleared, its price, quantity and revenue."""

    asset_id: str
    interval_start: datetime
    product: str
    region: str
    workflow_id: str
    bands: list[BidBand]
    note: str
    artifact_id: str
    submitted_at: datetime
    cleared_price: float | None = None
    cleared_mw: float | None = None
    revenue_eur: float | None = None


class WorkflowStepPublic(BaseModel):
    """What one (step, attempt) of a bidding run produced (ClickHouse ``workflow_steps``)."""

    step: str
    attempt: int
    output: str | None
    error: str | None
    worker: str
    finished_at: datetime


class WorkflowPublic(BaseModel):
    """One bidding run as the workers recorded it (ClickHouse ``workflow_steps``, ``bids``).

    ``state`` is read from the record: ``submitted`` once a submit step finished, ``failed`` when the
    newest step record is an error, ``running`` otherwise (the journal on ``workflow.events``, read by
    ``vpp bid status``, also knows runs that never reached a worker). ``safe_bid`` is true when the
    run fell back to a bid that holds the state of charge; ``flags`` say why a run is worth a look.
    """

    workflow_id: str
    asset_id: str
    interval_start: datetime | None
    state: Literal["submitted", "failed", "running"]
    safe_bid: bool
    flags: list[str]
    steps: int
    errors: int
    started_at: datetime
    finished_at: datetime
    note: str


class NodePlanInterval(BaseModel):
    """A node's aggregate plan for one past or future interval, as last computed (ClickHouse ``node_plan``).

    Powers in kW, + = discharge (the same sign as the node's measured ``battery_kw``);
    ``estimate_kw`` adds the carried plans of offline sites; coverage = planned_sites / expected_sites.
    """

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


class SitePlanInterval(BaseModel):
    """What a site had planned for one interval: the newest accepted plan issued before it ended.

    ``power_kw`` is battery power, + = discharge (the same sign as the site's measured battery power).
    """

    interval_start: datetime
    interval_minutes: int
    power_kw: float
    plan_id: str
    issued_at: datetime


class BacktestSummary(BaseModel):
    """One kept ``vpp backtest`` (ClickHouse ``backtest_reports``): stored decisions of a window replayed
    through the logic of the day it ran. Revenues in EUR over the decisions priced both ways; a
    positive ``replayed - stored`` means today's logic would have earned more."""

    report_id: str
    ran_at: datetime
    window_start: datetime
    window_end: datetime
    decisions: int
    changed: int
    stored_revenue_eur: float
    replayed_revenue_eur: float


class BacktestDecision(BaseModel):
    """One replayed decision: the stored bid's artifact and today's, and what each earned (EUR, None if
    the interval's price is not published)."""

    workflow_id: str
    interval_start: datetime
    identical: bool
    stored: str
    replayed: str
    stored_revenue_eur: float | None
    replayed_revenue_eur: float | None


class BacktestReport(BacktestSummary):
    """A kept backtest with every decision it replayed."""

    data: list[BacktestDecision]
