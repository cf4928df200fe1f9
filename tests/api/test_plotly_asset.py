"""Where the console's plotly.js comes from: the image's copy first, else the installed plotly package."""

from __future__ import annotations

from pathlib import Path

import pytest

from api.routers import system


def test_a_copy_among_the_dashboard_files_is_served_before_the_package(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(system, "DASHBOARD_DIR", tmp_path)
    from_package = system.plotly_js()
    assert from_package is not None and from_package.name == "plotly.min.js" and from_package.is_file()
    (tmp_path / "plotly.min.js").write_text("/* plotly */")
    assert system.plotly_js() == tmp_path / "plotly.min.js"
