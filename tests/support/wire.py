"""Tribes wire layouts for tests that talk to a member's sockets directly, and a frame-capturing peer.

Imported as ``support.wire`` (tests/conftest.py puts the tests directory on ``sys.path``). The builders
follow Tomcat's layouts (member packet, frame, ChannelData) and are checked against tests/vectors by
tests/test_security.py. The security helpers mirror docs/internals.md "Security": keys derived from a
secret with HKDF-SHA256 (salt ``tribes-v1``), the ``TRAU`` membership trailer, the ``0x54 0x01`` message
envelope.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

LOOPBACK = "127.0.0.1"
MCAST_ADDRESS = "228.0.0.4"  # ClusterConfig's default group, kept by the local preset
VECTORS = Path(__file__).parent.parent / "vectors"

FRAME_START = b"FLT2002"
FRAME_END = b"TLF2003"
FRAME_HEADER = len(FRAME_START) + 4
ACK_FRAME = bytes.fromhex((VECTORS / "ack.hex").read_text().strip())
NACK_FRAME = bytes.fromhex((VECTORS / "nack.hex").read_text().strip())
MEMBER_BEGIN = b"TRIBES-B\x01\x00"
MEMBER_END = b"TRIBES-E\x01\x00"
OPT_BYTE_MESSAGE, OPT_USE_ACK, OPT_SYNC = 0x01, 0x02, 0x04

ENVELOPE_MARKER = b"\x54\x02"  # 0x54 'T', version 2
ENVELOPE_HEADER = 2 + 4 + 12 + 8  # marker, version, key id, nonce, timestamp
GCM_TAG = 16
TRAILER_MAGIC = b"TRAU"
TRAILER_LEN = 32


# --------------------------------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------------------------------


def member_packet(
    host: str = LOOPBACK,
    port: int = 4000,
    unique_id: bytes = bytes(range(16)),
    alive_ms: int = 0x1234,
    command: bytes = b"",
    domain: bytes = b"",
    payload: bytes = b"",
) -> bytes:
    """A Tribes member packet (heartbeat), as McastService sends it."""
    addr = socket.inet_aton(host)
    body = (
        struct.pack(">qiii", alive_ms, port, -1, -1)
        + bytes([len(addr)])
        + addr
        + struct.pack(">i", len(command))
        + command
        + struct.pack(">i", len(domain))
        + domain
        + unique_id
        + struct.pack(">i", len(payload))
        + payload
    )
    return MEMBER_BEGIN + struct.pack(">i", len(body)) + body + MEMBER_END


def frame(body: bytes) -> bytes:
    """``FLT2002 | int length | body | TLF2003``."""
    return FRAME_START + struct.pack(">i", len(body)) + body + FRAME_END


def channel_data(options: int, timestamp: int, unique_id: bytes, address: bytes, message: bytes) -> bytes:
    """A ChannelData body: options, timestamp, then length-prefixed id, sender packet and message."""
    return (
        struct.pack(">iq", options, timestamp)
        + struct.pack(">i", len(unique_id))
        + unique_id
        + struct.pack(">i", len(address))
        + address
        + struct.pack(">i", len(message))
        + message
    )


# --------------------------------------------------------------------------------------------------
# Parsing (offsets, for targeted tampering)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FrameLayout:
    """Where each field of one framed ChannelData message lies, as ``(start, end)`` offsets in the frame."""

    options: int
    fields: dict[str, tuple[int, int]]

    def part(self, data: bytes, name: str) -> bytes:
        start, end = self.fields[name]
        return data[start:end]


def parse_frame(data: bytes) -> FrameLayout:
    """Offsets of a complete frame's ChannelData fields, its sender packet's fields and, when the message
    is a tribes envelope, the envelope's parts. Raises ValueError for anything else."""
    if not data.startswith(FRAME_START) or not data.endswith(FRAME_END):
        raise ValueError("not a frame")
    (length,) = struct.unpack_from(">i", data, len(FRAME_START))
    if FRAME_HEADER + length + len(FRAME_END) != len(data):
        raise ValueError("frame length does not match")
    f: dict[str, tuple[int, int]] = {}
    pos = FRAME_HEADER
    (options,) = struct.unpack_from(">i", data, pos)
    f["options"] = (pos, pos + 4)
    f["timestamp"] = (pos + 4, pos + 12)
    pos += 12

    def block(name: str) -> None:
        nonlocal pos
        (n,) = struct.unpack_from(">i", data, pos)
        f[name] = (pos + 4, pos + 4 + n)
        pos += 4 + n

    block("message_id")
    block("address")
    block("message")
    # The sender's member packet, inside "address".
    a0, _ = f["address"]
    p = a0 + len(MEMBER_BEGIN) + 4
    f["sender_alive"] = (p, p + 8)
    f["sender_port"] = (p + 8, p + 12)
    p += 20
    host_len = data[p]
    f["sender_host"] = (p + 1, p + 1 + host_len)
    p += 1 + host_len
    for name in ("sender_command", "sender_domain"):
        (n,) = struct.unpack_from(">i", data, p)
        f[name] = (p + 4, p + 4 + n)
        p += 4 + n
    f["sender_uid"] = (p, p + 16)
    p += 16
    (n,) = struct.unpack_from(">i", data, p)
    f["sender_payload"] = (p + 4, p + 4 + n)
    # The envelope, inside "message".
    m0, m1 = f["message"]
    if data[m0 : m0 + 2] == ENVELOPE_MARKER:
        f["envelope_key_id"] = (m0 + 2, m0 + 6)
        f["envelope_nonce"] = (m0 + 6, m0 + 18)
        f["envelope_timestamp"] = (m0 + 18, m0 + ENVELOPE_HEADER)
        f["envelope_ciphertext"] = (m0 + ENVELOPE_HEADER, m1 - GCM_TAG)
        f["envelope_tag"] = (m1 - GCM_TAG, m1)
    return FrameLayout(options, f)


