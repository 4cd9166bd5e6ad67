"""Interop of tribes' Tomcat-compatible encryption (interceptor ``tomcat_encrypt``) with Tomcat's real
``EncryptInterceptor`` (Debian's libtomcat10-java, 10.1.x).

Tomcat's scheme (reference §3.4): ``encryptionAlgorithm`` AES/GCM/NoPadding, ``encryptionKey`` in hex
(32/48/64 digits = AES-128/192/256); the ChannelData *message* field becomes
``12-byte IV ‖ AES-GCM([8-byte timestamp ‖] payload) ‖ 16-byte tag`` (the timestamp since Tomcat
10.1.56; tribes' ``format`` option picks it). Membership heartbeats and TcpFailureDetector's probe
stay in plaintext, so members with different keys (or none) still see each other; only their messages
are lost. The interceptor must sit above TcpFailureDetector.

What Tomcat 10.1 does with a message it cannot decrypt (checked by the Java-only tests below):

* ≥ 28 bytes (IV + tag; e.g. another key's ciphertext, or a long enough plaintext): the interceptor
  logs ``SEVERE: Failed to decrypt message`` with ``javax.crypto.AEADBadTagException: Tag mismatch!``
  and drops it. The transport has ACKed it anyway, with or without SYNCHRONIZED_ACK, so the sender
  reports success (TribesPeer: ``SENT 1``).
* < 28 bytes: a RuntimeException escapes the interceptor (< 12 bytes, shorter than the IV:
  ``IllegalArgumentException: Invalid buffer arguments``; 12-27 bytes, shorter than IV + tag:
  ``java.security.ProviderException: javax.crypto.ShortBufferException: Output buffer invalid``); the
  NIO receiver logs ``SEVERE: Processing of cluster message failed.`` and, for SYNCHRONIZED_ACK,
  answers with a FAIL_ACK, so the sender retries once and reports ``SENDFAIL``; with USE_ACK alone the
  ACK was already sent (``SENT 1``). Nothing is delivered either way.

The Java peer is ``java/TribesPeer.java`` with ``--encrypt-key`` (the ``encrypt_key`` argument of the
``java_peer`` fixture): stack MessageDispatchInterceptor, EncryptInterceptor, TcpFailureDetector. tribes
uses the mirror image: ``["dispatch", {"name": "tomcat_encrypt", "key": …}, "failure_detector"]``.
Everything runs on loopback with a private multicast port per test (see conftest.py).

The Java<->Java tests only need Java; the others need the built ``tribes`` extension.
"""

from __future__ import annotations

import os
import re
import socket
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

# Fixtures (java_peer, tribes_node, mcast_port) come from conftest.py; nothing is imported from it so
# the module works under any pytest import mode.
pytestmark = pytest.mark.interop

JavaPeerFactory = Callable[..., Any]
TribesFactory = Callable[..., Any]

LOOPBACK = "127.0.0.1"
EVENT_TIMEOUT = 15.0

KEY_128 = "000102030405060708090a0b0c0d0e0f"
KEY_256 = "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4"
OTHER_KEY_128 = "2b7e151628aed2a6abf7158809cf4f3c"
KEYS = [pytest.param(KEY_128, id="aes128"), pytest.param(KEY_256, id="aes256")]


def _tomcat_version() -> tuple[int, ...]:
    """The version of the Tribes jar the Java peer runs (from its manifest); (0,) if unknown."""
    jars = [Path(p) for p in os.environ.get("TRIBES_INTEROP_JARS", "").split(os.pathsep) if "tribes" in p]
    jar = jars[0] if jars else Path("/usr/share/java/tomcat10-tribes.jar")
    try:
        with zipfile.ZipFile(jar) as z:
            manifest = z.read("META-INF/MANIFEST.MF").decode("utf-8", "replace")
    except (OSError, KeyError, zipfile.BadZipFile):
        return (0,)
    found = re.search(r"Implementation-Version:\s*(\d+(?:\.\d+)*)", manifest)
    return tuple(int(x) for x in found.group(1).split(".")) if found else (0,)


