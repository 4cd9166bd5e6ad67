"""What the bench scripts share: their handle on child processes of themselves (one command line in,
one JSON line out), the child side's watchdog and answers, a free multicast port, logging, percentiles.

The bench scripts run parts of a measurement in child processes (receivers, joining members, servers)
started as ``python <script> <flag>``; the child reads commands from stdin and answers each with one
JSON object (``{"error": …}`` on failure).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import IO, Any

MCAST_GROUP = "228.0.0.4"  # ClusterConfig's default group, kept by ClusterConfig.local()
MCAST_PORTS = (47000, 48999)  # private ports for benchmarks and tests on this machine


def log(msg: str) -> None:
    """Progress, on stderr (stdout is for the table, or a child's answers)."""
    print(msg, file=sys.stderr, flush=True)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of already sorted values, nearest rank; nan when empty."""
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))]


def free_mcast_port(used: set[int]) -> int:
    """A multicast port in MCAST_PORTS that no cluster on this machine has bound (probed by binding the
    group without SO_REUSEADDR, which collides with a cluster's socket), not handed out before."""
    for _ in range(500):
        port = random.randint(*MCAST_PORTS)
        if port in used:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind((MCAST_GROUP, port))
            except OSError:
                continue
        used.add(port)
        return port
    raise RuntimeError(f"no free multicast port in {MCAST_PORTS[0]}-{MCAST_PORTS[1]}")


def start_watchdog(seconds: float) -> None:
    """In a child: exit (status 3) after ``seconds`` whatever happens, so none outlives a lost parent."""

    def watchdog() -> None:
        time.sleep(seconds)
        os._exit(3)

    threading.Thread(target=watchdog, daemon=True).start()


def json_replier(out: IO[str]) -> Callable[[dict[str, Any]], None]:
    """In a child: a function that writes one JSON answer line to ``out`` and flushes it."""

    def reply(obj: dict[str, Any]) -> None:
        out.write(json.dumps(obj) + "\n")
        out.flush()

    return reply


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
