"""The control dataflow's trust boundaries over the real stack (issue 20, cases 6, 7 and 8).

A private local stack, 128 site twins written straight into Redis under one
feeder (as the telemetry dataflow would), the real control dataflow in its own
process, and honest devices played by a thread: each takes its command from
``commands.site``, follows it (its twin's battery power becomes the setpoint)
and acks it on ``commands.acks`` under its own key. Attacks are raw Kafka
producers, as in the issue.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from confluent_kafka import Consumer, Producer, TopicPartition
from typer.testing import CliRunner

from core import keys
from core.config import Settings
from core.dispatch import read_status, submit
from core.dispatch_spec import DispatchConflictError, DispatchSpec
from core.kafka import client_config
from core.topics import COMMANDS_ACKS, COMMANDS_SITE, DISPATCH_REQUESTS, TELEMETRY_DLQ
from schemas import packaged_codec
from schemas.times import epoch_ms
from tests.conftest import local_settings
from tests.telemetry.flowrun import read_to_end
from vpp.cli import app
from vpp.dataflows import dataflow_argv, settings_env
from vpp.stack import running

pytestmark = pytest.mark.integration

NODE = "feeder-trust"
SITES = [f"site-trust-{i:03d}" for i in range(128)]
TARGET_KW = 20.0
YEAR = timedelta(days=365)


def _consumer(settings: Settings, topic: str) -> Consumer:
    consumer = Consumer(client_config(settings, **{"group.id": f"t-{time.time_ns()}",
                                                   "enable.auto.commit": False}))
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    return consumer


@dataclass
class Devices:
    """Honest devices: follow every command addressed to them and ack it under their own key."""

    settings: Settings
    commanded: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        codec = packaged_codec()
        client = redis.Redis.from_url(self.settings.redis)
        producer = Producer(client_config(self.settings))
        consumer = _consumer(self.settings, COMMANDS_SITE)
        while not self.stop.is_set():
            for message in consumer.consume(1000, 0.1):
                value = message.value()
                if message.error() or value is None:
                    continue
                command = codec.decode(value, "SiteCommand")
                site_id, now = command["site_id"], datetime.now(UTC)
                if command["setpoint_kw"] != 0.0:
                    self.commanded[command["dispatch_id"]].add(site_id)
                client.hset(keys.site(site_id), mapping={
                    "battery_kw": command["setpoint_kw"], "active_command_id": command["command_id"],
                    "last_seen": epoch_ms(now)})
                producer.produce(COMMANDS_ACKS, key=site_id.encode(), value=codec.encode("CommandAck", {
                    "command_id": command["command_id"], "site_id": site_id, "status": "ACCEPTED",
                    "reason": None, "event_time": now}))
            producer.poll(0)
        producer.flush(10)
        consumer.close()


@dataclass
class Control:
    settings: Settings
    devices: Devices
    client: redis.Redis

    def produce(self, topic: str, key: bytes, schema: str, record: dict[str, Any]) -> None:
        producer = Producer(client_config(self.settings))
        producer.produce(topic, key=key, value=packaged_codec().encode(schema, record))
        assert producer.flush(10) == 0

    def dead_letters(self) -> list[dict[str, Any]]:
        """The control flow's dead letters so far (read to each partition's end, not for a fixed second)."""
        codec = packaged_codec()
        letters = [codec.decode(message.value(), "DeadLetter")
                   for message in read_to_end(self.settings, TELEMETRY_DLQ) if message.value() is not None]
        return [letter for letter in letters if letter["consumer"] == "dataflows.control"]

    def status(self, dispatch_id: str) -> dict[str, str]:
        return read_status(self.client, dispatch_id) or {}


def _wait(what: str, check: Callable[[], bool], timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.5)


def _write_twins(client: redis.Redis) -> None:
    now = epoch_ms(datetime.now(UTC))
    pipe = client.pipeline(transaction=False)
    for i, site_id in enumerate(SITES):
        pipe.hset(keys.site(site_id), mapping={
            "status": "ONLINE", "battery_kw": 0.0, "last_seen": now, "max_discharge_kw": 5.0,
            "max_charge_kw": 5.0, "energy_available_kwh": 4.0 + i % 7, "charge_headroom_kwh": 3.0,
            "solar_kw": 0.0, "load_kw": 0.5, "active_command_id": ""})
    pipe.sadd(keys.node_sites(NODE), *SITES)
    pipe.hset(keys.node(NODE), mapping={"event_time": now})
    pipe.execute()


@pytest.fixture(scope="module")
def control(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Control]:
    directory: Path = tmp_path_factory.mktemp("control-trust")
    settings = local_settings(directory)
    with running(settings):
        client = redis.Redis.from_url(settings.redis)
        _write_twins(client)
        devices = Devices(settings)
        thread = threading.Thread(target=devices.run, daemon=True)
        thread.start()
        log = (directory / "control.log").open("wb")
        env = {**os.environ, **settings_env(settings)}
        flow = subprocess.Popen(dataflow_argv("control", settings), env=env, stdout=log,
                                stderr=subprocess.STDOUT)
        try:
            yield Control(settings, devices, client)
        finally:
            flow.terminate()
            flow.wait(30)
            devices.stop.set()
            thread.join(30)


@pytest.fixture(scope="module")
def pair(control: Control) -> tuple[str, str]:
    """Two 20 kW dispatches on the same feeder, submitted together."""
    start = datetime.now(UTC)
    specs = [DispatchSpec(TARGET_KW, start, start + timedelta(minutes=15), node_id=NODE) for _ in range(2)]
    for spec in specs:
        submit(control.settings, spec, "test", control.client)
    first, second = (spec.dispatch_id for spec in specs)

    def both_active_and_acked() -> bool:
        statuses = [control.status(ident) for ident in (first, second)]
        return all(s.get("state") == "ACTIVE" and int(s.get("sites_total", 0)) > 0
                   and s["sites_acked"] == s["sites_total"] for s in statuses)

    _wait("both dispatches active with every command acked", both_active_and_acked)
    return first, second


def _contributions_add_up(control: Control, pair: tuple[str, str]) -> bool:
    """The two measured contributions sum to the twins' battery power of every commanded site."""
    commanded = set().union(*(control.devices.commanded[ident] for ident in pair))
    twin = sum(float(control.client.hget(keys.site(s), "battery_kw") or 0.0) for s in commanded)
    measured = sum(float(control.status(ident)["measured_kw"]) for ident in pair)
    return abs(measured - twin) < 1e-6


