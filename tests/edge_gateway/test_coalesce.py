"""Concurrent asks coalesce into one batch; errors reach every caller of the batch."""

from __future__ import annotations

import asyncio

import pytest

from edge_gateway.coalesce import Coalescer


def test_concurrent_asks_are_one_batch_and_each_gets_its_answer() -> None:
    batches: list[list[int]] = []

    async def square(keys: list[int]) -> list[int]:
        batches.append(keys)
        return [k * k for k in keys]

    async def scenario() -> list[int]:
        ask = Coalescer(square)
        first = await asyncio.gather(*(ask(k) for k in range(50)))
        return [*first, await ask(9)]

    assert asyncio.run(scenario()) == [k * k for k in range(50)] + [81]
    assert batches == [list(range(50)), [9]]


def test_a_failed_batch_fails_each_caller() -> None:
    async def broken(keys: list[str]) -> list[bool]:
        raise ConnectionError("redis is down")

    async def scenario() -> list[BaseException | bool]:
        ask: Coalescer[str, bool] = Coalescer(broken)
        return list(await asyncio.gather(ask("a"), ask("b"), return_exceptions=True))

    results = asyncio.run(scenario())
    assert all(isinstance(r, ConnectionError) for r in results)
    with pytest.raises(ConnectionError):
        asyncio.run(Coalescer(broken)("c"))