#: Tomcat 10.1.56 added a timestamp inside each encrypted message (replay protection); Debian's
#: package may be older. tribes' ``format`` option follows whichever the Java peer runs.
TIMESTAMPED = _tomcat_version() >= (10, 1, 56)
FORMAT = "timestamped" if TIMESTAMPED else "plain"

#: Tomcat's GCM framing around a payload: 12-byte IV + [8-byte timestamp +] 16-byte tag.
GCM_IV_LEN = 12
GCM_OVERHEAD = GCM_IV_LEN + (8 if TIMESTAMPED else 0) + 16

#: What Tomcat's EncryptInterceptor logs (stderr, JULI) for a message that does not authenticate.
DECRYPT_FAILED = "Failed to decrypt message"
TAG_MISMATCH = "AEADBadTagException: Tag mismatch"

PAYLOADS = [
    b"x",
    b"hello tomcat",
    bytes(range(256)),
    b"\x00" * 7 + b"FLT2002" + b"\xff" * 9 + b"TLF2003",  # framing magics inside the payload
    os.urandom(70_000),  # larger than one 64 KiB socket read
]

#: For the rejection tests: plaintexts shorter than the 12-byte IV, shorter than IV + tag (28 bytes),
#: and longer.
REJECTED_PAYLOADS = [
    b"short",
    b"hello tomcat, in clear",
    b"hello tomcat, in the clear, long enough",
    os.urandom(70_000),
]
#: Long enough (>= 28 bytes) for Tomcat to get as far as checking the GCM tag.
LONG_PLAINTEXT = b"hello tomcat, in the clear, long enough"


def host_str(host: Any) -> str:
    """Member.host as dotted text whether the binding gives str or raw address bytes."""
    if isinstance(host, bytes | bytearray):
        return socket.inet_ntop(socket.AF_INET6 if len(host) == 16 else socket.AF_INET, bytes(host))
    return str(host)


def _addr(member: Any) -> str:
    return f"{host_str(member.host)}:{member.port}"


def _is_java(info: Any) -> Callable[[Any, bytes | None], bool]:
    def pred(member: Any, _data: bytes | None) -> bool:
        return bool(host_str(member.host) == info.host and member.port == info.port)

    return pred


def _stack(key: str | None) -> list[Any]:
    """tribes' interceptor list: Tomcat's default stack, with tomcat_encrypt above the failure detector."""
    if key is None:
        return ["dispatch", "failure_detector"]
    return ["dispatch", {"name": "tomcat_encrypt", "key": key, "format": FORMAT}, "failure_detector"]


def _msg_bytes(line: str) -> bytes:
    """Payload of a ``MSG <host:port> <hex>`` line (``-`` = empty)."""
    hexdata = line.split(" ", 2)[2]
    return b"" if hexdata == "-" else bytes.fromhex(hexdata)


def _count_in_stderr(peer: Any, needle: str) -> int:
    return int(peer.stderr_text().count(needle))


def _wait_stderr_count(peer: Any, needle: str, count: int, timeout: float = EVENT_TIMEOUT) -> None:
    """Wait (bounded) until ``needle`` occurs at least ``count`` times in the peer's stderr.

    stderr has no line events to wait on (the reader only collects it), so this polls.
    """
    deadline = time.monotonic() + timeout
    while True:
        seen = _count_in_stderr(peer, needle)
        if seen >= count:
            return
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"{peer.name}: {needle!r} logged {seen} time(s), expected {count} within {timeout:.1f} s\n"
                f"{peer.dump()}"
            )
        time.sleep(0.02)


def _rejected(node: Any) -> int:
    return int(node.cluster.stats().get("rejected_by_interceptors", 0))


def _wait_rejected(node: Any, at_least: int, timeout: float = EVENT_TIMEOUT) -> int:
    """Poll (bounded) ``stats()["rejected_by_interceptors"]`` until it reaches ``at_least``."""
    deadline = time.monotonic() + timeout
    while True:
        value = _rejected(node)
        if value >= at_least:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"tribes: rejected_by_interceptors = {value}, expected >= {at_least} within {timeout:.1f} s; "
                f"stats: {node.cluster.stats()}"
            )
        # A counter has no event to wait on.
        time.sleep(0.02)


