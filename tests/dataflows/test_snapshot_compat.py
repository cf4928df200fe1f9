"""Recovery stores outlive code versions: snapshots the previous version wrote still restore.

The ``*-v1`` files of the shard, node group and dispatch were written by the
code of commit 95af74b (before exact rollups, the arbiter and the move of the
shared core to ``core/``) with ``snapshots/make_v1.py`` run in a checkout of
that commit: a shard and a node group that had read two and a half minutes of
a 40-site scenario, and one dispatch 90 s into its window. ``shard-v3``,
``nodegroup-v3`` (the first plain-data ShardState and NodeGroupState; v2 pickled them whole),
``shard-v4`` (the sites as columns, :class:`~operators.shard.ShardColumns`, pickled and
zlib-compressed as ``ShardLogic.snapshot`` writes it; the older files are plain pickles)
and ``arbiter-v2`` (the first plain-data
:class:`~operators.control_state.ArbiterState`; ``arbiter-v1`` is the Arbiter
pickled whole, with its config) are the current versions, written by
``snapshots/make_current.py``; when a state changes shape, they become the
previous version. Pickled state names classes
by module path, so a class moved or reshaped without care breaks every
recovery store in the field; these tests catch that.
"""

from __future__ import annotations

import pickle
import zlib
from dataclasses import fields
from pathlib import Path

import pytest
from bytewax.connectors.kafka import KafkaSinkMessage

from core.config import Settings
from operators.control_state import VERSION, ArbiterState, DispatchState
from operators.control_steps import ControlLogic, control_config
from operators.dispatch import Dispatch
from operators.outcome import Sample
from operators.rollup import NodeGroupState, aggregate_record
from operators.shard import ShardColumns, ShardState
from operators.telemetry_steps import ForGroup, NodeGroupLogic, ShardLogic, load_snapshot
from tests.dataflows.test_control_flow_inprocess import FixedTwin
from tests.telemetry.compare import mismatches
from tests.telemetry.scenario import expected_nodes, generate

SNAPSHOTS = Path(__file__).parent / "snapshots"
SETTINGS = Settings(telemetry_shards=1, telemetry_node_groups=1, topic_partitions={"telemetry.raw": 1})


@pytest.mark.parametrize(("shard_version", "group_version"),
                         [("v1", "v1"), ("v2", "v2"), ("v3", "v3"), ("v4", "v3")])
def test_telemetry_snapshots_restore_with_exact_sums(shard_version: str, group_version: str) -> None:
    """v1: before exact rollups (float sums, rebuilt on restore); v2: integer sums, the objects
    pickled whole; v3: a ShardState and a NodeGroupState (plain data, no config, an object per
    site); v4: a ShardColumns (the sites as columns)."""
    sc = generate(n_sites=40, minutes=2.5, seed=9)  # what the snapshots had read
    shard = ShardLogic.builder(SETTINGS)((SNAPSHOTS / f"shard-{shard_version}.pickle").read_bytes())
    group = NodeGroupLogic.builder(SETTINGS)((SNAPSHOTS / f"nodegroup-{group_version}.pickle").read_bytes())
    emitted, _ = shard.on_eof()  # a v1 shard re-sends every site's whole contribution here
    group.on_batch([e.changes for e in emitted if isinstance(e, ForGroup)])
    aggregates = {node_id: aggregate_record(node_id, node) for node_id, node in group.group.nodes.items()}

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


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_an_arbiter_snapshot_restores_its_running_dispatch(version: str) -> None:
    """v1: the Arbiter pickled whole, config included (migrated); v2: the ArbiterState, plain data."""
    snapshot = (SNAPSHOTS / f"arbiter-{version}.pickle").read_bytes()
    logic: ControlLogic = ControlLogic.builder(Settings())(snapshot)
    dispatch = logic.arbiter.dispatches["d-snapshot"]
    assert dispatch.state == "ACTIVE" and dispatch.slots
    assert set(dispatch.slots) <= set(FixedTwin().members("feeder-0"))
    emitted, _ = logic.on_notify()  # it carries on: retries and statuses, no crash
    assert all(not isinstance(e, KafkaSinkMessage) or e.topic != "telemetry.dlq" for e in emitted)


def test_the_arbiter_snapshot_is_versioned_plain_data_and_the_config_comes_from_the_settings() -> None:
    old = ControlLogic.builder(Settings())((SNAPSHOTS / "arbiter-v1.pickle").read_bytes())
    snapshot = old.snapshot()
    state = pickle.loads(snapshot)
    assert isinstance(state, ArbiterState) and state.version == VERSION
    assert b"ControlConfig" not in snapshot, "no config in the snapshot"
    settings = Settings(control_gain=0.3, control_correction_s=9.0)
    logic: ControlLogic = ControlLogic.builder(settings)(snapshot)
    dispatch = logic.arbiter.dispatches["d-snapshot"]
    assert logic.arbiter.config == dispatch.config == control_config(settings)
    assert pickle.loads(logic.snapshot()) == state, "restore then snapshot gives the same state"
    before = old.arbiter.dispatches["d-snapshot"]
    assert (dispatch.slots, dispatch.claimed, dispatch.members, dispatch.clock_ms) == (
        before.slots, before.claimed, before.members, before.clock_ms)


