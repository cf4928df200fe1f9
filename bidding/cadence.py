"""Which run a scheduler slot asks for: the interval it bids and its rebid number, from the slot alone.

The bid scheduler (``vpp bid schedule``) asks for one run per asset in every slot of ``cadence``
(5 minutes). A slot bids the first market interval whose gate closure leaves ``lead`` (the run's
deadlines) from the slot's start. When the market's interval is longer than the cadence (SMARD's
hour against 5-minute slots), several slots bid the same interval: the first is run 0, the next
ones its rebids 1, 2, ... (a rebid replaces the curve in the book). Both numbers follow from the
slot's start, so the run id (``ASSET@INTERVAL#REBID``) does too: a restarted scheduler asking again
in the same slot asks for the same run, which the orchestrator runs once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class SlotRun:
    """The run a slot asks for."""

    slot_start: datetime
    interval_start: datetime
    rebid: int


def slot_start(now: datetime, cadence: timedelta) -> datetime:
    """The start of the slot that holds ``now``."""
    return EPOCH + ((now - EPOCH) // cadence) * cadence


def first_open(now: datetime, step: timedelta, lead: timedelta) -> datetime:
    """The first interval (on the step's grid) that starts at least ``lead`` from now."""
    return EPOCH + math.ceil((now + lead - EPOCH) / step) * step


def slot_run(now: datetime, cadence: timedelta, step: timedelta, lead: timedelta) -> SlotRun:
    """The interval the slot holding ``now`` bids and its rebid number (0 for the first slot bidding it)."""
    start = slot_start(now, cadence)
    interval = first_open(start, step, lead)
    # Slots bidding ``interval`` start in (interval - lead - step, interval - lead]: count the earlier ones.
    earlier = math.ceil((start - (interval - lead - step)) / cadence) - 1
    return SlotRun(start, interval, max(earlier, 0))