def _java_pair(
    java_peer: JavaPeerFactory, mcast_port: int, key_a: str | None, key_b: str | None
) -> tuple[Any, Any]:
    """Two Java peers (each with its key, None = no EncryptInterceptor) that list each other."""
    a = java_peer(mcast_port, encrypt_key=key_a)
    b = java_peer(mcast_port, encrypt_key=key_b)
    ia, ib = a.info, b.info
    assert ia is not None and ib is not None
    a.wait_line("ADDED", lambda line: line == f"ADDED {ib.address} {ib.unique_id.hex()}")
    b.wait_line("ADDED", lambda line: line == f"ADDED {ia.address} {ia.unique_id.hex()}")
    return a, b


def _connect(
    java_peer: JavaPeerFactory,
    tribes_node: TribesFactory,
    mcast_port: int,
    tribes_key: str | None,
    java_key: str | None,
) -> tuple[Any, Any]:
    """A tribes node and a Java peer on one multicast port, each listing the other."""
    node = tribes_node(mcast_port, interceptors=_stack(tribes_key))
    peer = java_peer(mcast_port, encrypt_key=java_key)
    info = peer.info
    assert info is not None
    node.wait_member(info.host, info.port)
    local = node.local
    peer.wait_line("ADDED", lambda line: line == f"ADDED {_addr(local)} {bytes(local.unique_id).hex()}")
    return peer, node


# ------------------------------------------------------------------------------------------------
# Java <-> Java: Tomcat's own behaviour (needs only Java and the jars)
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", KEYS)
def test_java_peers_same_key_exchange(java_peer: JavaPeerFactory, mcast_port: int, key: str) -> None:
    """Same key: every message arrives intact, both directions, with USE_ACK and SYNCHRONIZED_ACK."""
    a, b = _java_pair(java_peer, mcast_port, key, key)
    assert a.info is not None and b.info is not None
    for sync in (False, True):
        for payload in PAYLOADS:
            for src, dst in ((a, b), (b, a)):
                since = dst.mark()
                assert src.send(payload, sync=sync) == "SENT 1"
                expected = f"MSG {src.info.address} {payload.hex()}"
                dst.wait_line("MSG", lambda line, e=expected: line == e, since=since)
    for peer in (a, b):
        assert DECRYPT_FAILED not in peer.stderr_text(), peer.dump()


def test_java_peers_different_keys_drop_messages(java_peer: JavaPeerFactory, mcast_port: int) -> None:
    """Different keys: membership forms (heartbeats are plaintext); every message is ACKed (SENT 1, even
    with SYNCHRONIZED_ACK) but dropped by the receiver's EncryptInterceptor, which logs
    "Failed to decrypt message" / AEADBadTagException."""
    a, b = _java_pair(java_peer, mcast_port, KEY_128, OTHER_KEY_128)
    assert a.members() == [b.info.address]
    assert b.members() == [a.info.address]
    marks = {id(a): a.mark(), id(b): b.mark()}
    sent = 0
    for sync in (False, True):
        for payload in PAYLOADS:
            for src in (a, b):
                assert src.send(payload, sync=sync) == "SENT 1"
            sent += 1
    for peer in (a, b):
        _wait_stderr_count(peer, DECRYPT_FAILED, sent)
        assert _count_in_stderr(peer, TAG_MISMATCH) >= sent, peer.dump()
        # Each failure was logged from the receiving thread instead of delivering the message, so by
        # now no MSG can still come for these messages.
        assert not peer.has_line("MSG", since=marks[id(peer)]), peer.dump()


