"""Exceptions from the layers below, as HTTP answers that say what is wrong.

Bad input is a 4xx (the registry's and dispatch's refusals carry their own
messages); a store that cannot be reached is a 503 naming it, since that is
the operator's problem, not the caller's. Anything else would be a bug.
"""

from __future__ import annotations

import redis
from clickhouse_connect.driver.exceptions import ClickHouseError
from confluent_kafka import KafkaException
from fastapi import FastAPI, Request, status
from fastapi.responses import JSONResponse

from assets.registry import RegistryError
from core.dispatch_spec import DispatchConflictError, DispatchNotFoundError, DispatchRejectedError


def _answer(code: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=code)


async def refused(_: Request, exc: Exception) -> JSONResponse:
    """The registry or dispatch refused the request; their message says what to change."""
    return _answer(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc))


async def not_found(_: Request, exc: Exception) -> JSONResponse:
    """What the request names does not exist."""
    return _answer(status.HTTP_404_NOT_FOUND, str(exc))


async def conflict(_: Request, exc: Exception) -> JSONResponse:
    """What the request would create exists already (a reused dispatch id)."""
    return _answer(status.HTTP_409_CONFLICT, str(exc))


async def live_store_down(_: Request, exc: Exception) -> JSONResponse:
    """Redis is unreachable."""
    return _answer(status.HTTP_503_SERVICE_UNAVAILABLE, f"the live store (Redis) is unavailable: {exc}")


async def history_store_down(_: Request, exc: Exception) -> JSONResponse:
    """ClickHouse failed."""
    return _answer(status.HTTP_503_SERVICE_UNAVAILABLE, f"the history store (ClickHouse) failed: {exc}")


async def broker_down(_: Request, exc: Exception) -> JSONResponse:
    """Kafka failed."""
    return _answer(status.HTTP_503_SERVICE_UNAVAILABLE, f"the broker (Kafka) failed: {exc}")


def register(app: FastAPI) -> None:
    """Install the handlers on ``app``."""
    app.add_exception_handler(RegistryError, refused)
    app.add_exception_handler(DispatchRejectedError, refused)
    app.add_exception_handler(DispatchNotFoundError, not_found)
    app.add_exception_handler(DispatchConflictError, conflict)
    app.add_exception_handler(redis.ConnectionError, live_store_down)
    app.add_exception_handler(redis.TimeoutError, live_store_down)
    app.add_exception_handler(ClickHouseError, history_store_down)
    app.add_exception_handler(KafkaException, broker_down)
