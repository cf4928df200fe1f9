"""How every benchmark reports: a rich table on the terminal and bench/results/NAME.json."""

from __future__ import annotations

import json
import os
import platform
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

RESULTS_DIR = Path(__file__).parent / "results"


def write_result(name: str, figures: dict[str, float], quick: bool, console: Console | None = None) -> Path:
    """Print the figures and write them, with cores, python, quick and a UTC timestamp, as JSON."""
    record: dict[str, object] = {
        **figures,
        "cores": os.cpu_count() or 1,
        "python": platform.python_version(),
        "quick": quick,
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    table = Table(title=f"bench {name}{' (quick)' if quick else ''}")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in record.items():
        table.add_row(key, f"{value:,.3f}" if isinstance(value, float) else str(value))
    (console or Console()).print(table)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path
