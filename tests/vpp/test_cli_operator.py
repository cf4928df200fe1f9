"""The CLI as an operator meets it: real dispatch subcommands, output that streams when piped,
``vpp live --watch``, and tables that fit 80 columns.

The Redis side is written by hand (a node aggregate, dispatch statuses) into a Redis of the test's
own beside the session stack's broker, so no dataflow has to run and no other module's dispatches
are listed; a cancel is checked on ``dispatch.requests`` itself.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from confluent_kafka import Consumer, TopicPartition
from rich.console import Console
from typer.testing import CliRunner

from core import kafka, keys
from core.config import Settings
from core.topics import DISPATCH_REQUESTS
from schemas import packaged_codec
from tests.own_redis import RedisServer
from vpp import cli, dispatch_cli

pytestmark = pytest.mark.integration

CHECKOUT = Path(__file__).resolve().parents[2]
KIND = "opstestkind"
NODE = "feeder-ops-12-3-4"
RUNNING = "d-ops-running-0001"
ENDED = "d-ops-partial-0002"
WIDTH = 80


def _now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


@pytest.fixture
def ops_settings(stack_settings: Settings, own_redis: RedisServer) -> Settings:
    """The session stack's settings with a Redis of the test's own: ``dispatch list`` shows the newest
    dispatches of the whole index, and other modules' dispatches (a control flow run on the session
    stack, the API's) would otherwise be listed before these."""
    return stack_settings.model_copy(update={"redis_port": own_redis.port, "redis_url": None})


@pytest.fixture
def fleet(ops_settings: Settings) -> Iterator[redis.Redis]:
    """A node aggregate and two dispatches (one active, one ended PARTIAL) in the test's Redis."""
    client = redis.Redis.from_url(ops_settings.redis, decode_responses=True)
    now = _now_ms()
    client.hset(keys.node(NODE), mapping={
        "node_id": NODE, "node_kind": KIND, "expected_sites": 12_345, "reporting_sites": 11_000,
        "coverage": 11_000 / 12_345, "battery_kw": 123_456.7, "est_battery_kw": 130_000.2,
        "energy_available_kwh": 1_234_567.8, "est_energy_available_kwh": 1_300_000.1,
        "oldest_knowledge_age_s": 3.0, "event_time": now - 4_000})
    common: dict[Any, Any] = {
        "node_id": NODE, "target_kw": 1_500.0, "measured_kw": 1_212.5, "error_kw": -287.5,
        "shortfall_kw": 0.0, "sites_total": 1_200, "sites_acked": 1_100, "sites_pending": 90,
        "sites_rejected": 10,
        "start": now - 60_000, "end": now + 1_740_000, "event_time": now}
    client.hset(keys.dispatch_status(RUNNING), mapping={**common, "state": "ACTIVE"})
    client.hset(keys.dispatch_status(ENDED), mapping={
        **common, "state": "PARTIAL", "delivered_kwh": 20.5, "requested_kwh": 750.0,
        "tracking_error_mean_kw": 300.0, "tracking_error_p95_kw": 900.0,
        "reason": "delivered 20.50 of 750.00 kWh requested (3%): the node's sites could not follow"})
    client.zadd(keys.DISPATCH_INDEX, {RUNNING: now - 60_000, ENDED: now - 120_000})
    yield client
    client.close()


def _env(settings: Settings) -> dict[str, str]:
    return {"VPP_REDIS_PORT": str(settings.redis_port), "VPP_KAFKA_PORT": str(settings.kafka_port),
            "VPP_CLICKHOUSE_PORT": str(settings.clickhouse_port), "VPP_DATA_DIR": str(settings.data_dir)}


