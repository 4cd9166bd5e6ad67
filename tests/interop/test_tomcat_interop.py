"""Wire interoperability between tribes and real Apache Tomcat Tribes (Debian's libtomcat10-java).

The Java side is ``java/TribesPeer.java`` (a GroupChannel with McastService + NioReceiver +
the default sender, interceptors MessageDispatchInterceptor and TcpFailureDetector, i.e. the stack
Tomcat's SimpleTcpCluster builds by default), driven through stdin/stdout by the fixtures in
conftest.py. Everything runs on loopback: multicast bound to 127.0.0.1 with TTL 0, TCP receivers on
127.0.0.1, a private multicast port per test.

The Java<->Java tests check the harness itself and only need Java; the others need the built
``tribes`` extension.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest

# Fixtures (java_peer, tribes_node, mcast_port) come from conftest.py; nothing is imported from it so
# the module works under any pytest import mode. Peer objects are conftest.JavaPeer / TribesNode.
pytestmark = pytest.mark.interop

JavaPeerFactory = Callable[..., Any]
TribesFactory = Callable[[int], Any]

LOOPBACK = "127.0.0.1"
DROP_TIME_MS = 1000  # local preset, mirrored by the Java peer (conftest.DROP_TIME_MS)
EVENT_TIMEOUT = 15.0

#: A member that sent the BABY-ALEX shutdown heartbeat must be reported gone well before the drop
#: time (1000 ms) would expire it. Measured Java->Java on loopback: ~3 ms; expiry path: ~1070 ms.
PROMPT_GONE_S = 0.6 * DROP_TIME_MS / 1000

PAYLOADS = [
    b"hello tomcat",
    bytes(range(256)),
    b"\x00" * 7 + b"FLT2002" + b"\xff" * 9 + b"TLF2003",  # framing magics inside the payload
    os.urandom(70_000),  # larger than one 64 KiB socket read
]


def host_str(host: Any) -> str:
    """Member.host as dotted text whether the binding gives str or raw address bytes."""
    if isinstance(host, bytes | bytearray):
        return socket.inet_ntop(socket.AF_INET6 if len(host) == 16 else socket.AF_INET, bytes(host))
    return str(host)


def _is_java(info: Any) -> Callable[[Any, bytes | None], bool]:
    def pred(member: Any, _data: bytes | None) -> bool:
        return host_str(member.host) == info.host and member.port == info.port

    return pred


def _addr(member: Any) -> str:
    return f"{host_str(member.host)}:{member.port}"


def _connect(java_peer: JavaPeerFactory, tribes_node: TribesFactory, mcast_port: int) -> tuple[Any, Any]:
    """Start a Java peer and a tribes node on one multicast port and wait until each lists the other."""
    node = tribes_node(mcast_port)
    peer = java_peer(mcast_port)
    assert peer.info is not None
    local = node.local
    node.wait_member(peer.info.host, peer.info.port)
    peer.wait_line("ADDED", lambda line: line.split(" ")[1] == _addr(local))
    return peer, node


# ------------------------------------------------------------------------------------------------
# Java <-> Java: the harness itself (needs only Java and the jars)
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("interceptors", ["dispatch,tfd", "none"])
def test_java_peers_see_each_other_and_exchange_messages(
    java_peer: JavaPeerFactory, mcast_port: int, interceptors: str
) -> None:
    a = java_peer(mcast_port, interceptors=interceptors)
    b = java_peer(mcast_port, interceptors=interceptors)
    ia, ib = a.info, b.info
    assert ia is not None and ib is not None
    assert ia.host == ib.host == LOOPBACK
    assert ia.port != ib.port
    assert len(ia.unique_id) == len(ib.unique_id) == 16

    a.wait_line("ADDED", lambda line: line == f"ADDED {ib.address} {ib.unique_id.hex()}")
    b.wait_line("ADDED", lambda line: line == f"ADDED {ia.address} {ia.unique_id.hex()}")
    assert a.members() == [ib.address]
    assert b.members() == [ia.address]

    for sync in (False, True):
        for payload in PAYLOADS:
            since = b.mark()
            assert a.send(payload, sync=sync) == "SENT 1"
            b.wait_line("MSG", lambda line, p=payload: line == f"MSG {ia.address} {p.hex()}", since=since)

    assert b.send(b"reply") == "SENT 1"
    a.wait_line("MSG", lambda line: line == f"MSG {ib.address} {b'reply'.hex()}")

    since = b.mark()
    assert a.quit() == 0
    assert a.has_line("BYE")
    b.wait_line("GONE", lambda line: line == f"GONE {ia.address} {ia.unique_id.hex()}", since=since)
    assert b.members() == []


def test_java_peer_reports_shutdown_promptly(java_peer: JavaPeerFactory, mcast_port: int) -> None:
    """The BABY-ALEX shutdown heartbeat removes a member at once, not after the drop time."""
    a = java_peer(mcast_port)
    b = java_peer(mcast_port)
    assert a.info is not None
    b.wait_line("ADDED", lambda line: line.split(" ")[1] == a.info.address)
    since = b.mark()
    t0 = time.monotonic()
    a.command("QUIT")
    ts, _ = b.wait_line_timed("GONE", lambda line: line.split(" ")[1] == a.info.address, since=since)
    assert ts - t0 < PROMPT_GONE_S, f"GONE {ts - t0:.3f} s after QUIT\n{b.dump()}"


# ------------------------------------------------------------------------------------------------
# tribes <-> Tomcat Tribes
# ------------------------------------------------------------------------------------------------


def test_membership_both_ways(
    java_peer: JavaPeerFactory, tribes_node: TribesFactory, mcast_port: int
) -> None:
    """(a) tribes lists the Java peer (its host:port and uniqueId); Java prints ADDED for tribes'
    receiver host:port and uniqueId."""
    node = tribes_node(mcast_port)
    peer = java_peer(mcast_port)
    info = peer.info
    assert info is not None
    assert info.host == LOOPBACK

    m = node.wait_member(info.host, info.port)
    assert bytes(m.unique_id) == info.unique_id
    assert len(bytes(m.unique_id)) == 16
    assert m.name == f"tcp://{info.host}:{info.port}"

    local = node.local
    assert host_str(local.host) == LOOPBACK
    assert len(bytes(local.unique_id)) == 16
    line = peer.wait_line("ADDED", lambda line: line.split(" ")[1] == _addr(local))
    assert line == f"ADDED {_addr(local)} {bytes(local.unique_id).hex()}"

    # The membership listener saw the Java member too, with the same identity.
    _, added, _ = node.recorder.wait("added", _is_java(info))
    assert bytes(added.unique_id) == info.unique_id

    assert peer.members() == [_addr(local)]
    assert [_addr(x) for x in node.cluster.members] == [info.address]


def test_tribes_to_java_use_ack(
    java_peer: JavaPeerFactory, tribes_node: TribesFactory, mcast_port: int
) -> None:
    """(b) cluster.send(options="use_ack") returns without error and Java receives the exact bytes,
    with tribes' member as sender."""
    peer, node = _connect(java_peer, tribes_node, mcast_port)
    me = _addr(node.local)
    for payload in PAYLOADS:
        since = peer.mark()
        node.cluster.send(payload, options="use_ack")
        peer.wait_line("MSG", lambda line, p=payload: line == f"MSG {me} {p.hex()}", since=since)
    assert not peer.has_line("OBJ")


