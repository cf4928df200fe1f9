"""``vpp --help`` and small commands start fast: importing the CLI loads no part and no heavy library.

Each subcommand imports what it needs when it runs (issue 17): the CLI is the composition root and
names every part, but a ``vpp live`` or ``vpp dispatch list`` must not pay for cvxpy or the API.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]

#: Libraries no subcommand needs just to be listed.
HEAVY_LIBRARIES = ("redis", "clickhouse_connect", "confluent_kafka", "bytewax", "numpy", "scipy", "cvxpy",
                   "statsmodels", "pandas", "fastapi", "uvicorn", "websockets", "prometheus_client", "chdb")
#: The parts: only their command-line modules (and the packages that hold them) may load.
PARTS = ("api", "edge_gateway", "bench", "bidding", "forecast", "peak", "assets", "dataflows", "operators",
         "siteplan")
ALLOWED_FROM_PARTS = {"api", "api.cli", "edge_gateway", "edge_gateway.cli"}


def _modules_after(statement: str) -> set[str]:
    probe = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], cwd=CHECKOUT, capture_output=True, text=True,
                          timeout=120, check=True)
    return set(json.loads(done.stdout))


def test_importing_the_cli_loads_no_part_and_no_heavy_library() -> None:
    loaded = _modules_after("import vpp.cli")
    assert "vpp.cli" in loaded
    libraries = sorted(m for m in loaded if m.split(".")[0] in HEAVY_LIBRARIES)
    assert not libraries, f"importing vpp.cli loads {libraries}"
    parts = sorted(m for m in loaded if m.split(".")[0] in PARTS and m not in ALLOWED_FROM_PARTS)
    assert not parts, f"importing vpp.cli loads {parts}"


def test_the_probe_sees_a_heavy_import() -> None:
    """The check above can fail: what a subcommand imports when it runs does load its clients."""
    loaded = _modules_after("import vpp.stack")
    assert "redis" in loaded and "clickhouse_connect" in loaded