def test_two_concurrent_dispatches_on_one_node_get_disjoint_sites_and_report_only_their_own(
        control: Control, pair: tuple[str, str]) -> None:
    first, second = (control.devices.commanded[ident] for ident in pair)
    assert first and second, "both got sites"
    assert not first & second, "no site follows two dispatches"
    _wait("the measured contributions add up to the commanded sites' battery power",
          lambda: _contributions_add_up(control, pair), timeout_s=60)
    for ident, own in zip(pair, (first, second), strict=True):
        status = control.status(ident)
        assert int(status["sites_total"]) == len(own), "a status counts only its own sites"
        assert abs(float(status["measured_kw"]) - TARGET_KW) < 0.05 * TARGET_KW, status
    twin = sum(float(control.client.hget(keys.site(s), "battery_kw") or 0.0) for s in first | second)
    assert twin == pytest.approx(2 * TARGET_KW, rel=0.05), "40 kW asked, 40 kW delivered"


def test_a_forged_ack_is_dead_lettered_and_the_dispatch_runs_on(control: Control,
                                                                 pair: tuple[str, str]) -> None:
    """Case 6: an ack from a site outside the dispatch, a year ahead, with the dispatch's command id."""
    target, other = pair
    victim = sorted(control.devices.commanded[target])[0]
    outsider = sorted(control.devices.commanded[other])[0]
    ahead = datetime.now(UTC) + YEAR
    control.produce(COMMANDS_ACKS, outsider.encode(), "CommandAck", {
        "command_id": f"{target}/{victim}/1", "site_id": outsider, "status": "ACCEPTED", "reason": None,
        "event_time": ahead})
    control.produce(COMMANDS_ACKS, victim.encode(), "CommandAck", {  # the right site, a poisoned clock
        "command_id": f"{target}/{victim}/1", "site_id": victim, "status": "ACCEPTED", "reason": None,
        "event_time": ahead})

    def refused() -> set[str]:
        return {letter["error_kind"] for letter in control.dead_letters() if letter["topic"] == COMMANDS_ACKS}

    _wait("the forged acks are dead-lettered, or the dispatch ends",
          lambda: {"NOT_THE_COMMANDED_SITE", "future_event_time"} <= refused()
          or control.status(target).get("state") != "ACTIVE", timeout_s=60)
    # The next status (one correction interval later) counts them: by then a poisoned clock would have
    # ended the window.
    _wait("the refused acks are counted in the dispatch's status, or the dispatch ends",
          lambda: control.status(target).get("acks_refused") == "2"
          or control.status(target).get("state") != "ACTIVE", timeout_s=60)
    status = control.status(target)
    assert status["state"] == "ACTIVE", "a forged ack did not complete the dispatch"
    assert int(status["event_time"]) < epoch_ms(datetime.now(UTC) + timedelta(days=1)), "nor moved its clock"
    assert {"NOT_THE_COMMANDED_SITE", "future_event_time"} <= refused()
    assert status["acks_refused"] == "2", "counted against the dispatch they name"


def test_a_reused_dispatch_id_is_refused_at_submit_and_in_the_dataflow(
        control: Control, pair: tuple[str, str]) -> None:
    """Case 8: 409 (DispatchConflictError) at submit, exit 2 from the CLI, a dead letter in the dataflow."""
    taken = pair[0]
    start = datetime.now(UTC)
    spec = DispatchSpec(7.0, start, start + timedelta(minutes=5), node_id=NODE, dispatch_id=taken)
    with pytest.raises(DispatchConflictError, match="already used"):
        submit(control.settings, spec, "test", control.client)

    # In-process: a `vpp` subprocess cost a Python start and the CLI's imports (seconds on a loaded machine).
    cli = CliRunner().invoke(app, ["dispatch", NODE, "--kw", "7", "--minutes", "5", "--id", taken,
                                   "--no-follow"], env=settings_env(control.settings))
    assert cli.exit_code == 2 and "already used" in " ".join(cli.stderr.split()), cli.output

    # A client that skips the check (or two submits at once): the dataflow refuses it again.
    control.produce(DISPATCH_REQUESTS, taken.encode(), "DispatchRequest", {
        "dispatch_id": taken, "action": "CREATE", "node_id": NODE, "site_ids": None, "target_kw": 7.0,
        "start": start, "end": start + timedelta(minutes=5), "strategy": "waterfill", "requested_by": "test",
        "requested_at": start, "priority": 0})
    _wait("the reused id is dead-lettered",
          lambda: any(letter["error_kind"] == "DISPATCH_ID_REUSED" for letter in control.dead_letters()),
          timeout_s=60)
    status = control.status(taken)
    assert status["state"] == "ACTIVE" and float(status["target_kw"]) == TARGET_KW, "the first runs on"
