"""A dataflow's /readyz and /livez tell the truth: ready only while the broker answers, no sink's
dependency fails or hangs and the worker keeps polling; alive unless wedged with no dependency to blame.

Before, a dataflow had no probe of its own: Kubernetes probed Bytewax's /metrics, which answers as
long as the process runs, also while the flow waits for a paused Redis and does no work.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request

from core.waiting import wait_until
from operators.readiness import FlowHealth, serve_probes
from tests.conftest import free_port


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _working(clock: FakeClock) -> FlowHealth:
    health = FlowHealth(clock)
    health.kafka_checked(True)
    health.polled()
    return health


def test_not_ready_before_the_first_poll_and_the_first_broker_check() -> None:
    health = FlowHealth(FakeClock())
    verdict = health.ready(stall_s=10)
    assert not verdict.ok
    assert "kafka not checked yet" in verdict.detail["status"]
    assert "input not polled yet" in verdict.detail["status"]


def test_ready_while_polling_not_ready_when_polls_stop_and_ready_again() -> None:
    clock = FakeClock()
    health = _working(clock)
    assert health.ready(stall_s=10).ok
    clock.now += 11
    verdict = health.ready(stall_s=10)
    assert not verdict.ok and "input not polled for 11 s" in verdict.detail["status"]
    health.polled()
    assert health.ready(stall_s=10).ok


def test_an_unreachable_broker_makes_it_not_ready() -> None:
    health = _working(FakeClock())
    health.kafka_checked(False, "timed out")
    assert "kafka unreachable (timed out)" in health.ready(stall_s=10).detail["status"]
    health.kafka_checked(True)
    assert health.ready(stall_s=10).ok


def test_a_failing_dependency_makes_it_not_ready_until_it_answers_and_keeps_it_alive() -> None:
    clock = FakeClock()
    health = _working(clock)
    health.dependency_failing("redis", "Connection refused")
    clock.now += 4
    health.dependency_failing("redis", "Connection refused")  # the first failure's time is kept
    verdict = health.ready(stall_s=100)
    assert not verdict.ok and "redis failing for 4 s" in verdict.detail["status"]
    assert verdict.detail["failing"] == ["redis"]
    clock.now += 1000  # the sink retries for long: the worker polls nothing meanwhile
    assert health.live(live_stall_s=300).ok, "waiting for Redis is not a reason to restart the flow"
    health.dependency_ok("redis")
    health.polled()
    assert health.ready(stall_s=100).ok


def test_a_write_that_hangs_past_the_stall_limit_makes_it_not_ready() -> None:
    clock = FakeClock()
    health = _working(clock)
    with health.writing("clickhouse"):
        clock.now += 2
        assert health.ready(stall_s=5).ok, "a write in progress is normal"
        clock.now += 4
        health.polled()
        assert "a clickhouse write hangs for 6 s" in health.ready(stall_s=5).detail["status"]
    assert health.ready(stall_s=5).ok


def test_a_worker_that_stops_polling_with_no_dependency_to_blame_is_not_alive() -> None:
    clock = FakeClock()
    health = _working(clock)
    assert health.live(live_stall_s=300).ok
    clock.now += 301
    verdict = health.live(live_stall_s=300)
    assert not verdict.ok and "no dependency to blame" in verdict.detail["status"]


def _get(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_the_probe_server_answers_over_http_and_checks_the_broker() -> None:
    health = FlowHealth()
    broker_up = threading.Event()
    broker_up.set()
    checked = threading.Event()

    def check() -> None:
        checked.set()
        if not broker_up.is_set():
            raise RuntimeError("metadata request timed out")

    server = serve_probes("127.0.0.1", free_port(), 30, 300, check, health)
    assert server is not None
    try:
        assert checked.wait(30)
        base = f"http://127.0.0.1:{server.port}"
        assert _get(f"{base}/livez")[0] == 200
        status, detail = _get(f"{base}/readyz")
        assert status == 503 and "input not polled yet" in str(detail["status"])
        health.polled()
        health.kafka_checked(True)
        status, detail = _get(f"{base}/readyz")
        assert (status, detail["status"], detail["failing"]) == (200, "ok", [])
        broker_up.clear()
        assert wait_until(lambda: "kafka unreachable" in str(_get(f"{base}/readyz")[1]["status"]), 60)
        assert _get(f"{base}/readyz")[0] == 503
        assert _get(f"{base}/livez")[0] == 200, "a broker away is no reason to restart the flow"
    finally:
        server.stop()


def test_a_port_in_use_loses_the_probes_not_the_flow() -> None:
    port = free_port()
    first = serve_probes("127.0.0.1", port, 30, 300, lambda: None, FlowHealth())
    try:
        assert serve_probes("127.0.0.1", port, 30, 300, lambda: None, FlowHealth()) is None
        assert serve_probes("127.0.0.1", 0, 30, 300, lambda: None, FlowHealth()) is None, "0: no probes"
    finally:
        assert first is not None
        first.stop()
