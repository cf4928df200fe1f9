"""Tables and figures for the CLI that read at 80 columns (a terminal's default width).

No borders and one space between columns, so a table of eight figures fits; power and
energy scale their unit (kW, MW, GW) to keep every figure within eight characters, while
``--json`` keeps the exact numbers.
"""

from __future__ import annotations

from rich.table import Table


def narrow_table(title: str | None = None, caption: str | None = None, show_header: bool = True) -> Table:
    """A borderless table with one space between columns."""
    return Table(title=title, caption=caption, box=None, padding=(0, 1), pad_edge=False,
                 collapse_padding=True, show_header=show_header, header_style="bold")


def scaled(kilo: float, unit: str) -> str:
    """``kilo`` thousands of ``unit`` (kW, kWh) with the prefix that keeps it short: 457 kW, 1.5 MW."""
    for factor, prefix in ((1e6, "G"), (1e3, "M"), (1.0, "k")):
        if abs(kilo) >= factor or factor == 1.0:
            value = kilo / factor
            return f"{value:.1f} {prefix}{unit}" if abs(value) < 100 else f"{value:.0f} {prefix}{unit}"
    raise AssertionError("unreachable")
