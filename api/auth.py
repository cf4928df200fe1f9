"""API bearer tokens: HS256 JWTs carrying scopes, and for customers the sites they own.

Three kinds of callers share one token format. A program reading the fleet
holds ``read``; an operator adds ``assets`` and/or ``dispatch``; ``admin``
implies every scope (and issues and revokes device tokens). A *customer*
token carries ``sites``: it may read those sites (twin, history, status
stream) and nothing of the fleet, whatever its scopes say, so a leaked
customer token never exposes another home or a node. The audience
(``vpp-api``) keeps device tokens (audience ``vpp-gateway``) out even when
both secrets are the same. Signing and key rotation are :mod:`core.jwt_keys`'
(keys from ``Settings.api_keys()``), shared with device tokens.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import lru_cache

from core import jwt_keys
from core.config import Settings

VERIFIED_CACHE = 4096
AUDIENCE = "vpp-api"


class Scope(StrEnum):
    """What a token may do."""

    READ = "read"
    ASSETS = "assets"
    DISPATCH = "dispatch"
    ADMIN = "admin"


class AuthError(Exception):
    """A token that does not authenticate: missing, malformed, badly signed, expired or lacking claims."""


@dataclass(frozen=True)
class Principal:
    """Who is calling and what they may do, from a verified token."""

    subject: str
    scopes: frozenset[Scope]
    #: The sites a customer owns; None for fleet tokens (operators, programs).
    sites: frozenset[str] | None = None

    @property
    def is_customer(self) -> bool:
        """True for a token bound to its own sites, which sees nothing of the fleet."""
        return self.sites is not None

    def has(self, scope: Scope) -> bool:
        """True if the token carries ``scope`` (admin carries all)."""
        return scope in self.scopes or Scope.ADMIN in self.scopes

    def may_read_site(self, site_id: str) -> bool:
        """Fleet readers read every site; a customer only its own."""
        if self.sites is not None:
            return site_id in self.sites
        return self.has(Scope.READ)


@dataclass(frozen=True)
class IssuedApiToken:
    """A signed token, whom it speaks for and until when."""

    token: str
    principal: Principal
    expires_at: datetime


def issue_api_token(settings: Settings, subject: str, scopes: set[Scope], *,
                    sites: set[str] | None = None, ttl: timedelta | None = None,
                    now: datetime | None = None) -> IssuedApiToken:
    """Sign a token for ``subject``; a customer token (``sites`` given) may only carry ``read``."""
    if not subject:
        raise ValueError("an API token needs a subject (who holds it)")
    if not scopes:
        raise ValueError("an API token needs at least one scope")
    if sites is not None and scopes != {Scope.READ}:
        raise ValueError("a customer token (one with sites) carries only the read scope")
    if sites is not None and not sites:
        raise ValueError("a customer token needs at least one site")
    issued = now or datetime.now(UTC)
    expires = issued + (ttl if ttl is not None else timedelta(hours=settings.api_token_ttl_hours))
    payload: dict[str, object] = {"sub": subject, "scopes": sorted(scopes), "jti": uuid.uuid4().hex,
                                  "aud": AUDIENCE, "iat": issued, "exp": expires}
    if sites is not None:
        payload["sites"] = sorted(sites)
    token = jwt_keys.sign(payload, settings.api_keys())
    principal = Principal(subject, frozenset(scopes), frozenset(sites) if sites is not None else None)
    return IssuedApiToken(token, principal, expires)


def verify_api_token(settings: Settings, token: str) -> Principal:
    """The principal of a valid, unexpired token signed with our key (or the previous); AuthError otherwise.

    Verified tokens are remembered (until they expire) so a client polling
    the live view does not pay for a signature check on every request; the
    memory is per key pair, so dropping a previous key forgets what it verified.
    """
    principal, expires = _verified(settings.api_keys(), token)
    if time.time() >= expires:
        raise AuthError("invalid token: Signature has expired")
    return principal


@lru_cache(maxsize=VERIFIED_CACHE)
def _verified(keys: jwt_keys.SigningKeys, token: str) -> tuple[Principal, float]:
    """Decode and check a token once; the principal and its expiry (epoch seconds)."""
    try:
        payload = jwt_keys.verify(token, keys, audience=AUDIENCE, require=("exp", "sub", "scopes"))
    except jwt_keys.InvalidTokenError as exc:
        raise AuthError(f"invalid token: {exc}") from None
    raw_scopes, raw_sites = payload["scopes"], payload.get("sites")
    if not isinstance(raw_scopes, list) or not all(isinstance(s, str) for s in raw_scopes):
        raise AuthError("invalid token: scopes must be a list of strings")
    try:
        scopes = frozenset(Scope(s) for s in raw_scopes)
    except ValueError as exc:
        raise AuthError(f"invalid token: {exc}") from None
    expires = float(payload["exp"])
    if raw_sites is None:
        return Principal(str(payload["sub"]), scopes), expires
    if not isinstance(raw_sites, list) or not all(isinstance(s, str) for s in raw_sites):
        raise AuthError("invalid token: sites must be a list of strings")
    return Principal(str(payload["sub"]), frozenset({Scope.READ}) & scopes, frozenset(raw_sites)), expires
