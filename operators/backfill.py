"""History that accepts backfill: late readings correct the minutes they belong to. Pure.

A device cut off from the platform keeps its readings and uploads them when it
is back (store-and-forward), minutes after their minute windows closed. Left
out, history after an outage would differ from what the devices measured. A
shard therefore keeps, for a bounded horizon, the closed windows that such a
reading can still complete, and a late reading is merged into its window: the
site minute is written again with a newer version (ReplacingMergeTree keeps the
newest) and the difference of the site's node-minute share goes to the node
groups, which add it to that shard's share and write the node minute again.

Which windows are kept, without keeping every site's closed minutes:

- a window closes while its site is *quiet* (nothing newer than the closing
  minutes heard): the site may have been cut off mid-minute. Its backfill
  state starts there: ``floor_ms``, the first minute closing or, if later, the
  minute of its last reading (minutes before that closed while it reported,
  however many minutes one close covered), and from then on every minute of
  the site is either kept or was silent (no reading at all);
- while the site is quiet, and for ``horizon`` after it was last found quiet,
  every window of it that closes is kept too (its live readings came back
  before the uploaded ones: the minute of the return closes with a gap).
- a site heard again after a gap (a reading well after its last one) starts
  or extends the same state from the minute of its last reading before the
  gap: after a short outage it was never quiet at a close, yet its upload,
  behind its live readings and at a bounded rate, may come after the minutes
  of the gap closed.

A late reading for a minute at or after ``floor_ms`` and within the horizon
either completes its kept window or, when there is none, opens one from
nothing (the minute was silent, and its node shares counted the site as
expected, not reporting). Re-delivered readings are recognised by sequence as
in any window, so an upload repeated after a lost acknowledgement is counted
once. Anything else late (older than the horizon, or before the floor: a
minute that closed while the site was reporting normally) is counted as late
and left out, as before.

Live aggregates are not touched: a late reading is older than the twin's
reading and never replaces it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from operators.windows import MinuteWindow


@dataclass(slots=True)
class KeptWindow:
    """A closed window kept for backfill and the version its site minute row was last written with."""

    window: MinuteWindow
    version: int


@dataclass(slots=True)
class SiteBackfill:
    """One site's backfill state in its shard (see the module docstring)."""

    #: Minutes from here on are either in ``windows`` or were silent (epoch ms of a minute start).
    floor_ms: int
    #: Closed windows are kept while the shard's clock is before this (epoch ms).
    until_ms: int
    windows: dict[int, KeptWindow] = field(default_factory=dict)

    def expire(self, oldest_minute_ms: int) -> None:
        """Forget minutes before ``oldest_minute_ms``: late readings for them are out of the horizon."""
        for minute in [m for m in self.windows if m < oldest_minute_ms]:
            del self.windows[minute]
        self.floor_ms = max(self.floor_ms, oldest_minute_ms)

    def window_for(self, minute_ms: int) -> KeptWindow | None:
        """The kept window a late reading of ``minute_ms`` goes to (a new one for a silent minute),
        or None when the minute cannot be completed (before the floor)."""
        if minute_ms < self.floor_ms:
            return None
        kept = self.windows.get(minute_ms)
        if kept is None:
            kept = self.windows[minute_ms] = KeptWindow(MinuteWindow(), 0)
        return kept
