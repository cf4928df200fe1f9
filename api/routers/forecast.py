"""The latest forecast of a node's load or solar, with its band and whether it beats the naive.

Runs are written by the forecast service (``vpp forecast node``); each comes with
a naive baseline run, and ``forecast_node_errors`` scores both as actuals arrive,
so the answer says when the model has been worse than the naive.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, status

from api.deps import FleetReader, ResourcesDep
from api.models import (
    ForecastPointPublic,
    ForecastQuality,
    NodeForecast,
    PriceForecastPublic,
    PublishedPrice,
)
from api.routers.telemetry import NodeId
from forecast.quality import ErrorRow, pooled, worse_than_naive

router = APIRouter(prefix="/v1", tags=["forecasts"])

SeriesParam = Annotated[Literal["load", "solar"], Query(description="load or solar.")]


def _quality(errors: list[ErrorRow], kind: str, model: str) -> ForecastQuality:
    """Points-weighted MAE and band coverage of ``model`` and of the naive over every scored horizon."""
    mine = pooled(errors, kind, model)
    return ForecastQuality(points=mine.points, mae=mine.mae, naive_mae=pooled(errors, kind, "naive").mae,
                           coverage_80=mine.coverage_80,
                           worse_than_naive=worse_than_naive(errors, kind, model))


@router.get("/nodes/{node_id}/forecast", summary="A node's latest forecast")
def node_forecast(node_id: NodeId, _: FleetReader, resources: ResourcesDep,
                  series: SeriesParam = "load") -> NodeForecast:
    """The latest run for the node's load or solar: points with their 80% band, and its error so far."""
    kind = f"node_{series}"
    with resources.fleet.use() as fleet:
        if node_id not in fleet.registry.nodes:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown node {node_id!r}")
    with resources.history() as store:
        latest = store.latest_forecast(kind, node_id)
        errors = store.forecast_node_errors(node_id) if latest else []
    if latest is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no {series} forecast for node {node_id!r} yet: "
                            f"run `vpp forecast node {node_id}`")
    run, points = latest
    data = [ForecastPointPublic.model_validate(p, from_attributes=True) for p in points]
    return NodeForecast(node_id=node_id, series=series, run_id=run.run_id, model=run.model,
                        issued_at=run.issued_at, step_s=run.step_s, filled_steps=run.filled_steps,
                        note=run.note, quality=_quality(errors, kind, run.model), data=data, count=len(data))


@router.get("/prices/{region}/forecast", summary="A price region's latest price forecast")
def price_forecast(region: str, _: FleetReader, resources: ResourcesDep) -> PriceForecastPublic:
    """The latest price run for the region: hourly points with their 80% band, its error so far, and
    the prices' source (locally a simulated market replaying a real series, flagged ``simulated``)."""
    with resources.history() as store:
        latest = store.latest_forecast("price", region)
        errors = store.forecast_price_errors(region) if latest else []
        recent = store.market_prices(region, latest[0].first_target - timedelta(days=1),
                                     latest[1][-1].target_time + timedelta(hours=1)) if latest else []
    if latest is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no price forecast for region {region!r} yet: "
                            f"run `vpp forecast price {region}`")
    run, points = latest
    source = recent[0].source if recent else "unknown"
    actual = [PublishedPrice(interval_start=p.interval_start, price_eur_mwh=p.price_eur_mwh) for p in recent]
    data = [ForecastPointPublic.model_validate(p, from_attributes=True) for p in points]
    return PriceForecastPublic(
        region=region, run_id=run.run_id, model=run.model, issued_at=run.issued_at, step_s=run.step_s,
        filled_steps=run.filled_steps, note=run.note, source=source, simulated=source.startswith("smard:"),
        currency="EUR", quality=_quality(errors, "price", run.model), data=data, count=len(data),
        actual=actual)