def test_tribes_to_java_explicit_destination(
    java_peer: JavaPeerFactory, tribes_node: TribesFactory, mcast_port: int
) -> None:
    """cluster.send(to=[member]) reaches exactly that Java member."""
    peer, node = _connect(java_peer, tribes_node, mcast_port)
    assert peer.info is not None
    target = node.member_at(peer.info.host, peer.info.port)
    assert target is not None
    payload = b"to-one:" + os.urandom(32)
    since = peer.mark()
    node.cluster.send(payload, to=[target], options="use_ack")
    peer.wait_line("MSG", lambda line: line == f"MSG {_addr(node.local)} {payload.hex()}", since=since)


def test_java_to_tribes_use_ack(
    java_peer: JavaPeerFactory, tribes_node: TribesFactory, mcast_port: int
) -> None:
    """(c) SEND on Java (USE_ACK) -> SENT 1, and tribes' listener gets the exact bytes from the Java
    member."""
    peer, node = _connect(java_peer, tribes_node, mcast_port)
    info = peer.info
    assert info is not None
    for payload in PAYLOADS:
        since = node.recorder.mark()
        assert peer.send(payload) == "SENT 1"
        _, sender, data = node.recorder.wait(
            "msg", lambda m, d, p=payload: d == p and _is_java(info)(m, d), since=since
        )
        assert data == payload
        assert sender.port == info.port
        assert host_str(sender.host) == info.host
        assert bytes(sender.unique_id) == info.unique_id


def test_sync_ack_both_ways(java_peer: JavaPeerFactory, tribes_node: TribesFactory, mcast_port: int) -> None:
    """(d) USE_ACK|SYNCHRONIZED_ACK in both directions ("use_ack,sync" = Tomcat option 6)."""
    peer, node = _connect(java_peer, tribes_node, mcast_port)
    info = peer.info
    assert info is not None
    me = _addr(node.local)
    for payload in PAYLOADS:
        # Java -> tribes, SENDSYNC: the ACK comes after tribes processed the message.
        since = node.recorder.mark()
        assert peer.send(payload, sync=True) == "SENT 1"
        node.recorder.wait("msg", lambda m, d, p=payload: d == p and _is_java(info)(m, d), since=since)

        # tribes -> Java with use_ack+sync.
        since = peer.mark()
        node.cluster.send(payload, options="use_ack,sync")
        peer.wait_line("MSG", lambda line, p=payload: line == f"MSG {me} {p.hex()}", since=since)


