"""What a gateway knows about revoked device tokens, and when it admits it does not know.

The gateway checks the Redis set ``gateway:revoked`` (one round trip per
handshake, one per heartbeat for open connections); the durable record is
the history store's (:mod:`core.revocations`). Policy, fail closed:

* the durable list is loaded into Redis when the gateway starts, again every
  ``VPP_GATEWAY_REVOCATIONS_REFRESH_S``, and at once when Redis turns out to
  be another server than the one last loaded (its ``run_id``, read in the
  same round trip as the membership check, changes at every restart, whether
  Redis comes back empty or from an older snapshot);
* until the list has been loaded once, and whenever the last successful load
  is older than ``VPP_GATEWAY_REVOCATIONS_MAX_AGE_S`` or a reload after a Redis
  restart fails, the revocation state is unknown: new connections are refused
  with 503 ``revocation_unknown`` (open ones stay; the heartbeat keeps checking
  them against what Redis holds).

A slow or unreachable Redis does not stop devices whose tokens are good: each
load also keeps the durable list in memory, and a check Redis does not answer
within ``VPP_GATEWAY_REVOCATION_CHECK_TIMEOUT_S`` is answered from that copy
while it is younger than ``VPP_GATEWAY_REVOCATIONS_MAX_AGE_S`` (it is re-read
every ``VPP_GATEWAY_REVOCATIONS_REFRESH_S``, whether or not Redis answers).
Every revocation is written to the durable list first, so the copy lags it by
at most one refresh. A list never loaded stays unknown: fail closed.
"""

from __future__ import annotations

import asyncio
import logging
import time

from clickhouse_connect.driver.exceptions import ClickHouseError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from core.config import Settings
from core.revocations import REVOKED_KEY, durable_revocations

log = logging.getLogger(__name__)

CHUNK = 1000


class RevocationUnknownError(Exception):
    """The gateway cannot tell whether a token is revoked; the message says why."""


class Revocations:
    """The gateway's view of revocations: Redis, re-loaded from the durable list when it may be stale."""

    def __init__(self, settings: Settings, rds: Redis) -> None:
        self._settings = settings
        self._rds = rds
        self._lock = asyncio.Lock()
        self._loaded_at: float | None = None
        self._run_id: str | None = None
        #: The durable list as last read, and when (monotonic): the answer while Redis does not give one.
        self._copy: frozenset[str] = frozenset()
        self._copy_at: float | None = None
        self._answering_from_copy = False

    @property
    def age_s(self) -> float | None:
        """Seconds since the durable list was last loaded into Redis (None: never)."""
        return None if self._loaded_at is None else time.monotonic() - self._loaded_at

    async def reload(self, stale_run_id: str | None = None) -> None:
        """Load the durable list into Redis; with ``stale_run_id``, only if nobody has since.

        Raises RevocationUnknownError if the durable list or Redis cannot be read.
        """
        async with self._lock:
            if stale_run_id is not None and self._run_id != stale_run_id:
                return  # another caller reloaded into the new server meanwhile
            try:
                jtis = await asyncio.to_thread(durable_revocations, self._settings)
            except (ClickHouseError, OSError) as exc:
                raise RevocationUnknownError(f"cannot read the durable revocation list: {exc}") from exc
            changed = frozenset(jtis) != self._copy
            self._copy, self._copy_at = frozenset(jtis), time.monotonic()
            try:
                # The server id before writing: a restart in between makes the next check reload again.
                run_id = str((await self._rds.info("server"))["run_id"])
                for start in range(0, len(jtis), CHUNK):
                    await self._rds.sadd(REVOKED_KEY, *jtis[start:start + CHUNK])
            except OSError as exc:
                raise RevocationUnknownError(f"cannot load the revocation list into redis: {exc}") from exc
            fresh_server = run_id != self._run_id
            self._run_id, self._loaded_at = run_id, time.monotonic()
            # A line when something changed (a new list or a new Redis), not one per periodic reload.
            log.log(logging.INFO if changed or fresh_server else logging.DEBUG,
                    "loaded %d revoked tokens into redis %s", len(jtis), run_id)

    async def revoked(self, jtis: list[str]) -> list[bool]:
        """Whether each token is revoked; RevocationUnknownError when that cannot be known.

        Redis first; when it fails, does not answer in time or holds a list not loaded for too long,
        the in-memory copy of the durable list while it is fresh; else the error propagates (the
        caller treats an unreachable Redis as unknown too).
        """
        try:
            flags = await asyncio.wait_for(self._revoked_in_redis(jtis),
                                           self._settings.gateway_revocation_check_timeout_s)
        except (RedisError, TimeoutError, RevocationUnknownError) as exc:
            copied = self._copy_at
            if copied is None or time.monotonic() - copied > self._settings.gateway_revocations_max_age_s:
                raise
            if not self._answering_from_copy:
                log.warning("redis does not answer revocation checks (%r): answering from the durable list "
                            "read %.0f s ago", exc, time.monotonic() - copied)
                self._answering_from_copy = True
            return [jti in self._copy for jti in jtis]
        if self._answering_from_copy:
            log.warning("redis answers revocation checks again")
            self._answering_from_copy = False
        return flags

    async def _revoked_in_redis(self, jtis: list[str]) -> list[bool]:
        age = self.age_s
        if age is None or age > self._settings.gateway_revocations_max_age_s:
            raise RevocationUnknownError("the revocation list has not been loaded "
                                         + ("yet" if age is None else f"for {age:.0f} s"))
        if not jtis:
            return []
        async with self._rds.pipeline(transaction=False) as pipe:
            pipe.info("server")
            pipe.smismember(REVOKED_KEY, jtis)
            info, flags = await pipe.execute()
        run_id = str(info["run_id"])
        if run_id != self._run_id:
            log.warning("redis is a new server (%s, was %s): re-loading revocations", run_id, self._run_id)
            await self.reload(stale_run_id=self._run_id)
            flags = await self._rds.smismember(REVOKED_KEY, jtis)
        return [bool(flag) for flag in flags]
