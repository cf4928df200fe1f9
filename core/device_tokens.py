"""Device tokens: a signed JWT per site (HS256), revocable by its ``jti``.

A token carries the site it speaks for (``site_id``), optionally the site's
price ``region``, a unique ``jti`` and an expiry. The gateway trusts nothing
else about a connection: the site id of every frame comes from here.
Signing and rotation are :mod:`core.jwt_keys`' (keys from
``Settings.gateway_keys()``); revocation is :mod:`core.revocations`'.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from core import jwt_keys
from core.config import Settings

AUDIENCE = "vpp-gateway"


class TokenError(Exception):
    """A token that does not authenticate a device: malformed, badly signed, expired or lacking claims."""


@dataclass(frozen=True)
class DeviceClaims:
    """What a verified token says about the device holding it."""

    site_id: str
    jti: str
    expires_at: datetime
    region: str | None = None


@dataclass(frozen=True)
class IssuedToken:
    """A freshly signed token and the claims it carries (the jti is what revocation needs)."""

    token: str
    claims: DeviceClaims


def issue_token(settings: Settings, site_id: str, *, region: str | None = None,
                ttl: timedelta | None = None, now: datetime | None = None) -> IssuedToken:
    """Sign a token for ``site_id`` valid for ``ttl`` (default from settings)."""
    if not site_id:
        raise ValueError("a device token needs a site id")
    issued = now or datetime.now(UTC)
    expires = issued + (ttl if ttl is not None else timedelta(hours=settings.gateway_token_ttl_hours))
    claims = DeviceClaims(site_id, uuid.uuid4().hex, expires, region)
    payload: dict[str, object] = {"sub": site_id, "site_id": site_id, "jti": claims.jti, "aud": AUDIENCE,
                                  "iat": issued, "exp": expires}
    if region is not None:
        payload["region"] = region
    return IssuedToken(jwt_keys.sign(payload, settings.gateway_keys()), claims)


def verify_token(settings: Settings, token: str, keys: jwt_keys.SigningKeys | None = None) -> DeviceClaims:
    """The claims of a valid, unexpired token signed with our key (or the previous one); TokenError otherwise.

    ``keys`` saves a long-running caller (the gateway) resolving them on every handshake.
    """
    try:
        payload = jwt_keys.verify(token, keys or settings.gateway_keys(), audience=AUDIENCE,
                                  require=("exp", "jti", "site_id"))
    except jwt_keys.InvalidTokenError as exc:
        raise TokenError(str(exc)) from None
    site_id, jti, region = payload["site_id"], payload["jti"], payload.get("region")
    if not isinstance(site_id, str) or not site_id or not isinstance(jti, str):
        raise TokenError("site_id and jti must be non-empty strings")
    return DeviceClaims(site_id, jti, datetime.fromtimestamp(payload["exp"], UTC),
                        region if isinstance(region, str) else None)