def test_the_node_group_snapshot_is_plain_data_and_its_retention_comes_from_the_settings() -> None:
    group = NodeGroupLogic.builder(SETTINGS)((SNAPSHOTS / "nodegroup-v2.pickle").read_bytes())
    snapshot = group.snapshot()
    state = pickle.loads(snapshot)
    assert isinstance(state, NodeGroupState) and state.version == 3
    assert b"retention_ms" not in snapshot, "no config in the snapshot"
    settings = SETTINGS.model_copy(update={"allowed_lateness_s": 1200.0, "backfill_horizon_s": 0.0})
    restored = NodeGroupLogic.builder(settings)(snapshot)
    assert restored.group.retention_ms == (1200 + 600) * 1000
    assert pickle.loads(restored.snapshot()) == state, "restore then snapshot gives the same state"


@pytest.mark.parametrize("version", ["v2", "v3"])
def test_the_shard_snapshot_is_plain_data_and_its_config_comes_from_the_settings(version: str) -> None:
    """An older snapshot (v2: pickled whole; v3: an object per site) is migrated to columns (v4),
    site by site the same twins; a restore of the new snapshot gives them again."""
    shard = ShardLogic.builder(SETTINGS)((SNAPSHOTS / f"shard-{version}.pickle").read_bytes())
    old = pickle.loads((SNAPSHOTS / f"shard-{version}.pickle").read_bytes())
    old_twins = old.sites if isinstance(old, ShardState) else old.__dict__["sites"]
    assert shard.shard.sites == dict(old_twins), "the migration keeps every twin as it was"
    snapshot = shard.snapshot()
    state = load_snapshot(snapshot)
    assert isinstance(state, ShardColumns) and state.version == 4
    assert b"ShardConfig" not in zlib.decompress(snapshot), "no config in the snapshot"
    settings = SETTINGS.model_copy(update={"offline_after_s": 999.0})
    restored = ShardLogic.builder(settings)(snapshot)
    assert restored.shard.config.offline_after_ms == 999_000
    assert restored.shard.sites == shard.shard.sites


def test_every_dispatch_attribute_is_in_the_snapshot_so_a_restart_keeps_it() -> None:
    """A new attribute of Dispatch left out of DispatchState would silently reset on every restart
    (the outcome's samples did, once): the snapshot holds each one but the config."""
    logic: ControlLogic = ControlLogic.builder(Settings())((SNAPSHOTS / "arbiter-v2.pickle").read_bytes())
    dispatch = logic.arbiter.dispatches["d-snapshot"]
    kept = {f.name for f in fields(DispatchState)}
    assert set(vars(dispatch)) - {"config"} <= kept
    dispatch.samples.append(Sample(dispatch.clock_ms, dispatch.request.target_kw, 1.5))
    restored = ControlLogic.builder(Settings())(logic.snapshot()).arbiter.dispatches["d-snapshot"]
    assert restored.samples == dispatch.samples and isinstance(restored.samples, list)


def test_a_plans_snapshot_of_version_1_restores_and_answers_the_brute_force_sum(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``plans-v1`` (written by ``snapshots/make_current.py``: the plan scenario taken in at a fixed
    time) restores; the node sums, which are not in the snapshot, are rebuilt from its plans."""
    import dataflows.plan_steps
    from core import keys
    from dataflows.plan_steps import PlansLogic
    from operators.sinks import TwinWrite
    from tests.siteplan.plan_scenario import compare, expected, scenario

    made_at = 1_796_083_260_000  # PLANS_NOW of make_current.py
    later = made_at + 5 * 60_000
    monkeypatch.setattr(dataflows.plan_steps, "wall_ms", lambda: later)
    logic = PlansLogic.builder(Settings())((SNAPSHOTS / "plans-v1.pickle").read_bytes())
    live = {w.key.removeprefix(keys.node_plan("")): {k: str(v) for k, v in w.fields.items()}
            for w in logic._emit() if isinstance(w, TwinWrite)}
    specs, data = scenario(made_at)
    stale_before = later - int(Settings().plans_stale_after_s * 1000)
    reference = expected(specs, data, later - later % (15 * 60_000), stale_before)
    assert compare(live, reference) == []
    assert len(logic.sites.ancestries) == 60
