"""Hostile session messages: malformed ones and ones for a manager that does not exist are counted and
ignored, and the member that received them keeps serving.

A session message is a channel message whose payload starts with the magic ``TRSM``
(rust/session/message.rs); the receiver decodes it in Rust and hands it to its manager. Here another
in-process member sends such payloads with a plain ``cluster.send(raw_bytes)``, built by hand after the
layout in rust/session/message.rs::

    b"TRSM" | version u8 (1) | kind u8 | manager name: u8 length + UTF-8 | body
    body integers: LEB128 varints (signed ones zigzag); strings and byte strings: varint length + bytes

A hand-built *valid* delta is applied (the positive control: the encoder below is right), so each
malformed variant differs from an accepted message only by its defect. Counters checked:
``cluster.stats()["rejected_session_messages"]`` (malformed) and ``["session_messages_unknown_manager"]``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest

MANAGER = "shop"
MAGIC = b"TRSM"
VERSION = 1
# Kinds (Body::kind in rust/session/message.rs).
CREATED, EXPIRED, GET_ALL, ALL_DATA, DELTA, CHANGE_ID, BACKUP, RETRIEVED = 1, 2, 4, 12, 13, 15, 20, 23
MAX_TEXT = 4096
MAX_ITEMS = 1 << 20
#: A stamp version far above anything the test's real commits reach: a hostile write that got through
#: would win over the real value.
EVIL_VERSION = 1_000_000

# --------------------------------------------------------------------------------------------------
# The encoding, by hand
# --------------------------------------------------------------------------------------------------


def uv(n: int) -> bytes:
    """Unsigned LEB128 varint."""
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def iv(n: int) -> bytes:
    """Signed varint: zigzag, then LEB128."""
    return uv(((n << 1) ^ (n >> 63)) & (2**64 - 1))


def text(s: str | bytes) -> bytes:
    """A string or byte string: varint length, then the bytes."""
    b = s.encode() if isinstance(s, str) else s
    return uv(len(b)) + b


def message(kind: int, body: bytes, manager: str | bytes = MANAGER, version: int = VERSION) -> bytes:
    name = manager.encode() if isinstance(manager, str) else manager
    return MAGIC + bytes([version, kind, len(name)]) + name + body


def msgpack_str(s: str) -> bytes:
    """A short msgpack str (fixstr): what the session codec stores for a str attribute."""
    b = s.encode()
    assert len(b) < 32
    return bytes([0xA0 | len(b)]) + b


def set_attr(name: str, value: bytes) -> bytes:
    """Delta action 0 (attribute), sub-action 0 (set) with encoded ``value``."""
    return b"\x00" + text(name) + b"\x00" + text(value)


def delta(
    sid: str | bytes,
    actions: list[bytes],
    version: int = EVIL_VERSION,
    count: int | None = None,
    created: bytes | None = None,
) -> bytes:
    """A Delta body: id, created, last accessed, stamp (version, writer), action count, actions."""
    return (
        text(sid)
        + (iv(1_700_000_000_000) if created is None else created)
        + iv(1_700_000_000_001)
        + uv(version)
        + uv(0xDEAD)
        + uv(len(actions) if count is None else count)
        + b"".join(actions)
    )


def wire_session(sid: str, attrs: list[bytes], count: int | None = None) -> bytes:
    """A WireSession (Backup, AllData, Retrieved): id, times, four stamped fields, primary, backup, attrs."""
    stamp = uv(1) + uv(1)
    return (
        text(sid)
        + iv(1_700_000_000_000)
        + iv(1_700_000_000_001)
        + stamp
        + iv(1800)  # max inactive
        + stamp
        + b"\x01"  # is new
        + stamp
        + b"\x00"  # principal: none
        + stamp
        + b"\x00"  # auth type: none
        + bytes(16)  # primary
        + bytes(16)  # backup
        + uv(len(attrs) if count is None else count)
        + b"".join(attrs)
    )


#: One attribute of a WireSession: name, stamp (version, writer), present flag, value (msgpack 1).
ATTR = text("a") + uv(1) + uv(1) + b"\x01" + text(b"\x01")


def evil_delta(sid: str) -> bytes:
    """A well-formed delta that would overwrite ``cart`` of ``sid`` with "evil"."""
    return message(DELTA, delta(sid, [set_attr("cart", msgpack_str("evil"))]))


def malformed(sid: str) -> list[tuple[str, bytes]]:
    """(what, payload): every one starts with the magic and fails to decode; most would otherwise change
    session ``sid``."""
    good = evil_delta(sid)
    rng = random.Random(3)
    cases = [
        ("magic only", MAGIC),
        ("no kind", MAGIC + bytes([VERSION])),
        ("no name length", MAGIC + bytes([VERSION, DELTA])),
        ("garbage after the kind", MAGIC + bytes([VERSION, DELTA]) + rng.randbytes(64)),
        ("garbage after the name", message(DELTA, rng.randbytes(64))),
        ("version 0", good[:4] + b"\x00" + good[5:]),
        ("version 2", good[:4] + b"\x02" + good[5:]),
        ("version 255", good[:4] + b"\xff" + good[5:]),
        ("kind 0", good[:5] + b"\x00" + good[6:]),
        ("kind 99", good[:5] + b"\x63" + good[6:]),
        ("name longer than the message", MAGIC + bytes([VERSION, DELTA, 200]) + b"shop"),
        ("name not UTF-8", message(DELTA, delta(sid, []), manager=b"sh\xffp")),
        ("trailing byte", good + b"\x00"),
        ("trailing garbage", good + rng.randbytes(16)),
        ("session id not UTF-8", message(DELTA, delta(b"\xc3\x28" + sid.encode(), [set_attr("a", b"\x01")]))),
        ("session id over MAX_TEXT", message(DELTA, delta("a" * (MAX_TEXT + 1), [set_attr("a", b"\x01")]))),
        ("over-long varint", message(DELTA, delta(sid, [], created=b"\xff" * 11))),
        ("varint above 2^64", message(DELTA, delta(sid, [], created=b"\xff" * 9 + b"\x7f"))),
        (
            "a million actions in a few bytes",
            message(DELTA, delta(sid, [set_attr("cart", b"\x01")], count=MAX_ITEMS)),
        ),
        ("action count above MAX_ITEMS", message(DELTA, delta(sid, [], count=MAX_ITEMS + 1))),
        ("action count 2^64-1", message(DELTA, delta(sid, [], count=2**64 - 1))),
        (
            "attribute value length 2^62",
            message(DELTA, delta(sid, [b"\x00" + text("cart") + b"\x00" + uv(2**62) + b"abc"])),
        ),
        ("attribute sub-action 2", message(DELTA, delta(sid, [b"\x00" + text("cart") + b"\x02"]))),
        ("action type 9", message(DELTA, delta(sid, [b"\x09\x00"]))),
        ("is-new flag 2", message(DELTA, delta(sid, [b"\x02\x02"]))),
        ("max inactive beyond i32", message(DELTA, delta(sid, [b"\x03" + iv(2**31)]))),
        ("a million sessions in a few bytes", message(ALL_DATA, uv(1) + uv(MAX_ITEMS) + b"\x00" * 8)),
        ("a million attributes in a backup", message(BACKUP, wire_session(sid, [], count=MAX_ITEMS))),
        ("retrieved flag 2", message(RETRIEVED, uv(1) + b"\x02")),
    ]
    # Every cut of the well-formed delta past the magic (a cut before it is not a session message).
    cases += [(f"delta cut at {n} of {len(good)}", good[:n]) for n in range(len(MAGIC), len(good))]
    return cases


# --------------------------------------------------------------------------------------------------
# Fixtures and checks
# --------------------------------------------------------------------------------------------------


class Pair:
    """``sender`` and ``target`` (LocalNodes) running manager ``shop``, with one real session ``sid``
    committed on the sender and replicated to the target."""

    def __init__(self, sender: Any, target: Any, kind: str, wait_for: Callable[..., Any]) -> None:
        self.sender, self.target, self.kind, self.wait_for = sender, target, kind, wait_for
        self.ms = sender.cluster.manager(MANAGER)
        self.mt = target.cluster.manager(MANAGER)
        session = self.ms.create()
        session["cart"] = ["apple"]
        session["user"] = "alice"
        self.ms.commit(session)
        self.sid = session.id
        self.original = {"cart": ["apple"], "user": "alice"}
        self.wait_holds(self.target, self.sid, self.original)

    def held(self, node: Any, sid: str) -> dict[str, Any] | None:
        session = node.cluster.manager(MANAGER).peek(sid)
        return None if session is None else dict(session)

    def wait_holds(self, node: Any, sid: str, expected: dict[str, Any]) -> None:
        self.wait_for(
            lambda: self.held(node, sid) == expected,
            message=lambda: f"{node.member} to hold {sid} = {expected}; it holds {self.held(node, sid)}",
        )

    def counters(self) -> tuple[int, int]:
        stats = self.target.cluster.stats()
        return stats["rejected_session_messages"], stats["session_messages_unknown_manager"]

    def send_counted(self, what: str, payload: bytes, rejected: int, unknown: int) -> None:
        """Send ``payload`` to the target (acknowledged) and wait until its counters read (rejected,
        unknown)."""
        self.sender.cluster.send(payload, to=self.target.member, options="use_ack")
        self.wait_for(
            lambda: self.counters() == (rejected, unknown),
            message=lambda: (
                f"{what!r} ({payload[:40].hex()}…): counters (rejected, unknown manager) "
                f"{self.counters()}, want {(rejected, unknown)}"
            ),
        )

    def snapshot(self) -> dict[str, dict[str, Any] | None]:
        """What the target holds: every session id with its attributes."""
        return {sid: self.held(self.target, sid) for sid in sorted(self.mt)}

    def assert_keeps_serving(self) -> None:
        """A real commit on the sender still replicates to the target (and, with DeltaManager, one on the
        target to the sender); ordinary messages still reach its listeners."""
        session = self.ms.get(self.sid)
        assert session is not None
        session["cart"] = ["apple", "pear"]
        self.ms.commit(session)
        want = {"cart": ["apple", "pear"], "user": "alice"}
        self.wait_holds(self.target, self.sid, want)
        if self.kind == "delta":
            session = self.mt.get(self.sid)
            assert session is not None
            session["user"] = "bob"
            self.mt.commit(session)
            self.wait_holds(self.sender, self.sid, {**want, "user": "bob"})
        mark = self.target.recorder.mark()
        self.sender.cluster.send(b"still here", to=self.target.member)
        self.target.recorder.wait("msg", lambda m, d: d == b"still here", since=mark)


@pytest.fixture(params=["delta", "backup"])
def pair(
    request: pytest.FixtureRequest,
    mcast_port: int,
    local_node: Callable[..., Any],
    wait_for: Callable[..., Any],
) -> Iterator[Pair]:
    kind = request.param
    managers = {MANAGER: {"kind": kind, "send_mode": "ack"}}
    sender = local_node(mcast_port, managers=managers, name="sender")
    target = local_node(mcast_port, managers=managers, name="target")
    sender.wait_sees(target)
    target.wait_sees(sender)
    yield Pair(sender, target, kind, wait_for)


# --------------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------------


def test_hand_built_delta_is_applied(pair: Pair) -> None:
    """Positive control: the hand-built encoding is what the receiver reads, so the malformed variants
    below are refused for their defect, not for a mistake of this file."""
    payload = message(DELTA, delta("control.1", [set_attr("k", msgpack_str("ok")), set_attr("n", b"\x07")]))
    pair.sender.cluster.send(payload, to=pair.target.member)
    # (A BackupManager, too, takes a delta for a session it does not hold: as a backup copy.)
    pair.wait_holds(pair.target, "control.1", {"k": "ok", "n": 7})
    # And a well-formed delta for the real session wins with its higher stamp: so would a hostile one.
    pair.sender.cluster.send(evil_delta(pair.sid), to=pair.target.member)
    pair.wait_holds(pair.target, pair.sid, {**pair.original, "cart": "evil"})
    assert pair.counters() == (0, 0)


def test_malformed_session_messages_are_counted_and_ignored(pair: Pair) -> None:
    before = pair.snapshot()
    deltas_before = pair.mt.stats()["deltas_received"]
    mark = pair.target.recorder.mark()
    assert pair.counters() == (0, 0)

    cases = malformed(pair.sid)
    for n, (what, payload) in enumerate(cases, start=1):
        pair.send_counted(what, payload, rejected=n, unknown=0)

    assert pair.snapshot() == before, "a malformed message changed the target's sessions"
    assert pair.held(pair.target, pair.sid) == pair.original
    assert pair.mt.stats()["deltas_received"] == deltas_before
    # Session messages, even broken ones, never reach the application's message listeners.
    assert pair.target.recorder.messages(since=mark) == []
    pair.assert_keeps_serving()
    assert pair.counters() == (len(cases), 0)


def test_messages_for_an_unknown_manager_are_counted_and_ignored(pair: Pair) -> None:
    before = pair.snapshot()
    sid = pair.sid
    cases: list[tuple[str, bytes]] = []
    for name in ("nosuch", "SHOP", "shop ", "shop\x00", "x" * 255):
        cases += [
            (f"{name!r}: delta", message(DELTA, delta(sid, [set_attr("cart", msgpack_str("evil"))]), name)),
            (f"{name!r}: expired", message(EXPIRED, text(sid), name)),
            (f"{name!r}: created", message(CREATED, text("planted.1") + iv(0) + iv(60), name)),
            (f"{name!r}: change id", message(CHANGE_ID, text(sid) + text("stolen.1"), name)),
            (f"{name!r}: backup", message(BACKUP, wire_session("planted.2", [ATTR]), name)),
            (f"{name!r}: get all", message(GET_ALL, uv(42), name)),
        ]
    for n, (what, payload) in enumerate(cases, start=1):
        pair.send_counted(what, payload, rejected=0, unknown=n)

    assert pair.snapshot() == before, "a message for an unknown manager changed the target's sessions"
    assert pair.held(pair.target, pair.sid) == pair.original
    assert pair.mt.peek("stolen.1") is None
    pair.assert_keeps_serving()
    assert pair.counters() == (0, len(cases))
