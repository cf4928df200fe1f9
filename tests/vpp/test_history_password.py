"""The local history server has no usable default password: `vpp stack up` generates one per data
directory (secrets.json, like the token secrets), every local process uses it, and the server
refuses clients without it and refuses to start without one."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from core import history
from core.config import Settings
from core.local_secrets import SECRETS_FILE, load_or_create
from tests.conftest import free_port


def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [name for name in os.environ if name.startswith("VPP_")]:
        monkeypatch.delenv(name)


def test_an_unset_local_password_is_generated_once_per_data_directory(monkeypatch: pytest.MonkeyPatch,
                                                                       tmp_path: Path) -> None:
    _clean_env(monkeypatch)
    credentials = Settings(data_dir=tmp_path / "one").clickhouse_credentials()
    assert credentials is not None
    user, password = credentials
    assert user == "default" and len(password) >= 32
    assert stat.S_IMODE((tmp_path / "one" / SECRETS_FILE).stat().st_mode) == 0o600
    code = "from core.config import Settings; print(Settings().clickhouse_credentials()[1])"
    again = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "VPP_DATA_DIR": str(tmp_path / "one")}, capture_output=True, text=True,
        timeout=120, check=False)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == password, "another process of the data directory uses the same one"
    other = Settings(data_dir=tmp_path / "two").clickhouse_credentials()
    assert other is not None and other[1] != password
    monkeypatch.setenv("VPP_CLICKHOUSE_PASSWORD", "chosen-by-the-operator")
    chosen = Settings(data_dir=tmp_path / "one").clickhouse_credentials()
    assert chosen == ("default", "chosen-by-the-operator")


def test_a_secrets_file_of_an_older_version_gets_the_password_added(tmp_path: Path) -> None:
    path = tmp_path / SECRETS_FILE
    old = {"gateway_token_secret": "g" * 64, "api_token_secret": "a" * 64}
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    with os.fdopen(descriptor, "w") as out:
        json.dump(old, out)
    values = load_or_create(path)
    assert values["gateway_token_secret"] == "g" * 64 and values["api_token_secret"] == "a" * 64
    assert len(values["clickhouse_password"]) >= 32
    assert load_or_create(path) == values, "written, not regenerated on each read"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def _select_one(settings: Settings, user: str | None, password: str | None) -> int:
    request = urllib.request.Request(f"{settings.clickhouse}/?query=SELECT%201", data=b"", method="POST")
    if user is not None:
        token = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.integration
def test_the_local_history_server_accepts_only_the_generated_password(stack_settings: Settings) -> None:
    credentials = stack_settings.clickhouse_credentials()
    assert credentials is not None and credentials[1], "the stack's password is not empty"
    assert _select_one(stack_settings, None, None) == 401, "no credentials, no answer"
    assert _select_one(stack_settings, "default", "") == 401, "the empty password is no default"
    assert _select_one(stack_settings, "default", "wrong") == 401
    assert _select_one(stack_settings, *credentials) == 200
    client = history.connect(stack_settings)  # what every local process does
    try:
        assert client.query("SELECT 1").result_rows == [(1,)]
    finally:
        client.close()


def test_the_history_server_refuses_to_start_without_a_password(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "VPP_CLICKHOUSE_PASSWORD"}
    done = subprocess.run([sys.executable, "-m", "vpp.history_server", "--data-dir", str(tmp_path),
                           "--port", str(free_port())], env=env, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 2
    assert "VPP_CLICKHOUSE_PASSWORD is not set" in done.stderr
