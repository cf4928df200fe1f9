"""Write the v1 snapshots: run in a checkout of commit 95af74b (PYTHONPATH=that checkout) with an output dir."""
import sys
from pathlib import Path

from operators.telemetry_steps import NodeGroupLogic, ShardLogic
from operators.records import ShardBatch
from operators.shard import bucket_of
from operators.twin import Reading
from tests.telemetry.scenario import generate
from vpp.config import Settings

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
settings = Settings(telemetry_shards=1, telemetry_node_groups=1, topic_partitions={"telemetry.raw": 1})
sc = generate(n_sites=40, minutes=2.5, seed=9)
shard = ShardLogic.builder(settings)(None)
group = NodeGroupLogic.builder(settings)(None)
shard.on_batch([ShardBatch(0, "telemetry.raw/0", 0, [], sc.ancestries)])
readings = [(r["site_id"], Reading.from_record(r)) for r in sc.readings]
for start in range(0, len(readings), 500):
    chunk = readings[start:start + 500]
    emitted, _ = shard.on_batch([ShardBatch(0, "telemetry.raw/0", max(r.event_ms for _, r in chunk), chunk)])
    emitted += shard.on_eof()[0]
    group.on_batch([e.value for e in emitted if e.kind == "nodes"])
    group.on_eof()
(out / "shard-v1.pickle").write_bytes(shard.snapshot())
(out / "nodegroup-v1.pickle").write_bytes(group.snapshot())


# The control step: one dispatch mid-window, as ControlLogic.snapshot pickles it.
import pickle

from operators.dispatch import ControlConfig, Dispatch
from tests.control.inprocess import Loop, request, sites

fleet = sites(30)
loop = Loop(fleet)
dispatch = Dispatch(request(40.0, 10, fleet), ControlConfig())
loop.run(dispatch, 90)
(out / "dispatch-v1.pickle").write_bytes(pickle.dumps(dispatch, protocol=pickle.HIGHEST_PROTOCOL))

