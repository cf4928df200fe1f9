"""What a stateful step of a dataflow hands on: a result tagged with where it goes next."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Emitted:
    """One result of a stateful step, tagged with its destination.

    ``kind`` names the next step or sink ("kafka", "redis", "history", or a keyed step such as
    "nodes"); ``key`` is what that step or sink is keyed by; ``value`` is the item itself.
    """

    kind: str
    key: str
    value: Any
