"""Waiting for a condition with a deadline: the only way tests synchronise (never a bare sleep)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

#: How long a test waits for an event that should come promptly on loopback.
EVENT_TIMEOUT = 10.0

T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T],
    timeout: float = EVENT_TIMEOUT,
    message: str | Callable[[], str] = "condition",
    interval: float = 0.01,
) -> T:
    """Poll ``predicate`` every ``interval`` s until it returns something truthy, and return that.

    At the deadline, raise AssertionError with ``message`` (a string, or a callable that builds one
    then, for diagnostics such as the current member list).
    """
    deadline = time.monotonic() + timeout
    max_polls = int(timeout / interval) + 10  # bounded in count as well as in time
    for _ in range(max_polls):
        result = predicate()
        if result:
            return result
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        time.sleep(min(interval, remaining))
    result = predicate()
    if result:
        return result
    text = message() if callable(message) else message
    raise AssertionError(f"timed out after {timeout:.2f} s waiting for: {text}")
