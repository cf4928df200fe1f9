"""Device traffic past websockets' general machinery (``edge_gateway.ws_direct``).

``send_now``: the gateway sends its delivery counts and the simulator its readings this way; a
connection that cannot take a frame now (closed, or its peer not reading so its buffer is full)
must get nothing, so the caller falls back to ``await ws.send`` (the gateway, with a timeout) or
keeps the reading for later (the simulator).

``lone_payload``: a read holding exactly one final data frame, arriving between frames, gives the
frame websockets' own parser gives; anything else gives None and goes to the parser, which then
reads on as if nothing had been taken.
"""

from __future__ import annotations

import asyncio
import socket

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.frames import Close, CloseCode, Frame, Opcode
from websockets.protocol import CLIENT, SERVER, Protocol, Side
from websockets.server import ServerProtocol

from edge_gateway.ws_direct import TakesFrames, lone_payload, send_now
from tests.edge_gateway.support import eventually


def test_frames_go_out_at_once_on_an_open_connection_and_not_once_it_is_closed() -> None:
    async def scenario() -> tuple[list[bytes | str], bool]:
        received: list[bytes | str] = []

        async def collect(ws: ServerConnection) -> None:
            async for message in ws:
                received.append(message)

        async with serve(collect, "127.0.0.1", 0) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            async with connect(f"ws://127.0.0.1:{port}") as ws:
                assert send_now(ws, "text") and send_now(ws, b"\x00binary")
                await eventually(lambda: len(received) == 2)
                await ws.close()
                late = send_now(ws, "late")
        return received, late

    received, late = asyncio.run(scenario())
    assert received == ["text", b"\x00binary"]
    assert not late


def test_a_connection_whose_peer_does_not_read_takes_nothing_once_its_buffer_is_full() -> None:
    async def scenario() -> tuple[int, bool, int]:
        release, received = asyncio.Event(), [0]

        async def read_later(ws: ServerConnection) -> None:
            await release.wait()
            async for _ in ws:
                received[0] += 1

        # Small kernel buffers on both ends: they fill in a few frames, not in tens of megabytes.
        listener = socket.create_server(("127.0.0.1", 0))
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16_384)  # accepted sockets inherit it
        chunk = b"x" * 65_536
        async with serve(read_later, sock=listener, max_queue=1):
            port = listener.getsockname()[1]
            async with connect(f"ws://127.0.0.1:{port}") as ws:
                ws.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16_384)
                written = 0
                while send_now(ws, chunk):
                    written += 1
                    assert written < 100_000, "the buffers never filled"
                paused = ws.paused
                release.set()
                await ws.send(chunk)  # waits for room, which the peer now makes by reading
                await eventually(lambda: received[0] == written + 1)
        return written, paused, received[0]

    written, paused, received = asyncio.run(scenario())
    assert written > 0 and paused
    assert received == written + 1  # every frame send_now took arrived, and nothing it refused


def lone_frame(protocol: Protocol, data: bytes) -> Frame | None:
    """:func:`lone_payload`'s answer as the frame it stands for (the parser found between frames or not)."""
    lone = lone_payload(protocol, data)
    return None if lone is None else Frame(Opcode(lone[0]), lone[1])


def _parsed(side: Side, data: bytes) -> list[Frame]:
    """What websockets' parser makes of ``data`` on a fresh open connection of ``side``."""
    protocol = Protocol(side)
    protocol.receive_data(data)
    return [event for event in protocol.events_received() if isinstance(event, Frame)]