@pytest.fixture
def narrow(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's consoles as a terminal of 80 columns would make them (COLUMNS=80), printing to stdout."""
    for module in (cli, dispatch_cli):
        monkeypatch.setattr(module, "console", Console(width=WIDTH))


def _fits(output: str) -> list[str]:
    lines = output.splitlines()
    assert lines, "some output"
    too_wide = [line for line in lines if len(line) > WIDTH]
    assert not too_wide, "\n".join(too_wide)
    return lines


def test_live_dispatch_list_and_status_fit_80_columns(ops_settings: Settings, fleet: redis.Redis,
                                                      narrow: None) -> None:
    runner, env = CliRunner(), _env(ops_settings)
    live = runner.invoke(cli.app, ["live", "--kinds", KIND], env=env)
    assert live.exit_code == 0, live.output
    lines = _fits(live.output)
    (row,) = [line for line in lines if NODE[:20] in line]
    assert "89%" in row and "123 MW" in row and "1.2 GWh" in row, "each figure on the node's row"
    assert "…" not in live.output, "nothing cut short"
    listed = runner.invoke(cli.app, ["dispatch", "list"], env=env)
    assert listed.exit_code == 0, listed.output
    lines = _fits(listed.output)
    assert any(RUNNING in line and "ACTIVE" in line for line in lines)
    assert any(ENDED in line and "PARTIAL" in line for line in lines)
    status = runner.invoke(cli.app, ["dispatch", "status", ENDED], env=env)
    assert status.exit_code == 0, status.output
    lines = _fits(status.output)
    text = " ".join(status.output.split())
    assert "PARTIAL" in text and "outcome: PARTIAL, delivered 20.50 of 750.00 kWh" in text
    assert "1,100 acked" not in text and "1100 acked, 90 pending, 10 rejected of 1200" in text


def test_status_fits_80_columns_and_cuts_no_address_short(stack_settings: Settings, narrow: None) -> None:
    result = CliRunner().invoke(cli.app, ["status"], env=_env(stack_settings))
    lines = _fits(result.output)
    assert "…" not in result.output, "an address cut short cannot be used"
    text = "".join(line.strip() for line in lines)
    assert stack_settings.clickhouse in text and stack_settings.redis in text


def test_dispatch_has_real_subcommands_and_send_is_the_default(ops_settings: Settings,
                                                               fleet: redis.Redis) -> None:
    runner, env = CliRunner(), _env(ops_settings)
    helped = runner.invoke(cli.app, ["dispatch", "--help"], env=env)
    assert helped.exit_code == 0
    for word in ("send", "status", "cancel", "list"):
        assert word in helped.output
    unknown_node = runner.invoke(cli.app, ["dispatch", "region-404", "--kw", "5", "--no-follow"], env=env)
    assert unknown_node.exit_code == 2 and "unknown node 'region-404'" in unknown_node.output
    same = runner.invoke(cli.app, ["dispatch", "send", "region-404", "--kw", "5", "--no-follow"], env=env)
    assert same.exit_code == 2 and "unknown node 'region-404'" in same.output
    no_such = runner.invoke(cli.app, ["dispatch", "cancel", "d-ops-never-was"], env=env)
    assert no_such.exit_code == 1 and "no dispatch 'd-ops-never-was'" in no_such.output
    listed = runner.invoke(cli.app, ["dispatch", "list", "--limit", "1", "--json"], env=env)
    assert listed.exit_code == 0 and [d["dispatch_id"] for d in json.loads(listed.output)] == [RUNNING]


def test_cancel_sends_a_cancel_request_for_the_dispatch(ops_settings: Settings, fleet: redis.Redis) -> None:
    consumer = Consumer({**kafka.client_config(ops_settings), "group.id": "ops-test",
                         "enable.auto.commit": False})
    partitions = consumer.list_topics(DISPATCH_REQUESTS, timeout=10).topics[DISPATCH_REQUESTS].partitions
    ends = [TopicPartition(DISPATCH_REQUESTS, p, consumer.get_watermark_offsets(
        TopicPartition(DISPATCH_REQUESTS, p), timeout=10)[1]) for p in partitions]
    consumer.assign(ends)
    try:
        result = CliRunner().invoke(cli.app, ["dispatch", "cancel", RUNNING], env=_env(ops_settings))
        assert result.exit_code == 0, result.output
        deadline, found = time.monotonic() + 60, None
        while found is None and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None and message.key() == RUNNING.encode():
                found = packaged_codec().decode(message.value() or b"", "DispatchRequest")
        assert found is not None, "the cancel reached dispatch.requests"
        assert found["action"] == "CANCEL" and found["requested_by"] == "cli"
    finally:
        consumer.close()


def _subprocess_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VPP_")}
    env.update(_env(settings), PYTHONPATH=str(CHECKOUT), COLUMNS=str(WIDTH))
    return env


@contextmanager
def _children_take_ctrl_c() -> Iterator[None]:
    """Children started inside get SIGINT's default action, as from a terminal, even if this process
    was started with SIGINT ignored (a background job of a non-interactive shell, ``cmd &``):
    an ignored signal is inherited, and a Python started so never turns Ctrl-C into
    KeyboardInterrupt. A caught signal is not inherited, so catching it here is enough."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _signal_state(pid: int) -> str:
    """The blocked, ignored and caught signal masks and the kernel wait channel of a process: why a
    signal it was sent did nothing."""
    status = Path(f"/proc/{pid}/status").read_text()
    masks = [line for line in status.splitlines() if line.startswith(("State", "SigPnd", "ShdPnd", "SigBlk",
                                                                      "SigIgn", "SigCgt"))]
    return "; ".join([*masks, "wchan: " + Path(f"/proc/{pid}/wchan").read_text()])


def _read_line(process: subprocess.Popen[str], timeout_s: float) -> str:
    """The next line of a running process's stdout, or fail: proof that it was flushed, not buffered."""
    assert process.stdout is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.5)
        if ready:
            return process.stdout.readline()
        assert process.poll() is None, "the process ended early"
    raise AssertionError("no line within the deadline: is the output buffered?")


