"""Wait for a condition with a deadline: the one polling loop every process and test uses."""

from __future__ import annotations

import time
from collections.abc import Callable


class GaveUpError(RuntimeError):
    """A condition that did not hold within its time budget (or whose wait was abandoned)."""


def wait_until(condition: Callable[[], bool], timeout_s: float, interval_s: float = 0.05,
               abandon: Callable[[], str | None] | None = None) -> bool:
    """Poll ``condition`` until it holds (True) or ``timeout_s`` passes (False).

    ``abandon`` is checked between polls: a message from it ends the wait at
    once with :class:`GaveUpError` carrying it (a process that died while we
    waited for it to answer, say), instead of waiting out the budget.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        if condition():
            return True
        if abandon is not None and (reason := abandon()) is not None:
            raise GaveUpError(reason)
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)
