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
import random
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

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
LOOPBACK = "127.0.0.1"

#: JVM start + channel start (Tribes sleeps 2 x frequency at each of two start levels) on a slow box.
READY_TIMEOUT = 60.0
#: Membership discovery / message delivery.
EVENT_TIMEOUT = 15.0
#: A Java peer must be gone this long after QUIT.
EXIT_TIMEOUT = 15.0
#: Hard upper bound on a Java peer's life (TribesPeer --max-seconds).
PEER_MAX_SECONDS = 240

_used_mcast_ports: set[int] = set()
_used_tcp_ports: set[int] = set()
_rng = random.Random()


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


def _udp_port_free(port: int) -> bool:
    # No SO_REUSEADDR: a wildcard bind collides with any socket already on this port, including a
    # multicast socket bound to (group, port), so a port some other cluster uses is rejected.
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


def free_mcast_port(lo: int = 45000, hi: int = 46999) -> int:
    """A multicast port in [lo, hi] not used by this session and not bound on this machine."""
    for _ in range(200):
        port = _rng.randint(lo, hi)
        if port in _used_mcast_ports or not _udp_port_free(port):
            continue
        _used_mcast_ports.add(port)
        return port
    raise RuntimeError(f"no free multicast port in {lo}-{hi}")


def free_receiver_port(lo: int = 41000, hi: int = 43899) -> int:
    """A TCP receiver start port (the peer still auto-binds upwards from it if it gets taken)."""
    for _ in range(200):
        port = _rng.randint(lo, hi)
        if port in _used_tcp_ports or not _tcp_port_free(port):
            continue
        _used_tcp_ports.add(port)
        return port
    raise RuntimeError(f"no free TCP port in {lo}-{hi}")


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


class JavaPeer:
    """A running TribesPeer: stdin commands, stdout lines collected by a reader thread."""

    def __init__(self, toolchain: JavaToolchain, args: list[str], name: str) -> None:
        self.name = name
        self.args = args
        self._cond = threading.Condition()
        self._lines: list[tuple[float, str]] = []  # (time.monotonic() when read, line)
        self._stderr: list[str] = []
        self._eof = False
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
        self._out_thread = threading.Thread(target=self._read_stdout, name=f"{name}-stdout", daemon=True)
        self._err_thread = threading.Thread(target=self._read_stderr, name=f"{name}-stderr", daemon=True)
        self._out_thread.start()
        self._err_thread.start()
        self.info: PeerInfo | None = None

    # -- reader threads (never raise) --

    def _read_stdout(self) -> None:
        stream = self.proc.stdout
        assert stream is not None
        try:
            for raw in stream:
                line = raw.rstrip("\r\n")
                with self._cond:
                    self._lines.append((time.monotonic(), line))
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

    # -- inspection --

    def lines(self) -> list[str]:
        with self._cond:
            return [line for _, line in self._lines]

    def mark(self) -> int:
        """Index to pass as ``since`` to only look at lines printed from now on."""
        with self._cond:
            return len(self._lines)

    def dump(self, tail: int = 60) -> str:
        with self._cond:
            out = [line for _, line in self._lines[-tail:]]
            err = list(self._stderr[-tail:])
        return (
            f"--- {self.name} args={self.args} returncode={self.proc.poll()}\n"
            "--- stdout (tail):\n" + "\n".join(out) + "\n--- stderr (tail):\n" + "\n".join(err)
        )

    def wait_line_timed(
        self,
        prefix: str,
        predicate: Callable[[str], bool] | None = None,
        timeout: float = EVENT_TIMEOUT,
        since: int = 0,
    ) -> tuple[float, str]:
        """Wait for the first line at index >= since that starts with ``prefix + ' '`` (or equals
        ``prefix``) and satisfies ``predicate``; return (monotonic time it was read, line).

        Raises AssertionError with the peer's output if the deadline passes or the peer's stdout
        closes first.
        """
        deadline = time.monotonic() + timeout
        pos = since

        def match(line: str) -> bool:
            if not (line == prefix or line.startswith(prefix + " ")):
                return False
            return predicate is None or predicate(line)

        with self._cond:
            while True:
                while pos < len(self._lines):
                    ts, line = self._lines[pos]
                    pos += 1
                    if match(line):
                        return ts, line
                if self._eof:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
        why = "stdout closed" if self._eof else f"no match within {timeout:.1f} s"
        raise AssertionError(f"{self.name}: waiting for {prefix!r} line: {why}\n{self.dump()}")

    def wait_line(
        self,
        prefix: str,
        predicate: Callable[[str], bool] | None = None,
        timeout: float = EVENT_TIMEOUT,
        since: int = 0,
    ) -> str:
        return self.wait_line_timed(prefix, predicate, timeout, since)[1]

    def has_line(self, prefix: str, predicate: Callable[[str], bool] | None = None, since: int = 0) -> bool:
        with self._cond:
            lines = [line for _, line in self._lines[since:]]
        return any(
            (line == prefix or line.startswith(prefix + " ")) and (predicate is None or predicate(line))
            for line in lines
        )

    # -- commands --

    def command(self, line: str) -> None:
        stdin = self.proc.stdin
        assert stdin is not None
        try:
            stdin.write(line + "\n")
            stdin.flush()
        except (BrokenPipeError, ValueError, OSError) as exc:
            raise AssertionError(f"{self.name}: cannot write {line!r}: {exc}\n{self.dump()}") from exc

    def request(self, line: str, *reply_prefixes: str, timeout: float = EVENT_TIMEOUT) -> str:
        """Send a command and return the first later line starting with one of reply_prefixes."""
        since = self.mark()
        self.command(line)
        return self._wait_prefixes(reply_prefixes, timeout, since)

    def _wait_prefixes(self, prefixes: tuple[str, ...], timeout: float, since: int) -> str:
        deadline = time.monotonic() + timeout
        with self._cond:
            pos = since
            while True:
                while pos < len(self._lines):
                    line = self._lines[pos][1]
                    pos += 1
                    if any(line == p or line.startswith(p + " ") for p in prefixes):
                        return line
                remaining = deadline - time.monotonic()
                if self._eof or remaining <= 0:
                    break
                self._cond.wait(remaining)
        raise AssertionError(f"{self.name}: no reply {prefixes} within {timeout:.1f} s\n{self.dump()}")

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
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"{self.name}: did not exit within {timeout} s of QUIT\n{self.dump()}"
            ) from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)

    def close(self) -> None:
        """Stop the process (politely, then by force) and release pipes and threads."""
        if self.proc.poll() is None:
            with contextlib.suppress(AssertionError):
                self.quit(timeout=EXIT_TIMEOUT)
        self.kill()
        self._out_thread.join(timeout=5)
        self._err_thread.join(timeout=5)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError, ValueError):
                    stream.close()


