"""Records a tribes Cluster's listener callbacks so that tests can wait on them.

Shared by tests/conftest.py (``LocalNode``) and tests/interop/conftest.py (``TribesNode``); imported as
``support.recorder`` (tests/conftest.py puts the tests directory on ``sys.path``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

Event = tuple[float, str, Any, bytes | None]  # (time.monotonic() when recorded, kind, member, data)
Predicate = Callable[[Any, bytes | None], bool]


class Recorder:
    """Collects a Cluster's listener callbacks (they run on its dispatcher thread).

    Event kinds: ``"msg"`` (data: the payload), ``"added"`` and ``"gone"`` (data: None). Every wait is
    bounded, by ``event_timeout`` s unless given; ``describe_member`` renders members in its diagnostics.
    """

    def __init__(self, event_timeout: float = 10.0, describe_member: Callable[[Any], str] = str) -> None:
        self.event_timeout = event_timeout
        self.describe_member = describe_member
        self._cond = threading.Condition()
        self.events: list[Event] = []

    def _add(self, kind: str, member: Any, data: bytes | None) -> None:
        with self._cond:
            self.events.append((time.monotonic(), kind, member, data))
            self._cond.notify_all()

    def on_message(self, member: Any, data: bytes) -> None:
        self._add("msg", member, bytes(data))

    def on_added(self, member: Any) -> None:
        self._add("added", member, None)

    def on_gone(self, member: Any) -> None:
        self._add("gone", member, None)

    def mark(self) -> int:
        with self._cond:
            return len(self.events)

    def snapshot(self, since: int = 0) -> list[Event]:
        with self._cond:
            return list(self.events[since:])

    def messages(self, since: int = 0) -> list[bytes]:
        with self._cond:
            return [d for _, k, _, d in self.events[since:] if k == "msg" and d is not None]

    def _first(self, kind: str, predicate: Predicate, since: int) -> tuple[float, Any, bytes | None] | None:
        # Caller holds self._cond.
        for ts, k, member, data in self.events[since:]:
            if k == kind and predicate(member, data):
                return ts, member, data
        return None

    def find(self, kind: str, predicate: Predicate, since: int = 0) -> tuple[float, Any, bytes | None] | None:
        """The first ``kind`` event at index >= since matching ``predicate`` so far, or None."""
        with self._cond:
            return self._first(kind, predicate, since)

    def wait(
        self,
        kind: str,
        predicate: Predicate = lambda m, d: True,
        timeout: float | None = None,
        since: int = 0,
    ) -> tuple[float, Any, bytes | None]:
        """Wait for the first ``kind`` event at index >= since matching ``predicate``."""
        if timeout is None:
            timeout = self.event_timeout
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = self._first(kind, predicate, since)
                if found is not None:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            summary = [
                (k, self.describe_member(m), None if d is None else len(d))
                for _, k, m, d in self.events[-30:]
            ]
        raise AssertionError(f"no matching {kind!r} event within {timeout:.2f} s; last events: {summary}")

    def wait_messages(self, count: int, timeout: float | None = None, since: int = 0) -> list[bytes]:
        """Wait until at least ``count`` messages arrived after ``since``; return them."""
        if timeout is None:
            timeout = self.event_timeout
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                got = [d for _, k, _, d in self.events[since:] if k == "msg" and d is not None]
                if len(got) >= count:
                    return got
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
        raise AssertionError(f"only {len(got)} of {count} messages within {timeout:.2f} s")
