"""Token secrets (issue 20, case 1): no usable default, generated per local data directory, required
elsewhere, rotated with a grace period; one JWT helper for device and API tokens."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from api.app import create_app
from api.auth import AuthError, Scope, issue_api_token, verify_api_token
from core.config import Settings
from core.device_tokens import TokenError, issue_token, verify_token
from core.local_secrets import SECRETS_FILE, MissingSecretError, load_or_create

#: The defaults earlier versions shipped in core/config.py.
OLD_GATEWAY_DEFAULT = "vpp-local-gateway-secret-not-for-production"
OLD_API_DEFAULT = "vpp-local-api-secret-not-for-production"
KEY_A = "a" * 16 + "rotation-key-a-0123456789"
KEY_B = "b" * 16 + "rotation-key-b-0123456789"


def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [name for name in os.environ if name.startswith("VPP_")]:
        monkeypatch.delenv(name)


def _forged_device_token(secret: str, site_id: str = "site-1") -> str:
    return jwt.encode({"sub": site_id, "site_id": site_id, "jti": "f" * 32, "aud": "vpp-gateway",
                       "exp": datetime.now(UTC) + timedelta(hours=1)}, secret, algorithm="HS256")


def _forged_admin_token(secret: str) -> str:
    return jwt.encode({"sub": "mallory", "scopes": ["admin"], "jti": "f" * 32, "aud": "vpp-api",
                       "exp": datetime.now(UTC) + timedelta(hours=1)}, secret, algorithm="HS256")


def test_tokens_signed_with_the_old_default_secrets_are_refused(monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    _clean_env(monkeypatch)
    settings = Settings(data_dir=tmp_path)
    with pytest.raises(TokenError):
        verify_token(settings, _forged_device_token(OLD_GATEWAY_DEFAULT))
    with pytest.raises(AuthError):
        verify_api_token(settings, _forged_admin_token(OLD_API_DEFAULT))


def test_the_api_refuses_an_admin_token_signed_with_the_old_default(monkeypatch: pytest.MonkeyPatch,
                                                                      tmp_path: Path) -> None:
    """The attack of the issue: minting admin tokens with the published default (the real app, no stack)."""
    _clean_env(monkeypatch)
    settings = Settings(data_dir=tmp_path)
    body = {"subject": "x", "scopes": ["admin"]}
    with TestClient(create_app(settings)) as client:
        forged = client.post("/v1/tokens/api", json=body,
                             headers={"Authorization": f"Bearer {_forged_admin_token(OLD_API_DEFAULT)}"})
        genuine = client.post("/v1/tokens/api", json=body, headers={
            "Authorization": f"Bearer {issue_api_token(settings, 'ops', {Scope.ADMIN}).token}"})
    assert forged.status_code == 401
    assert genuine.status_code == 201  # the generated secret works


def test_the_local_secrets_file_is_private_and_reused_across_processes(monkeypatch: pytest.MonkeyPatch,
                                                                        tmp_path: Path) -> None:
    _clean_env(monkeypatch)
    issued = issue_token(Settings(data_dir=tmp_path), "site-7")
    path = tmp_path / SECRETS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = load_or_create(path)
    assert load_or_create(path) == first  # a restart reads, never regenerates
    assert first["gateway_token_secret"] != first["api_token_secret"]
    assert OLD_GATEWAY_DEFAULT not in first.values()
    # Another process of the same data directory (a restart, the gateway, the CLI) verifies it.
    check = ("from core.config import Settings; from core.device_tokens import verify_token; import sys; "
             "print(verify_token(Settings(), sys.argv[1]).site_id)")
    done = subprocess.run([sys.executable, "-c", check, issued.token], capture_output=True, text=True,
                          env={**os.environ, "VPP_DATA_DIR": str(tmp_path)}, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "site-7"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_another_data_directory_has_other_secrets(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _clean_env(monkeypatch)
    token = issue_token(Settings(data_dir=tmp_path / "one"), "site-1").token
    with pytest.raises(TokenError):
        verify_token(Settings(data_dir=tmp_path / "two"), token)


def test_a_readable_secrets_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / SECRETS_FILE
    load_or_create(path)
    path.chmod(0o644)
    with pytest.raises(MissingSecretError, match="chmod 600"):
        load_or_create(path)


@pytest.mark.parametrize("marker", [{"production": True}, {"redis_url": "redis://redis:6379/0"},
                                    {"kafka_bootstrap": "kafka:9092"}, {"clickhouse_url": "http://ch:8123"}])
def test_outside_the_local_stack_an_unset_secret_is_an_error_naming_the_variable(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, marker: dict[str, object]) -> None:
    _clean_env(monkeypatch)
    settings = Settings(data_dir=tmp_path, **marker)  # type: ignore[arg-type]
    with pytest.raises(MissingSecretError, match="VPP_GATEWAY_TOKEN_SECRET"):
        settings.gateway_keys()
    with pytest.raises(MissingSecretError, match="VPP_API_TOKEN_SECRET"):
        settings.api_keys()
    assert not (tmp_path / SECRETS_FILE).exists()  # nothing generated for a deployment


@pytest.mark.parametrize("secret", [OLD_GATEWAY_DEFAULT, "vpp-dev-gateway-secret", "short"])
def test_a_published_or_short_secret_is_refused(monkeypatch: pytest.MonkeyPatch, secret: str) -> None:
    _clean_env(monkeypatch)
    settings = Settings(production=True, gateway_token_secret=SecretStr(secret))
    with pytest.raises(MissingSecretError, match="VPP_GATEWAY_TOKEN_SECRET"):
        settings.gateway_keys()


@pytest.mark.parametrize(("module", "variable"), [("edge_gateway", "VPP_GATEWAY_TOKEN_SECRET"),
                                                  ("api", "VPP_API_TOKEN_SECRET")])
def test_a_production_process_without_its_secret_refuses_to_start(tmp_path: Path, module: str,
                                                                  variable: str) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("VPP_")}
    env |= {"VPP_PRODUCTION": "true", "VPP_DATA_DIR": str(tmp_path),
            # Ports nothing listens on: the refusal must come before any connection is tried.
            "VPP_REDIS_URL": "redis://127.0.0.1:1/0", "VPP_KAFKA_BOOTSTRAP": "127.0.0.1:1"}
    done = subprocess.run([sys.executable, "-m", module], capture_output=True, text=True, env=env,
                          timeout=280, check=False)  # generous: imports take minutes on a loaded machine
    assert done.returncode != 0
    assert variable in done.stderr + done.stdout
    assert "refuses to start" in done.stderr + done.stdout


def test_rotation_accepts_the_previous_key_until_it_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    _clean_env(monkeypatch)
    before = Settings(production=True, gateway_token_secret=SecretStr(KEY_A),
                      api_token_secret=SecretStr(KEY_A))
    device, api = issue_token(before, "site-1").token, issue_api_token(before, "ops", {Scope.READ}).token
    during = Settings(production=True, gateway_token_secret=SecretStr(KEY_B),
                      gateway_token_secret_previous=SecretStr(KEY_A), api_token_secret=SecretStr(KEY_B),
                      api_token_secret_previous=SecretStr(KEY_A))
    after = Settings(production=True, gateway_token_secret=SecretStr(KEY_B),
                     api_token_secret=SecretStr(KEY_B))
    assert verify_token(during, device).site_id == "site-1"
    assert verify_api_token(during, api).subject == "ops"
    fresh = issue_token(during, "site-2").token
    assert verify_token(after, fresh).site_id == "site-2"  # new tokens are signed with the new key
    with pytest.raises(TokenError):
        verify_token(after, device)
    with pytest.raises(AuthError):
        verify_api_token(after, api)