def test_piped_follow_streams_a_line_per_change_until_the_dispatch_ends(ops_settings: Settings,
                                                                        fleet: redis.Redis) -> None:
    process = subprocess.Popen([sys.executable, "-m", "vpp.cli", "dispatch", "status", RUNNING, "--follow"],
                               env=_subprocess_env(ops_settings), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        first = _read_line(process, 90)
        assert "ACTIVE" in first and len(first.rstrip("\n")) <= WIDTH, first
        fleet.hset(keys.dispatch_status(RUNNING), mapping={"measured_kw": 1_490.0, "error_kw": -10.0,
                                                           "event_time": _now_ms()})
        second = _read_line(process, 60)
        assert "ACTIVE" in second and "1,490.0/1,500.0 kW" in second, second
        fleet.hset(keys.dispatch_status(RUNNING), mapping={"state": "COMPLETED", "delivered_kwh": 700.0,
                                                           "requested_kwh": 750.0})
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert "COMPLETED" in out
    assert "outcome: COMPLETED, delivered 700.00 of 750.00 kWh" in " ".join(out.split())


def test_live_watch_refreshes_until_ctrl_c(ops_settings: Settings, fleet: redis.Redis) -> None:
    argv = [sys.executable, "-m", "vpp.cli", "live", "--kinds", KIND, "--watch", "--json", "--every", "0.5"]
    with _children_take_ctrl_c():
        process = subprocess.Popen(argv, env=_subprocess_env(ops_settings), stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
    try:
        first = json.loads(_read_line(process, 90))
        fleet.hset(keys.node(NODE), "reporting_sites", 12_000)
        deadline = time.monotonic() + 60
        while True:  # one document per refresh; the change shows up in a later one
            later = json.loads(_read_line(process, 30))
            if later[0]["reporting"] == 12_000:
                break
            assert time.monotonic() < deadline, "the refreshes never showed the change"
        process.send_signal(signal.SIGINT)
        try:
            _, err = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running 60 s after Ctrl-C; its signal state: {_signal_state(process.pid)}")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert first[0]["node_id"] == NODE and first[0]["reporting"] == 11_000
    assert first[0]["pipeline_lag_s"] >= 4
    assert process.returncode == 0, f"Ctrl-C ends --watch without an error: {err}"
    assert "Traceback" not in err
