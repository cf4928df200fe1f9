"""Fuzzing the real gateway with device frames (issue 20, must show).

Hypothesis draws batches of frames, JSON and Avro, valid and not: NaN, ±inf,
booleans where numbers belong, huge, tiny and negative values, event times
far ahead and far behind, wrong types, missing fields, garbage. Each batch
goes through one real gateway (on the session stack) on one device
connection, followed by a sentinel frame the gateway must refuse for a
reason only it can have, so the test knows every answer to the batch has
arrived without waiting on time. Then:

* every rejection was answered with an error frame and counted by its reason
  (the ``vpp_gateway_rejects_total`` deltas equal the error frames seen),
  and every other frame was produced (``vpp_gateway_frames_in_total``);
* every record that reached ``telemetry.raw`` for the site passes
  :func:`core.plausibility.check_telemetry` against the gateway's clock at
  acceptance (its ``received_time``) and the site's registered rating; acks
  and plans that reached their topics carry bounded event times.

Bounded: a few hundred frames in all, no Hypothesis deadline (the stack is
shared and the machine busy), every wait a condition with a generous limit.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from core.config import Settings
from core.device_tokens import issue_token
from core.plausibility import Rules, SiteLimits, check_telemetry
from core.topics import COMMANDS_ACKS, PLANS_SITE, TELEMETRY_RAW
from edge_gateway.server import Gateway
from edge_gateway.wire import AVRO_SUBPROTOCOL, UPSTREAM
from schemas import packaged_codec
from schemas.codec import EncodeError
from schemas.times import epoch_ms, wall_ms
from tests.edge_gateway.support import TopicTail, gateway_settings
from tests.edge_gateway.test_trust import _register

pytestmark = pytest.mark.integration

CODEC = packaged_codec()
RATING_KW = 5.0
YEAR_MS = 365 * 24 * 3_600_000
T = TypeVar("T")


# -- the harness: one gateway and one device connection on a loop of their own ---------------------


@dataclass
class Harness:
    """A running gateway, the device connected to it as ``site``, and tails of the upstream topics."""

    loop: asyncio.AbstractEventLoop
    gateway: Gateway
    ws: ClientConnection
    site: str
    rules: Rules
    tails: dict[str, TopicTail]
    started_ms: int

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(120)

    def metric(self, name: str, labels: dict[str, str]) -> float:
        return self.gateway.metrics.value(name, labels)


@pytest.fixture(scope="module")
def harness(stack_settings: Settings) -> Iterator[Harness]:
    config = gateway_settings(stack_settings, gateway_rate_per_s=1e6, gateway_rate_burst=1e6)
    site = f"site-fuzz-{uuid.uuid4().hex[:8]}"
    _register(config, site, RATING_KW)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def run(coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, loop).result(120)

    gateway = Gateway(config, host="127.0.0.1", port=0, metrics_port=0, instance_id=f"fuzz-{site}")
    run(gateway.start())
    tails = {topic: TopicTail(config, topic) for topic in (TELEMETRY_RAW, COMMANDS_ACKS, PLANS_SITE)}

    async def open_device() -> ClientConnection:
        token = issue_token(config, site).token
        return await connect(f"ws://127.0.0.1:{gateway.port}/", subprotocols=[Subprotocol(AVRO_SUBPROTOCOL)],
                             additional_headers={"Authorization": f"Bearer {token}"})

    ws = run(open_device())
    try:
        assert gateway.ratings.get(site) == SiteLimits(RATING_KW, RATING_KW)
        yield Harness(loop, gateway, ws, site, config.plausibility(), tails, wall_ms())
    finally:
        run(ws.close())
        run(gateway.stop())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        for tail in tails.values():
            tail.close()


# -- strategies ------------------------------------------------------------------------------------

NUMBERS = st.one_of(
    st.floats(-20, 20), st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(
        [math.nan, math.inf, -math.inf, 1e12, -1e12, 1e300, -1e300, 1e-300, -0.0, 0.0, 101.0, -101.0, 6.0,
         -6.0, 7.0]),
    st.booleans(), st.integers(-10**15, 10**15), st.text(max_size=5), st.none())

#: Offsets from now for event times: within the skew, just beyond it, far ahead, far behind.
OFFSETS_MS = st.one_of(st.integers(-60_000, 5_000), st.sampled_from(
    [30_000, 3_600_000, YEAR_MS, -8 * 24 * 3_600_000, -YEAR_MS]))
TIMES = st.one_of(OFFSETS_MS.map(lambda offset: ("offset", offset)),
                  st.sampled_from([0, 31_536_000_000, -1, 2**62]).map(lambda at: ("at", at)),
                  st.one_of(st.booleans(), st.floats(allow_nan=True), st.text(max_size=4), st.none())
                  .map(lambda raw: ("raw", raw)))

MISSING = object()
BAD_NUMBERS = st.one_of(NUMBERS, st.just(MISSING))
#: How a device may get each telemetry field wrong.
TELEMETRY_MUTATIONS: dict[str, st.SearchStrategy[Any]] = {
    **dict.fromkeys(("battery_kw", "solar_kw", "load_kw", "grid_kw", "soc_pct", "battery_temp_c"),
                    BAD_NUMBERS),
    "seq": st.one_of(st.integers(-5, -1), st.booleans(), st.floats(), st.text(max_size=3), st.just(MISSING)),
    "event_time": TIMES,
    "mode": st.sampled_from(["NOT_A_MODE", 3, MISSING]),
}


def _mutated(draw: st.DrawFn, record: dict[str, Any], mutations: dict[str, st.SearchStrategy[Any]]) -> None:
    """Get up to three fields of an otherwise valid record wrong (none, a fifth of the time or so)."""
    for name in draw(st.lists(st.sampled_from(sorted(mutations)), max_size=3, unique=True)):
        record[name] = draw(mutations[name])


@st.composite
def telemetry_records(draw: st.DrawFn) -> dict[str, Any]:
    record: dict[str, Any] = {
        "type": "telemetry", "seq": draw(st.integers(0, 10**6)), "event_time": ("offset", draw(
            st.integers(-60_000, 5_000))), "soc_pct": draw(st.floats(0, 100)),
        "battery_kw": draw(st.floats(-1.3 * RATING_KW, 1.3 * RATING_KW)), "solar_kw": draw(st.floats(0, 10)),
        "load_kw": draw(st.floats(0, 10)), "grid_kw": draw(st.floats(-20, 20)),
        "battery_temp_c": draw(st.one_of(st.none(), st.floats(-20, 60))), "mode": "SELF_CONSUMPTION",
        "active_command_id": None, "firmware": "fuzz"}
    _mutated(draw, record, TELEMETRY_MUTATIONS)
    return record


@st.composite
def ack_records(draw: st.DrawFn) -> dict[str, Any]:
    record: dict[str, Any] = {"type": "ack", "command_id": "c1", "status": "ACCEPTED", "reason": None,
                              "event_time": ("offset", draw(st.integers(-60_000, 5_000)))}
    _mutated(draw, record, {"command_id": st.one_of(NUMBERS, st.just(MISSING)), "event_time": TIMES,
                            "status": st.sampled_from(["MAYBE", True])})
    return record


@st.composite
def plan_records(draw: st.DrawFn) -> dict[str, Any]:
    record: dict[str, Any] = {"type": "plan", "plan_id": "p", "start": ("offset", 0), "interval_minutes": 5,
                              "issued_at": ("offset", draw(st.integers(-60_000, 5_000))),
                              "power_kw": draw(st.lists(st.floats(-RATING_KW, RATING_KW), max_size=4))}
    _mutated(draw, record, {"issued_at": TIMES, "interval_minutes": BAD_NUMBERS,
                            "power_kw": st.lists(st.one_of(st.floats(-5, 5), NUMBERS), min_size=1,
                                                 max_size=4)})
    return record


def _concrete(record: dict[str, Any], now_ms: int) -> dict[str, Any]:
    """The record with times resolved against now (epoch ms, which JSON and the codec both take)."""
    out: dict[str, Any] = {}
    for name, value in record.items():
        if value is MISSING:
            continue
        if isinstance(value, tuple):
            kind, raw = value
            out[name] = now_ms + raw if kind == "offset" else raw
        else:
            out[name] = value
    return out


@dataclass(frozen=True)
class FrameSpec:
    """What to send: a record (or raw garbage) and whether to send it as Avro."""

    record: dict[str, Any] | None
    garbage: bytes | str | None
    as_avro: bool

    def frame(self, site: str, now_ms: int) -> bytes | str:
        if self.record is None:
            assert self.garbage is not None
            return self.garbage
        record = _concrete(self.record, now_ms)
        if self.as_avro:
            kind = next(k for k in UPSTREAM if k.type == record["type"])
            try:
                return CODEC.encode(kind.record, {k: v for k, v in record.items() if k != "type"}
                                    | {"site_id": site} | ({"received_time": None}
                                                          if kind.record == "SiteTelemetry" else {}))
            except (EncodeError, TypeError, ValueError, OverflowError):
                pass  # not expressible in Avro: the device sends it as JSON instead
        try:
            return json.dumps(record)
        except (TypeError, ValueError):
            return json.dumps({**record, "event_time": str(record.get("event_time"))})


RECORDS = st.builds(FrameSpec, st.integers(0, 3).flatmap(
    lambda pick: ack_records() if pick == 0 else plan_records() if pick == 1 else telemetry_records()),
    st.none(), st.booleans())
GARBAGE = st.builds(FrameSpec, st.none(), st.one_of(st.binary(max_size=40), st.text(max_size=40),
                                                    st.just(b"\x00\x00\x00\x00\x01")), st.just(False))
#: Mostly records (telemetry twice as often as acks or plans), some garbage.
FRAMES = st.integers(0, 7).flatmap(lambda pick: GARBAGE if pick == 0 else RECORDS)


# -- the property ----------------------------------------------------------------------------------


def _rejects(harness: Harness) -> Counter[str]:
    counted: Counter[str] = Counter()
    for metric in harness.gateway.metrics.registry.collect():
        for sample in metric.samples:
            if sample.name == "vpp_gateway_rejects_total":
                counted[sample.labels["reason"]] = int(sample.value)
    return counted


def _accepted(harness: Harness) -> dict[str, int]:
    return {kind.type: int(harness.metric("vpp_gateway_frames_in_total", {"kind": kind.type}))
            for kind in UPSTREAM}


def _has(site: str, count: int) -> Callable[[list[tuple[str, dict[str, Any]]]], bool]:
    """A tail condition: at least ``count`` records of ``site`` read."""
    return lambda records: sum(1 for key, _ in records if key == site) >= count


async def _exchange(harness: Harness, frames: list[bytes | str], sentinel: str) -> list[dict[str, Any]]:
    """Send the frames and the sentinel; the error frames answering them, up to the sentinel's."""
    for frame in frames:
        await harness.ws.send(frame)
    await harness.ws.send(json.dumps({"type": "telemetry", "site_id": sentinel}))
    errors: list[dict[str, Any]] = []
    while True:
        answer = json.loads(await asyncio.wait_for(harness.ws.recv(), 60))
        assert answer["type"] == "error", answer
        if sentinel in answer["detail"]:
            return errors
        errors.append(answer)


