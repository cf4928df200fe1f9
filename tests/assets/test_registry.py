"""Properties of the effective-dated registry against a brute-force reading of its history."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from assets.registry import Edge, Node, Registry, RegistryError
from core.hierarchy import ELECTRICAL, GEOGRAPHIC, PROGRAM

T0 = datetime(2026, 1, 1, tzinfo=UTC)
FEEDERS = ["f0", "f1", "f2", "f3"]
SUBSTATIONS = ["s0", "s1"]
POSTCODES = ["p0", "p1"]
PROGRAMS = ["prog0", "prog1"]


def base_registry() -> Registry:
    """Two regions, two substations, four feeders; one state, county, two postcodes; two programs."""
    reg = Registry()
    reg.add_node(Node("r0", "region", "North"), None, T0)
    reg.add_node(Node("r1", "region", "South"), None, T0)
    reg.add_node(Node("s0", "substation", "S0"), "r0", T0)
    reg.add_node(Node("s1", "substation", "S1"), "r1", T0)
    for i, feeder in enumerate(FEEDERS):
        reg.add_node(Node(feeder, "feeder", feeder.upper()), SUBSTATIONS[i % 2], T0)
    reg.add_node(Node("st0", "state", "State"), None, T0)
    reg.add_node(Node("c0", "county", "County"), "st0", T0)
    for postcode in POSTCODES:
        reg.add_node(Node(postcode, "postcode", postcode), "c0", T0)
    for program in PROGRAMS:
        reg.add_node(Node(program, "program", program), None, T0)
    return reg


def brute_force_members(edges: list[Edge], node: str, at: datetime) -> frozenset[str]:
    """Independent reading: every edge valid at T, then walk each site upwards."""
    valid = [e for e in edges if e.valid_from <= at and (e.valid_to is None or at < e.valid_to)]
    sites = {e.child_id for e in valid if e.child_kind == "site"}
    found = set()
    for site in sites:
        frontier = {e.parent_id for e in valid if e.child_id == site}
        seen: set[str] = set()
        while frontier:
            seen |= frontier
            frontier = {e.parent_id for e in valid if e.child_id in frontier} - seen
        if node in seen:
            found.add(site)
    return frozenset(found)


OPS = st.one_of(
    st.tuples(st.just("add"), st.integers(0, 9), st.sampled_from(FEEDERS), st.sampled_from(POSTCODES)),
    st.tuples(st.just("move"), st.integers(0, 9), st.sampled_from(FEEDERS), st.just("")),
    st.tuples(st.just("reparent"), st.integers(0, 3), st.sampled_from(SUBSTATIONS), st.just("")),
    st.tuples(st.just("retire"), st.integers(0, 9), st.just(""), st.just("")),
    st.tuples(st.just("enroll"), st.integers(0, 9), st.sampled_from(PROGRAMS), st.just("")),
    st.tuples(st.just("unenroll"), st.integers(0, 9), st.sampled_from(PROGRAMS), st.just("")),
    st.tuples(st.just("move_past"), st.integers(0, 9), st.sampled_from(FEEDERS), st.just("")),
)


def apply(reg: Registry, op: tuple[str, int, str, str], at: datetime) -> None:
    kind, n, a, b = op
    site = f"site{n}"
    if kind == "add":
        reg.add_site(site, {ELECTRICAL: a, GEOGRAPHIC: b}, [], at)
    elif kind == "move":
        reg.move_site(site, ELECTRICAL, a, at)
    elif kind == "move_past":  # always in the past: must be refused
        reg.move_site(site, ELECTRICAL, a, T0)
    elif kind == "reparent":
        reg.reparent_node(FEEDERS[n], a, at)
    elif kind == "retire":
        reg.retire_site(site, at)
    elif kind == "enroll":
        reg.enroll(site, a, at)
    else:
        reg.unenroll(site, a, at)


def snapshot(reg: Registry, times: list[datetime]) -> tuple[object, ...]:
    nodes = sorted(reg.nodes)
    return (*tuple(reg.members(node, t) for node in nodes for t in times), tuple(reg.edges))


@settings(max_examples=150, deadline=None)
@given(st.lists(OPS, max_size=30), st.lists(st.integers(0, 40 * 60), min_size=1, max_size=8))
def test_history_properties(ops: list[tuple[str, int, str, str]], query_minutes: list[int]) -> None:
    reg = base_registry()
    times = [T0 + timedelta(minutes=m) for m in query_minutes]
    for step, op in enumerate(ops, start=1):
        at = T0 + timedelta(minutes=60 * step)
        before_at = at - timedelta(milliseconds=1)
        old = {n: reg.members(n, before_at) for n in reg.nodes}
        state = snapshot(reg, [*times, at])
        try:
            apply(reg, op, at)
        except RegistryError:
            assert snapshot(reg, [*times, at]) == state, f"refused {op} changed the registry"
            continue
        # Nothing before the effective time changed.
        assert {n: reg.members(n, before_at) for n in reg.nodes} == old
        if op[0] in ("move", "reparent"):
            moved = reg.members(FEEDERS[op[1]], at) if op[0] == "reparent" else frozenset({f"site{op[1]}"})
            assert moved <= reg.members(op[2], at), "the new parent gains the moved sites"
            for node in reg.nodes:
                now = reg.members(node, at)
                # Membership changes by exactly the moved sites, nowhere else.
                assert now ^ old[node] <= moved, node
    for t in [*times, T0 + timedelta(minutes=60 * len(ops) + 1)]:
        for node in reg.nodes:
            assert reg.members(node, t) == brute_force_members(reg.edges, node, t)
        for site in reg.sites:
            active = reg.sites[site] <= t and (site not in reg.retired or t < reg.retired[site])
            for hierarchy in (ELECTRICAL, GEOGRAPHIC):
                # A forest: an active site has exactly one parent per tree hierarchy; a retired one none.
                assert len(reg.parents(site, hierarchy, t)) == (1 if active else 0)
            if active:
                chain = reg.ancestors(site, t)
                assert len(chain[ELECTRICAL]) == 3 and len(chain[GEOGRAPHIC]) == 3
                assert set(chain[PROGRAM]) <= set(PROGRAMS)


def test_reparenting_a_feeder_moves_its_sites_from_the_effective_time_on() -> None:
    reg = base_registry()
    reg.add_site("a", {ELECTRICAL: "f0", GEOGRAPHIC: "p0"}, ["prog0"], T0 + timedelta(hours=1))
    reg.add_site("b", {ELECTRICAL: "f0", GEOGRAPHIC: "p1"}, [], T0 + timedelta(hours=1))
    move_at = T0 + timedelta(days=10)
    reg.reparent_node("f0", "s1", move_at)
    assert reg.members("s0", move_at - timedelta(seconds=1)) == {"a", "b"}
    assert reg.members("s1", move_at - timedelta(seconds=1)) == frozenset()
    assert reg.members("s1", move_at) == {"a", "b"}
    assert reg.members("r1", move_at) == {"a", "b"}
    assert reg.ancestors("a", move_at) == {ELECTRICAL: ["f0", "s1", "r1"], GEOGRAPHIC: ["p0", "c0", "st0"],
                                           PROGRAM: ["prog0"]}


@pytest.mark.parametrize(
    ("operation", "message"),
    [
        (lambda r: r.move_site("a", ELECTRICAL, "f9", T0 + timedelta(days=2)), "unknown node 'f9'"),
        (lambda r: r.move_site("a", ELECTRICAL, "s0", T0 + timedelta(days=2)), "must be a feeder"),
        (lambda r: r.reparent_node("s0", "f1", T0 + timedelta(days=2)), "must be a region"),
        (lambda r: r.retire_site("zz", T0 + timedelta(days=2)), "unknown site 'zz'"),
        (lambda r: r.move_site("a", ELECTRICAL, "f1", T0), "effective after"),
        (lambda r: r.enroll("a", "prog0", T0 + timedelta(days=2)), "already enrolled"),
        (lambda r: r.add_site("a", {ELECTRICAL: "f0", GEOGRAPHIC: "p0"}, [], T0), "already exists"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(operation: object, message: str) -> None:
    reg = base_registry()
    reg.add_site("a", {ELECTRICAL: "f0", GEOGRAPHIC: "p0"}, ["prog0"], T0 + timedelta(hours=1))
    edges = reg.edges
    with pytest.raises(RegistryError, match=message):
        operation(reg)  # type: ignore[operator]
    assert reg.edges == edges


def test_ancestry_paths_carry_the_interval_of_the_whole_chain() -> None:
    reg = base_registry()
    added, moved = T0 + timedelta(hours=1), T0 + timedelta(days=3)
    reg.add_site("a", {ELECTRICAL: "f0", GEOGRAPHIC: "p0"}, ["prog1"], added)
    reg.reparent_node("f0", "s1", moved)
    before = {p.hierarchy: p for p in reg.ancestry_paths("a", moved - timedelta(seconds=1))}
    after = {p.hierarchy: p for p in reg.ancestry_paths("a", moved)}
    assert before[ELECTRICAL].node_ids == ("f0", "s0", "r0")
    assert (before[ELECTRICAL].valid_from, before[ELECTRICAL].valid_to) == (added, moved)
    assert after[ELECTRICAL].node_ids == ("f0", "s1", "r1")
    assert (after[ELECTRICAL].valid_from, after[ELECTRICAL].valid_to) == (moved, None)
    assert after[GEOGRAPHIC].node_ids == ("p0", "c0", "st0")
    assert after[PROGRAM].node_ids == ("prog1",)


@settings(max_examples=50, deadline=None)
@given(st.lists(OPS, max_size=25), st.integers(0, 30 * 60))
def test_rebuilt_from_history_answers_identically(ops: list[tuple[str, int, str, str]], minute: int) -> None:
    reg = base_registry()
    for step, op in enumerate(ops, start=1):
        with contextlib.suppress(RegistryError):
            apply(reg, op, T0 + timedelta(minutes=60 * step))
    rebuilt = Registry.from_history(list(reg.nodes.values()), reg.sites, reg.retired, reg.edges)
    at = T0 + timedelta(minutes=minute)
    assert snapshot(rebuilt, [at]) == snapshot(reg, [at])
    for site in reg.sites:
        assert rebuilt.ancestry_paths(site, at) == reg.ancestry_paths(site, at)
    # The rebuilt registry goes on issuing fresh change ids.
    rebuilt.add_site("new-site", {ELECTRICAL: "f0", GEOGRAPHIC: "p0"}, [], T0 + timedelta(days=90))
    assert len({e.change_id for e in rebuilt.edges}) == len({e.change_id for e in reg.edges}) + 1
