"""Device traffic past websockets' general machinery: a frame written at once, a lone frame read at once.

Each device sends about one small frame a second on a connection of its own, and the gateway
answers each with a small delivery count; with thousands of devices per process the cost per
frame of ``websockets``' general paths, not the frames' own work, is what a process spends.

* Writing: ``Connection.send`` is a coroutine that enters an async context manager, frames the
  message, writes it and awaits the drain, which on an open connection whose write buffer has
  room does not wait. :func:`send_now` does the same write directly and says when it cannot
  (the connection closing, or paused because its peer does not read), so the caller falls
  back to ``await ws.send(...)`` with its own timeout, or keeps the frame for later. Only for
  connections whose owner never sends a fragmented message (neither the gateway nor the
  simulator does), which a frame written here could split.
* Reading: the protocol's parser (a chain of generators, an enum, a dataclass and a list of
  events per frame) is general: fragments, control frames, extensions, frames split across
  reads. Nearly every read from a device's socket holds exactly one complete, final text or
  binary frame, arriving while the parser waits between frames; :func:`lone_payload` reads that
  case and leaves everything else, and every doubt, to the parser.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from types import GeneratorType
from typing import Any

from websockets.asyncio.connection import Connection
from websockets.frames import Frame, Opcode
from websockets.protocol import CLIENT, SERVER, Event, Protocol, State
from websockets.streams import StreamReader

try:
    from websockets.speedups import apply_mask
except ImportError:  # websockets without its C extension
    from websockets.utils import apply_mask

#: Where the parser waits between frames: ``Protocol.parse`` inside ``StreamReader.at_eof``.
_PARSE = Protocol.parse.__code__
_AT_EOF = StreamReader.at_eof.__code__
_TEXT, _BINARY = Opcode.TEXT.value, Opcode.BINARY.value
#: A frame's first two bytes and a 16-bit or a 64-bit payload length (RFC 6455, 5.2).
_HEAD_16, _HEAD_64 = struct.Struct(">BBH"), struct.Struct(">BBQ")


def send_now(ws: Connection, frame: bytes | str) -> bool:
    """Frame ``frame`` (text if ``str``, binary if ``bytes``) and write it to the socket now.

    False, with nothing written, when the connection cannot take it without waiting: not open,
    its transport closing, or writing paused by flow control (the peer is slow to read). A write
    the transport refuses aborts the connection (as ``send`` does) and is False too.

    Without extensions (the gateway and the simulator use none) the frame is the one the protocol
    would write (final, masked with a random key on a client's side), built here and written in one
    call: the protocol's own path (a ``Frame``, its checks and serialisation, a buffer emptied by
    ``send_data``) was most of a send's cost. The protocol keeps no state of a final data frame it
    sends, so it is as if it had sent it. With extensions the protocol frames it.
    """
    protocol = ws.protocol
    if protocol.state is not State.OPEN or ws.paused or ws.transport.is_closing():
        return False
    if protocol.extensions or protocol.writes:  # compression, say: the protocol frames it
        if isinstance(frame, str):
            protocol.send_text(frame.encode())
        else:
            protocol.send_binary(frame)
        return _write(ws, b"".join(protocol.data_to_send()))
    if isinstance(frame, str):
        head, payload = 0x81, frame.encode()
    else:
        head, payload = 0x82, frame
    length = len(payload)
    masked = protocol.side is CLIENT
    mask_bit = 0x80 if masked else 0
    if length < 126:
        header = bytes((head, mask_bit | length))
    elif length < 65_536:
        header = _HEAD_16.pack(head, mask_bit | 126, length)
    else:
        header = _HEAD_64.pack(head, mask_bit | 127, length)
    if masked:
        mask = _MASKS.next()
        data = b"".join((header, mask, apply_mask(payload, mask)))
    else:
        data = header + payload
    return _write(ws, data)


class _Masks:
    """Masking keys (RFC 6455, 5.3: fresh and unpredictable per frame) drawn from the OS's random
    source a thousand at a time: a system call per frame, as ``secrets.token_bytes(4)`` makes,
    was a tenth of a frame's own cost in the simulator."""

    __slots__ = ("_at", "_pool")
    POOL = 4096

    def __init__(self) -> None:
        self._pool, self._at = b"", self.POOL

    def next(self) -> bytes:
        at = self._at
        if at >= self.POOL:
            self._pool, at = os.urandom(self.POOL), 0
        self._at = at + 4
        return self._pool[at:at + 4]


_MASKS = _Masks()


def _write(ws: Connection, data: bytes) -> bool:
    try:
        ws.transport.write(data)
    except Exception as exc:  # as Connection.send_context: any error writing ends the connection
        ws.set_connection_exc(exc)
        ws.transport.abort()
        return False
    return True


