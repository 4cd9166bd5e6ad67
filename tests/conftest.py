"""Shared fixtures for the channel tests: waiting helpers, private ports, member processes, in-process
clusters, and the Hypothesis profiles.

Everything stays on this machine: multicast on interface 127.0.0.1 with TTL 0 (``ClusterConfig.local``),
TCP on 127.0.0.1. Each test gets its own multicast port, so tests never see each other's members, and
every process a test starts is stopped (then killed if needed) at teardown. Every wait has a deadline.

(tests/interop/conftest.py has its own ``mcast_port`` for the Java tests; it picks from 45000-46999 and
this one from 47000-48999, so the two pickers never hand out the same port in one session.)
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings

LOOPBACK = "127.0.0.1"
#: ClusterConfig's default multicast group (the local preset keeps it).
MCAST_ADDRESS = "228.0.0.4"
MEMBER_PROC = Path(__file__).parent / "support" / "member_proc.py"

#: Default deadline for an event (a member seen, a message delivered) on a loaded 2-core machine.
EVENT_TIMEOUT = 10.0
#: A member process must print READY within this (interpreter start + import + cluster start).
READY_TIMEOUT = 20.0
#: Hard limit on a member process's life (member_proc.py --max-seconds).
PROCESS_MAX_SECONDS = 120

# --------------------------------------------------------------------------------------------------
# Hypothesis
# --------------------------------------------------------------------------------------------------

_HYPOTHESIS_COMMON: dict[str, Any] = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    "database": None,
}
settings.register_profile("ci", max_examples=10, **_HYPOTHESIS_COMMON)
settings.register_profile("dev", max_examples=50, **_HYPOTHESIS_COMMON)
settings.register_profile("long", max_examples=500, **_HYPOTHESIS_COMMON)
settings.load_profile(os.environ.get("TRIBES_HYPOTHESIS_PROFILE", "ci"))

# --------------------------------------------------------------------------------------------------
# Waiting
# --------------------------------------------------------------------------------------------------

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


@pytest.fixture(name="wait_for")
def _wait_for_fixture() -> Callable[..., Any]:
    """The :func:`wait_for` helper, as a fixture (test modules cannot import conftest portably)."""
    return wait_for


# --------------------------------------------------------------------------------------------------
# Ports
# --------------------------------------------------------------------------------------------------

_used_mcast_ports: set[int] = set()
_used_tcp_ports: set[int] = set()
_rng = random.Random()


def _udp_port_free(port: int) -> bool:
    # No SO_REUSEADDR: a wildcard bind collides with any socket on this port, including a multicast
    # socket bound to (group, port), so a port another cluster on this machine uses is rejected.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def _tcp_port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def free_mcast_port(lo: int = 47000, hi: int = 48999) -> int:
    """A multicast port in [lo, hi] not handed out before in this session and not bound now."""
    for _ in range(500):
        port = _rng.randint(lo, hi)
        if port not in _used_mcast_ports and _udp_port_free(port):
            _used_mcast_ports.add(port)
            return port
    raise RuntimeError(f"no free multicast port in {lo}-{hi}")


def free_tcp_port(lo: int = 20000, hi: int = 29999) -> int:
    """A loopback TCP port in [lo, hi] not handed out before in this session and free now.

    The range lies below Linux's ephemeral ports (32768-60999), so an outgoing connection cannot take
    the port between this check and the bind.
    """
    for _ in range(500):
        port = _rng.randint(lo, hi)
        if port not in _used_tcp_ports and _tcp_port_free(port):
            _used_tcp_ports.add(port)
            return port
    raise RuntimeError(f"no free TCP port in {lo}-{hi}")


@pytest.fixture
def mcast_port() -> int:
    """A multicast port private to this test."""
    return free_mcast_port()


@pytest.fixture(name="free_tcp_port")
def _free_tcp_port_fixture() -> Callable[[], int]:
    """:func:`free_tcp_port`, as a fixture: call it for each fixed receiver port a test needs."""
    return free_tcp_port


# --------------------------------------------------------------------------------------------------
# Member processes (tests/support/member_proc.py)
# --------------------------------------------------------------------------------------------------


def parse_member(line: str) -> tuple[str, bytes]:
    """``"<WORD> <host>:<port> <uid hex>"`` → (``"host:port"``, unique id)."""
    parts = line.split(" ")
    return parts[1], bytes.fromhex(parts[2])


class MemberProcess:
    """A running member_proc.py: commands to stdin, stdout lines collected by a reader thread."""

    def __init__(self, mcast_port: int, name: str, args: list[str]) -> None:
        self.name = name
        self.mcast_port = mcast_port
        self._cond = threading.Condition()
        self._lines: list[tuple[float, str]] = []  # (time.monotonic() when read, line)
        self._stderr: list[str] = []
        self._eof = False
        cmd = [
            sys.executable,
            str(MEMBER_PROC),
            "--mcast-port",
            str(mcast_port),
            "--name",
            name,
            "--max-seconds",
            str(PROCESS_MAX_SECONDS),
            *args,
        ]
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
        )
        self.pid = self.proc.pid
        self.host = ""
        self.port = 0
        self.unique_id = b""
        self._out = threading.Thread(target=self._read_stdout, name=f"{name}-stdout", daemon=True)
        self._err = threading.Thread(target=self._read_stderr, name=f"{name}-stderr", daemon=True)
        self._out.start()
        self._err.start()

    # -- reader threads (never raise) --

    def _read_stdout(self) -> None:
        stream = self.proc.stdout
        assert stream is not None
        try:
            for raw in stream:
                now = time.monotonic()
                with self._cond:
                    self._lines.append((now, raw.rstrip("\r\n")))
                    self._cond.notify_all()
        except (OSError, ValueError):
            pass
        finally:
            with self._cond:
                self._eof = True
                self._cond.notify_all()

    def _read_stderr(self) -> None:
        stream = self.proc.stderr
        assert stream is not None
        try:
            for raw in stream:
                with self._cond:
                    self._stderr.append(raw.rstrip("\r\n"))
                    if len(self._stderr) > 2000:
                        del self._stderr[:1000]
        except (OSError, ValueError):
            pass

    # -- identity --

    @property
    def address(self) -> str:
        """``host:port`` of its receiver (known after READY)."""
        return f"{self.host}:{self.port}"

    def is_member(self, member: Any) -> bool:
        """True when ``member`` (a tribes.Member) is this process."""
        return member.host == self.host and member.port == self.port and member.unique_id == self.unique_id

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        line = self.wait_line("READY", timeout=timeout)
        address, self.unique_id = parse_member(line)
        host, _, port = address.rpartition(":")
        self.host, self.port = host, int(port)

    # -- output --

    def lines(self, since: int = 0) -> list[str]:
        with self._cond:
            return [line for _, line in self._lines[since:]]

    def mark(self) -> int:
        """Index to pass as ``since`` to look only at lines printed from now on."""
        with self._cond:
            return len(self._lines)

    def stderr_text(self) -> str:
        with self._cond:
            return "\n".join(self._stderr)

    def dump(self, tail: int = 40) -> str:
        with self._cond:
            out = [line if len(line) < 300 else line[:300] + "…" for _, line in self._lines[-tail:]]
            err = list(self._stderr[-tail:])
        return (
            f"--- {self.name} pid={self.pid} {self.address} returncode={self.proc.poll()}\n"
            "--- stdout (tail):\n" + "\n".join(out) + "\n--- stderr (tail):\n" + "\n".join(err)
        )

    @staticmethod
    def _matches(line: str, prefix: str, predicate: Callable[[str], bool] | None) -> bool:
        if not (line == prefix or line.startswith(prefix + " ")):
            return False
        return predicate is None or predicate(line)

    def wait_line_timed(
        self,
        prefix: str,
        predicate: Callable[[str], bool] | None = None,
        timeout: float = EVENT_TIMEOUT,
        since: int = 0,
    ) -> tuple[float, str]:
        """Wait for the first line at index >= ``since`` that is ``prefix`` or starts with
        ``prefix + " "`` and satisfies ``predicate``; return (time.monotonic() it was read, line).

        Raises AssertionError with the process's output at the deadline or when its stdout closes.
        """
        deadline = time.monotonic() + timeout
        pos = since
        with self._cond:
            while True:
                while pos < len(self._lines):
                    ts, line = self._lines[pos]
                    pos += 1
                    if self._matches(line, prefix, predicate):
                        return ts, line
                remaining = deadline - time.monotonic()
                if self._eof or remaining <= 0:
                    break
                self._cond.wait(remaining)
        why = "its stdout closed" if self._eof else f"no match within {timeout:.2f} s"
        raise AssertionError(f"{self.name}: waiting for a {prefix!r} line: {why}\n{self.dump()}")

    def wait_line(
        self,
        prefix: str,
        predicate: Callable[[str], bool] | None = None,
        timeout: float = EVENT_TIMEOUT,
        since: int = 0,
    ) -> str:
        """Like :meth:`wait_line_timed`, returning only the line."""
        return self.wait_line_timed(prefix, predicate, timeout, since)[1]

    def has_line(self, prefix: str, predicate: Callable[[str], bool] | None = None, since: int = 0) -> bool:
        return any(self._matches(line, prefix, predicate) for line in self.lines(since))

    def wait_added(self, other: Any, timeout: float = EVENT_TIMEOUT, since: int = 0) -> str:
        """Wait for ``ADDED`` of ``other`` (a MemberProcess or a tribes.Member)."""
        return self.wait_line("ADDED", _member_predicate(other), timeout, since)

    # -- commands --

    def command(self, text: str) -> None:
        """Write one command line to the process."""
        stdin = self.proc.stdin
        assert stdin is not None
        try:
            stdin.write(text + "\n")
            stdin.flush()
        except (BrokenPipeError, ValueError, OSError) as exc:
            raise AssertionError(f"{self.name}: cannot write {text[:60]!r}: {exc}\n{self.dump()}") from exc

    def request(self, text: str, *reply_prefixes: str, timeout: float = EVENT_TIMEOUT) -> str:
        """Send a command; return the first later line starting with one of ``reply_prefixes``."""
        since = self.mark()
        self.command(text)
        deadline = time.monotonic() + timeout
        for prefix_line in self._iter_after(since, deadline):
            if any(self._matches(prefix_line, p, None) for p in reply_prefixes):
                return prefix_line
        raise AssertionError(f"{self.name}: no {reply_prefixes} reply to {text[:60]!r}\n{self.dump()}")

    def _iter_after(self, since: int, deadline: float) -> Iterator[str]:
        pos = since
        while True:
            with self._cond:
                while pos >= len(self._lines):
                    remaining = deadline - time.monotonic()
                    if self._eof or remaining <= 0:
                        return
                    self._cond.wait(remaining)
                line = self._lines[pos][1]
            pos += 1
            yield line

    def send(self, data: bytes, options: str = "-", to: list[str] | None = None) -> str:
        """SEND: returns the ``SENT`` / ``SENDFAIL …`` line."""
        target = f" to={','.join(to)}" if to else ""
        return self.request(f"SEND {data.hex()} {options}{target}", "SENT", "SENDFAIL", "ERROR")

    def stats(self) -> dict[str, int]:
        line = self.request("STATS", "STATS")
        return dict(json.loads(line.split(" ", 1)[1]))

    # -- lifecycle --

    def kill(self) -> None:
        """SIGKILL, then reap."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)

    def stop(self, timeout: float = 10.0) -> int:
        """QUIT, then wait for the process to exit; returns its exit status."""
        self.command("QUIT")
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"{self.name}: did not exit within {timeout} s of QUIT\n{self.dump()}"
            ) from None

    def close(self) -> None:
        """Stop politely if still running, kill if that fails; release pipes and threads."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGCONT)  # a test may have left it stopped (SIGSTOP)
            with contextlib.suppress(AssertionError):
                self.stop(timeout=5.0)
        self.kill()
        self._out.join(timeout=5)
        self._err.join(timeout=5)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError, ValueError):
                    stream.close()


def _member_predicate(other: Any) -> Callable[[str], bool]:
    """Matches ``WORD <host>:<port> <uid>`` lines naming ``other`` (MemberProcess or tribes.Member)."""
    if isinstance(other, MemberProcess):
        address, uid = other.address, other.unique_id
    else:
        address, uid = f"{other.host}:{other.port}", bytes(other.unique_id)

    def pred(line: str) -> bool:
        parts = line.split(" ")
        return len(parts) >= 3 and parts[1] == address and parts[2] == uid.hex()

    return pred


MemberProcessFactory = Callable[..., MemberProcess]


@pytest.fixture
def member_process() -> Iterator[MemberProcessFactory]:
    """Factory: ``member_process(mcast_port, name=None, args=(), wait_ready=True)`` → MemberProcess.

    Every process started is stopped (QUIT, then SIGKILL if it lingers) at teardown.
    """
    procs: list[MemberProcess] = []

    def start(
        mcast_port: int,
        name: str | None = None,
        args: tuple[str, ...] | list[str] = (),
        wait_ready: bool = True,
    ) -> MemberProcess:
        proc = MemberProcess(mcast_port, name or f"member-{len(procs)}", list(args))
        procs.append(proc)
        if wait_ready:
            proc.wait_ready()
        return proc

    yield start
    for proc in procs:
        proc.close()


# --------------------------------------------------------------------------------------------------
# In-process clusters
# --------------------------------------------------------------------------------------------------


class Recorder:
    """Collects a Cluster's listener callbacks (they run on its dispatcher thread)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.events: list[tuple[float, str, Any, bytes | None]] = []  # (monotonic, kind, member, data)

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

    def messages(self, since: int = 0) -> list[bytes]:
        with self._cond:
            return [d for _, k, _, d in self.events[since:] if k == "msg" and d is not None]

    def wait(
        self,
        kind: str,
        predicate: Callable[[Any, bytes | None], bool] = lambda m, d: True,
        timeout: float = EVENT_TIMEOUT,
        since: int = 0,
    ) -> tuple[float, Any, bytes | None]:
        """Wait for the first ``kind`` event at index >= since matching ``predicate``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for ts, k, member, data in self.events[since:]:
                    if k == kind and predicate(member, data):
                        return ts, member, data
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            summary = [(k, str(m), None if d is None else len(d)) for _, k, m, d in self.events[-30:]]
        raise AssertionError(f"no matching {kind!r} event within {timeout:.2f} s; last events: {summary}")

    def wait_messages(self, count: int, timeout: float = EVENT_TIMEOUT, since: int = 0) -> list[bytes]:
        """Wait until at least ``count`` messages arrived after ``since``; return them."""
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


class LocalNode:
    """A tribes.Cluster started in this process, with a Recorder attached before start."""

    def __init__(self, config: Any) -> None:
        import tribes

        self.recorder = Recorder()
        self.cluster = tribes.Cluster(config)
        self.cluster.add_message_listener(self.recorder.on_message)
        self.cluster.add_membership_listener(self.recorder.on_added, self.recorder.on_gone)
        self.cluster.start()
        self.member = self.cluster.local_member

    @property
    def port(self) -> int:
        return int(self.member.port)

    def sees(self, other: Any) -> Any:
        """The member in this node's view that is ``other`` (MemberProcess, LocalNode or Member), or None."""
        if isinstance(other, LocalNode):
            other = other.member
        for m in self.cluster.members:
            if (isinstance(other, MemberProcess) and other.is_member(m)) or m == other:
                return m
        return None

    def wait_sees(self, other: Any, timeout: float = EVENT_TIMEOUT) -> Any:
        """Wait until ``other`` is in this node's view; return it as a tribes.Member."""
        return wait_for(
            lambda: self.sees(other),
            timeout,
            lambda: f"{self.member} to see {other}; it sees {[str(m) for m in self.cluster.members]}",
        )

    def stop(self) -> None:
        self.cluster.stop()


@pytest.fixture
def local_node() -> Iterator[Callable[..., LocalNode]]:
    """Factory: ``local_node(mcast_port, **overrides)`` → a started LocalNode on
    ``ClusterConfig.local(membership={"port": mcast_port}, **overrides)``; all stopped at teardown.

    A ``membership`` dict in ``overrides`` is merged with the port.
    """
    import tribes

    nodes: list[LocalNode] = []

    def start(mcast_port: int, **overrides: Any) -> LocalNode:
        membership = {"port": mcast_port, **overrides.pop("membership", {})}
        overrides.setdefault("name", f"local-{len(nodes)}")
        node = LocalNode(tribes.ClusterConfig.local(membership=membership, **overrides))
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        node.stop()
