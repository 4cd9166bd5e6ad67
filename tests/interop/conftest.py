"""Fixtures for the Tomcat (Apache Tribes) interop tests.

A small Java program, ``java/TribesPeer.java``, is compiled once per session against Debian's real
Tribes jar (package ``libtomcat10-java``, installed by ``.ci/install-java-interop.sh``) and run as a
child process that is driven through stdin/stdout (see the header of TribesPeer.java for the line
protocol).

Everything stays on this machine: multicast on interface 127.0.0.1 with TTL 0, TCP receivers on
127.0.0.1, every wait bounded by a deadline.

When ``javac``/``java`` or the jars are missing the tests are skipped with the reason, except when the
``CI`` environment variable is set: there they fail, because CI must run them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# tests/support (line-protocol process, port pickers, event recorder) is on sys.path from tests/conftest.py.
from support import lineproc
from support.recorder import Recorder

JAVA_SOURCE = Path(__file__).parent / "java" / "TribesPeer.java"

#: The jars TribesPeer needs at compile and run time: Tribes itself and Tomcat's JULI logging
#: (``org.apache.juli.logging``). Tribes 10.1 needs nothing from tomcat10-util.
TOMCAT_JAR_NAMES = ("tomcat10-tribes", "tomcat10-juli")
#: Where Debian's libtomcat10-java puts them (``/usr/share/java/tomcat10-tribes.jar`` is a symlink to
#: ``tomcat10-tribes-<version>.jar``).
TOMCAT_JAR_DIRS = (Path("/usr/share/java"),)
#: Override: os.pathsep-separated list of jar paths to use instead of searching.
JARS_ENV = "TRIBES_INTEROP_JARS"

#: Local-preset timings the Java peer mirrors (tribes.ClusterConfig.local: frequency 100 ms,
#: drop time 1000 ms).
FREQUENCY_MS = 100
DROP_TIME_MS = 1000
MCAST_ADDRESS = "228.0.0.4"

#: JVM start + channel start (Tribes sleeps 2 x frequency at each of two start levels) on a slow box.
READY_TIMEOUT = 60.0
#: Membership discovery / message delivery.
EVENT_TIMEOUT = 15.0
#: A Java peer must be gone this long after QUIT.
EXIT_TIMEOUT = 15.0
#: Hard upper bound on a Java peer's life (TribesPeer --max-seconds).
PEER_MAX_SECONDS = 240


# ----------------------------------------------------------------------------------------------
# Discovery of the Java toolchain and the Tomcat jars
# ----------------------------------------------------------------------------------------------


def find_tomcat_jars() -> list[Path] | None:
    """Return the Tribes + JULI jars, or None if any is missing.

    ``$TRIBES_INTEROP_JARS`` (os.pathsep-separated) wins; otherwise each name in TOMCAT_JAR_NAMES is
    looked up in TOMCAT_JAR_DIRS, preferring the unversioned symlink (``tomcat10-tribes.jar``) and
    falling back to the newest versioned file (``tomcat10-tribes-10.1.60.jar``).
    """
    override = os.environ.get(JARS_ENV)
    if override:
        jars = [Path(p) for p in override.split(os.pathsep) if p]
        return jars if jars and all(j.is_file() for j in jars) else None
    found: list[Path] = []
    for name in TOMCAT_JAR_NAMES:
        jar: Path | None = None
        for d in TOMCAT_JAR_DIRS:
            plain = d / f"{name}.jar"
            if plain.is_file():
                jar = plain
                break
            versioned = sorted(d.glob(f"{name}-[0-9]*.jar"))
            if versioned:
                jar = versioned[-1]
                break
        if jar is None:
            return None
        found.append(jar)
    return found


def _skip_or_fail(reason: str) -> None:
    """Skip locally; in CI (``$CI`` set) the interop tests must run, so fail instead."""
    if os.environ.get("CI"):
        pytest.fail(f"interop prerequisites missing in CI: {reason}", pytrace=False)
    pytest.skip(reason)


@dataclass(frozen=True)
class JavaToolchain:
    java: str
    classpath: str  # jars + compiled class dir


@pytest.fixture(scope="session")
def java_toolchain(tmp_path_factory: pytest.TempPathFactory) -> JavaToolchain:
    """Compile TribesPeer.java once per session into a temp dir."""
    javac = shutil.which("javac")
    java = shutil.which("java")
    if javac is None or java is None:
        _skip_or_fail("javac/java not found (run .ci/install-java-interop.sh)")
    assert javac is not None and java is not None
    jars = find_tomcat_jars()
    if jars is None:
        _skip_or_fail(
            "Tomcat Tribes jars not found "
            f"({', '.join(n + '.jar' for n in TOMCAT_JAR_NAMES)} in "
            f"{', '.join(str(d) for d in TOMCAT_JAR_DIRS)}; run .ci/install-java-interop.sh "
            f"or set {JARS_ENV})"
        )
    assert jars is not None
    classes = tmp_path_factory.mktemp("tribes-peer-classes")
    jar_cp = os.pathsep.join(str(j) for j in jars)
    try:
        proc = subprocess.run(
            [javac, "-nowarn", "-encoding", "UTF-8", "-d", str(classes), "-cp", jar_cp, str(JAVA_SOURCE)],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("javac TribesPeer.java timed out after 180 s", pytrace=False)
    if proc.returncode != 0:
        pytest.fail(f"javac TribesPeer.java failed:\n{proc.stdout}\n{proc.stderr}", pytrace=False)
    return JavaToolchain(java=java, classpath=os.pathsep.join([jar_cp, str(classes)]))


# ----------------------------------------------------------------------------------------------
# Ports
# ----------------------------------------------------------------------------------------------


def free_mcast_port(lo: int = 45000, hi: int = 46999) -> int:
    """A multicast port in [lo, hi] not used by this session and not bound on this machine."""
    return lineproc.free_mcast_port(lo, hi, attempts=200)


def free_receiver_port(lo: int = 41000, hi: int = 43899) -> int:
    """A TCP receiver start port (the peer still auto-binds upwards from it if it gets taken)."""
    return lineproc.free_tcp_port(lo, hi, attempts=200)


@pytest.fixture
def mcast_port() -> int:
    """A multicast port private to one test, so concurrent/successive tests never see each other."""
    return free_mcast_port()


# ----------------------------------------------------------------------------------------------
# Java peer process
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PeerInfo:
    """host:port and uniqueId as printed by READY/ADDED/GONE lines."""

    host: str
    port: int
    unique_id: bytes

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def parse_member_line(line: str) -> PeerInfo:
    """Parse ``<WORD> <host>:<port> <uniqueId hex>``."""
    _, hp, uid = line.split(" ", 2)
    host, _, port = hp.rpartition(":")
    return PeerInfo(host=host, port=int(port), unique_id=bytes.fromhex(uid.strip()))


class JavaPeer(lineproc.LineProcess):
    """A running TribesPeer: stdin commands, stdout lines collected by a reader thread."""

    event_timeout = EVENT_TIMEOUT
    dump_tail = 60
    dump_line_chars = None

    def __init__(self, toolchain: JavaToolchain, args: list[str], name: str) -> None:
        self.args = args
        self.info: PeerInfo | None = None
        cmd = [
            toolchain.java,
            # Needed on Linux: with the default dual-stack (IPv6) socket, a MulticastSocket bound to
            # the IPv4 group address (what McastService does when `bind` is set) fails every send with
            # "SocketException: Invalid argument".
            "-Djava.net.preferIPv4Stack=true",
            "-Xms32m",
            "-Xmx128m",
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            "-cp",
            toolchain.classpath,
            "TribesPeer",
            *args,
        ]
        super().__init__(cmd, name)

    def describe(self) -> str:
        return f"args={self.args}"

    # -- commands --

    def send(self, payload: bytes, sync: bool = False) -> str:
        """SEND/SENDSYNC; returns the SENT/SENDFAIL line."""
        cmd = "SENDSYNC" if sync else "SEND"
        return self.request(f"{cmd} {payload.hex()}", "SENT", "SENDFAIL")

    def members(self) -> list[str]:
        """MEMBERS -> list of host:port strings."""
        parts = self.request("MEMBERS", "MEMBERS").split(" ")
        count = int(parts[1])
        listed = parts[2].split(",") if len(parts) > 2 and parts[2] else []
        assert len(listed) == count, f"{self.name}: inconsistent MEMBERS reply {parts}"
        return listed

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> PeerInfo:
        self.info = parse_member_line(self.wait_line("READY", timeout=timeout))
        return self.info

    # -- lifecycle --

    def quit(self, timeout: float = EXIT_TIMEOUT) -> int:
        """QUIT (stop the channel, sending the shutdown heartbeat) and wait for exit."""
        if self.proc.poll() is None:
            with contextlib.suppress(AssertionError):
                self.command("QUIT")
        return self.wait_exit(timeout)

    def _shutdown(self) -> None:
        with contextlib.suppress(AssertionError):
            self.quit(timeout=EXIT_TIMEOUT)


JavaPeerFactory = Callable[..., JavaPeer]


@pytest.fixture
def java_peer(java_toolchain: JavaToolchain) -> Iterator[JavaPeerFactory]:
    """Factory: ``java_peer(mcast_port, receiver_port=None, interceptors=None, wait_ready=True,
    encrypt_key=None)``.

    Starts a TribesPeer on loopback with the local-preset timings and (by default) waits for READY;
    every peer is stopped at teardown. ``encrypt_key`` (hex) adds Tomcat's EncryptInterceptor
    (AES/GCM/NoPadding) above TcpFailureDetector (TribesPeer ``--encrypt-key``).
    """
    peers: list[JavaPeer] = []

    def start(
        mcast_port: int,
        receiver_port: int | None = None,
        interceptors: str | None = None,
        wait_ready: bool = True,
        encrypt_key: str | None = None,
    ) -> JavaPeer:
        args = [
            "--mcast-port",
            str(mcast_port),
            "--mcast-address",
            MCAST_ADDRESS,
            "--receiver-port",
            str(receiver_port if receiver_port is not None else free_receiver_port()),
            "--frequency",
            str(FREQUENCY_MS),
            "--drop-time",
            str(DROP_TIME_MS),
            "--max-seconds",
            str(PEER_MAX_SECONDS),
        ]
        if interceptors is not None:
            args += ["--interceptors", interceptors]
        if encrypt_key is not None:
            args += ["--encrypt-key", encrypt_key]
        peer = JavaPeer(java_toolchain, args, name=f"java-peer-{len(peers)}")
        peers.append(peer)
        if wait_ready:
            peer.wait_ready()
        return peer

    yield start
    for peer in peers:
        peer.close()


# ----------------------------------------------------------------------------------------------
# tribes (Python) side
# ----------------------------------------------------------------------------------------------


def host_str(host: Any) -> str:
    """Member.host as dotted text whether the binding gives str or raw address bytes."""
    if isinstance(host, bytes | bytearray):
        return socket.inet_ntop(socket.AF_INET6 if len(host) == 16 else socket.AF_INET, bytes(host))
    return str(host)


def _member_text(member: Any) -> str:
    try:
        return f"{host_str(member.host)}:{member.port}"
    except Exception:  # pragma: no cover - diagnostics only
        return repr(member)


class TribesNode:
    """A started tribes.Cluster with a Recorder attached before start.

    ``interceptors``, when given, goes to ``ClusterConfig.local`` as is (else the preset's stack).
    """

    def __init__(self, tribes_mod: Any, mcast_port: int, interceptors: list[Any] | None = None) -> None:
        self.recorder = Recorder(EVENT_TIMEOUT, _member_text)
        extra: dict[str, Any] = {} if interceptors is None else {"interceptors": interceptors}
        cfg = tribes_mod.ClusterConfig.local(
            membership={"port": mcast_port, "address": MCAST_ADDRESS}, **extra
        )
        self.cluster = tribes_mod.Cluster(cfg)
        self.cluster.add_message_listener(self.recorder.on_message)
        self.cluster.add_membership_listener(self.recorder.on_added, self.recorder.on_gone)
        self.cluster.start()
        self._stopped = False

    @property
    def local(self) -> Any:
        return self.cluster.local_member

    def member_at(self, host: str, port: int) -> Any | None:
        for m in self.cluster.members:
            if host_str(m.host) == host and m.port == port:
                return m
        return None

    def wait_member(self, host: str, port: int, present: bool = True, timeout: float = EVENT_TIMEOUT) -> Any:
        """Poll cluster.members (bounded) until the member at host:port is (or is no longer) listed."""
        deadline = time.monotonic() + timeout
        while True:
            m = self.member_at(host, port)
            if (m is not None) == present:
                return m
            if time.monotonic() >= deadline:
                listed = [_member_text(x) for x in self.cluster.members]
                state = "appear" if present else "disappear"
                raise AssertionError(
                    f"tribes: {host}:{port} did not {state} within {timeout:.1f} s; {listed}"
                )
            # Polling a property: there is no event to wait on for the list itself; the membership
            # listener events are checked separately through the recorder.
            time.sleep(0.02)

    def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            self.cluster.stop()


@pytest.fixture(scope="session")
def tribes_mod() -> Any:
    """The tribes package (skipped locally, failed in CI, when it cannot be imported)."""
    try:
        import tribes
    except ImportError as exc:
        error: ImportError | None = exc
    else:
        error = None
    if error is not None:
        _skip_or_fail(f"tribes is not importable (build it with maturin): {error}")
    return tribes


@pytest.fixture
def tribes_node(tribes_mod: Any) -> Iterator[Callable[..., TribesNode]]:
    """Factory: ``tribes_node(mcast_port, interceptors=None)`` -> started TribesNode; all stopped at
    teardown."""
    nodes: list[TribesNode] = []

    def start(mcast_port: int, interceptors: list[Any] | None = None) -> TribesNode:
        node = TribesNode(tribes_mod, mcast_port, interceptors)
        nodes.append(node)
        return node

    yield start
    errors: list[BaseException] = []
    for node in nodes:
        try:
            node.stop()
        except Exception as exc:  # keep stopping the others
            errors.append(exc)
    if errors:
        raise errors[0]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "interop: interoperability tests against real Apache Tomcat Tribes (needs Java + jars)"
    )
