"""Many concurrent single-key Redis asks made into one batched round trip.

A reconnect storm brings hundreds of handshakes at once, each needing a
revocation check, and each connection a route claim. Asked one by one they
queue for the connection pool and for Redis, each with its own round trip (and
the revocation check's ``INFO``), and a handshake that waits for a pooled
connection holds its place in the handshake budget all the while. Coalesced,
everything that arrives within a few milliseconds goes in one call, so the cost
per handshake falls as the storm grows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Coalescer(Generic[K, V]):
    """``await coalescer(key)`` runs ``batch([keys...])`` once for all keys asked within ``window_s``.

    An exception from ``batch`` is raised to every caller of that batch; a caller that gave up
    (cancelled) is skipped.
    """

    def __init__(self, batch: Callable[[list[K]], Awaitable[list[V]]], window_s: float = 0.005,
                 max_keys: int = 1000) -> None:
        self._batch = batch
        self._window_s = window_s
        self._max_keys = max_keys
        self._pending: list[tuple[K, asyncio.Future[V]]] = []
        self._flushing: asyncio.Task[None] | None = None

    async def __call__(self, key: K) -> V:
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._pending.append((key, future))
        if self._flushing is None:
            self._flushing = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        await asyncio.sleep(self._window_s)
        while self._pending:
            batch, self._pending = self._pending[:self._max_keys], self._pending[self._max_keys:]
            try:
                values = await self._batch([key for key, _ in batch])
            except Exception as exc:  # handed to every caller, who knows what to catch
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
            else:
                for (_, future), value in zip(batch, values, strict=True):
                    if not future.done():
                        future.set_result(value)
        self._flushing = None