def test_java_encrypting_peer_and_plain_peer(java_peer: JavaPeerFactory, mcast_port: int) -> None:
    """An encrypting and a plain member: the plain one receives the ciphertext (IV ‖ ciphertext ‖ tag,
    28 or 36 bytes longer than the payload, a fresh IV per message); the encrypting one drops plaintext."""
    enc, plain = _java_pair(java_peer, mcast_port, KEY_256, None)
    assert enc.info is not None and plain.info is not None

    seen_ivs: set[bytes] = set()
    for payload in [b"hello tomcat", b"hello tomcat", os.urandom(70_000)]:
        since = plain.mark()
        assert enc.send(payload) == "SENT 1"
        line = plain.wait_line("MSG", lambda line: line.split(" ")[1] == enc.info.address, since=since)
        wire = _msg_bytes(line)
        assert len(wire) == len(payload) + GCM_OVERHEAD
        assert payload not in wire
        seen_ivs.add(wire[:GCM_IV_LEN])
    assert len(seen_ivs) == 3

    since = enc.mark()
    for sync in (False, True):
        assert plain.send(LONG_PLAINTEXT, sync=sync) == "SENT 1"
    _wait_stderr_count(enc, DECRYPT_FAILED, 2)
    assert _count_in_stderr(enc, TAG_MISMATCH) >= 2, enc.dump()
    assert not enc.has_line("MSG", since=since), enc.dump()


@pytest.mark.parametrize(
    ("payload", "exception"),
    [
        pytest.param(b"short", "IllegalArgumentException: Invalid buffer arguments", id="below-iv"),
        pytest.param(b"hello tomcat, in clear", "ShortBufferException", id="below-iv-and-tag"),
    ],
)
def test_java_short_plaintext_to_encrypting_peer_is_nacked_with_sync(
    java_peer: JavaPeerFactory, mcast_port: int, payload: bytes, exception: str
) -> None:
    """A message shorter than IV + tag (28 bytes) makes Tomcat's EncryptInterceptor throw a
    RuntimeException: with SYNCHRONIZED_ACK the receiver answers FAIL_ACK (SENDFAIL on the sender),
    with USE_ACK alone the ACK was already sent (SENT 1). Nothing is delivered."""
    assert len(payload) < GCM_IV_LEN + 16
    enc, plain = _java_pair(java_peer, mcast_port, KEY_128, None)
    since = enc.mark()
    assert plain.send(payload) == "SENT 1"
    reply = plain.send(payload, sync=True)
    assert reply.startswith("SENDFAIL "), plain.dump()
    _wait_stderr_count(enc, "Processing of cluster message failed", 2)
    assert exception in enc.stderr_text(), enc.dump()
    assert DECRYPT_FAILED not in enc.stderr_text(), enc.dump()
    assert not enc.has_line("MSG", since=since), enc.dump()
    # A NACK is not a send error: the members still list each other.
    assert enc.members() == [plain.info.address]
    assert plain.members() == [enc.info.address]


def test_java_encrypt_below_failure_detector_fails_to_start(
    java_peer: JavaPeerFactory, mcast_port: int
) -> None:
    """Tomcat refuses an EncryptInterceptor below TcpFailureDetector (its probe bypasses the
    interceptors above it)."""
    peer = java_peer(mcast_port, interceptors="dispatch,tfd,encrypt", encrypt_key=KEY_128, wait_ready=False)
    line = peer.wait_line("STARTFAIL", timeout=60.0)
    assert "EncryptInterceptor must be upstream of TcpFailureDetector" in line
    assert peer.wait_exit(EVENT_TIMEOUT) == 2
    assert not peer.has_line("READY")


# ------------------------------------------------------------------------------------------------
# tribes (tomcat_encrypt) <-> Tomcat (EncryptInterceptor)
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", KEYS)
def test_tribes_and_java_same_key_exchange(
    java_peer: JavaPeerFactory, tribes_node: TribesFactory, mcast_port: int, key: str
) -> None:
    """(a) Same key: membership both ways, and every message arrives with its exact bytes in both
    directions (use_ack; one round with use_ack,sync). Nothing is rejected on either side."""
    peer, node = _connect(java_peer, tribes_node, mcast_port, key, key)
    info = peer.info
    assert info is not None
    me = _addr(node.local)
    assert peer.members() == [me]
    assert [_addr(m) for m in node.cluster.members] == [info.address]

    for payload in PAYLOADS:
        # tribes -> Java
        since = peer.mark()
        node.cluster.send(payload, options="use_ack")
        peer.wait_line("MSG", lambda line, p=payload: line == f"MSG {me} {p.hex()}", since=since)

        # Java -> tribes
        since_ev = node.recorder.mark()
        assert peer.send(payload) == "SENT 1"
        _, sender, data = node.recorder.wait(
            "msg", lambda m, d, p=payload: d == p and _is_java(info)(m, d), since=since_ev
        )
        assert data == payload
        assert bytes(sender.unique_id) == info.unique_id

    payload = b"sync:" + os.urandom(1000)
    since = peer.mark()
    node.cluster.send(payload, options="use_ack,sync")
    peer.wait_line("MSG", lambda line: line == f"MSG {me} {payload.hex()}", since=since)
    since_ev = node.recorder.mark()
    assert peer.send(payload, sync=True) == "SENT 1"
    node.recorder.wait("msg", lambda m, d: d == payload and _is_java(info)(m, d), since=since_ev)

    assert DECRYPT_FAILED not in peer.stderr_text(), peer.dump()
    assert not peer.has_line("OBJ")
    assert _rejected(node) == 0, node.cluster.stats()


