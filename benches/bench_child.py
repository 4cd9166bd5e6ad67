"""A bench script's handle on a child process of itself: one command line in, one JSON line out.

The bench scripts run parts of a measurement in child processes (receivers, joining members) started
as ``python <script> <flag>``; the child reads commands from stdin and answers each with one JSON
object (``{"error": …}`` on failure).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
from typing import Any


class JsonChild:
    """A child process of the bench script ``script`` started with ``flag``; ``label`` names it in errors."""

    def __init__(self, script: str, flag: str, label: str, timeout: float, close_timeout: float) -> None:
        self.label = label
        self.timeout = timeout
        self.close_timeout = close_timeout
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(script), flag],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put("")

    def send(self, command: str) -> None:
        """Write one command line."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def answer(self, timeout: float | None = None) -> dict[str, Any]:
        """The next JSON answer; RuntimeError on silence, exit or an error answer."""
        wait = self.timeout if timeout is None else timeout
        try:
            line = self.lines.get(timeout=max(0.1, wait))
        except queue.Empty:
            raise RuntimeError(f"{self.label}: no answer within {wait:g} s") from None
        if not line:
            raise RuntimeError(f"{self.label} exited (code {self.proc.poll()})")
        obj: dict[str, Any] = json.loads(line)
        if "error" in obj:
            raise RuntimeError(f"{self.label}: {obj['error']}")
        return obj

    def call(self, command: str, timeout: float | None = None) -> dict[str, Any]:
        """Send a command and return its answer."""
        self.send(command)
        return self.answer(timeout)

    def close(self) -> None:
        """Ask the child to quit; kill it if it does not."""
        with contextlib.suppress(OSError):
            self.send("quit")
        try:
            self.proc.wait(timeout=self.close_timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