def lone_payload(protocol: Protocol, data: bytes,
                 between_frames: Callable[[], bool] | None = None) -> tuple[int, bytes] | None:
    """The opcode value and payload of the frame ``data`` holds if it is exactly one complete, final,
    unextended text or binary frame within the size limit, masked as the protocol's side expects,
    and the open protocol waits between frames with nothing buffered; else None: feed ``data`` to
    the protocol as usual.

    ``between_frames``: the caller's own (cached) answer to whether the parser waits between
    frames (:class:`TakesFrames`); None: walk the parser's generators to find out.

    The payload is the frame the parser would have made; taking it leaves the protocol as the
    parser would (a final data frame changes none of its state). Text is not checked for UTF-8
    here: like the parser, that is left to whoever reads the message.
    """
    if (protocol.state is not State.OPEN or protocol.current_size is not None or protocol.extensions
            or protocol.debug or protocol.reader.buffer):
        return None
    if not (_between_frames(protocol.parser) if between_frames is None else between_frames()):
        return None
    size = len(data)
    if size < 2:  # the two header bytes
        return None
    head, second = data[0], data[1]
    if head & 0xF0 != 0x80:  # FIN set, no RSV bit
        return None
    opcode = head & 0x0F
    if opcode not in (_TEXT, _BINARY):
        return None
    masked = bool(second & 0x80)
    if masked != (protocol.side is SERVER):
        return None  # the parser refuses it (a protocol error), not this
    length, start = second & 0x7F, 2
    if length == 126:  # a 16-bit length follows
        length, start = int.from_bytes(data[2:4], "big"), 4
    elif length == 127:  # a 64-bit length: never a device's frame
        return None
    if masked:
        start += 4
    if size != start + length:
        return None
    limit = protocol.max_message_size
    if limit is not None and length > limit:
        return None  # the parser closes with 1009
    limit = protocol.max_fragment_size
    if limit is not None and length > limit:
        return None
    return opcode, (apply_mask(data[start:], data[start - 4:start]) if masked else data[start:])


def _between_frames(parser: object) -> bool:
    """Whether the protocol's parser waits for the first byte of a frame (not in the middle of one,
    not in the handshake, not discarding after a close)."""
    outer: GeneratorType[Any, Any, Any] | None = None
    inner = parser
    while isinstance(inner, GeneratorType) and inner.gi_yieldfrom is not None:
        outer, inner = inner, inner.gi_yieldfrom
    return (isinstance(inner, GeneratorType) and inner.gi_code is _AT_EOF
            and outer is not None and outer.gi_code is _PARSE)


class TakesFrames(Connection):
    """A connection that offers each complete data message to :meth:`take_message` as it arrives.

    Mixed in before websockets' server or client connection class. A read that is one lone frame
    (:func:`lone_payload`) skips the protocol's parser; a message taken goes nowhere else, rather
    than through the message queue to the connection's task (a future, a task step, a chain of
    ``recv`` coroutines). Messages are offered only while nothing waits in that queue, so one left
    to the queue keeps every message after it behind it, and the task reads them in order.

    Whether the parser waits between frames is looked up by walking its generators once per wait:
    the wait it found is remembered, and while the parser is still in that same wait (lone frames
    leave it there) the answer stands.
    """

    #: The parser's wait for a frame's first byte, last found by walking its generators.
    _waiting: object = None

    def take_message(self, text: bool, payload: bytes) -> bool:
        """Take a complete, final text (UTF-8 not checked yet) or binary message now; False leaves
        it to the message queue."""
        return False

    def data_received(self, data: bytes) -> None:
        lone = lone_payload(self.protocol, data, self._between_frames)
        if lone is None:
            super().data_received(data)
            return
        opcode, payload = lone
        if not len(self.recv_messages.frames) and self.take_message(opcode == _TEXT, payload):
            return
        super().process_event(Frame(Opcode(opcode), payload))

    def process_event(self, event: Event) -> None:
        if (isinstance(event, Frame) and event.fin
                and (event.opcode is Opcode.BINARY or event.opcode is Opcode.TEXT)
                and not len(self.recv_messages.frames)
                and self.take_message(event.opcode is Opcode.TEXT, bytes(event.data))):
            return
        super().process_event(event)

    def _between_frames(self) -> bool:
        parser = self.protocol.parser
        waiting = getattr(parser, "gi_yieldfrom", None)
        if waiting is not None and waiting is self._waiting:
            return True
        if _between_frames(parser):
            self._waiting = waiting
            return True
        return False
