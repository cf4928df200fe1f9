"""The layers of the tree hold, and the check that says so can fail.

``scripts/test`` runs ``lint-imports`` with the contracts in pyproject.toml;
these tests prove that a violation breaks it (on a copy of the tree, so the
real one is never touched) and that importing the pure decision logic loads no
client library at run time, which a static check alone could miss (an import
hidden in a function body).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

IMPORT_LINTER = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
PACKAGES = tuple(IMPORT_LINTER["root_packages"])
CONTRACTS = IMPORT_LINTER["contracts"]
#: The pure decision modules, as the forbidden-imports contract lists them.
PURE_MODULES = tuple(next(c for c in CONTRACTS if c["type"] == "forbidden")["source_modules"])
IO_LIBRARIES = ("redis", "clickhouse_connect", "confluent_kafka", "bytewax", "pydantic_settings")


def _tree_copy(tmp_path: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=tree, env=env, capture_output=True,
                          text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def clean_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tree that keeps every contract (linted once; each violation breaks a copy of it)."""
    tree = _tree_copy(tmp_path_factory.mktemp("clean-tree"))
    result = _lint(tree)
    assert result.returncode == 0, f"the untouched copy must keep every contract:\n{result.stdout[-2000:]}"
    return tree


@pytest.mark.parametrize(("module", "line", "broken"), [
    ("operators/twin.py", "import redis  # noqa", "Pure decision logic"),
    ("schemas/times.py", "import core.topics  # noqa", "Layers"),
    ("api/models.py", "import edge_gateway.server  # noqa", "Layers"),
    ("forecast/models.py", "import core.config  # noqa", "Pure decision logic"),
    ("forecast/backtest.py", "import vpp.datasets  # noqa", "Layers"),
])
def test_a_violation_breaks_the_import_contracts(clean_tree: Path, tmp_path: Path, module: str, line: str,
                                                 broken: str) -> None:
    tree = shutil.copytree(clean_tree, tmp_path / "tree")
    path = tree / module
    path.write_text(path.read_text() + f"\n{line}\n")
    result = _lint(tree)
    assert result.returncode != 0
    assert f"{broken}" in result.stdout and "BROKEN" in result.stdout


def test_pure_modules_load_no_client_library() -> None:
    script = (
        "import sys\n"
        f"for name in {PURE_MODULES!r}: __import__(name)\n"
        f"print(sorted(lib for lib in {IO_LIBRARIES!r} if lib in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                            timeout=60, check=True)
    assert result.stdout.strip() == "[]"
