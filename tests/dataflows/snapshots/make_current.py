"""Write snapshots of the current state versions: shard v4 (columns), node group v3, arbiter v2 and plans.

Run from a checkout with ``PYTHONPATH=<checkout> python tests/dataflows/snapshots/make_current.py DIR``.
When a state's shape changes, keep these files (they become "the previous version") and
add the new version's beside them (copy only the new file in: the others are the fixtures already
committed, and must stay the bytes their version's code wrote).
"""
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from core.config import Settings
from operators.control_steps import ControlLogic, Received
from operators.dispatch import Request
from operators.records import Origin, ShardBatch
from operators.telemetry_steps import ForGroup, NodeGroupLogic, ShardLogic
from operators.twin import Reading
from schemas.times import epoch_ms
from tests.control.twins import step
from tests.dataflows.test_control_flow_inprocess import FixedTwin
from tests.telemetry.scenario import generate

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
settings = Settings(telemetry_shards=1, telemetry_node_groups=1, topic_partitions={"telemetry.raw": 1})
sc = generate(n_sites=40, minutes=2.5, seed=9)
shard = ShardLogic.builder(settings)(None)
group = NodeGroupLogic.builder(settings)(None)
shard.on_batch([ShardBatch(0, "telemetry.raw/0", 0, [], [], sc.ancestries)])
readings = [(r["site_id"], Reading.from_record(r)) for r in sc.readings]
for start in range(0, len(readings), 500):
    chunk = readings[start:start + 500]
    origins = [Origin(site.encode(), b"", "telemetry.raw", 0, start + i, None) for i, (site, _) in enumerate(chunk)]
    emitted, _ = shard.on_batch([ShardBatch(0, "telemetry.raw/0", max(r.event_ms for _, r in chunk), chunk, origins)])
    emitted += shard.on_eof()[0]
    group.on_batch([e.changes for e in emitted if isinstance(e, ForGroup)])
    group.on_eof()
(out / "shard-v4.pickle").write_bytes(shard.snapshot())
(out / "nodegroup-v3.pickle").write_bytes(group.snapshot())

control = ControlLogic.builder(Settings())(None)
now = epoch_ms(datetime.now(UTC))
request = Request("d-snapshot", "CREATE", "feeder-0", None, 40.0, now, now + int(timedelta(hours=1).total_seconds() * 1000),
                  "waterfill", True, "waterfill", "snapshot", now, 0)
step(control, FixedTwin(), [Received(request, Origin(b"d-snapshot", b"", "dispatch.requests", 0, 0, None))])
(out / "arbiter-v2.pickle").write_bytes(control.snapshot())

# The plans step after the generated plan scenario (tests/siteplan/plan_scenario.py) at a fixed time.
from dataflows.plan_steps import STEP_STATE_VERSION, PlanIn, PlansLogic, SiteIn, StatusIn  # noqa: E402
from schemas import packaged_codec  # noqa: E402
from tests.siteplan.plan_scenario import scenario  # noqa: E402

PLANS_NOW = 1_796_083_260_000  # 2026-12-01T00:01Z: the time the plans snapshot's scenario was made at
codec = packaged_codec()
items: list[object] = []
for topic, _key, record, schema in scenario(PLANS_NOW)[1].messages:
    decoded = codec.decode(codec.encode(schema, record), schema)
    if schema == "SiteAncestry":
        items.append(SiteIn(decoded))
    elif schema == "SiteStatus":
        items.append(StatusIn(decoded["site_id"], decoded["status"], epoch_ms(decoded["event_time"])))
    elif decoded["plan_id"] != "from-the-future":  # the decode step refuses that one
        items.append(PlanIn(decoded, Origin(None, b"", topic, 0, 0, None)))
plans = PlansLogic.builder(Settings())(None)
plans.on_batch(items)  # type: ignore[arg-type]
(out / f"plans-v{STEP_STATE_VERSION}.pickle").write_bytes(plans.snapshot())