def flip(data: bytes, offset: int, mask: int = 0x01) -> bytes:
    """``data`` with the byte at ``offset`` XORed with ``mask``."""
    out = bytearray(data)
    out[offset] ^= mask
    return bytes(out)


# --------------------------------------------------------------------------------------------------
# Keys (docs/internals.md "Security")
# --------------------------------------------------------------------------------------------------


def _hkdf(secret: str, info: bytes, length: int) -> bytes:
    prk = hmac.new(b"tribes-v1", secret.encode("utf-8"), hashlib.sha256).digest()
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


def key_id(secret: str) -> bytes:
    """The 4-byte key id a secret's messages and heartbeats carry."""
    return _hkdf(secret, b"key-id", 4)


def membership_mac_key(secret: str) -> bytes:
    return _hkdf(secret, b"membership-auth", 32)


def signed_member_packet(
    secret: str | None,
    host: str = LOOPBACK,
    port: int = 9,
    unique_id: bytes = bytes(16),
    payload: bytes = b"",
    timestamp_ms: int | None = None,
    tag: bytes | None = None,
    kid: bytes | None = None,
) -> bytes:
    """A member packet with the ``TRAU`` trailer: signed with ``secret``, or with the given ``tag`` /
    ``kid`` instead (to forge bad ones). ``secret=None`` needs both ``tag`` and ``kid``."""
    ts = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
    kid = kid if kid is not None else key_id(secret or "")
    trailer = TRAILER_MAGIC + kid + struct.pack(">q", ts) + bytes(16)
    packet = bytearray(member_packet(host, port, unique_id, payload=payload + trailer))
    at = len(packet) - len(MEMBER_END) - 16
    if tag is None:
        assert secret is not None
        tag = hmac.new(membership_mac_key(secret), bytes(packet), hashlib.sha256).digest()[:16]
    packet[at : at + 16] = tag
    return bytes(packet)


