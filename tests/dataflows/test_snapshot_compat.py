"""Recovery stores outlive code versions: snapshots the previous version wrote still restore.

The files in ``snapshots/`` were written by the code of commit 95af74b (before
exact rollups and the move of the shared core to ``core/``), with
``tests/dataflows/snapshots/make_v1.py`` run in a checkout of that commit: a
shard and a node group that had read two and a half minutes of a 40-site
scenario, and one dispatch 90 s into its window. Pickled state names classes
by module path, so a class moved or reshaped without care breaks every
recovery store in the field; these tests catch that.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest

from core.config import Settings
from operators.control_steps import ControlLogic
from operators.dispatch import Dispatch
from operators.sinks import TwinWrite
from operators.telemetry_steps import ForGroup, NodeGroupLogic, ShardLogic
from tests.telemetry.compare import mismatches
from tests.telemetry.scenario import expected_nodes, generate

SNAPSHOTS = Path(__file__).parent / "snapshots"
SETTINGS = Settings(telemetry_shards=1, telemetry_node_groups=1, topic_partitions={"telemetry.raw": 1})


def _aggregates(emitted: list[object]) -> dict[str, dict[str, Any]]:
    return {e.key.removeprefix("node:"): e.fields for e in emitted if isinstance(e, TwinWrite)}


def test_telemetry_snapshots_of_the_previous_version_restore_with_exact_sums() -> None:
    sc = generate(n_sites=40, minutes=2.5, seed=9)  # what the snapshots had read
    shard = ShardLogic.builder(SETTINGS)((SNAPSHOTS / "shard-v1.pickle").read_bytes())
    group = NodeGroupLogic.builder(SETTINGS)((SNAPSHOTS / "nodegroup-v1.pickle").read_bytes())
    emitted, _ = shard.on_eof()
    group.on_batch([e.changes for e in emitted if isinstance(e, ForGroup)])
    aggregates = _aggregates(group.on_eof()[0])

    # Statuses moved on with the wall clock since; membership and last known values did not, and the
    # sums rebuilt from the old float state are exact.
    fields = ("expected_sites", "est_battery_kw", "est_energy_available_kwh", "est_charge_headroom_kwh")
    assert mismatches(expected_nodes(sc, sc.end_ms), aggregates, fields) == []
    assert set(aggregates) == set(expected_nodes(sc, sc.end_ms))


def test_a_dispatch_snapshot_of_the_previous_version_is_dropped_cleanly(
        caplog: pytest.LogCaptureFixture) -> None:
    """Before the arbiter, state was one Dispatch per dispatch id; such a state cannot join the one
    arbiter key, so the step drops it with a warning (its commands lapse) instead of crashing."""
    old = (SNAPSHOTS / "dispatch-v1.pickle").read_bytes()
    assert isinstance(pickle.loads(old), Dispatch)  # the class still reads the old bytes
    logic: ControlLogic = ControlLogic.builder(Settings())(old)
    assert logic.arbiter.dispatches == {}
    assert logic.notify_at() is None
    assert "before arbitration" in caplog.text