def test_tribes_and_java_different_keys_deliver_nothing(
    java_peer: JavaPeerFactory, tribes_node: TribesFactory, mcast_port: int
) -> None:
    """(b) Different keys: membership still forms (it is not encrypted in Tomcat's scheme), but no
    message is delivered on either side. tribes counts Java's messages in
    ``rejected_by_interceptors``; Java logs a decrypt failure for each of tribes' messages and prints
    no MSG."""
    peer, node = _connect(java_peer, tribes_node, mcast_port, KEY_128, OTHER_KEY_128)
    info = peer.info
    assert info is not None
    me = _addr(node.local)
    assert peer.members() == [me]

    # Java -> tribes: ACKed by tribes' transport (as Tomcat does), rejected by tomcat_encrypt.
    before = _rejected(node)
    since_ev = node.recorder.mark()
    for payload in PAYLOADS:
        assert peer.send(payload) == "SENT 1"
    _wait_rejected(node, before + len(PAYLOADS))
    assert node.recorder.find("msg", _is_java(info), since=since_ev) is None, node.recorder.snapshot(since_ev)

    # tribes -> Java: Tomcat ACKs and drops; the send itself succeeds.
    since = peer.mark()
    failed_before = _count_in_stderr(peer, DECRYPT_FAILED)
    for payload in PAYLOADS:
        node.cluster.send(payload, options="use_ack")
    _wait_stderr_count(peer, DECRYPT_FAILED, failed_before + len(PAYLOADS))
    assert not peer.has_line("MSG", since=since), peer.dump()

    # Membership is unaffected by the lost messages.
    assert node.member_at(info.host, info.port) is not None
    assert peer.members() == [me]


def test_tribes_encrypting_rejects_plain_java(
    java_peer: JavaPeerFactory, tribes_node: TribesFactory, mcast_port: int
) -> None:
    """(c) tribes with tomcat_encrypt, Java without encryption: membership forms; Java's plaintext
    messages (including one shorter than the IV) are rejected and counted, never delivered. What
    tribes sends reaches the plain Java peer as Tomcat's framing: 28 or 36 bytes longer, fresh IV each
    time."""
    peer, node = _connect(java_peer, tribes_node, mcast_port, KEY_128, None)
    info = peer.info
    assert info is not None
    me = _addr(node.local)

    before = _rejected(node)
    since_ev = node.recorder.mark()
    for payload in REJECTED_PAYLOADS:
        assert peer.send(payload) == "SENT 1"
    _wait_rejected(node, before + len(REJECTED_PAYLOADS))
    assert node.recorder.find("msg", _is_java(info), since=since_ev) is None, node.recorder.snapshot(since_ev)
    assert node.member_at(info.host, info.port) is not None

    ivs: set[bytes] = set()
    for payload in [b"hello tomcat", b"hello tomcat", os.urandom(70_000)]:
        since = peer.mark()
        node.cluster.send(payload, options="use_ack")
        line = peer.wait_line("MSG", lambda line: line.split(" ")[1] == me, since=since)
        wire = _msg_bytes(line)
        assert len(wire) == len(payload) + GCM_OVERHEAD, (len(wire), len(payload))
        assert payload not in wire
        ivs.add(wire[:GCM_IV_LEN])
    assert len(ivs) == 3
