"""Exceptions from the layers below, as HTTP answers that say what is wrong.

Bad input is a 4xx (the registry's and dispatch's refusals carry their own
messages); a store that cannot be reached is a 503 naming it, since that is
the operator's problem, not the caller's. Anything else would be a bug (a 500
that says only that).

Every 4xx and 5xx is one error model, RFC 9457 problem details
(``application/problem+json``: ``type``, ``title``, ``status``, ``detail``,
``instance``, and ``errors`` for a request that failed validation), also
FastAPI's own 401/403/404/422. :func:`document` writes it into the OpenAPI
schema for the statuses each operation can answer.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

import redis
from clickhouse_connect.driver.exceptions import ClickHouseError
from confluent_kafka import KafkaException
from fastapi import FastAPI, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from assets.registry import RegistryError
from core.dispatch_spec import DispatchConflictError, DispatchNotFoundError, DispatchRejectedError

log = logging.getLogger(__name__)
PROBLEM_JSON = "application/problem+json"


class Problem(BaseModel):
    """An error, as RFC 9457 problem details."""

    type: str = Field(default="about:blank", description="A URI naming the kind of problem; `about:blank` "
                      "means the HTTP status says it all.")
    title: str = Field(description="The HTTP status phrase, e.g. `Not Found`.")
    status: int = Field(description="The HTTP status code.")
    detail: str = Field(description="What went wrong with this request, and what to change.")
    instance: str = Field(description="The path of the request.")
    errors: list[dict[str, Any]] | None = Field(
        default=None, description="For a request that failed validation: each invalid field (`loc`, `msg`, "
        "`type`).")


def _problem(request: Request, code: int, detail: str, errors: list[dict[str, Any]] | None = None,
             headers: dict[str, str] | None = None) -> JSONResponse:
    body = Problem(title=HTTPStatus(code).phrase, status=code, detail=detail, instance=request.url.path,
                   errors=errors)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=code, media_type=PROBLEM_JSON,
                        headers=headers)


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's and the routers' own HTTPExceptions (401, 403, 404, ...)."""
    assert isinstance(exc, StarletteHTTPException)
    return _problem(request, exc.status_code, str(exc.detail), headers=dict(exc.headers or {}))


async def invalid(request: Request, exc: Exception) -> JSONResponse:
    """A request that does not fit the schema: every invalid field, and a one-line summary."""
    assert isinstance(exc, RequestValidationError)
    errors = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
              for e in jsonable_encoder(exc.errors())]
    summary = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors[:5])
    return _problem(request, status.HTTP_422_UNPROCESSABLE_CONTENT, summary or "invalid request", errors)


async def bug(request: Request, exc: Exception) -> JSONResponse:
    """Anything unexpected: logged with its traceback, answered without it."""
    log.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return _problem(request, status.HTTP_500_INTERNAL_SERVER_ERROR, "an unexpected error; the API log has it")


async def refused(request: Request, exc: Exception) -> JSONResponse:
    """The registry or dispatch refused the request; their message says what to change."""
    return _problem(request, status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc))


async def not_found(request: Request, exc: Exception) -> JSONResponse:
    """What the request names does not exist."""
    return _problem(request, status.HTTP_404_NOT_FOUND, str(exc))


async def conflict(request: Request, exc: Exception) -> JSONResponse:
    """What the request would create exists already (a reused dispatch id)."""
    return _problem(request, status.HTTP_409_CONFLICT, str(exc))


async def live_store_down(request: Request, exc: Exception) -> JSONResponse:
    """Redis is unreachable."""
    return _problem(request, status.HTTP_503_SERVICE_UNAVAILABLE,
                    f"the live store (Redis) is unavailable: {exc}")


async def history_store_down(request: Request, exc: Exception) -> JSONResponse:
    """ClickHouse failed."""
    return _problem(request, status.HTTP_503_SERVICE_UNAVAILABLE,
                    f"the history store (ClickHouse) failed: {exc}")


async def broker_down(request: Request, exc: Exception) -> JSONResponse:
    """Kafka failed."""
    return _problem(request, status.HTTP_503_SERVICE_UNAVAILABLE, f"the broker (Kafka) failed: {exc}")


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
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(Exception, bug)
    document(app)


#: The error statuses an operation is documented with, and when.
_WHY = {
    400: "The body could not be read (not JSON).",
    401: "No bearer token, or one that is invalid or expired.",
    403: "The token lacks the scope this operation needs, or may not read this resource.",
    404: "What the request names (in its path, parameters or body) does not exist.",
    409: "The resource exists already.",
    422: "The request does not fit the schema, or was refused (the detail says why).",
    503: "A store the operation needs (Redis, ClickHouse or Kafka) is unavailable.",
}


def document(app: FastAPI) -> None:
    """Publish the problem model for every error status each operation can answer.

    401 and 403 for operations that take a token, 404 and 422 for those with parameters or a body (what
    they name may not exist, or they may not fit), 400 for those with a body, 503 for every ``/v1``
    operation (each needs a store), and what a route declared itself (409 on dispatch); all as
    ``application/problem+json``.
    """
    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description,
                             routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components["Problem"] = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        problem = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
        for path, operations in schema.get("paths", {}).items():
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                parameters = operation.get("parameters", [])
                codes = {int(code) for code in responses if code.isdigit() and int(code) >= 400}
                if operation.get("security"):
                    codes |= {401, 403}
                if parameters or "requestBody" in operation:
                    codes |= {404, 422}
                if "requestBody" in operation:
                    codes.add(400)
                if path.startswith("/v1"):
                    codes.add(503)
                for code in sorted(codes):
                    entry = responses.setdefault(str(code), {})
                    entry.setdefault("description", _WHY.get(code, HTTPStatus(code).phrase))
                    if code == 422:
                        entry["description"] = _WHY[422]
                    entry["content"] = problem
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
