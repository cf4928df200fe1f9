"""Which gateway instance holds which site's connection, and each instance's inbox (Redis).

``gateway:route:{site}`` names the instance holding the site's connection; it
lives ``gateway_route_ttl_s`` unless that instance's heartbeat refreshes it, so
a crashed instance's routes vanish by themselves. Refreshing and releasing
compare the owner first (in Lua, atomically): after a device reconnects to
another instance, the old instance can neither win the route back nor delete
it, and learns from the refresh that it lost the site.

``gateway:inbox:{instance}`` is a capped Redis stream of raw SiteCommand
records another instance forwarded because this one holds the site.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, cast

from redis.asyncio import Redis

from core import keys

INBOX_MAXLEN = 10_000

#: For each key: refresh it if ours, claim it if nobody's, else report it lost (1).
_REFRESH = """
local lost = {}
for i, key in ipairs(KEYS) do
  local owner = redis.call('GET', key)
  if owner == ARGV[1] then
    redis.call('PEXPIRE', key, ARGV[2])
    lost[i] = 0
  elseif not owner then
    redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
    lost[i] = 0
  else
    lost[i] = 1
  end
end
return lost
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def route_key(site_id: str) -> str:
    """The Redis key naming the instance that holds ``site_id``."""
    return keys.route(site_id)


def inbox_key(instance_id: str) -> str:
    """The Redis stream other instances forward commands for ``instance_id`` to."""
    return keys.inbox(instance_id)


class Routes:
    """Route entries and inboxes of one gateway instance."""

    def __init__(self, rds: Redis, instance_id: str, ttl_s: float) -> None:
        self._rds = rds
        self.instance_id = instance_id
        self._ttl_ms = int(ttl_s * 1000)
        self._refresh = rds.register_script(_REFRESH)
        self._release = rds.register_script(_RELEASE)

    async def claim(self, site_id: str) -> None:
        """This instance now holds ``site_id`` (the newest connection wins, wherever it was before)."""
        await self._rds.set(route_key(site_id), self.instance_id, px=self._ttl_ms)

    async def release(self, site_id: str) -> None:
        """Drop the route if it is still ours."""
        await self._release(keys=[route_key(site_id)], args=[self.instance_id])

    async def refresh(self, site_ids: Sequence[str], batch: int = 1000) -> list[str]:
        """Extend our routes; return the sites whose route another instance has taken since."""
        lost: list[str] = []
        for start in range(0, len(site_ids), batch):
            chunk = site_ids[start:start + batch]
            keys = [route_key(s) for s in chunk]
            flags = await self._refresh(keys=keys, args=[self.instance_id, self._ttl_ms])
            lost.extend(site for site, flag in zip(chunk, cast(list[int], flags), strict=True) if flag)
        await self._rds.pexpire(inbox_key(self.instance_id), self._ttl_ms * 4)
        return lost

    async def owners(self, site_ids: Sequence[str]) -> dict[str, str]:
        """The instance holding each site that has a route."""
        if not site_ids:
            return {}
        values = await self._rds.mget([route_key(s) for s in site_ids])
        pairs = zip(site_ids, values, strict=True)
        return {site: cast(bytes, value).decode() for site, value in pairs if value is not None}

    async def forward(self, forwards: Iterable[tuple[str, bytes]]) -> None:
        """Append each (instance, record) to that instance's inbox."""
        async with self._rds.pipeline(transaction=False) as pipe:
            for instance, record in forwards:
                pipe.xadd(inbox_key(instance), {b"r": record}, maxlen=INBOX_MAXLEN, approximate=True)
            await pipe.execute()

    async def inbox_position(self) -> bytes:
        """The id of the newest record already in our inbox: reading starts after it."""
        newest = await self._rds.xrevrange(inbox_key(self.instance_id), count=1)
        return cast(bytes, newest[0][0]) if newest else b"0-0"

    async def read_inbox(self, last_id: bytes, block_ms: int) -> tuple[bytes, list[bytes]]:
        """Records forwarded to us after ``last_id``, waiting up to ``block_ms``; and the new position."""
        streams: dict[Any, Any] = {inbox_key(self.instance_id): last_id}
        answer: Any = await self._rds.xread(streams, count=1000, block=block_ms)
        records: list[bytes] = []
        for _stream, entries in answer or []:
            for entry_id, fields in entries:
                last_id = entry_id
                records.append(fields[b"r"])
        return last_id, records
