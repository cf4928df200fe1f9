"""The connections one API process holds, opened at startup and closed at shutdown.

Live reads are the hot path, so they use an asyncio Redis client on the event
loop (one HGETALL per request, no thread hop). ClickHouse, the registry and
Kafka have synchronous clients; the routes that use them are plain ``def``
functions, which FastAPI runs on its thread pool. A clickhouse-connect client
refuses two queries at once in one session, so history queries take a lock
(the local history server runs one query at a time anyway).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import redis
import redis.asyncio as aioredis
from clickhouse_connect.driver.client import Client
from confluent_kafka import Producer

from api.stream_hub import StreamHub
from assets.generator import Fleet
from assets.loader import restore_fleet
from assets.registry import Registry
from assets.service import AssetService
from core import history, kafka
from core.config import Settings
from schemas import packaged_codec


class FleetCache:
    """The asset registry, re-read from ClickHouse at most every ``VPP_API_REGISTRY_REFRESH_S``.

    The registry answers navigation at past times and validates asset changes;
    changes made through this process apply to the cached registry at once,
    changes made elsewhere show up at the next refresh.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._fleet: Fleet | None = None
        self._loaded_at = 0.0
        self._lock = threading.RLock()

    @property
    def current(self) -> Fleet | None:
        """The fleet as last loaded, without waiting or refreshing (None before the first load)."""
        return self._fleet

    @contextmanager
    def use(self) -> Iterator[Fleet]:
        """The fleet, held exclusively (asset changes mutate it in place)."""
        with self._lock:
            stale = time.monotonic() - self._loaded_at > self.settings.api_registry_refresh_s
            if self._fleet is None or stale:
                self._fleet = restore_fleet(self.settings) or Fleet({}, Registry())
                self._loaded_at = time.monotonic()
            yield self._fleet


class Resources:
    """Clients shared by every request of one process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.aredis = aioredis.Redis.from_url(settings.redis, decode_responses=True)
        self.redis = redis.Redis.from_url(settings.redis, decode_responses=True)
        self.fleet = FleetCache(settings)
        self.hub = StreamHub(settings)
        self._history: Client | None = None
        self._history_lock = threading.Lock()
        self._producer: Producer | None = None

    @contextmanager
    def history(self) -> Iterator[history.HistoryStore]:
        """The history store, one query at a time."""
        with self._history_lock:
            if self._history is None:
                self._history = history.connect(self.settings)
            yield history.HistoryStore(self._history, self.settings.clickhouse_database)

    @property
    def producer(self) -> Producer:
        """One Kafka producer for dispatch requests and asset changes."""
        if self._producer is None:
            self._producer = Producer(kafka.client_config(self.settings, **{"linger.ms": 5}))
        return self._producer

    @contextmanager
    def assets(self) -> Iterator[AssetService]:
        """The asset service over the cached registry, held exclusively for one change."""
        with self.fleet.use() as fleet, self.history() as store:
            yield AssetService(fleet, store.client, self.redis, self.producer, packaged_codec(),
                               self.settings.clickhouse_database)

    async def hash(self, key: str) -> dict[str, str]:
        """A Redis hash (empty if absent), on the event loop."""
        fields = await self.aredis.hgetall(key)
        return {str(k): str(v) for k, v in fields.items()}

    def members(self, key: str) -> list[str]:
        """A Redis set, sorted."""
        return sorted(str(m) for m in self.redis.smembers(key))

    async def close(self) -> None:
        """Release every connection (the stream hub's consumer thread too)."""
        self.hub.stop()
        await self.aredis.aclose()
        self.redis.close()
        if self._history is not None:
            self._history.close()
        if self._producer is not None:
            self._producer.flush(5)
