"""Run the telemetry dataflow in-process: Kafka-shaped input on TestingSource, results in TestingSinks.

The wiring is the production one (:func:`dataflows.telemetry.build_flow`);
only the source and the sinks differ. Input messages are real
``confluent_kafka.Message`` objects carrying real Avro, grouped into the
:class:`Polled` batches the Kafka source emits, spread over the same number of
``telemetry.raw`` partitions as the settings say. What the sinks received is
folded the way Redis (newest version wins) and ClickHouse (ReplacingMergeTree,
newest version per key) fold it, so the brute-force reference of
:mod:`tests.telemetry.scenario` applies unchanged.
"""

from __future__ import annotations

import sqlite3
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from bytewax.connectors.kafka import KafkaSinkMessage
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, cluster_main, run_main
from confluent_kafka import Message

from core.config import Settings
from core.rows import NodeWindow, SiteWindow
from core.topics import ASSETS_CHANGES, TELEMETRY_RAW
from dataflows.telemetry import TelemetrySinks, build_flow
from operators.kafka_batches import Polled
from operators.sinks import TwinWrite
from schemas import packaged_codec
from schemas.times import epoch_ms
from tests.telemetry.flowrun import REPLAY_PARTITION_IDLE_S
from tests.telemetry.scenario import Scenario

PARTITIONS = 6
POLL = 400


def settings_for(tmp: Path) -> Settings:
    """Small shard counts, the partitions the input uses, a horizon wide enough for a past scenario, and
    partitions never given up for wall-time silence (a replay's input has no wall-time meaning: with
    ``VPP_PARTITION_IDLE_S=0.05`` the resume test failed, as a starved worker could make it)."""
    return Settings(data_dir=tmp, telemetry_shards=8, telemetry_node_groups=4, default_partitions=3,
                    topic_partitions={TELEMETRY_RAW: PARTITIONS}, dataflow_tail=False,
                    plausible_max_behind_h=1e6, partition_idle_s=REPLAY_PARTITION_IDLE_S)


def polled_input(sc: Scenario, extra: Sequence[tuple[bytes | None, bytes]] = ()) -> list[Polled]:
    """The scenario as the Kafka source delivers it: ancestries, then readings spread over partitions."""
    codec = packaged_codec()
    polls: list[Polled] = []
    offsets: dict[tuple[str, int], int] = {}

    def message(topic: str, partition: int, key: bytes | None, value: bytes) -> Message:
        offset = offsets.get((topic, partition), 0)
        offsets[topic, partition] = offset + 1
        return Message(topic=topic, partition=partition, offset=offset, key=key, value=value,
                       timestamp=(1, 0))

    polls.append(Polled(ASSETS_CHANGES, 0, [
        message(ASSETS_CHANGES, 0, a["site_id"].encode(), codec.encode("SiteAncestry", a))
        for a in sc.ancestries]))
    pending: dict[int, list[Message]] = {p: [] for p in range(PARTITIONS)}
    raw = [(r["site_id"].encode(), codec.encode("SiteTelemetry", r)) for r in sc.readings] + list(extra)
    for key, value in raw:
        partition = zlib.crc32(key or b"") % PARTITIONS
        pending[partition].append(message(TELEMETRY_RAW, partition, key, value))
        if len(pending[partition]) == POLL:
            polls.append(Polled(TELEMETRY_RAW, partition, pending[partition]))
            pending[partition] = []
    polls.extend(Polled(TELEMETRY_RAW, p, batch) for p, batch in pending.items() if batch)
    return polls


@dataclass
class Captured:
    """Everything the flow's sinks received."""

    keyed_kafka: list[tuple[str, KafkaSinkMessage[Any, Any]]] = field(default_factory=list)
    redis: list[TwinWrite] = field(default_factory=list)
    history: list[tuple[str, Any]] = field(default_factory=list)

    def sinks(self) -> TelemetrySinks:
        return TelemetrySinks(TestingSink(self.keyed_kafka), TestingSink(self.redis),
                              TestingSink(self.history))

    @property
    def kafka(self) -> list[KafkaSinkMessage[Any, Any]]:
        """The Kafka records, in the order the sink received them."""
        return [record for _, record in self.keyed_kafka]

    def nodes(self) -> dict[str, dict[str, Any]]:
        """The ``node:{id}`` hashes as Redis would hold them (newest version wins)."""
        return self._hashes("node:")

    def sites(self) -> dict[str, dict[str, Any]]:
        """The ``site:{id}`` hashes as Redis would hold them."""
        return self._hashes("site:")

    def _hashes(self, prefix: str) -> dict[str, dict[str, Any]]:
        newest: dict[str, TwinWrite] = {}
        for write in self.redis:
            if write.key.startswith(prefix) and (write.key not in newest
                                                 or write.version >= newest[write.key].version):
                newest[write.key] = write
        return {key.removeprefix(prefix): w.fields for key, w in newest.items()}

    def minutes(self) -> tuple[dict[tuple[str, int], SiteWindow], dict[tuple[str, int], NodeWindow]]:
        """Site and node minute rows as ClickHouse keeps them (newest version per id and minute)."""
        sites: dict[tuple[str, int], SiteWindow] = {}
        nodes: dict[tuple[str, int], NodeWindow] = {}
        for _, row in self.history:
            if isinstance(row, SiteWindow):
                key = (row.site_id, epoch_ms(row.start))
                if key not in sites or row.version >= sites[key].version:
                    sites[key] = row
            elif isinstance(row, NodeWindow):
                node_key = (row.node_id, epoch_ms(row.start))
                if node_key not in nodes or row.version >= nodes[node_key].version:
                    nodes[node_key] = row
        return sites, nodes


def run(settings: Settings, polls: list[Polled], workers: int = 1, recovery: Path | None = None,
        captured: Captured | None = None) -> Captured:
    """Run the flow to the end of ``polls`` in this process with ``workers`` workers."""
    captured = captured or Captured()
    flow = build_flow(settings, TestingSource(polls), captured.sinks())
    config = RecoveryConfig(str(recovery)) if recovery is not None else None  # type: ignore[no-untyped-call]
    # With recovery, an epoch per poll: an interrupted run then resumes from a snapshot taken mid-way.
    epoch = timedelta(0) if recovery is not None else None
    if workers == 1:
        run_main(flow, epoch_interval=epoch, recovery_config=config)  # type: ignore[no-untyped-call]
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers,  # type: ignore[no-untyped-call]
                     epoch_interval=epoch, recovery_config=config)
    return captured


def recovery_store(directory: Path) -> Path:
    """An initialised recovery directory (one partition)."""
    directory.mkdir(parents=True, exist_ok=True)
    init_db_dir(directory, 1)  # type: ignore[no-untyped-call]
    return directory


def snapshots_taken(directory: Path) -> int:
    """How many state snapshots the recovery store holds (0: a resume would start from scratch)."""
    with sqlite3.connect(directory / "part-0.sqlite3") as db:
        return int(db.execute("SELECT count(*) FROM snaps").fetchone()[0])
