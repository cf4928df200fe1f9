"""Device tokens: a signed JWT per site (HS256), revocable by its ``jti``.

A token carries the site it speaks for (``site_id``), optionally the site's
price ``region``, a unique ``jti`` and an expiry. The gateway trusts nothing
else about a connection: the site id of every frame comes from here.
Revocation is a Redis set of jtis (``gateway:revoked``) that every gateway
instance checks at connect and again on each heartbeat for open connections.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt
import redis

from core import keys
from core.config import Settings

REVOKED_KEY = keys.REVOKED_TOKENS
ALGORITHM = "HS256"
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
    token = jwt.encode(payload, settings.gateway_token_secret.get_secret_value(), algorithm=ALGORITHM)
    return IssuedToken(token, claims)


def verify_token(settings: Settings, token: str) -> DeviceClaims:
    """The claims of a valid, unexpired token signed with our secret; TokenError otherwise."""
    try:
        payload = jwt.decode(
            token, settings.gateway_token_secret.get_secret_value(), algorithms=[ALGORITHM],
            audience=AUDIENCE, options={"require": ["exp", "jti", "site_id"]},
        )
    except jwt.PyJWTError as exc:
        raise TokenError(str(exc)) from None
    site_id, jti, region = payload["site_id"], payload["jti"], payload.get("region")
    if not isinstance(site_id, str) or not site_id or not isinstance(jti, str):
        raise TokenError("site_id and jti must be non-empty strings")
    return DeviceClaims(site_id, jti, datetime.fromtimestamp(payload["exp"], UTC),
                        region if isinstance(region, str) else None)


def revoke_token(settings: Settings, jti: str) -> bool:
    """Add ``jti`` to the revoked set; True if it was not revoked before."""
    with redis.Redis.from_url(settings.redis) as rds:
        return bool(rds.sadd(REVOKED_KEY, jti))
