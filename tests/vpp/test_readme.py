"""The README's operator sections stay true to the code: the ports and their variables, the log files,
the sign conventions of the schema, and a picture that reads at 80 columns."""

from __future__ import annotations

import json
import re
from pathlib import Path

from core.config import Settings
from vpp.services import Services
from vpp.stack import Stack

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def _section(title: str) -> str:
    start = README.index(f"## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start:end if end != -1 else None]


def test_troubleshooting_names_every_default_port_with_its_variable() -> None:
    text = _section("Troubleshooting")
    defaults = Settings.model_fields
    for field in ("kafka_port", "redis_port", "clickhouse_port", "gateway_port", "gateway_metrics_port",
                  "api_port", "telemetry_metrics_port", "control_metrics_port", "telemetry_probe_port",
                  "control_probe_port", "plans_probe_port", "bidding_probe_port"):
        row = next((line for line in text.splitlines() if f"`VPP_{field.upper()}`" in line), None)
        assert row is not None, f"VPP_{field.upper()} missing from the port table"
        assert str(defaults[field].default) in row, f"{field}: the row does not say {defaults[field].default}"


def test_troubleshooting_names_every_log_file(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    names = [part.name for part in Stack(settings).parts()] + [s.name for s in Services(settings).services()]
    text = _section("Troubleshooting")
    assert ".vpp/logs/<part>.log" in text
    missing = [name for name in names if f"`{name}`" not in text]
    assert not missing, f"log files of {missing} are not named"


def test_sign_conventions_match_the_schema() -> None:
    fields = {f["name"]: f["doc"] for f in json.loads(
        (ROOT / "schemas" / "avro" / "SiteTelemetry.avsc").read_text())["fields"]}
    assert "positive = discharging" in fields["battery_kw"] and "positive = importing" in fields["grid_kw"]
    text = _section("Sign conventions")
    assert re.search(r"`battery_kw`.*\| the battery discharges .*\| it charges", text)
    assert re.search(r"`grid_kw` \| the site imports from the grid \| it exports", text)


def test_the_picture_of_the_parts_reads_at_80_columns() -> None:
    start = README.index("How the parts talk")
    block = README[README.index("```", start) + 3:README.index("```", README.index("```", start) + 3)]
    lines = block.strip("\n").splitlines()
    assert len(lines) > 10 and max(len(line) for line in lines) <= 80
    for part in ("edge gateway", "Kafka", "telemetry dataflow", "control dataflow", "Redis", "History",
                 "HTTP API"):
        assert part in block