@settings(max_examples=12, deadline=None, derandomize=False,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.large_base_example])
@given(specs=st.lists(FRAMES, min_size=10, max_size=50))
def test_nothing_implausible_gets_through_and_every_rejection_is_counted(harness: Harness,
                                                                         specs: list[FrameSpec]) -> None:
    frames = [spec.frame(harness.site, wall_ms()) for spec in specs]
    rejects_before, accepted_before = _rejects(harness), _accepted(harness)
    sentinel = f"sentinel-{uuid.uuid4().hex}"
    errors = harness.run(_exchange(harness, frames, sentinel))

    seen = Counter(error["reason"] for error in errors)
    seen["site_mismatch"] += 1  # the sentinel
    delta = _rejects(harness) - rejects_before
    assert delta == seen, f"metric deltas {dict(delta)} differ from the rejections seen {dict(seen)}"
    accepted = {kind: n - accepted_before[kind] for kind, n in _accepted(harness).items()}
    assert sum(accepted.values()) + len(errors) == len(frames)
    assert harness.ws.state.name == "OPEN"  # no rejection closes the connection

    # Everything accepted arrives; every record of the site on telemetry.raw is plausible.
    site, limits = harness.site, SiteLimits(RATING_KW, RATING_KW)
    totals = _accepted(harness)
    topics = {"telemetry": TELEMETRY_RAW, "ack": COMMANDS_ACKS, "plan": PLANS_SITE}
    for kind, topic in topics.items():
        harness.tails[topic].collect(_has(site, totals[kind]), timeout_s=60)
    for key, record in harness.tails[TELEMETRY_RAW].records:
        if key != site:
            continue
        values = {k: epoch_ms(v) if isinstance(v, datetime) else v for k, v in record.items()}
        verdict = check_telemetry(values, values["received_time"], harness.rules, limits)
        assert verdict is None, (verdict, record)
        assert record["site_id"] == site
    # Acks and plans were accepted between the harness's start and now: their event times are bounded.
    earliest = harness.started_ms - harness.rules.max_behind_ms
    latest = wall_ms() + harness.rules.max_ahead_ms
    for topic, field in ((COMMANDS_ACKS, "event_time"), (PLANS_SITE, "issued_at")):
        for key, record in harness.tails[topic].records:
            if key == site:
                assert earliest <= epoch_ms(record[field]) <= latest, record
