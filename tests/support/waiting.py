"""Waiting for a condition with a deadline: the only way tests synchronise (never a bare sleep)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
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


def all_threads_stopped(pid: int) -> bool:
    """True when every thread of ``pid`` is in state T (stopped), per /proc."""
    states = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except FileNotFoundError:  # a thread that just exited
            continue
        states.append(stat.rpartition(")")[2].split()[0])
    return bool(states) and all(state in ("T", "t") for state in states)


def stop_process(pid: int, timeout: float = EVENT_TIMEOUT) -> None:
    """SIGSTOP ``pid`` and wait until every one of its threads has stopped.

    ``kill`` returns before the stop takes effect: the group stop begins only when one thread of the
    target handles the signal, and until then (milliseconds on a loaded machine) its other threads run
    on, so a message sent right after ``kill`` may still be read and acknowledged.
    """
    os.kill(pid, signal.SIGSTOP)
    wait_for(lambda: all_threads_stopped(pid), timeout, f"process {pid} to stop after SIGSTOP")
