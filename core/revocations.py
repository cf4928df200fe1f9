"""Device-token revocations: durable in ClickHouse, served to the gateways from Redis.

A revocation is written to the history store first (table ``revoked_tokens``)
and then added to the Redis set ``gateway:revoked`` that gateways check at
every handshake and heartbeat. Redis alone is not enough: it saves to disk at
most once a minute, so a crash could undo a revocation. Gateways therefore
re-load the durable list into Redis when they start and whenever Redis is a
different server than the one they last loaded (its ``run_id`` changes on
every restart, whether it comes back empty or from an older snapshot), and
re-read it periodically (edge_gateway.revocations says how they fail closed).

ClickHouse rather than a compacted Kafka topic: the local broker keeps topics
in memory only, so a compacted topic would not survive a local restart, while
the history store persists on disk locally and in production; every part
already has its client; and the list is small and always read whole.
"""

from __future__ import annotations

from datetime import UTC, datetime

import redis

from core import history, keys
from core.config import Settings
from core.rows import Revocation

REVOKED_KEY = keys.REVOKED_TOKENS


def revoke_token(settings: Settings, jti: str, *, revoked_by: str = "cli",
                 now: datetime | None = None) -> bool:
    """Revoke ``jti``: durably, then in Redis; True if it was not revoked before.

    Raises the history store's or Redis's error if either is unreachable: a
    revocation that is not durable is not reported as done.
    """
    with history.store_for(settings) as store:
        fresh = not store.is_revoked(jti)
        store.insert_revocations([Revocation(jti, now or datetime.now(UTC), revoked_by)])
    with redis.Redis.from_url(settings.redis) as rds:
        rds.sadd(REVOKED_KEY, jti)
    return fresh


def durable_revocations(settings: Settings) -> list[str]:
    """Every revoked jti, from the history store (what a reload writes back to Redis)."""
    with history.store_for(settings) as store:
        return store.revoked_jtis()
