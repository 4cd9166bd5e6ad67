"""Shared fixtures for the channel tests: waiting helpers, private ports, member processes, in-process
clusters, and the Hypothesis profiles.

Everything stays on this machine: multicast on interface 127.0.0.1 with TTL 0 (``ClusterConfig.local``),
TCP on 127.0.0.1. Each test gets its own multicast port, so tests never see each other's members, and
every process a test starts is stopped (then killed if needed) at teardown. Every wait has a deadline.

The line-protocol process and the port pickers live in tests/support/lineproc.py, shared with
tests/interop/conftest.py (whose ``mcast_port`` for the Java tests picks from 45000-46999 and this one from
47000-48999, so the two never hand out the same port in one session).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

# tests/support is imported as the package ``support`` (by this file and tests/interop/conftest.py).
# pytest's default import mode puts this directory on sys.path already; this keeps it so under any mode.
sys.path.insert(0, str(Path(__file__).parent))

from support import lineproc
from support.recorder import Recorder
from support.waiting import EVENT_TIMEOUT, wait_for

#: ClusterConfig's default multicast group (the local preset keeps it).
MCAST_ADDRESS = "228.0.0.4"
MEMBER_PROC = Path(__file__).parent / "support" / "member_proc.py"

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


@pytest.fixture(name="wait_for")
def _wait_for_fixture() -> Callable[..., Any]:
    """The :func:`wait_for` helper, as a fixture (test modules cannot import conftest portably)."""
    return wait_for


# --------------------------------------------------------------------------------------------------
# Ports
# --------------------------------------------------------------------------------------------------


def free_mcast_port(lo: int = 47000, hi: int = 48999) -> int:
    """A multicast port in [lo, hi] not handed out before in this session and not bound now."""
    return lineproc.free_mcast_port(lo, hi)


def free_tcp_port(lo: int = 20000, hi: int = 29999) -> int:
    """A loopback TCP port in [lo, hi] not handed out before in this session and free now.

    The range lies below Linux's ephemeral ports (32768-60999), so an outgoing connection cannot take
    the port between this check and the bind.
    """
    return lineproc.free_tcp_port(lo, hi)


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


class MemberProcess(lineproc.LineProcess):
    """A running member_proc.py: commands to stdin, stdout lines collected by a reader thread."""

    event_timeout = EVENT_TIMEOUT

    def __init__(self, mcast_port: int, name: str, args: list[str]) -> None:
        self.mcast_port = mcast_port
        self.host = ""
        self.port = 0
        self.unique_id = b""
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
        super().__init__(cmd, name)

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

    def describe(self) -> str:
        return f"pid={self.pid} {self.address}"

    # -- output and commands --

    def wait_added(self, other: Any, timeout: float = EVENT_TIMEOUT, since: int = 0) -> str:
        """Wait for ``ADDED`` of ``other`` (a MemberProcess or a tribes.Member)."""
        return self.wait_line("ADDED", _member_predicate(other), timeout, since)

    def send(self, data: bytes, options: str = "-", to: list[str] | None = None) -> str:
        """SEND: returns the ``SENT`` / ``SENDFAIL …`` line."""
        target = f" to={','.join(to)}" if to else ""
        return self.request(f"SEND {data.hex()} {options}{target}", "SENT", "SENDFAIL", "ERROR")

    def stats(self) -> dict[str, int]:
        line = self.request("STATS", "STATS")
        return dict(json.loads(line.split(" ", 1)[1]))

    # -- lifecycle --

    def _shutdown(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGCONT)  # a test may have left it stopped (SIGSTOP)
        super()._shutdown()


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


class LocalNode:
    """A tribes.Cluster started in this process, with a Recorder attached before start."""

    def __init__(self, config: Any) -> None:
        import tribes

        self.recorder = Recorder(EVENT_TIMEOUT)
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


@pytest.fixture
def start_cluster() -> Iterator[Callable[..., Any]]:
    """Factory: ``start_cluster(cfg)`` → a started ``tribes.Cluster``; all stopped at teardown."""
    import tribes

    started: list[Any] = []

    def start(cfg: Any) -> Any:
        cluster = tribes.Cluster(cfg)
        started.append(cluster)
        cluster.start()
        return cluster

    yield start
    for cluster in started:
        cluster.stop()
