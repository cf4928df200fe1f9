"""Lag appears and grows while the telemetry dataflow is paused, and goes away when it resumes.

The fleet keeps sending while the telemetry dataflow process is stopped
(SIGSTOP: alive, not working, as a stuck or starved pod would be). The API's
``pipeline_lag_s`` (wall clock minus the aggregate's event time) must grow
instead of the stale aggregate looking current, and the flow's consumer group
(what standard Kafka lag tools read) must stop advancing while the log grows.
After SIGCONT the flow catches up and the lag falls back. (That the group's
offsets then equal what the flow read is tests/integration/test_consumer_group_progress.)
"""

from __future__ import annotations

import os
import signal
from typing import Any

import httpx
import pytest

from core.topics import TELEMETRY_DATAFLOW_GROUP, TELEMETRY_RAW
from core.waiting import wait_until
from tests.api.conftest import Api
from tests.telemetry.flowrun import committed_offsets, log_ends

pytestmark = pytest.mark.integration

NODE = "state-0"
#: The lag of a working pipeline stays well under this (it emits every 0.5 s here); generous for busy CI.
CAUGHT_UP_S = 10.0
#: How much the lag must grow past what it was when the flow was paused.
GROWTH_S = 4.0


def _live(client: httpx.Client) -> dict[str, Any]:
    response = client.get(f"/v1/nodes/{NODE}")
    assert response.status_code == 200, response.text
    live = response.json()["live"]
    assert live is not None
    return dict(live)


def _lag(client: httpx.Client) -> float:
    return float(_live(client)["pipeline_lag_s"])


def test_lag_grows_while_the_telemetry_flow_is_paused(api: Api) -> None:
    telemetry = api.processes["telemetry"]
    assert telemetry.poll() is None, "the fixture's telemetry dataflow is not running"
    with api.client("read") as client:
        assert wait_until(lambda: _lag(client) < CAUGHT_UP_S, 90, interval_s=0.5), "never caught up"
        assert wait_until(lambda: bool(committed_offsets(api.settings, TELEMETRY_DATAFLOW_GROUP,
                                                         TELEMETRY_RAW)),
                          60, interval_s=0.5), "the flow never committed its progress to its group"

        os.kill(telemetry.pid, signal.SIGSTOP)
        try:
            # Read after the stop has surely landed (requests in flight before it reach Redis and the broker).
            ends = log_ends(api.settings, TELEMETRY_RAW)
            committed = committed_offsets(api.settings, TELEMETRY_DATAFLOW_GROUP, TELEMETRY_RAW)
            paused_at = _live(client)
            assert wait_until(lambda: _lag(client) > paused_at["pipeline_lag_s"] + GROWTH_S, 90,
                              interval_s=0.5), "the lag did not grow while the flow was paused"
            stalled = _live(client)
            assert stalled["event_time"] == paused_at["event_time"], "nothing moved the aggregate's clock"
            assert stalled["pipeline_lag_s"] > paused_at["pipeline_lag_s"]
            # What a lag tool sees: the group stands still while the devices' records keep arriving.
            assert committed_offsets(api.settings, TELEMETRY_DATAFLOW_GROUP, TELEMETRY_RAW) == committed
            grown = log_ends(api.settings, TELEMETRY_RAW)
            lag_then = sum(ends.values()) - sum(committed.values())
            assert sum(grown.values()) - sum(committed.values()) > lag_then, "the group's lag did not grow"
        finally:
            os.kill(telemetry.pid, signal.SIGCONT)

        def caught_up() -> bool:
            live = _live(client)
            return bool(live["event_time"] > stalled["event_time"]
                        and live["pipeline_lag_s"] < min(CAUGHT_UP_S, stalled["pipeline_lag_s"]))

        assert wait_until(caught_up, 90, interval_s=0.5), "the lag did not come back after the flow resumed"
