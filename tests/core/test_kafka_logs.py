"""librdkafka's own log lines follow VPP_LOG_FORMAT like every other line of a process.

Left alone, librdkafka writes ``%3|1733...|FAIL|rdkafka#producer-1| ...`` to
the process's stderr itself, so a JSON log pipeline gets lines it cannot
parse exactly when something is wrong (a broker it cannot reach). Each client
here is made the way the platform makes them and pointed at a port nothing
listens on, in a process of its own (librdkafka writes to the file descriptor,
past anything Python could capture), under ``VPP_LOG_FORMAT=json``: every line
on stderr must be a JSON record, and the connection failure must be among them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from core.kafka import LIBRDKAFKA_LOGGER
from tests.conftest import free_port

#: A client of each kind built as the platform builds it, on a dead broker, each polled until it has
#: logged the refused connection (the lines reach Python when a client is polled).
CLIENTS = """
import logging
import time
from confluent_kafka import Consumer, Producer, TopicPartition
from core import kafka
from core.config import Settings
from core.logs import configure_logging
from operators.kafka_batches import BatchedKafkaSource
settings = Settings()
configure_logging(settings)
seen = []


class Seen(logging.Handler):
    def emit(self, record):
        seen.append(record.getMessage())


logging.getLogger(kafka.LIBRDKAFKA_LOGGER).addHandler(Seen())


def until_refused(poll):
    before = len(seen)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any("refused" in m.lower() for m in seen[before:]):
        poll()


producer = Producer(kafka.client_config(settings))
producer.produce("telemetry.raw", b"x")
until_refused(lambda: producer.poll(0.1))

consumer = Consumer(kafka.client_config(settings, **{"group.id": "dead"}))
consumer.assign([TopicPartition("telemetry.raw", 0, 0)])
until_refused(lambda: consumer.consume(10, 0.1))
consumer.close()

source = BatchedKafkaSource([settings.kafka], ["telemetry.raw"], group_id="dead")
source._incarnations["telemetry.raw"] = None  # no topic id to ask a dead broker for
part = source.build_part("in", "0-telemetry.raw", None)
until_refused(part.next_batch)
"""


def test_librdkafka_lines_are_json_records() -> None:
    env = {**os.environ, "VPP_LOG_FORMAT": "json", "VPP_LOG_LEVEL": "INFO",
           "VPP_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}"}
    done = subprocess.run([sys.executable, "-c", CLIENTS], env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    not_json = []
    records = []
    for line in done.stderr.splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            not_json.append(line)
    assert not not_json, f"lines past VPP_LOG_FORMAT=json: {not_json[:3]}"
    refused = [r for r in records if r["logger"] == LIBRDKAFKA_LOGGER and "refused" in r["message"].lower()]
    clients = {name for r in refused for name in re.findall(r"\[rdkafka#(\w+)-\d+\]", r["message"][:60])}
    names = {name for r in refused for name in re.findall(r"\[rdkafka#(\w+-\d+)\]", r["message"][:60])}
    assert clients == {"producer", "consumer"} and len(names) == 3, (
        f"not every client (producer, consumer, dataflow source) logged the dead broker: {names}")
    assert {r["level"] for r in refused} <= {"ERROR", "WARNING"}
