"""The live read's lane beneath FastAPI answers exactly what the route answers, and only the plain case."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from starlette.types import Message

from api.live_lane import PATH, LiveLane
from api.resources import Resources
from tests.api.conftest import Api

pytestmark = pytest.mark.integration

#: Computed at the moment of answering: the one field two answers a moment apart may differ in.
MOMENT = "pipeline_lag_s"


def _without_moment(body: dict[str, Any]) -> dict[str, Any]:
    return {**body, "live": {k: v for k, v in body["live"].items() if k != MOMENT}}


def test_the_lane_and_the_route_give_the_same_answer(api: Api) -> None:
    with api.client("read") as client:
        for node in ("state-0", "region-0", "feeder-0-0"):
            lane = client.get(f"/v1/nodes/{node}")
            route = client.get(f"/v1/nodes/{node}", params={"by": "route"})  # a query string: FastAPI answers
            assert lane.status_code == route.status_code == 200
            assert lane.headers["content-type"] == route.headers["content-type"] == "application/json"
            assert _without_moment(lane.json()) == _without_moment(route.json())
            assert lane.json()["live"][MOMENT] == pytest.approx(route.json()["live"][MOMENT], abs=5.0)
        metrics = httpx.get(f"{api.url}/metrics").text
    assert 'vpp_api_requests_total{method="GET",route="/v1/nodes/{node_id}",status="200"}' in metrics


class _Inner:
    """The app beneath the lane: records what it was handed and answers 599."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        query = scope["query_string"].decode()
        self.paths.append(scope["path"] + ("?" + query if query else ""))
        await send({"type": "http.response.start", "status": 599, "headers": []})
        await send({"type": "http.response.body", "body": b""})


async def _call(lane: LiveLane, path: str, token: str | None, query: bytes = b"") -> tuple[int, bytes]:
    headers = [(b"authorization", f"Bearer {token}".encode())] if token else []
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    await lane({"type": "http", "method": "GET", "path": path, "query_string": query, "headers": headers},
               receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def test_the_lane_answers_only_a_plain_read_and_hands_everything_else_on(api: Api) -> None:
    inner = _Inner()
    resources = Resources(api.settings)
    lane = LiveLane(inner, resources, APIRoute(PATH, lambda: None))  # type: ignore[arg-type]

    async def scenario() -> list[tuple[int, bytes]]:
        try:
            return [
                await _call(lane, "/v1/nodes/state-0", api.tokens["read"]),
                await _call(lane, "/v1/nodes/state-0", None),                                # no token
                await _call(lane, "/v1/nodes/state-0", "not-a-token"),                       # a bad one
                await _call(lane, "/v1/nodes/state-0", api.tokens["customer_a"]),            # refused scope
                await _call(lane, "/v1/nodes/no-such-node", api.tokens["read"]),             # no aggregate
                await _call(lane, "/v1/nodes/bad%20id", api.tokens["read"]),                 # an id refused
                await _call(lane, "/v1/nodes/state-0", api.tokens["read"], b"at=2026-01-01"),  # a query
                await _call(lane, "/v1/nodes/state-0/children", api.tokens["read"]),         # another route
            ]
        finally:
            await resources.close()

    answers = asyncio.run(scenario())
    status, body = answers[0]
    assert status == 200 and json.loads(body)["node_id"] == "state-0", "the plain read is the lane's"
    assert [s for s, _ in answers[1:]] == [599] * 7, "every other request goes on to FastAPI"
    assert inner.paths == ["/v1/nodes/state-0"] * 3 + ["/v1/nodes/no-such-node", "/v1/nodes/bad%20id",
                                                       "/v1/nodes/state-0?at=2026-01-01",
                                                       "/v1/nodes/state-0/children"]
