"""The plans dataflow's own wiring, run in this process: TestingSource in, TestingSinks out.

The same generated plans as the real-stack test (tests/siteplan/plan_scenario.py),
delivered as the Kafka source delivers them (real ``confluent_kafka.Message``
objects with real Avro, in ``Polled`` batches, spread over partitions), with
one and with two workers: the node plans the flow writes must equal the
brute-force sum and every refused plan must be a dead letter with its reason.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from bytewax.connectors.kafka import KafkaSinkMessage
from bytewax.testing import TestingSink, TestingSource, cluster_main, run_main
from confluent_kafka import Message

from core import keys
from core.config import Settings
from core.rows import SitePlanRow
from dataflows.plans import PlansSinks, build_flow
from operators.kafka_batches import Polled
from operators.sinks import TwinWrite
from schemas import packaged_codec
from schemas.times import wall_ms
from tests.siteplan.plan_scenario import Input, compare, expected, latest_node_plans, scenario

PARTITIONS = 3


@dataclass
class Captured:
    kafka: list[KafkaSinkMessage[Any, Any]] = field(default_factory=list)
    redis: list[TwinWrite] = field(default_factory=list)
    history: list[tuple[str, Any]] = field(default_factory=list)

    def sinks(self) -> PlansSinks:
        return PlansSinks(TestingSink(self.kafka), TestingSink(self.redis), TestingSink(self.history))

    def node_plans(self) -> dict[str, dict[str, Any]]:
        """``plan:node:{id}`` as Redis would hold it (the newest version of each)."""
        newest: dict[str, TwinWrite] = {}
        for write in self.redis:
            if write.key.startswith(keys.node_plan("")) and (
                    write.key not in newest or write.version >= newest[write.key].version):
                newest[write.key] = write
        return {key.removeprefix(keys.node_plan("")): w.fields for key, w in newest.items()}


def _polls(data: Input) -> list[Polled]:
    """Each topic's records spread over partitions by key, in production order, a few per poll."""
    codec = packaged_codec()
    offsets: dict[tuple[str, int], int] = {}
    pending: dict[tuple[str, int], list[Message]] = {}
    for topic, key, record, schema in data.messages:
        partition = zlib.crc32(key) % PARTITIONS
        offset = offsets.get((topic, partition), 0)
        offsets[topic, partition] = offset + 1
        pending.setdefault((topic, partition), []).append(
            Message(topic=topic, partition=partition, offset=offset, key=key,
                    value=codec.encode(schema, record), timestamp=(1, 0)))
    return [Polled(topic, partition, messages[i:i + 7])
            for (topic, partition), messages in pending.items() for i in range(0, len(messages), 7)]


@pytest.mark.parametrize("workers", [1, 2])
def test_node_plans_equal_the_brute_force_sum_with_one_and_two_workers(workers: int, tmp_path: Path) -> None:
    now = wall_ms()
    specs, data = scenario(now)
    captured = Captured()
    settings = Settings(data_dir=tmp_path, dataflow_tail=False)
    flow = build_flow(settings, TestingSource(_polls(data)), captured.sinks())
    if workers == 1:
        run_main(flow)  # type: ignore[no-untyped-call]
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)  # type: ignore[no-untyped-call]

    live = captured.node_plans()
    any_node = next(iter(live.values()))
    stale_before = int(any_node["computed_at"]) - int(settings.plans_stale_after_s * 1000)
    reference = expected(specs, data, int(any_node["start_ms"]), stale_before)
    problems = compare({n: {k: str(v) for k, v in f.items()} for n, f in live.items()}, reference)
    assert problems == [], "\n".join(problems[:30])
    codec = packaged_codec()
    announced = latest_node_plans([codec.decode(m.value, "NodePlan") for m in captured.kafka
                                   if m.topic == "plans.node"])
    problems = compare(announced, reference)
    assert problems == [], "plans.node: " + "\n".join(problems[:30])
    letters = [codec.decode(m.value, "DeadLetter") for m in captured.kafka if m.topic == "telemetry.dlq"]
    assert len(letters) + sum(m.topic == "plans.node" for m in captured.kafka) == len(captured.kafka)
    kinds = {codec.decode(bytes(d["original_value"]), "SitePlan")["plan_id"]: d["error_kind"]
             for d in letters}
    assert kinds == data.refused
    stored = {(row.site_id, row.plan_id) for _, row in captured.history if isinstance(row, SitePlanRow)}
    assert stored == {(p["site_id"], p["plan_id"]) for plans in data.accepted.values() for p in plans
                      if not p["plan_id"].endswith("-0")}  # every plan that entered the book; late ones never


def test_the_step_resumed_from_its_snapshot_answers_what_it_answered_before(tmp_path: Path) -> None:
    from dataflows.plan_steps import PlanIn, PlansLogic, SiteIn, StatusIn
    from operators.records import Origin

    now = wall_ms()
    _, data = scenario(now)
    codec = packaged_codec()
    items: list[Any] = []
    for topic, _key, record, schema in data.messages:
        decoded = codec.decode(codec.encode(schema, record), schema)
        if schema == "SiteAncestry":
            items.append(SiteIn(decoded))
        elif schema == "SiteStatus":
            items.append(StatusIn(decoded["site_id"], decoded["status"], wall_ms()))
        elif decoded["plan_id"] != "from-the-future":  # the decode step refuses that one
            items.append(PlanIn(decoded, Origin(None, b"", topic, 0, 0, None)))
    build = PlansLogic.builder(Settings(data_dir=tmp_path))
    logic = build(None)
    logic.on_batch(items)
    before = {w.key: w.fields for w in logic._emit() if isinstance(w, TwinWrite)}
    resumed = build(logic.snapshot())
    after = {w.key: w.fields for w in resumed._emit() if isinstance(w, TwinWrite)}
    ignore = {"computed_at"}
    assert {k: {f: v for f, v in fs.items() if f not in ignore} for k, fs in after.items()} == {
        k: {f: v for f, v in fs.items() if f not in ignore} for k, fs in before.items()}
    assert len(resumed.sites.ancestries) == 60 and resumed.desk.intake.book.plans.keys() == \
        logic.desk.intake.book.plans.keys()
