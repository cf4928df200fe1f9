"""The dataflows export what Bytewax's per-step item counts cannot say: records read per topic, dead
letters by kind, late readings (counted, and until now never exported) and each shard's event-time lag.

In-process on TestingSource (the production wiring); the metrics are the process's Prometheus
registry, which Bytewax's dataflow API serves on /metrics; the last test scrapes that port of a real
dataflow process started the way `vpp up` starts it.
"""

from __future__ import annotations

import os
import subprocess
import time
import urllib.request
import zlib
from pathlib import Path

import pytest
from confluent_kafka import Message, Producer
from prometheus_client import REGISTRY

from core.config import Settings
from core.kafka import client_config
from core.topics import TELEMETRY_RAW
from operators.kafka_batches import Polled
from schemas import packaged_codec
from tests.conftest import free_port
from tests.dataflows.telemetry_harness import PARTITIONS, polled_input, run, settings_for
from tests.telemetry.scenario import generate
from vpp.dataflows import dataflow_argv, settings_env
from vpp.services import Services


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _too_late_polls(polls: list[Polled], readings: list[bytes], keys: list[bytes]) -> list[Polled]:
    """The too-late readings as one more poll per partition, after everything else was read."""
    offsets: dict[int, int] = {}
    for poll in polls:
        if poll.topic == TELEMETRY_RAW:
            offsets[poll.partition] = offsets.get(poll.partition, 0) + len(poll.messages)
    late: dict[int, list[Message]] = {}
    for key, value in zip(keys, readings, strict=True):
        partition = zlib.crc32(key) % PARTITIONS
        offset = offsets.get(partition, 0)
        offsets[partition] = offset + 1
        late.setdefault(partition, []).append(Message(topic=TELEMETRY_RAW, partition=partition, offset=offset,
                                                      key=key, value=value, timestamp=(1, 0)))
    return [Polled(TELEMETRY_RAW, partition, messages) for partition, messages in late.items()]


def test_records_dead_letters_late_readings_and_lag_are_counted(tmp_path: Path) -> None:
    sc = generate(n_sites=30, minutes=4.25, seed=11)
    assert sc.too_late, "the scenario has readings that come after their minute closed"
    codec = packaged_codec()
    good = codec.encode("SiteTelemetry", sc.readings[0])
    implausible = codec.encode("SiteTelemetry", {**sc.readings[1], "soc_pct": 150.0})
    poison: list[tuple[bytes | None, bytes]] = [(b"noise", b"\x07not avro"), (b"site-other", good),
                                                (sc.readings[1]["site_id"].encode(), implausible)]
    polls = polled_input(sc, poison)
    polls += _too_late_polls(polls, [codec.encode("SiteTelemetry", r) for r in sc.too_late],
                             [r["site_id"].encode() for r in sc.too_late])
    raw = sum(len(p.messages) for p in polls if p.topic == TELEMETRY_RAW)
    labels = {"flow": "telemetry"}
    before = {
        "raw": _value("vpp_dataflow_records_in_total", topic=TELEMETRY_RAW, **labels),
        "magic": _value("vpp_dataflow_dead_letters_total", kind="WRONG_MAGIC", **labels),
        "key": _value("vpp_dataflow_dead_letters_total", kind="KEY_MISMATCH", **labels),
        "range": _value("vpp_dataflow_dead_letters_total", kind="out_of_range", **labels),
        "late": _value("vpp_telemetry_late_readings_total"),
    }
    run(settings_for(tmp_path), polls)
    assert _value("vpp_dataflow_records_in_total", topic=TELEMETRY_RAW, **labels) - before["raw"] == raw
    assert _value("vpp_dataflow_dead_letters_total", kind="WRONG_MAGIC", **labels) - before["magic"] == 1
    assert _value("vpp_dataflow_dead_letters_total", kind="KEY_MISMATCH", **labels) - before["key"] == 1
    assert _value("vpp_dataflow_dead_letters_total", kind="out_of_range", **labels) - before["range"] == 1
    assert _value("vpp_telemetry_late_readings_total") - before["late"] == len(sc.too_late)
    lags = [sample.value for metric in REGISTRY.collect()
            if metric.name == "vpp_telemetry_event_time_lag_seconds" for sample in metric.samples]
    assert lags and min(lags) > 0, "a past scenario: every shard's clock is behind the wall clock"


def test_each_local_dataflow_serves_metrics_on_its_own_port(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, telemetry_metrics_port=4101, control_metrics_port=4102)
    services = {s.name: s for s in Services(settings).services()}
    for flow, port in (("telemetry", 4101), ("control", 4102)):
        managed = services[flow]
        assert managed.env is not None
        env = managed.env()
        assert env["BYTEWAX_DATAFLOW_API_ENABLED"] == "true" and env["BYTEWAX_DATAFLOW_API_PORT"] == str(port)
        assert Path(env["BYTEWAX_DATAFLOW_API_CACHE_PATH"]).is_dir()
        assert managed.address.startswith(f"http://127.0.0.1:{port}/metrics")


def _scrape(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return str(response.read().decode())
    except OSError:
        return ""


@pytest.mark.integration
def test_the_dataflow_serves_its_metrics_on_its_port(stack_settings: Settings, tmp_path: Path) -> None:
    """The telemetry dataflow as `vpp up` starts it: a scrape of its port shows Bytewax's and our metrics."""
    port = free_port()
    settings = stack_settings.model_copy(update={"telemetry_metrics_port": port})
    env = {**os.environ, **settings_env(settings), **Services(settings).metrics_env("telemetry", port)}
    producer = Producer(client_config(settings))
    producer.produce(TELEMETRY_RAW, key=b"metrics-test", value=b"\x07not avro")
    assert producer.flush(30) == 0
    log = (tmp_path / "telemetry.log").open("wb")
    process = subprocess.Popen(dataflow_argv("telemetry", settings), env=env, stdout=log, stderr=log)
    try:
        deadline, text = time.monotonic() + 120, ""
        while "vpp_dataflow_dead_letters_total{" not in text or "bytewax_item_out_count_total" not in text:
            assert process.poll() is None, (tmp_path / "telemetry.log").read_text()
            assert time.monotonic() < deadline, f"no metrics on :{port}: {text[-2000:]}"
            time.sleep(1)
            text = _scrape(port)
        assert 'vpp_dataflow_records_in_total{flow="telemetry",topic="telemetry.raw"}' in text
        assert 'kind="WRONG_MAGIC"' in text
    finally:
        process.terminate()
        process.wait(timeout=60)
        log.close()