JavaPeerFactory = Callable[..., JavaPeer]


@pytest.fixture
def java_peer(java_toolchain: JavaToolchain) -> Iterator[JavaPeerFactory]:
    """Factory: ``java_peer(mcast_port, receiver_port=None, interceptors=None, wait_ready=True)``.

    Starts a TribesPeer on loopback with the local-preset timings and (by default) waits for READY;
    every peer is stopped at teardown.
    """
    peers: list[JavaPeer] = []

    def start(
        mcast_port: int,
        receiver_port: int | None = None,
        interceptors: str | None = None,
        wait_ready: bool = True,
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


class EventRecorder:
    """Collects tribes listener callbacks (called on tribes' dispatcher threads)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.events: list[tuple[float, str, Any, bytes | None]] = []  # (monotonic, kind, member, data)

    def on_message(self, member: Any, data: bytes) -> None:
        with self._cond:
            self.events.append((time.monotonic(), "msg", member, bytes(data)))
            self._cond.notify_all()

    def on_added(self, member: Any) -> None:
        with self._cond:
            self.events.append((time.monotonic(), "added", member, None))
            self._cond.notify_all()

    def on_gone(self, member: Any) -> None:
        with self._cond:
            self.events.append((time.monotonic(), "gone", member, None))
            self._cond.notify_all()

    def mark(self) -> int:
        with self._cond:
            return len(self.events)

    def snapshot(self, since: int = 0) -> list[tuple[float, str, Any, bytes | None]]:
        with self._cond:
            return list(self.events[since:])

    def find(
        self, kind: str, predicate: Callable[[Any, bytes | None], bool], since: int = 0
    ) -> tuple[float, Any, bytes | None] | None:
        with self._cond:
            for ts, k, member, data in self.events[since:]:
                if k == kind and predicate(member, data):
                    return ts, member, data
        return None

    def wait(
        self,
        kind: str,
        predicate: Callable[[Any, bytes | None], bool],
        timeout: float = EVENT_TIMEOUT,
        since: int = 0,
    ) -> tuple[float, Any, bytes | None]:
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
            summary = [(k, _member_text(m), None if d is None else len(d)) for _, k, m, d in self.events]
        raise AssertionError(f"tribes: no {kind!r} event matching within {timeout:.1f} s; events: {summary}")


def _member_text(member: Any) -> str:
    try:
        return f"{host_str(member.host)}:{member.port}"
    except Exception:  # pragma: no cover - diagnostics only
        return repr(member)


class TribesNode:
    """A started tribes.Cluster with an EventRecorder attached before start."""

    def __init__(self, tribes_mod: Any, mcast_port: int) -> None:
        self.recorder = EventRecorder()
        cfg = tribes_mod.ClusterConfig.local(membership={"port": mcast_port, "address": MCAST_ADDRESS})
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
def tribes_node(tribes_mod: Any) -> Iterator[Callable[[int], TribesNode]]:
    """Factory: ``tribes_node(mcast_port)`` -> started TribesNode; all stopped at teardown."""
    nodes: list[TribesNode] = []

    def start(mcast_port: int) -> TribesNode:
        node = TribesNode(tribes_mod, mcast_port)
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