@pytest.mark.parametrize("side", [SERVER, CLIENT])
@pytest.mark.parametrize("opcode", [Opcode.TEXT, Opcode.BINARY])
@pytest.mark.parametrize("size", [0, 1, 80, 125, 126, 300, 65_535])
def test_a_lone_frame_is_the_frame_the_parser_reads(side: Side, opcode: Opcode, size: int) -> None:
    payload = (b"telemetry," * (size // 10 + 1))[:size]
    data = Frame(opcode, payload).serialize(mask=side is SERVER)  # clients mask, servers do not
    assert [lone_frame(Protocol(side), data)] == _parsed(side, data)


def test_anything_but_one_whole_final_data_frame_is_left_to_the_parser() -> None:
    frame = Frame(Opcode.BINARY, b"reading").serialize(mask=True)
    big = Frame(Opcode.BINARY, b"x" * 70_000).serialize(mask=True)  # a 64-bit length
    unfinished = Frame(Opcode.TEXT, b"part", fin=False).serialize(mask=True)
    ping = Frame(Opcode.PING, b"").serialize(mask=True)
    unmasked = Frame(Opcode.BINARY, b"reading").serialize(mask=False)
    for data in (frame + frame, frame[:-1], big, unfinished, ping, unmasked, b"\x82"):
        assert lone_frame(Protocol(SERVER), data) is None, data
    assert lone_frame(Protocol(SERVER, max_size=6), frame) is None  # over the limit: the parser says 1009
    assert lone_frame(ServerProtocol(), frame) is None  # still in the opening handshake

    closing, close = Protocol(SERVER), Close(CloseCode.NORMAL_CLOSURE, "")
    closing.receive_data(Frame(Opcode.CLOSE, close.serialize()).serialize(mask=True))
    assert lone_frame(closing, frame) is None


def test_the_parser_reads_on_after_a_lone_frame_and_none_is_taken_from_the_middle_of_a_frame() -> None:
    first, second = (Frame(Opcode.BINARY, body).serialize(mask=True) for body in (b"first", b"second"))
    protocol = Protocol(SERVER)
    assert lone_frame(protocol, first) == Frame(Opcode.BINARY, b"first")
    protocol.receive_data(second[:2])  # the header alone: the parser now waits inside a frame
    assert lone_frame(protocol, second[2:]) is None
    protocol.receive_data(second[2:])
    assert protocol.events_received() == [Frame(Opcode.BINARY, b"second")]


def test_frames_send_now_writes_itself_read_as_the_protocol_would_have_written_them() -> None:
    """Without extensions send_now frames the message itself: masked from a client, not from a
    server, with a 7-bit, 16-bit or 64-bit length as the size asks."""
    sizes = [0, 1, 125, 126, 65_535, 65_536, 70_000]
    messages: list[bytes | str] = [*(b"\x01" * n for n in sizes), *("é" * n for n in (0, 62, 63))]

    async def scenario() -> tuple[list[bytes | str], list[bytes | str]]:
        at_server: list[bytes | str] = []

        async def echo(ws: ServerConnection) -> None:
            async for message in ws:
                at_server.append(message)
                assert send_now(ws, message)

        async with serve(echo, "127.0.0.1", 0, compression=None, max_size=None) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            async with connect(f"ws://127.0.0.1:{port}", compression=None, max_size=None) as ws:
                back = []
                for message in messages:
                    assert send_now(ws, message)
                    back.append(await ws.recv())
        return at_server, back

    at_server, back = asyncio.run(scenario())
    assert at_server == messages
    assert back == messages


class _Reads(asyncio.Transport):
    """A transport that only reads (what a connection needs for frames it receives)."""

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass


class _Taker(TakesFrames):
    """A connection that takes every message offered, or none while ``refusing``."""

    def __init__(self, protocol: Protocol) -> None:
        super().__init__(protocol)
        self.connection_made(_Reads())
        self.taken: list[tuple[bool, bytes]] = []
        self.refusing = False

    def take_message(self, text: bool, payload: bytes) -> bool:
        if self.refusing:
            return False
        self.taken.append((text, payload))
        return True


def test_messages_are_taken_in_order_however_reads_split_and_join_frames() -> None:
    """Lone frames, a frame split over reads (the parser waits inside it: the next read is not a
    lone frame), two frames in one read, and a message left to the queue (later ones follow it)."""
    frames = [Frame(Opcode.BINARY if k % 2 else Opcode.TEXT, f"reading {k}".encode()).serialize(mask=True)
              for k in range(8)]
    # Frame 1 is split after its header and mask: the parser waits inside it with nothing buffered,
    # and the rest, a payload masked with zeros that looks like a whole frame, must not be taken as one.
    inner = Frame(Opcode.BINARY, b"not a frame").serialize(mask=True)
    frames[1] = bytes((0x82, 0x80 | len(inner))) + b"\0\0\0\0" + inner
    reads = [frames[0], frames[1][:6], frames[1][6:], frames[2][:3], frames[2][3:], frames[3] + frames[4],
             frames[5]]

    async def scenario() -> tuple[list[tuple[bool, bytes]], list[bytes | str]]:
        connection = _Taker(Protocol(SERVER))
        for data in reads:
            connection.data_received(data)
        connection.refusing = True
        connection.data_received(frames[6])  # refused: to the queue ...
        connection.refusing = False
        connection.data_received(frames[7])  # ... and the next one follows it there
        # A parser thrown off by a frame taken from the middle of another never yields these.
        async with asyncio.timeout(10):
            queued = [await connection.recv(), await connection.recv()]
        return connection.taken, queued

    taken, queued = asyncio.run(scenario())
    assert taken == [(k % 2 == 0, inner if k == 1 else f"reading {k}".encode()) for k in range(6)]
    assert queued == ["reading 6", b"reading 7"]
