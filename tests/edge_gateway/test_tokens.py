"""Device tokens: what they carry and what does not verify."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import jwt
import pytest
from pydantic import SecretStr

from core.config import Settings
from core.device_tokens import TokenError, issue_token, verify_token

SETTINGS = Settings(gateway_token_secret=SecretStr("device-token-secret-of-these-tests-0123456789"))


def test_an_issued_token_verifies_to_its_site_region_jti_and_expiry() -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    issued = issue_token(SETTINGS, "site-1", region="region-2", ttl=timedelta(hours=2), now=now)
    claims = verify_token(SETTINGS, issued.token)
    assert claims == issued.claims
    assert (claims.site_id, claims.region) == ("site-1", "region-2")
    assert claims.expires_at == now + timedelta(hours=2)
    assert issue_token(SETTINGS, "site-1").claims.jti != claims.jti


@pytest.mark.parametrize("token", [
    "",
    "not.a.jwt",
    issue_token(SETTINGS, "site-1", ttl=timedelta(seconds=-1)).token,
    issue_token(SETTINGS.model_copy(update={"gateway_token_secret": SecretStr("y" * 40)}), "site-1").token,
    jwt.encode({"site_id": "site-1", "exp": datetime.now(UTC) + timedelta(hours=1), "aud": "vpp-gateway"},
               SETTINGS.gateway_keys().current, algorithm="HS256"),  # no jti
    jwt.encode({"site_id": "site-1", "jti": "j", "exp": datetime.now(UTC) + timedelta(hours=1),
                "aud": "vpp-gateway"}, None, algorithm="none"),  # unsigned
])
def test_bad_tokens_do_not_verify(token: str) -> None:
    with pytest.raises(TokenError):
        verify_token(SETTINGS, token)


def test_a_token_needs_a_site() -> None:
    with pytest.raises(ValueError, match="site id"):
        issue_token(SETTINGS, "")
