"""Cut sites off in a generated scenario: their readings come later, uploaded from the device's buffer.

What a device with store-and-forward does after an outage: it keeps the
readings it could not send and, once back, uploads them oldest first at a
bounded rate beside its live readings, some twice (an upload repeated because
its acknowledgement was lost). Every reading is still in ``readings`` (the
brute-force reference counts them all: nothing may be lost), only later in
the production order.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

from tests.telemetry.scenario import Scenario


def cut_off(sc: Scenario, fraction: float, from_s: float, to_s: float, upload_per_s: int,
            seed: int = 0, repeat_share: float = 0.05) -> tuple[Scenario, set[str]]:
    """``sc`` with ``fraction`` of its sites unheard from ``from_s`` to ``to_s`` (seconds after the
    start) and uploading what they held from ``to_s`` at ``upload_per_s`` readings per second each;
    the sites cut off."""
    rng = random.Random(seed)
    cut = {s.site_id for s in rng.sample(sc.sites, round(fraction * len(sc.sites)))}
    start, end = sc.start_ms + round(from_s * 1000), sc.start_ms + round(to_s * 1000)

    def event_ms(reading: dict[str, Any]) -> int:
        return int(reading["event_time"].timestamp() * 1000)

    held: dict[str, list[dict[str, Any]]] = {site: [] for site in cut}
    ordered: list[tuple[float, int, dict[str, Any]]] = []
    seen: set[tuple[str, int]] = set()
    for position, reading in enumerate(sc.readings):
        site = reading["site_id"]
        # Arrival order of the live stream: its event second (readings are roughly in that order).
        at = event_ms(reading)
        if site in cut and start <= at < end:
            if (site, reading["seq"]) not in seen:  # the device buffers each reading once
                seen.add((site, reading["seq"]))
                held[site].append(reading)
            continue
        ordered.append((at, position, reading))
    for readings in held.values():
        readings.sort(key=lambda r: (event_ms(r), r["seq"]))
        for k, reading in enumerate(readings):
            at = end + 1000 * (k // upload_per_s) + 500
            ordered.append((at, len(sc.readings) + k, reading))
            if rng.random() < repeat_share:
                ordered.append((at + 2000, len(sc.readings) + k, reading))
    ordered.sort(key=lambda item: (item[0], item[1]))
    return replace(sc, readings=[reading for _, _, reading in ordered]), cut
