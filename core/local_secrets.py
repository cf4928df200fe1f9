"""Token secrets and the history password: from the environment, or generated once per local data
directory. No defaults.

A secret is resolved in one place (``Settings.gateway_keys()`` and
``Settings.api_keys()`` call :func:`resolve_keys`):

* set in the environment (``VPP_GATEWAY_TOKEN_SECRET``, ``VPP_API_TOKEN_SECRET``,
  each with an optional ``..._PREVIOUS`` for rotation): used, provided it is at
  least :data:`MIN_SECRET_CHARS` long and not one of the strings this project
  once shipped as defaults;
* unset on the local stack: read from ``<data_dir>/secrets.json`` (mode 0600),
  which the first process to need it creates with random values, so every
  process of one data directory (stack, gateway, API, CLI, tests) agrees and
  a restart keeps them;
* unset anywhere else (``VPP_PRODUCTION`` or any of ``VPP_KAFKA_BOOTSTRAP``,
  ``VPP_REDIS_URL``, ``VPP_CLICKHOUSE_URL`` set): :class:`MissingSecretError`,
  naming the variable to set, so such a process refuses to start.

The local history server's password (``VPP_CLICKHOUSE_PASSWORD``) lives in the
same file: ``Settings.clickhouse_credentials()`` reads it there when the
variable is unset on the local stack, and ``vpp stack up`` hands it to the
history server, so every local process uses it and none is accepted without
it. A file written before a secret existed gets that secret added (under a
lock, so processes starting at once agree).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import stat
from functools import lru_cache
from pathlib import Path

from pydantic import SecretStr

from core.jwt_keys import SigningKeys

SECRETS_FILE = "secrets.json"
#: The secrets a local data directory holds, by settings field name.
LOCAL_SECRETS = ("gateway_token_secret", "api_token_secret", "clickhouse_password")
MIN_SECRET_CHARS = 32
#: Defaults earlier versions shipped: public, so never a key.
PUBLISHED_DEFAULTS = frozenset({
    "vpp-local-gateway-secret-not-for-production", "vpp-local-api-secret-not-for-production",
    "vpp-dev-gateway-secret", "vpp-dev-api-secret",
})


class MissingSecretError(RuntimeError):
    """A secret is not set where it must be, or is unusable; the message names the variable."""


def env_name(name: str) -> str:
    """The environment variable of a settings field."""
    return f"VPP_{name.upper()}"


@lru_cache(maxsize=64)
def resolve_keys(name: str, configured: SecretStr | None, previous: SecretStr | None, *, local: bool,
                 data_dir: Path) -> SigningKeys:
    """The signing keys of secret ``name`` (a field of Settings), per the rules of this module.

    Remembered per arguments: the API resolves its keys on every request.
    """
    if configured is not None:
        current = _usable(name, configured.get_secret_value())
    elif local:
        current = local_secrets(data_dir)[name]
    else:
        raise MissingSecretError(
            f"{env_name(name)} is not set: outside the local stack (VPP_PRODUCTION, VPP_KAFKA_BOOTSTRAP, "
            f"VPP_REDIS_URL or VPP_CLICKHOUSE_URL set) every token secret must be; generate one with "
            f"`openssl rand -hex 32` (on Kubernetes it comes from the Secret vpp-token-secrets)")
    old = _usable(f"{name}_previous", previous.get_secret_value()) if previous is not None else None
    return SigningKeys(current, old)


def _usable(name: str, value: str) -> str:
    if value in PUBLISHED_DEFAULTS:
        raise MissingSecretError(f"{env_name(name)} is a default published with this project; "
                                 "set a random one (`openssl rand -hex 32`)")
    if len(value) < MIN_SECRET_CHARS:
        raise MissingSecretError(f"{env_name(name)} is {len(value)} characters; a token secret needs at "
                                 f"least {MIN_SECRET_CHARS} (`openssl rand -hex 32`)")
    return value


def local_secrets(data_dir: Path) -> dict[str, str]:
    """The secrets of a local data directory, created on first use (cached per process)."""
    return _cached(str(data_dir.resolve() / SECRETS_FILE))


@lru_cache(maxsize=8)
def _cached(path: str) -> dict[str, str]:
    return load_or_create(Path(path))


def load_or_create(path: Path) -> dict[str, str]:
    """Read ``path``, or create it (0600) with a random value per secret if it does not exist.

    Creation is atomic: the values go to a private temporary file that is then
    hard-linked into place, which fails if another process got there first, in
    which case both read the winner's file.
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        values = {name: secrets.token_urlsafe(48) for name in LOCAL_SECRETS}
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(descriptor, "w") as out:
                json.dump(values, out)
            with contextlib.suppress(FileExistsError):
                os.link(temporary, path)
        finally:
            temporary.unlink()
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise MissingSecretError(f"{path} is readable by others (mode {mode:o}); `chmod 600 {path}`")
    stored: dict[str, object] = json.loads(path.read_text())
    if any(name not in stored for name in LOCAL_SECRETS):
        stored = _add_missing(path)
    unusable = [name for name in LOCAL_SECRETS if not isinstance(stored.get(name), str)]
    if unusable:
        raise MissingSecretError(f"{path} has no usable {', '.join(unusable)}; delete it to generate new "
                                 "secrets (tokens signed with the old ones stop working)")
    return {name: str(stored[name]) for name in LOCAL_SECRETS}


def _add_missing(path: Path) -> dict[str, object]:
    """Add the secrets a file written by an older version lacks; keep the others. Returns the values.

    Under an exclusive lock, re-reading first: of several processes upgrading at once, the first
    writes and the others read what it wrote. The new file replaces the old atomically.
    """
    with path.with_name(f".{path.name}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        values: dict[str, object] = json.loads(path.read_text())
        missing = [name for name in LOCAL_SECRETS if name not in values]
        if missing:
            values.update({name: secrets.token_urlsafe(48) for name in missing})
            temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as out:
                json.dump(values, out)
            os.replace(temporary, path)
    return values
