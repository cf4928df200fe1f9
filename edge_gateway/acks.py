"""End-to-end acknowledgement of upstream frames: which of a connection's frames are safe. Pure.

A device that asks for acknowledgements (the ``X-VPP-Acks: 1`` header at the
handshake) is told, in a JSON text frame ``{"type": "delivered", "count": N}``,
that the first ``N`` frames it sent on this connection are done with: produced
to Kafka and confirmed by the broker, or refused with an error frame (a final
answer, not worth sending again). The count is cumulative and only grows, so a
device keeps the frames it sent in order and drops the first ``N``; whatever is
left when the connection ends was not confirmed and is sent again on the next
one (the platform counts a reading sent twice once, by its sequence number).

A delivery that fails leaves a hole the count never passes: the gateway closes
the connection (1011) so the device sends the rest again, instead of dropping
the reading silently.
"""

from __future__ import annotations

#: The handshake header a device sends to ask for delivery acknowledgements.
ACKS_HEADER = "X-VPP-Acks"


class DeliveryWindow:
    """One connection's upstream frames, numbered as they arrive, and how many are done in order."""

    def __init__(self) -> None:
        self._next = 0
        self._done: set[int] = set()
        #: Frames 0 .. through-1 are all done.
        self.through = 0
        #: The count last told to the device.
        self.told = 0
        #: A delivery failed: the connection must end so the device sends its frames again.
        self.failed = False

    def receive(self) -> int:
        """Number the next frame."""
        index = self._next
        self._next += 1
        return index

    def done(self, index: int, delivered: bool = True) -> None:
        """Frame ``index`` reached Kafka (or was refused for good); ``delivered=False``: it did not."""
        if not delivered:
            self.failed = True
            return
        if index == self.through and not self._done:  # the usual case: frames done in order
            self.through += 1
            return
        self._done.add(index)
        while self.through in self._done:
            self._done.discard(self.through)
            self.through += 1

    def to_tell(self) -> int | None:
        """The count to send the device now, if it grew since it was last sent."""
        if self.through <= self.told:
            return None
        self.told = self.through
        return self.through
