"""Parse the pinned dataset files into :class:`forecast.series.Series` (plain arrays, UTC time).

Each loader reads a file found (and sha256-verified) by :func:`vpp.datasets.path_of`
and never imports the package that shipped it. Time conventions of the sources:

- Taylor: half-hourly from Monday 5 June 2000 00:00 UK time (BST, UTC+1; no DST
  change inside the series), megawatts.
- SMARD: hourly, local Europe/Berlin wall-clock labels ("Mar 25, 2018;3:00 AM"):
  the spring hour is absent and the autumn hour appears twice; both are resolved
  to UTC here, so the series is regular. "-" means no price for that zone then.
- SimBench: 366 x 96 rows for 2016 with no DST shifts, read as CET (UTC+1), per unit.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

from forecast.series import Series
from vpp.datasets import DatasetError, path_of

TAYLOR_START = datetime(2000, 6, 4, 23, 0, tzinfo=UTC)  # Mon 5 June 2000 00:00 BST
SIMBENCH_START = datetime(2015, 12, 31, 23, 0, tzinfo=UTC)  # 1 Jan 2016 00:00 CET

# SMARD column per bidding-zone code. "DE" is Germany's zone as it was: DE-AT-LU until the split on
# 1 October 2018 (00:00 local), DE-LU after.
SMARD_COLUMNS = {
    "DE_LU": "Germany/Luxembourg", "DE_AT_LU": "Germany/Austria/Luxembourg", "DK1": "Denmark 1",
    "DK2": "Denmark 2", "FR": "France", "IT_NORTH": "Northern Italy", "NL": "Netherlands", "PL": "Poland",
    "SE4": "Sweden 4", "CH": "Switzerland", "SI": "Slovenia", "CZ": "Czech Republic", "HU": "Hungary",
    "AT": "Austria", "BE": "Belgium", "NO2": "Norway 2",
}
SMARD_YEARS = (2015, 2018)


def taylor(datasets_dir: Path) -> Series:
    """Taylor's 4,032 half-hourly demand values (MW), parsed from the array literal in pmdarima's module."""
    text = path_of("taylor", datasets_dir).read_text()
    match = re.search(r"np\.array\(\[(.*?)\]\)", text, re.DOTALL)
    if match is None:
        raise DatasetError("the taylor file has no array literal: not the file the loader expects")
    values = np.array([float(v) for v in match.group(1).replace("\n", " ").split(",") if v.strip()])
    if len(values) != 4032:
        raise DatasetError(f"taylor: expected 4,032 values, parsed {len(values)}")
    return Series(TAYLOR_START, timedelta(minutes=30), values, "taylor", "Europe/London")


def _smard_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    header = [re.sub(r"\[.*\]$", "", h) for h in lines[0].split(";")]
    return header, [line.split(";") for line in lines[1:] if line.strip()]


def _smard_utc(rows: list[list[str]]) -> list[datetime]:
    """UTC times of Berlin wall-clock labels; a repeated label (autumn) is its second, later hour."""
    berlin = ZoneInfo("Europe/Berlin")
    out: list[datetime] = []
    previous: str | None = None
    for row in rows:
        label = f"{row[0]} {row[1]}"
        local = datetime.strptime(label, "%b %d, %Y %I:%M %p")  # noqa: DTZ007 (zone attached next)
        fold = 1 if label == previous else 0
        out.append(local.replace(tzinfo=berlin, fold=fold).astimezone(UTC))
        previous = label
    return out


def smard(datasets_dir: Path, zone: str, year: int) -> Series:
    """Hourly day-ahead prices (EUR/MWh) of one bidding zone for 2015 or 2018; may be negative."""
    if year not in SMARD_YEARS:
        raise DatasetError(f"SMARD prices are shipped for {SMARD_YEARS}, not {year}")
    header, rows = _smard_rows(path_of(f"smard-{year}", datasets_dir))
    times = _smard_utc(rows)
    steps = {int((b - a).total_seconds()) for a, b in pairwise(times)}
    if steps != {3600}:
        raise DatasetError(f"smard-{year}: timestamps are not hourly after DST resolution ({sorted(steps)})")

    def column(name: str) -> np.ndarray:
        j = header.index(name)
        return np.array([np.nan if row[j] == "-" else float(row[j]) for row in rows])

    if zone == "DE":
        values = column(SMARD_COLUMNS["DE_AT_LU"])
        values = np.where(np.isnan(values), column(SMARD_COLUMNS["DE_LU"]), values)
    elif zone in SMARD_COLUMNS:
        values = column(SMARD_COLUMNS[zone])
    else:
        raise DatasetError(f"unknown SMARD zone {zone!r}; one of DE, {', '.join(SMARD_COLUMNS)}")
    known = np.flatnonzero(np.isfinite(values))
    if len(known) == 0:
        raise DatasetError(f"SMARD {year} has no prices for zone {zone}")
    if len(known) != known[-1] - known[0] + 1:
        raise DatasetError(f"SMARD {year} zone {zone} has gaps inside its priced period")
    return Series(times[int(known[0])], timedelta(hours=1), values[known[0]:known[-1] + 1],
                  f"smard:{zone}:{year}", "Europe/Berlin")


def simbench_columns(datasets_dir: Path) -> list[str]:
    """Every profile column: load (``*_pload``, ``*_qload``) and generation (``PV1``, ...)."""
    names: list[str] = []
    for name in ("simbench-load", "simbench-res"):
        with path_of(name, datasets_dir).open() as stream:
            names += stream.readline().strip().split(";")[1:]
    return names


def simbench(datasets_dir: Path, column: str) -> Series:
    """One SimBench 2016 profile at 15 minutes, per unit (e.g. ``mv_urban_pload``, ``PV3``)."""
    for name in ("simbench-load", "simbench-res"):
        path = path_of(name, datasets_dir)
        with path.open() as stream:
            header = stream.readline().strip().split(";")
        if column in header:
            j = header.index(column)
            values = np.loadtxt(path, delimiter=";", skiprows=1, usecols=j, dtype=np.float64)
            if len(values) != 366 * 96:
                raise DatasetError(f"{name}: expected 366 x 96 rows, found {len(values)}")
            return Series(SIMBENCH_START, timedelta(minutes=15), values, f"simbench:{column}", "Etc/GMT-1")
    raise DatasetError(f"no SimBench profile column {column!r}; e.g. mv_urban_pload, lv_rural1_pload, PV3")
