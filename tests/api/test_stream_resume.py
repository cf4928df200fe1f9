"""SSE events carry ids; a stream reconnecting with Last-Event-ID gets what it missed, or a gap event."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from api.routers.stream import RETRY_MS, _events, frame
from api.stream_hub import StreamHub
from core.config import Settings


def _hub() -> StreamHub:
    hub = StreamHub(Settings())
    hub._thread = threading.Thread(target=lambda: None)  # no Kafka reader: events are published by hand
    return hub


def _node(node_id: str, n: int) -> dict[str, Any]:
    return {"type": "node", "data": {"node_id": node_id, "n": n}}


def _drain(queue: asyncio.Queue[dict[str, Any]]) -> list[dict[str, Any]]:
    events = []
    while not queue.empty():
        events.append(queue.get_nowait())
    return events


def test_a_reconnect_with_last_event_id_resumes_after_it() -> None:
    async def scenario() -> None:
        hub = _hub()
        first = hub.subscribe(frozenset({"a"}), frozenset())
        for n in range(5):
            hub._publish(_node("a" if n % 2 == 0 else "b", n))
        await asyncio.sleep(0)
        seen = _drain(first.queue)
        assert [e["data"]["n"] for e in seen] == [0, 2, 4]
        assert len({e["id"] for e in seen}) == 3 and all(e["id"].startswith(hub.instance) for e in seen)
        hub.unsubscribe(first)
        hub._publish(_node("a", 5))  # missed while disconnected
        again = hub.subscribe(frozenset({"a"}), frozenset(), last_event_id=seen[0]["id"])
        assert [e["data"]["n"] for e in _drain(again.queue)] == [2, 4, 5], "resumed after the last seen"
        stranger = hub.subscribe(None, None, last_event_id="another-hub-7")
        (gap,) = _drain(stranger.queue)
        assert gap["type"] == "gap" and "another-hub-7" in gap["data"]["detail"]
        expected = f"id: {seen[1]['id']}\nevent: node\ndata: " + '{"node_id": "a", "n": 2}\n\n'
        assert frame(seen[1]) == expected

    asyncio.run(scenario())


def test_the_stream_sets_retry_first() -> None:
    class Connected:
        async def is_disconnected(self) -> bool:
            return True

    async def first_chunk() -> str:
        async for chunk in _events(Connected(), _hub(), None, None):  # type: ignore[arg-type]
            return chunk
        raise AssertionError("the stream sent nothing")

    assert asyncio.run(first_chunk()).startswith(f"retry: {RETRY_MS}\n")
