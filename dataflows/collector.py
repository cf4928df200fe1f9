"""The garbage collector's pace in a dataflow process that allocates much and makes few cycles.

A flow's batches allocate a great many short-lived objects (decoded records, twin
fields, plans, rows) and almost no reference cycles, while the process holds many
long-lived ones (every site's ancestry, every site's plan). At Python's default
(a youngest-generation pass every 700 allocations) the collector's passes were a
quarter of the telemetry flow's CPU and a third of the plans flow's step:

* telemetry, in process, 10,000 sites and 600,000 readings, alternated: 105k and
  86k msgs per CPU-s at the default, 164k and 120k at 50,000 (the collector 26-28%
  -> 4% of the CPU; load 10-13);
* plans, 10,000 plans decoded, checked and aggregated in process: 1.07 s of CPU at
  the default, 0.75 s at 50,000 (best of three, same session).
"""

from __future__ import annotations

import gc

#: Allocations between youngest-generation passes (Python's default: 700).
YOUNGEST_THRESHOLD = 50_000


def collect_less_often() -> None:
    """Set this process's youngest-generation threshold; the older generations keep theirs."""
    gc.set_threshold(YOUNGEST_THRESHOLD, *gc.get_threshold()[1:])
