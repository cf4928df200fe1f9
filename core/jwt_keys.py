"""Signing and verifying HS256 JWTs with a current key and, during a rotation, a previous one.

Device tokens (:mod:`core.device_tokens`, audience ``vpp-gateway``) and API
tokens (:mod:`api.auth`, audience ``vpp-api``) share this one helper, so the
rotation rule is written once: tokens are always signed with the current key
and verified against the current key, then the previous one. Rotating is:
set ``..._PREVIOUS`` to the old secret and the secret to a new one, restart;
once every token signed with the old key has expired or been reissued, drop
``..._PREVIOUS`` and tokens signed with the old key are refused.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jwt

ALGORITHM = "HS256"


class InvalidTokenError(Exception):
    """A token that does not verify: malformed, badly signed, expired, wrong audience or missing claims."""


@dataclass(frozen=True)
class SigningKeys:
    """The current key (signs and verifies) and an optional previous key (verifies only)."""

    current: str = field(repr=False)
    previous: str | None = field(default=None, repr=False)


def sign(payload: Mapping[str, Any], keys: SigningKeys) -> str:
    """``payload`` as a JWT signed with the current key."""
    return jwt.encode(dict(payload), keys.current, algorithm=ALGORITHM)


def verify(token: str, keys: SigningKeys, *, audience: str, require: Sequence[str]) -> dict[str, Any]:
    """The claims of ``token`` if it verifies with the current or the previous key.

    Only a bad signature falls back to the previous key; an expired token or
    a wrong audience is refused whichever key signed it.
    """
    options: jwt.types.Options = {"require": list(require)}
    try:
        try:
            claims = jwt.decode(token, keys.current, algorithms=[ALGORITHM], audience=audience,
                                options=options)
        except jwt.InvalidSignatureError:
            if keys.previous is None:
                raise
            claims = jwt.decode(token, keys.previous, algorithms=[ALGORITHM], audience=audience,
                                options=options)
    except jwt.PyJWTError as exc:
        raise InvalidTokenError(str(exc)) from None
    return dict(claims)