# --------------------------------------------------------------------------------------------------
# Sockets
# --------------------------------------------------------------------------------------------------


def raw_exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Connect to 127.0.0.1:port, write ``data``, half-close, and read until the receiver closes.

    The receiver closes a connection once it has handled everything on it, so when this returns the
    receiver's counters are final for it.
    """
    received = b""
    with socket.create_connection((LOOPBACK, port), timeout=timeout) as s:
        s.settimeout(timeout)
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the receiver may close first (oversized frame)
        for _ in range(10_000):
            try:
                chunk = s.recv(4096)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
    return received


def mcast_sender() -> socket.socket:
    """A UDP socket that sends to the multicast group on the loopback interface only, TTL 0."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(LOOPBACK))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 0)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
    return s


class FrameCapture:
    """A plain TCP listener on loopback that stands in for a member's receiver: it records every complete
    frame written to it and answers frames that ask for one (USE_ACK) with an ACK, so a real member
    treats it as a live peer (its failure detector's probe is answered) and its sends succeed.

    Point a static member entry at :attr:`port` and the bytes the member writes can be replayed,
    tampered with and sent elsewhere. Threads poll with short timeouts; :meth:`close` stops them.
    """

    POLL_S = 0.05
    MAX_POLLS = 100_000  # bounds every loop (~80 min of polling; close() ends them long before)

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind((LOOPBACK, 0))
        self._sock.listen(64)
        self._sock.settimeout(self.POLL_S)
        self.port: int = self._sock.getsockname()[1]
        self._cond = threading.Condition()
        self.frames: list[bytes] = []
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._start(self._accept_loop, "capture-accept")

    def _start(self, target: Callable[..., None], name: str, *args: object) -> None:
        t = threading.Thread(target=target, args=args, name=name, daemon=True)
        self._threads.append(t)
        t.start()

    def _accept_loop(self) -> None:
        for _ in range(self.MAX_POLLS):
            if self._stop.is_set():
                return
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(self.POLL_S)
            with self._cond:
                if self._stop.is_set():
                    conn.close()
                    return
                self._conns.append(conn)
            self._start(self._serve, "capture-conn", conn)

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        for _ in range(self.MAX_POLLS):
            if self._stop.is_set():
                return
            try:
                chunk = conn.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            for _ in range(10_000):  # every complete frame in the buffer
                if len(buf) < FRAME_HEADER:
                    break
                if not buf.startswith(FRAME_START):
                    return  # not a tribes peer: drop the connection
                (length,) = struct.unpack_from(">i", buf, len(FRAME_START))
                total = FRAME_HEADER + length + len(FRAME_END)
                if length < 12 or len(buf) < total:
                    break
                data, buf = buf[:total], buf[total:]
                (options,) = struct.unpack_from(">i", data, FRAME_HEADER)
                with self._cond:
                    self.frames.append(data)
                    self._cond.notify_all()
                if options & OPT_USE_ACK:
                    try:
                        conn.sendall(ACK_FRAME)
                    except OSError:
                        return

    def wait_frame(self, predicate: Callable[[bytes], bool], timeout: float = 10.0, since: int = 0) -> bytes:
        """The first recorded frame at index >= ``since`` that satisfies ``predicate``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            for _ in range(self.MAX_POLLS):
                for data in self.frames[since:]:
                    if predicate(data):
                        return data
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            count = len(self.frames)
        raise AssertionError(f"no matching frame within {timeout:.1f} s ({count} frames recorded)")

    def mark(self) -> int:
        with self._cond:
            return len(self.frames)

    def snapshot(self, since: int = 0) -> list[bytes]:
        """The frames recorded so far, from index ``since``."""
        with self._cond:
            return list(self.frames[since:])

    def close(self) -> None:
        self._stop.set()
        self._sock.close()
        for t in self._threads:
            t.join(timeout=5)
        with self._cond:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.close()

    def __enter__(self) -> FrameCapture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
