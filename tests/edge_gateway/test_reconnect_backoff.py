"""The simulated device's reconnect: exponential backoff with full jitter, capped.

A fixed one-second retry made every device dropped at once come back in step and
keep a saturated gateway saturated; spread over a growing window they do not.
"""

from __future__ import annotations

import random

from edge_gateway.sim_transports import RECONNECT_BASE_S, RECONNECT_CAP_S, reconnect_delay


def test_reconnect_delays_grow_to_a_cap_with_full_jitter() -> None:
    rng = random.Random(7)
    for attempt in range(12):
        ceiling = min(RECONNECT_CAP_S, RECONNECT_BASE_S * 2 ** attempt)
        delays = [reconnect_delay(attempt, rng) for _ in range(500)]
        assert all(0.0 <= d <= ceiling for d in delays)
        # Full jitter: spread over the whole window, not bunched at its top like a fixed retry.
        assert min(delays) < 0.1 * ceiling and max(delays) > 0.9 * ceiling
    assert reconnect_delay(10_000, rng) <= RECONNECT_CAP_S