def test_java_sendsync_acks_after_tribes_listener_ran(
    java_peer: JavaPeerFactory, tribes_node: TribesFactory, mcast_port: int
) -> None:
    """With SYNCHRONIZED_ACK the receiver ACKs only after the message was processed, so by the time
    the Java sender reports SENT, tribes' message listener must already have been called."""
    peer, node = _connect(java_peer, tribes_node, mcast_port)
    info = peer.info
    assert info is not None
    for i in range(5):
        payload = f"sync-{i}:".encode() + os.urandom(16)
        since = node.recorder.mark()
        assert peer.send(payload, sync=True) == "SENT 1"
        found = node.recorder.find(
            "msg", lambda m, d, p=payload: d == p and _is_java(info)(m, d), since=since
        )
        assert found is not None, (
            "Java's SENDSYNC returned (ACK received) before tribes' listener saw the message; "
            f"events so far: {node.recorder.snapshot(since)}"
        )


def test_shutdown_heartbeat_both_ways(
    java_peer: JavaPeerFactory, tribes_node: TribesFactory, mcast_port: int
) -> None:
    """(e) Stopping tribes makes Java print GONE well before the 1 s drop time (shutdown heartbeat);
    QUIT on Java makes tribes report the Java member gone, promptly too."""
    # tribes stops -> Java sees GONE promptly.
    peer, node = _connect(java_peer, tribes_node, mcast_port)
    local = node.local
    uid = bytes(local.unique_id).hex()
    since = peer.mark()
    t0 = time.monotonic()
    node.stop()
    ts, line = peer.wait_line_timed("GONE", lambda line: line.split(" ")[1] == _addr(local), since=since)
    assert line == f"GONE {_addr(local)} {uid}"
    assert ts - t0 < PROMPT_GONE_S, f"Java printed GONE {ts - t0:.3f} s after cluster.stop()\n{peer.dump()}"
    assert peer.members() == []

    # A fresh tribes node, then Java QUITs -> tribes reports the Java member gone, promptly.
    since = peer.mark()
    node2 = tribes_node(mcast_port)
    info = peer.info
    assert info is not None
    node2.wait_member(info.host, info.port)
    # node2 may reuse node1's receiver port; it is a new member because its uniqueId differs.
    expected = f"ADDED {_addr(node2.local)} {bytes(node2.local.unique_id).hex()}"
    peer.wait_line("ADDED", lambda line: line == expected, since=since)
    since_ev = node2.recorder.mark()
    t0 = time.monotonic()
    peer.command("QUIT")
    ts_gone, gone, _ = node2.recorder.wait("gone", _is_java(info), since=since_ev)
    assert bytes(gone.unique_id) == info.unique_id
    assert ts_gone - t0 < PROMPT_GONE_S, (
        f"tribes reported the Java member gone {ts_gone - t0:.3f} s after QUIT"
    )
    assert node2.member_at(info.host, info.port) is None
    assert peer.proc.wait(timeout=EVENT_TIMEOUT) == 0


def test_two_java_peers_and_tribes(
    java_peer: JavaPeerFactory, tribes_node: TribesFactory, mcast_port: int
) -> None:
    """A three-member cluster: everyone lists everyone; a tribes broadcast reaches both Java peers and a
    Java broadcast reaches tribes and the other Java peer."""
    node = tribes_node(mcast_port)
    a = java_peer(mcast_port)
    b = java_peer(mcast_port)
    ia, ib = a.info, b.info
    assert ia is not None and ib is not None
    me = _addr(node.local)
    node.wait_member(ia.host, ia.port)
    node.wait_member(ib.host, ib.port)
    for peer, other in ((a, ib), (b, ia)):
        peer.wait_line("ADDED", lambda line: line.split(" ")[1] == me)
        peer.wait_line("ADDED", lambda line, o=other: line.split(" ")[1] == o.address)
    assert sorted(_addr(m) for m in node.cluster.members) == sorted([ia.address, ib.address])

    payload = b"to-all:" + os.urandom(24)
    marks = (a.mark(), b.mark())
    node.cluster.send(payload, options="use_ack")
    for peer, since in zip((a, b), marks, strict=True):
        peer.wait_line("MSG", lambda line: line == f"MSG {me} {payload.hex()}", since=since)

    payload2 = b"from-java:" + os.urandom(24)
    since_ev, since_b = node.recorder.mark(), b.mark()
    assert a.send(payload2) == "SENT 2"
    node.recorder.wait("msg", lambda m, d: d == payload2 and _is_java(ia)(m, d), since=since_ev)
    b.wait_line("MSG", lambda line: line == f"MSG {ia.address} {payload2.hex()}", since=since_b)
