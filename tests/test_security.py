"""Issue 5, "Secure by default": the shared secret and the limits, end to end on loopback.

Real processes (tests/support/member_proc.py, with ``--secret``/``--secondary-secret``) and in-process
members (``local_node``), real sockets on 127.0.0.1, multicast on interface 127.0.0.1 with TTL 0, a private
multicast port per test. Frames a secured member writes are captured by a plain TCP listener that a static
member entry points at (``support.wire.FrameCapture``), then replayed, tampered with and sent to another
secured member's receiver port. Every wait has a deadline; counters are read after the receiver closed the
connection it handled (``raw_exchange``), so they are final when compared.

"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import resource
import secrets
import socket
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import tribes
from support.wire import (
    ACK_FRAME,
    ENVELOPE_MARKER,
    FRAME_END,
    FRAME_START,
    LOOPBACK,
    MCAST_ADDRESS,
    OPT_BYTE_MESSAGE,
    OPT_USE_ACK,
    VECTORS,
    FrameCapture,
    channel_data,
    flip,
    frame,
    key_id,
    mcast_sender,
    member_packet,
    parse_frame,
    raw_exchange,
    signed_member_packet,
)

pytestmark = pytest.mark.timeout(120)

Factory = Callable[..., Any]

SECRET = "tribes-test-secret-alpha-0001"
SECRET_B = "tribes-test-secret-bravo-0002"
WRONG = "tribes-test-secret-wrong-9999"
ALL_SECRETS = (SECRET, SECRET_B, WRONG)

#: How many of a peer's heartbeats (every 100 ms in the local preset) must have been rejected before a
#: test concludes that the peer is being refused rather than not heard yet.
REJECTED_HEARTBEATS = 5


@pytest.fixture(autouse=True)
def no_secret_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Secrets come from the tests only (member processes inherit this environment)."""
    monkeypatch.delenv("TRIBES_SECRET", raising=False)
    monkeypatch.delenv("TRIBES_SECONDARY_SECRETS", raising=False)


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def ring(secret: str, *older: str) -> list[str]:
    """member_proc.py arguments for a key ring: ``secret`` sends, ``older`` are still accepted."""
    args = ["--secret", secret]
    for s in older:
        args += ["--secondary-secret", s]
    return args


def config_json(**overrides: Any) -> list[str]:
    return ["--config-json", json.dumps(overrides)]


def ident(member: Any) -> str:
    """``"host:port uidhex"`` of a MemberProcess, a LocalNode or a tribes.Member (MEMBERS' format)."""
    if hasattr(member, "address") and hasattr(member, "unique_id") and hasattr(member, "pid"):
        return f"{member.address} {member.unique_id.hex()}"
    if hasattr(member, "cluster"):
        member = member.member
    return f"{member.host}:{member.port} {bytes(member.unique_id).hex()}"


def members_of(proc: Any) -> set[str]:
    """The member process's current view, as ``ident`` strings."""
    return set(json.loads(proc.request("MEMBERS", "MEMBERS").split(" ", 1)[1]))


def msg_payloads(proc: Any, since: int = 0) -> list[bytes]:
    """The payloads of every MSG line a member process printed."""
    out = []
    for line in proc.lines(since):
        if line.startswith("MSG "):
            parts = line.split(" ")
            out.append(bytes.fromhex(parts[2] if len(parts) > 2 else ""))
    return out


def msg_from(sender: Any, data: bytes) -> Callable[[str], bool]:
    """Predicate for ``MSG <host>:<port> <hex>`` lines from ``sender`` with exactly ``data``."""
    if hasattr(sender, "pid"):
        address = sender.address
    else:
        m = sender.member if hasattr(sender, "cluster") else sender
        address = f"{m.host}:{m.port}"
    expected = f"MSG {address} {data.hex()}".rstrip(" ")
    return lambda line: line.rstrip(" ") == expected


def delta(after: dict[str, int], before: dict[str, int], *keys: str) -> dict[str, int]:
    return {k: after[k] - before[k] for k in keys}


def is_envelope_frame(data: bytes) -> bool:
    """A captured frame that carries an encrypted application message (not a probe or ping)."""
    try:
        layout = parse_frame(data)
    except (ValueError, struct.error, IndexError):
        return False
    return layout.part(data, "message")[:2] == ENVELOPE_MARKER


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def assert_no_secret(text: str, *secret_values: str) -> None:
    for s in secret_values:
        assert s not in text
        assert s.encode().hex() not in text.lower()


def test_wire_helpers_match_vectors() -> None:
    """support.wire builds exactly the golden vectors the Rust core is tested against."""
    packet = member_packet("10.0.0.5", 4000, bytes(range(16)), 0x1234, domain=b"d")
    assert packet.hex() == (VECTORS / "member_packet.hex").read_text().strip()
    data = frame(channel_data(8, 1, bytes(range(0xA0, 0xB0)), packet, b"abc"))
    assert data.hex() == (VECTORS / "channel_data_frame.hex").read_text().strip()
    layout = parse_frame(data)
    assert layout.options == 8
    assert layout.part(data, "message") == b"abc"
    assert layout.part(data, "sender_host") == bytes([10, 0, 0, 5])
    assert layout.part(data, "sender_uid") == bytes(range(16))
    assert layout.part(data, "sender_domain") == b"d"


# --------------------------------------------------------------------------------------------------
# 1. Wrong secret / no secret: cannot join, cannot inject
# --------------------------------------------------------------------------------------------------


def test_wrong_or_missing_secret_cannot_join_or_inject(
    mcast_port: int,
    member_process: Factory,
    wait_for: Factory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    debug = ["--log-level", "DEBUG"]  # and check afterwards that no secret reached a log
    a = member_process(mcast_port, "secured-a", args=[*ring(SECRET), *debug])
    monkeypatch.setenv("TRIBES_SECRET", SECRET)  # b takes the same secret from the environment
    b = member_process(mcast_port, "secured-b", args=debug)
    monkeypatch.delenv("TRIBES_SECRET")
    secured = (a, b)
    a.wait_added(b)
    b.wait_added(a)
    base = {p: p.stats() for p in secured}
    assert all(s["rejected_membership_auth"] == 0 for s in base.values())

    def rejected_more(procs: tuple[Any, ...], before: dict[Any, dict[str, int]]) -> Callable[[], bool]:
        return lambda: all(
            p.stats()["rejected_membership_auth"]
            >= before[p]["rejected_membership_auth"] + REJECTED_HEARTBEATS
            for p in procs
        )

    # A member with the wrong secret: its heartbeats are refused, and it refuses the secured ones.
    wrong = member_process(mcast_port, "wrong-secret", args=[*ring(WRONG), *debug])
    wait_for(rejected_more(secured, base), 10, "the secured members to reject the wrong secret's heartbeats")
    wait_for(
        lambda: wrong.stats()["rejected_membership_auth"] >= 2 * REJECTED_HEARTBEATS,
        10,
        "the wrong-secret member to reject the secured heartbeats",
    )
    # A member without a secret: its (untagged) heartbeats are refused as well.
    mid = {p: p.stats() for p in secured}
    plain = member_process(mcast_port, "no-secret", args=debug)
    wait_for(rejected_more(secured, mid), 10, "the secured members to reject the untagged heartbeats")

    # State: the secured members see each other only; the wrong-secret member sees nobody.
    assert members_of(a) == {ident(b)}
    assert members_of(b) == {ident(a)}
    assert members_of(wrong) == set()
    for p in secured:
        s = p.stats()
        assert s["members_added"] == 1
        assert s["members_disappeared"] == 0
        assert not p.has_line("ADDED", lambda line: line.split(" ")[1] in (wrong.address, plain.address))
    ws = wrong.stats()
    assert ws["heartbeats_received"] == 0 and ws["members_added"] == 0

    # Injection 1: raw frames on a secured member's receiver port, one per connection.
    forged_b = member_packet(LOOPBACK, b.port, b.unique_id)  # pretends to come from b
    kid = key_id(SECRET)
    forgeries = {
        "plaintext, claiming to be b": b"inject: plaintext",
        "envelope with an unknown key id": ENVELOPE_MARKER + os.urandom(4) + os.urandom(12 + 8 + 20 + 16),
        "envelope with the right key id, made-up ciphertext": ENVELOPE_MARKER
        + kid
        + os.urandom(12 + 8 + 20 + 16),
    }
    mark_a = a.mark()
    before = a.stats()
    for what, message in forgeries.items():
        data = frame(channel_data(OPT_BYTE_MESSAGE | OPT_USE_ACK, 1, os.urandom(16), forged_b, message))
        raw_exchange(a.port, data)
        after = a.stats()
        assert delta(after, before, "rejected_auth", "messages_delivered") == {
            "rejected_auth": 1,
            "messages_delivered": 0,
        }, what
        before = after

    # Injection 2: members with the wrong secret and with none send to a by its static address (their
    # failure detector's probe is answered: it carries no secret, so they list a and really send).
    static_a = config_json(membership={"static_members": [{"host": LOOPBACK, "port": a.port}]})
    senders = [
        member_process(mcast_port, "wrong-static", args=[*ring(WRONG), *static_a, *debug], wait_ready=False),
        member_process(mcast_port, "plain-static", args=[*static_a, *debug], wait_ready=False),
    ]
    before = a.stats()
    for sender in senders:
        sender.wait_ready()
        wait_for(
            lambda sender=sender: any(m.startswith(f"{a.address} ") for m in members_of(sender)),
            10,
            f"{sender.name} to list a",
        )
        for options in ("use_ack", "use_ack,sync", "async"):
            # use_ack is acknowledged on receipt, before decryption, so this may well say SENT.
            reply = sender.send(f"inject from {sender.name}, {options}".encode(), options, to=[a.address])
            assert reply.startswith(("SENT", "SENDFAIL")), reply
    wait_for(
        lambda: a.stats()["rejected_auth"] >= before["rejected_auth"] + 6,
        10,
        lambda: f"a to reject the six injected messages; stats: {a.stats()}",
    )
    assert a.stats()["messages_delivered"] == before["messages_delivered"]
    assert not any(ident(sender) in members_of(a) for sender in senders)

    # Control: a real member's message gets through, and it is the only one a's listener ever saw.
    control = b"control from b"
    assert b.send(control, "use_ack,sync", to=[a.address]) == "SENT"
    a.wait_line("MSG", msg_from(b, control), since=mark_a)
    assert msg_payloads(a, mark_a) == [control]
    assert a.stats()["messages_delivered"] == 1
    assert members_of(a) == {ident(b)}  # nobody joined meanwhile

    for p in (a, b, wrong, plain, *senders):
        assert_no_secret(p.stderr_text(), *ALL_SECRETS)
        assert_no_secret("\n".join(p.lines()), *ALL_SECRETS)


def test_sync_send_with_the_wrong_secret_fails(
    mcast_port: int, local_node: Factory, free_tcp_port: Factory, wait_for: Factory
) -> None:
    port = free_tcp_port()
    receiver = local_node(mcast_port, secret=SECRET, receiver={"port": port, "auto_bind": 1})
    sender = local_node(
        mcast_port, secret=WRONG, membership={"static_members": [{"host": LOOPBACK, "port": port}]}
    )
    target = wait_for(lambda: next(iter(sender.cluster.members), None), 10, "the sender to list the receiver")
    before = receiver.cluster.stats()
    try:
        with pytest.raises(tribes.ChannelError) as info:
            sender.cluster.send(b"processed?", to=target, options="use_ack,sync")
        assert [f.member for f in info.value.faulty] == [target]
    finally:
        assert delta(receiver.cluster.stats(), before, "messages_delivered", "rejected_auth") == {
            "messages_delivered": 0,
            "rejected_auth": 1,
        }


# --------------------------------------------------------------------------------------------------
# 2, 3. Captured messages: replayed, tampered with
# --------------------------------------------------------------------------------------------------


class Capturing:
    """A secured in-process member whose only (static) peer is a FrameCapture: what it sends there is
    recorded as the exact bytes it wrote."""

    def __init__(self, node: Any, capture: FrameCapture, peer: Any) -> None:
        self.node, self.capture, self.peer = node, capture, peer

    def capture_message(self, data: bytes, options: str = "use_ack") -> bytes:
        mark = self.capture.mark()
        self.node.cluster.send(data, to=self.peer, options=options)
        return self.capture.wait_frame(is_envelope_frame, since=mark)


@pytest.fixture
def capture() -> Iterator[FrameCapture]:
    with FrameCapture() as cap:
        yield cap


def capturing_node(
    local_node: Factory,
    mcast_port: int,
    capture: FrameCapture,
    wait_for: Factory,
    static: tuple[dict[str, Any], ...] = (),
    secret: str = SECRET,
    **overrides: Any,
) -> Capturing:
    membership = {
        "static_members": [*static, {"host": LOOPBACK, "port": capture.port}],
        **overrides.pop("membership", {}),
    }
    node = local_node(mcast_port, secret=secret, membership=membership, **overrides)
    peer = wait_for(
        lambda: next((m for m in node.cluster.members if m.port == capture.port), None),
        10,
        "the secured member to admit the capturing peer",
    )
    return Capturing(node, capture, peer)


def test_replayed_message_is_rejected(
    mcast_port: int, local_node: Factory, capture: FrameCapture, wait_for: Factory
) -> None:
    sender = capturing_node(local_node, mcast_port, capture, wait_for)
    target = local_node(mcast_port, secret=SECRET)  # alone on the multicast port: the sender is static
    first = sender.capture_message(b"first")
    second = sender.capture_message(b"second")
    assert first != second
    counters = ("messages_received", "messages_delivered", "rejected_replay", "rejected_auth")
    base = target.cluster.stats()

    # Delivered once...
    assert raw_exchange(target.port, first) == ACK_FRAME
    _, who, _ = target.recorder.wait("msg", lambda _m, d: d == b"first")
    assert who == sender.node.member  # the envelope binds the sender: it is what the listener sees
    # ...then refused, on a new connection and several times on one connection.
    raw_exchange(target.port, first)
    assert delta(target.cluster.stats(), base, *counters) == {
        "messages_received": 2,
        "messages_delivered": 1,
        "rejected_replay": 1,
        "rejected_auth": 0,
    }
    raw_exchange(target.port, second + second + first)
    assert delta(target.cluster.stats(), base, *counters) == {
        "messages_received": 5,
        "messages_delivered": 2,
        "rejected_replay": 3,
        "rejected_auth": 0,
    }
    target.recorder.wait("msg", lambda _m, d: d == b"second")
    assert target.recorder.messages() == [b"first", b"second"]


def test_message_outside_the_replay_window_is_rejected(
    mcast_port: int, local_node: Factory, capture: FrameCapture, wait_for: Factory
) -> None:
    """A message never seen before is still refused once its timestamp is older than the window."""
    window_ms = 300
    sender = capturing_node(local_node, mcast_port, capture, wait_for)
    target = local_node(mcast_port, secret=SECRET, replay_window_ms=window_ms)
    fresh = sender.capture_message(b"fresh")
    stale = sender.capture_message(b"stale")
    sealed_at = time.time()
    assert raw_exchange(target.port, fresh) == ACK_FRAME
    target.recorder.wait("msg", lambda _m, d: d == b"fresh")
    # Wait (by the clock, not for an event) until the second message is older than the window.
    wait_for(lambda: time.time() > sealed_at + 2 * window_ms / 1000, 5, "the replay window to pass")
    before = target.cluster.stats()
    raw_exchange(target.port, stale)
    assert delta(target.cluster.stats(), before, "messages_delivered", "rejected_replay") == {
        "messages_delivered": 0,
        "rejected_replay": 1,
    }
    assert target.recorder.messages() == [b"fresh"]


def test_replay_is_rejected_after_its_nonce_was_evicted(
    mcast_port: int, local_node: Factory, capture: FrameCapture, wait_for: Factory
) -> None:
    """The replay memory is bounded (replay_cache messages per sender); a message that fell out of it is
    still refused, because it is further behind the sender's newest than the memory reaches."""
    cache = 1024
    sender = capturing_node(local_node, mcast_port, capture, wait_for)
    target = local_node(mcast_port, secret=SECRET, replay_cache=cache)
    mark = capture.mark()
    count = cache + 100
    for i in range(count):
        sender.node.cluster.send(b"burst %d" % i, to=sender.peer, options="async")
    wait_for(
        lambda: sum(is_envelope_frame(f) for f in capture.snapshot(mark)) >= count,
        10,
        "the burst captured",
    )
    burst = [f for f in capture.snapshot(mark) if is_envelope_frame(f)]
    assert len(burst) == count
    raw_exchange(target.port, b"".join(burst))  # one connection, in order: all delivered
    target.recorder.wait_messages(count)
    assert target.cluster.stats()["messages_delivered"] == count
    before = target.cluster.stats()
    raw_exchange(target.port, burst[0] + burst[1] + burst[-1])  # evicted, evicted, remembered
    assert delta(target.cluster.stats(), before, "messages_delivered", "rejected_replay") == {
        "messages_delivered": 0,
        "rejected_replay": 3,
    }
    assert target.recorder.messages() == [b"burst %d" % i for i in range(count)]


# Regions of a captured frame that the envelope authenticates: the ciphertext and its tag, and the
# associated data (options, message id, sender host, port and unique id). One flipped bit anywhere in
# them must make the message fail authentication.
AUTHENTICATED_REGIONS = [
    ("envelope_key_id", 0),
    ("envelope_nonce", 5),
    ("envelope_timestamp", -1),  # in clear, bound as associated data
    ("envelope_ciphertext", 0),
    ("envelope_ciphertext", -1),  # the payload's last byte
    ("envelope_tag", -1),
    ("options", 3),  # 0x01 BYTE_MESSAGE: bound as associated data
    ("message_id", 7),
    ("sender_host", -1),
    ("sender_port", -1),
    ("sender_uid", 0),
]


def test_tampered_byte_is_rejected(
    mcast_port: int, local_node: Factory, capture: FrameCapture, wait_for: Factory
) -> None:
    sender = capturing_node(local_node, mcast_port, capture, wait_for)
    target = local_node(mcast_port, secret=SECRET)
    original = sender.capture_message(b"the genuine payload, to be tampered with")
    layout = parse_frame(original)
    counters = ("messages_received", "messages_delivered", "rejected_auth", "rejected_replay")

    for region, index in AUTHENTICATED_REGIONS:
        start, end = layout.fields[region]
        tampered = flip(original, (start if index >= 0 else end) + index)
        assert len(tampered) == len(original)
        before = target.cluster.stats()
        raw_exchange(target.port, tampered)
        assert delta(target.cluster.stats(), before, *counters) == {
            "messages_received": 1,
            "messages_delivered": 0,
            "rejected_auth": 1,
            "rejected_replay": 0,
        }, region

    # The untouched original is still delivered, once: the tampered copies did not use up its nonce.
    before = target.cluster.stats()
    assert raw_exchange(target.port, original) == ACK_FRAME
    target.recorder.wait("msg", lambda _m, d: d == b"the genuine payload, to be tampered with")
    assert delta(target.cluster.stats(), before, "messages_delivered", "rejected_auth") == {
        "messages_delivered": 1,
        "rejected_auth": 0,
    }
    assert target.recorder.messages() == [b"the genuine payload, to be tampered with"]
    assert target.cluster.stats()["rejected_auth"] == len(AUTHENTICATED_REGIONS)


def test_tampered_sender_details_are_rejected(
    mcast_port: int, local_node: Factory, capture: FrameCapture, wait_for: Factory
) -> None:
    sender = capturing_node(
        local_node, mcast_port, capture, wait_for, membership={"domain": b"shop", "payload": b"app-data"}
    )
    target = local_node(mcast_port, secret=SECRET)
    accepted = []
    for region in ("sender_payload", "sender_domain", "sender_alive"):
        original = sender.capture_message(b"tamper " + region.encode())
        start, _ = parse_frame(original).fields[region]
        before = target.cluster.stats()
        raw_exchange(target.port, flip(original, start, 0x20))
        changes = delta(target.cluster.stats(), before, "messages_delivered", "rejected_auth")
        if changes != {"messages_delivered": 0, "rejected_auth": 1}:
            accepted.append((region, changes))
    delivered = [
        (m.domain, m.payload, m.alive_ms) for _, kind, m, _ in target.recorder.snapshot() if kind == "msg"
    ]
    assert accepted == [], f"tampered frames accepted: {accepted}; listener saw senders {delivered}"


def test_replay_is_rejected_after_the_sender_left_the_view(
    mcast_port: int, local_node: Factory, capture: FrameCapture, wait_for: Factory, free_tcp_port: Factory
) -> None:
    """Static membership, so that the target has the sender in its view under the identity the sender
    signs with (a static member's unique id is derived from host:port on both sides)."""
    sender_port, target_port = free_tcp_port(), free_tcp_port()
    sender_entry = {"host": LOOPBACK, "port": sender_port}
    sender = capturing_node(
        local_node,
        mcast_port,
        capture,
        wait_for,
        static=(sender_entry,),
        receiver={"port": sender_port, "auto_bind": 1},
    )
    target = local_node(
        mcast_port,
        secret=SECRET,
        membership={"static_members": [sender_entry]},
        receiver={"port": target_port, "auto_bind": 1},
    )
    sender_in_view = target.wait_sees(sender.node)
    captured = sender.capture_message(b"do it once")
    captured_at = time.monotonic()
    assert raw_exchange(target.port, captured) == ACK_FRAME
    target.recorder.wait("msg", lambda _m, d: d == b"do it once")
    raw_exchange(target.port, captured)
    assert target.cluster.stats()["rejected_replay"] == 1

    sender.node.stop()  # leaves; the target notices (static probe / broken connection)
    target.recorder.wait("gone", lambda m, _d: m == sender_in_view)
    assert time.monotonic() - captured_at < 8, "too slow to stay inside the 10 s replay window"
    before = target.cluster.stats()
    raw_exchange(target.port, captured)
    assert delta(target.cluster.stats(), before, "messages_delivered", "rejected_replay") == {
        "messages_delivered": 0,
        "rejected_replay": 1,
    }


# --------------------------------------------------------------------------------------------------
# 4. Key rotation: the documented three steps, one restart at a time
# --------------------------------------------------------------------------------------------------


def assert_cluster_whole(procs: list[Any], wait_for: Factory, tag: str) -> None:
    """Every process lists exactly the others, and a use_ack send from each reaches every other one
    (checked on the receivers' listeners: an ACK alone comes before decryption)."""
    for p in procs:
        expected = {ident(o) for o in procs if o is not p}
        wait_for(
            lambda p=p, expected=expected: members_of(p) == expected,
            10,
            lambda p=p, expected=expected: f"[{tag}] {p.name} to list {expected}; it lists {members_of(p)}",
        )
    marks = {p: p.mark() for p in procs}
    for p in procs:
        data = f"{tag} from {p.name}".encode()
        assert p.send(data, "use_ack") == "SENT", tag
        for o in procs:
            if o is not p:
                o.wait_line("MSG", msg_from(p, data), since=marks[o])
    for p in procs:
        assert p.stats()["rejected_auth"] == 0, f"[{tag}] {p.name}: {p.stats()}"


def test_key_rotation_in_three_steps_keeps_the_cluster_whole(
    mcast_port: int, member_process: Factory, wait_for: Factory
) -> None:
    """README "Rotation without downtime": (1) every member gets [old, new] (sends old, accepts both),
    (2) every member gets [new, old], (3) every member gets [new]. Members restart one at a time; after
    each restart all live members see each other and exchange acknowledged messages."""
    old, new = SECRET, SECRET_B
    procs = [member_process(mcast_port, f"m{i}", args=ring(old)) for i in range(3)]
    assert_cluster_whole(procs, wait_for, "start")

    # Why step 1 exists: a member that already sends with the new secret is refused by the others.
    before = {p: p.stats()["rejected_membership_auth"] for p in procs}
    hasty = member_process(mcast_port, "hasty", args=ring(new, old))
    wait_for(
        lambda: all(p.stats()["rejected_membership_auth"] >= before[p] + REJECTED_HEARTBEATS for p in procs),
        10,
        "the old-secret members to refuse the new secret",
    )
    assert all(ident(hasty) not in members_of(p) for p in procs)
    assert hasty.stop() == 0
    steps = [("step1", ring(old, new)), ("step2", ring(new, old)), ("step3", ring(new))]
    for step, args in steps:
        for i in range(3):
            # Start the replacement first (its interpreter starts while the old one leaves).
            replacement = member_process(mcast_port, f"m{i}-{step}", args=args, wait_ready=False)
            assert procs[i].stop() == 0
            replacement.wait_ready()
            procs[i] = replacement
            assert_cluster_whole(procs, wait_for, f"{step}, m{i} restarted")

    # Control: the old secret really is gone now; a member that still has only it is refused.
    before = {p: p.stats()["rejected_membership_auth"] for p in procs}
    stale = member_process(mcast_port, "stale", args=ring(old))
    wait_for(
        lambda: all(p.stats()["rejected_membership_auth"] >= before[p] + REJECTED_HEARTBEATS for p in procs),
        10,
        "the rotated members to refuse the old secret",
    )
    assert members_of(stale) == set()
    for p in procs:
        assert ident(stale) not in members_of(p)


# --------------------------------------------------------------------------------------------------
# 5. Garbage and oversized length fields on a secured member
# --------------------------------------------------------------------------------------------------


def test_garbage_on_a_secured_member_is_counted_and_it_keeps_serving(
    mcast_port: int, member_process: Factory, local_node: Factory
) -> None:
    node = local_node(mcast_port, secret=SECRET)
    peer = member_process(mcast_port, "peer", args=ring(SECRET))
    peer_member = node.wait_sees(peer)
    peer.wait_added(node.member)
    sender = member_packet(LOOPBACK, 9, os.urandom(16))
    plaintext = frame(channel_data(OPT_BYTE_MESSAGE | OPT_USE_ACK, 1, os.urandom(16), sender, b"plain"))
    keys = ("rejected_frames", "rejected_oversized", "rejected_channel_data", "rejected_auth")
    cases: list[tuple[str, bytes, dict[str, int]]] = [
        ("random bytes", b"\x00" + os.urandom(4000).replace(b"F", b"f"), {"rejected_frames": 1}),
        ("bad end marker", FRAME_START + struct.pack(">i", 3) + b"abc" + b"XXXXXXX", {"rejected_frames": 1}),
        (
            "negative length",
            FRAME_START + struct.pack(">i", -5) + b"abcde" + FRAME_END,
            {"rejected_frames": 1},
        ),
        (
            "huge length",
            FRAME_START + struct.pack(">i", 0x7FFFFFFF) + os.urandom(64),
            {"rejected_oversized": 1},
        ),
        (
            "just above max_frame",
            FRAME_START + struct.pack(">i", 16 * 1024 * 1024 + 1) + os.urandom(64),
            {"rejected_oversized": 1},
        ),
        ("truncated frame", FRAME_START + struct.pack(">i", 100) + b"x" * 10, {"rejected_frames": 1}),
        ("undecodable channel data", frame(b"\x00" * 5), {"rejected_channel_data": 1}),
        (
            "channel data with an oversized inner length",
            frame(struct.pack(">iqi", OPT_BYTE_MESSAGE, 1, 0x7FFFFFF0) + os.urandom(40)),
            {"rejected_channel_data": 1},
        ),
        ("a valid but unencrypted message", plaintext, {"rejected_auth": 1}),
        (
            "an envelope cut short",
            frame(
                channel_data(
                    OPT_BYTE_MESSAGE, 1, os.urandom(16), sender, ENVELOPE_MARKER + key_id(SECRET) + b"x"
                )
            ),
            {"rejected_auth": 1},
        ),
    ]
    for what, data, expected in cases:
        before = node.cluster.stats()
        raw_exchange(node.port, data)
        want = dict.fromkeys(keys, 0) | expected
        assert delta(node.cluster.stats(), before, *keys, "messages_delivered") == want | {
            "messages_delivered": 0
        }, what

    # The member kept working throughout, both ways.
    mark = node.recorder.mark()
    assert peer.send(b"from the real member", "use_ack,sync") == "SENT"
    node.recorder.wait("msg", lambda _m, d: d == b"from the real member", since=mark)
    mark = peer.mark()
    node.cluster.send(b"to the real member", to=peer_member, options="use_ack")
    peer.wait_line("MSG", msg_from(node, b"to the real member"), since=mark)
    assert node.recorder.messages() == [b"from the real member"]
    assert node.sees(peer) == peer_member
    assert node.cluster.stats()["connections_refused"] == 0


# --------------------------------------------------------------------------------------------------
# 6. Idle connections: 1,000 of them, the connection cap, the idle timeout
# --------------------------------------------------------------------------------------------------

IDLE_CONNECTIONS = 1000


@pytest.fixture
def fd_headroom() -> Iterator[None]:
    """Enough file descriptors for 1,000 connections in this process and in the member processes it
    starts (they inherit the limit); the soft limit is restored afterwards."""
    needed = IDLE_CONNECTIONS + 1000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {needed}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.fixture
def open_sockets() -> Iterator[list[socket.socket]]:
    """A list to put client sockets in; all closed at teardown."""
    socks: list[socket.socket] = []
    yield socks
    for s in socks:
        s.close()


def open_idle_connections(port: int, count: int, into: list[socket.socket]) -> None:
    for _ in range(count):
        s = socket.create_connection((LOOPBACK, port), timeout=5)
        into.append(s)


def closed_by_peer(socks: list[socket.socket]) -> int:
    """How many of ``socks`` the other end has closed (readable, and reading gives EOF or a reset)."""
    count = 0
    for s in socks:
        if s.fileno() < 0:
            count += 1
            continue
        s.setblocking(False)
        try:
            if s.recv(1, socket.MSG_PEEK) == b"":
                count += 1
        except BlockingIOError:
            pass
        except ConnectionResetError:
            count += 1
        finally:
            s.setblocking(True)
    return count


def test_thousand_idle_connections_leave_the_member_serving(
    fd_headroom: None,
    open_sockets: list[socket.socket],
    mcast_port: int,
    member_process: Factory,
    local_node: Factory,
    wait_for: Factory,
) -> None:
    target = member_process(mcast_port, "target", args=ring(SECRET))  # default cap: 1024 connections
    base = target.stats()
    open_idle_connections(target.port, IDLE_CONNECTIONS, open_sockets)
    wait_for(
        lambda: target.stats()["connections_accepted"] >= base["connections_accepted"] + IDLE_CONNECTIONS,
        10,
        lambda: f"the target to accept {IDLE_CONNECTIONS} connections; stats: {target.stats()}",
    )
    assert closed_by_peer(open_sockets) == 0  # all held open, none refused

    # A member that joins now still gets in and exchanges messages both ways.
    node = local_node(mcast_port, secret=SECRET)
    target_member = node.wait_sees(target)
    target.wait_added(node.member)
    mark = target.mark()
    node.cluster.send(b"through the crowd", to=target_member, options="use_ack,sync")
    target.wait_line("MSG", msg_from(node, b"through the crowd"), since=mark)
    assert target.send(b"and back", "use_ack,sync", to=[f"{node.member.host}:{node.port}"]) == "SENT"
    node.recorder.wait("msg", lambda _m, d: d == b"and back")
    stats = target.stats()
    assert stats["connections_refused"] == 0
    assert stats["connections_idle_closed"] == 0
    assert members_of(target) == {ident(node)}


def test_connection_cap_refuses_the_excess_and_idle_connections_are_closed(
    fd_headroom: None,
    open_sockets: list[socket.socket],
    mcast_port: int,
    member_process: Factory,
    local_node: Factory,
    wait_for: Factory,
) -> None:
    """max_connections 200: of 1,000 idle connections the excess is refused at once; the accepted ones,
    and one that dribbles a frame in byte by byte, are closed after the idle timeout (the minimum, 20 s),
    while a real member's pooled connection survives (its sender pings it every 15 s)."""
    cap, idle_ms = 200, 20_000
    target = member_process(
        mcast_port,
        "target",
        args=[*ring(SECRET), *config_json(receiver={"max_connections": cap, "idle_timeout_ms": idle_ms})],
    )
    node = local_node(mcast_port, secret=SECRET)
    target_member = node.wait_sees(target)
    target.wait_added(node.member)
    mark = target.mark()
    node.cluster.send(b"before", to=target_member, options="use_ack")  # opens the pooled connection
    target.wait_line("MSG", msg_from(node, b"before"), since=mark)

    # A slow-loris connection: a frame header, then one byte a second.
    accepted_before = target.stats()["connections_accepted"]
    loris = socket.create_connection((LOOPBACK, target.port), timeout=5)
    open_sockets.append(loris)
    loris.sendall(FRAME_START + struct.pack(">i", 1000))
    wait_for(
        lambda: target.stats()["connections_accepted"] > accepted_before, 10, "the slow connection accepted"
    )
    base = target.stats()
    flood_started = time.monotonic()
    open_idle_connections(target.port, IDLE_CONNECTIONS, open_sockets)

    def handled() -> int:
        s = target.stats()
        return sum(delta(s, base, "connections_accepted", "connections_refused").values())

    wait_for(lambda: handled() >= IDLE_CONNECTIONS, 10, lambda: f"all connections handled: {target.stats()}")
    after = target.stats()
    accepted = after["connections_accepted"] - base["connections_accepted"]
    refused = after["connections_refused"] - base["connections_refused"]
    assert accepted + refused == IDLE_CONNECTIONS, after
    assert refused >= IDLE_CONNECTIONS - cap
    assert accepted <= cap - 2  # the pooled connection and the slow one hold two slots
    flood = open_sockets[1:]
    wait_for(lambda: closed_by_peer(flood) >= refused, 10, "the refused connections to be closed")

    # The member keeps serving over its existing connection.
    mark = target.mark()
    node.cluster.send(b"during the flood", to=target_member, options="use_ack,sync")
    target.wait_line("MSG", msg_from(node, b"during the flood"), since=mark)

    # The idle ones (and the slow one) are closed after the idle timeout.
    expected_idle = accepted + 1
    loris_bytes = b"x" * 40
    for i in range(len(loris_bytes)):
        if target.stats()["connections_idle_closed"] >= expected_idle:
            break
        with contextlib.suppress(OSError):  # closed already
            loris.send(loris_bytes[i : i + 1])
        wait_for(
            lambda i=i: (
                target.stats()["connections_idle_closed"] >= expected_idle
                or time.monotonic() > flood_started + i + 1
            ),
            2,
            "the next second",
        )
    wait_for(
        lambda: target.stats()["connections_idle_closed"] >= expected_idle,
        max(1.0, flood_started + idle_ms / 1000 + 10 - time.monotonic()),
        lambda: (
            f"{expected_idle} idle connections closed within {idle_ms // 1000 + 10} s; "
            f"stats: {target.stats()}"
        ),
    )
    elapsed = time.monotonic() - flood_started
    assert idle_ms / 1000 - 1 <= elapsed, f"closed too early: {elapsed:.1f} s"
    assert target.stats()["connections_idle_closed"] == expected_idle  # not the real member's connection
    wait_for(lambda: closed_by_peer(open_sockets) >= len(open_sockets), 10, "every flood socket closed")

    # Slots are free again: a new connection is accepted, and the member still serves.
    before = target.stats()
    raw_exchange(target.port, b"garbage")
    assert delta(target.stats(), before, "connections_accepted", "connections_refused") == {
        "connections_accepted": 1,
        "connections_refused": 0,
    }
    mark = target.mark()
    node.cluster.send(b"after the timeout", to=target_member, options="use_ack,sync")
    target.wait_line("MSG", msg_from(node, b"after the timeout"), since=mark)
    assert members_of(target) == {ident(node)}


# --------------------------------------------------------------------------------------------------
# 7. A flood of membership packets with random unique ids
# --------------------------------------------------------------------------------------------------

FLOOD_PACKETS = 20_000
#: Then wait until the member has handled them: the kernel drops what overflows a socket's receive buffer
#: (the core asks for 1 MiB; with the common net.core.rmem_max of 208 KiB, ~150 such datagrams fit).
FLOOD_BATCH = 100
MAX_RSS_GROWTH_KIB = 30 * 1024


def fake_heartbeat(rng: Any) -> bytes:
    """A valid-looking heartbeat of a made-up member (nothing listens on port 9) with a ~1 KiB payload."""
    return member_packet(
        LOOPBACK,
        9,
        rng.randbytes(16),
        alive_ms=rng.randrange(1, 10**9),
        payload=rng.randbytes(rng.randrange(512, 1024)),
    )


def flood(
    mcast_port: int,
    make: Callable[[int], bytes],
    handled: Callable[[], int],
    on_batch: Callable[[int], None],
    wait_for: Factory,
) -> None:
    """Send FLOOD_PACKETS datagrams ``make(i)`` to the group in batches; after each batch wait until
    ``handled()`` (a counter of the target, counting exactly these datagrams) shows the batch was handled,
    then call ``on_batch(batch number)``."""
    group = (MCAST_ADDRESS, mcast_port)
    start = handled()
    with mcast_sender() as s:
        for first in range(0, FLOOD_PACKETS, FLOOD_BATCH):
            for i in range(first, first + FLOOD_BATCH):
                s.sendto(make(i), group)
            sent = first + FLOOD_BATCH
            wait_for(
                lambda sent=sent: handled() - start >= sent,
                10,
                lambda sent=sent: f"the member to handle {sent} packets; it handled {handled() - start}",
            )
            on_batch(first // FLOOD_BATCH)


def test_membership_flood_against_an_unsecured_member_is_bounded(
    mcast_port: int, member_process: Factory, local_node: Factory, wait_for: Factory
) -> None:
    import random

    max_members = 64
    # Without the failure detector every new member is admitted at once, so the view really fills up.
    target = member_process(
        mcast_port,
        "target",
        args=config_json(membership={"max_members": max_members}, interceptors=["dispatch"]),
    )
    node = local_node(mcast_port)
    target_member = node.wait_sees(target)
    target.wait_added(node.member)
    base = target.stats()
    rss_before = rss_kib(target.pid)
    rng = random.Random(5)
    sizes: list[int] = []

    def sample(batch: int) -> None:
        if batch % 10 == 0:
            sizes.append(len(members_of(target)))

    def processed() -> int:
        """Made-up members handled: each one is new, so either admitted (while there is room) or ignored
        and counted (the real member is already in, and counts for neither)."""
        s = target.stats()
        return sum(delta(s, base, "rejected_members_over_limit", "members_added").values())

    flood(mcast_port, lambda _i: fake_heartbeat(rng), processed, sample, wait_for)
    stats = target.stats()
    assert processed() == FLOOD_PACKETS
    assert max(sizes) == max_members  # the view filled up to the limit, never beyond
    assert stats["rejected_members_over_limit"] - base["rejected_members_over_limit"] >= FLOOD_PACKETS // 2
    growth = rss_kib(target.pid) - rss_before
    assert growth < MAX_RSS_GROWTH_KIB, f"RSS grew by {growth} KiB"

    # It keeps serving, and the made-up members expire (they never heartbeat again).
    mark = target.mark()
    node.cluster.send(b"after the flood", to=target_member, options="use_ack,sync")
    target.wait_line("MSG", msg_from(node, b"after the flood"), since=mark)
    assert target.send(b"and back", "use_ack", to=[f"{node.member.host}:{node.port}"]) == "SENT"
    node.recorder.wait("msg", lambda _m, d: d == b"and back")
    wait_for(lambda: members_of(target) == {ident(node)}, 10, "the made-up members to expire")
    assert node.sees(target) == target_member


def test_membership_flood_against_a_secured_member_is_refused(
    mcast_port: int, member_process: Factory, local_node: Factory, wait_for: Factory
) -> None:
    import random

    target = member_process(mcast_port, "target", args=ring(SECRET))
    node = local_node(mcast_port, secret=SECRET)
    target_member = node.wait_sees(target)
    target.wait_added(node.member)
    base = target.stats()
    rss_before = rss_kib(target.pid)
    rng = random.Random(7)
    kid = key_id(SECRET)

    def forged(i: int) -> bytes:
        if i % 2:  # no tag at all
            return fake_heartbeat(rng)
        # the right key id and a current timestamp, a made-up tag: the HMAC must be checked
        return signed_member_packet(
            None,
            LOOPBACK,
            9,
            rng.randbytes(16),
            payload=rng.randbytes(rng.randrange(0, 512)),
            tag=rng.randbytes(16),
            kid=kid,
        )

    views: list[set[str]] = []
    flood(
        mcast_port,
        forged,
        lambda: target.stats()["rejected_membership_auth"],
        lambda batch: views.append(members_of(target)) if batch % 10 == 0 else None,
        wait_for,
    )
    stats = target.stats()
    assert stats["rejected_membership_auth"] - base["rejected_membership_auth"] == FLOOD_PACKETS
    assert delta(
        stats, base, "members_added", "rejected_members_over_limit", "probes", "rejected_membership_packets"
    ) == {
        "members_added": 0,
        "rejected_members_over_limit": 0,
        "probes": 0,  # not even probed: refused before the view
        "rejected_membership_packets": 0,
    }
    assert all(view == {ident(node)} for view in views)
    growth = rss_kib(target.pid) - rss_before
    assert growth < MAX_RSS_GROWTH_KIB, f"RSS grew by {growth} KiB"

    # Control: the same made-up member, correctly signed, is heard (then probed, and refused because
    # nothing answers on its port): the forged packets above differed only in their tag.
    before = target.stats()
    with mcast_sender() as s:
        s.sendto(signed_member_packet(SECRET, LOOPBACK, 9, os.urandom(16)), (MCAST_ADDRESS, mcast_port))
    wait_for(
        lambda: target.stats()["probes_failed"] > before["probes_failed"], 10, "the signed packet's probe"
    )
    assert target.stats()["rejected_membership_auth"] == before["rejected_membership_auth"]

    mark = target.mark()
    node.cluster.send(b"after the flood", to=target_member, options="use_ack,sync")
    target.wait_line("MSG", msg_from(node, b"after the flood"), since=mark)
    assert members_of(target) == {ident(node)}


# --------------------------------------------------------------------------------------------------
# 8. Secrets never appear in logs, reprs or errors
# --------------------------------------------------------------------------------------------------


def test_secrets_never_reach_the_logs(
    mcast_port: int,
    local_node: Factory,
    capture: FrameCapture,
    wait_for: Factory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = "log-test-" + secrets.token_urlsafe(24)
    older = "log-test-older-" + secrets.token_urlsafe(24)
    wrong = "log-test-wrong-" + secrets.token_urlsafe(24)
    hidden = (secret, older, wrong)
    caplog.set_level(logging.DEBUG, logger="tribes")  # before start: the core takes its level then

    config = tribes.ClusterConfig.local(
        name="secured", secret=secret, secondary_secrets=[older], membership={"port": mcast_port}
    )
    for text in (
        repr(config),
        str(config),
        config.to_toml(),
        repr(config.to_dict()),
        repr(config.membership),
    ):
        assert_no_secret(text, *hidden)
    cluster = tribes.Cluster(config)
    received: list[bytes] = []
    cluster.add_message_listener(lambda _m, d: received.append(bytes(d)))
    assert_no_secret(repr(cluster), *hidden)
    with cluster:
        # Traffic that makes the core log at every level: a peer with the same ring, one with the wrong
        # secret (refused heartbeats and messages), garbage, a replay and a tampered message.
        peer = local_node(mcast_port, name="peer", secret=older, secondary_secrets=[secret])
        intruder = local_node(mcast_port, name="intruder", secret=wrong)
        me = peer.wait_sees(cluster.local_member)
        them = wait_for(
            lambda: next((m for m in cluster.members if m == peer.member), None), 10, "the peer admitted"
        )
        cluster.send(b"hello", to=them, options="use_ack")
        peer.recorder.wait("msg", lambda _m, d: d == b"hello")
        peer.cluster.send(b"hello back", to=me, options="use_ack,sync")
        wait_for(lambda: b"hello back" in received, 10, "the peer's message")
        wait_for(lambda: cluster.stats()["rejected_membership_auth"] >= REJECTED_HEARTBEATS, 10, "refusals")
        sender = capturing_node(local_node, mcast_port, capture, wait_for, secret=secret)
        captured = sender.capture_message(b"captured")
        port = cluster.local_member.port
        raw_exchange(port, captured)
        raw_exchange(port, captured)
        raw_exchange(port, flip(captured, parse_frame(captured).fields["envelope_tag"][0]))
        raw_exchange(port, FRAME_START + struct.pack(">i", 0x7FFFFFFF))
        raw_exchange(port, b"garbage")
        stats = cluster.stats()
        assert (
            stats["rejected_replay"] >= 1 and stats["rejected_auth"] >= 1 and stats["rejected_oversized"] >= 1
        )
        assert intruder.cluster.members == []
    for node in (peer, intruder, sender.node):
        node.stop()

    records = caplog.records
    assert any(r.levelno == logging.DEBUG for r in records), "the debug log was not captured"
    assert any(r.levelno >= logging.WARNING and r.name.startswith("tribes") for r in records)
    assert any("secured" in r.getMessage() for r in records)
    for r in records:
        assert_no_secret(r.getMessage(), *hidden)
        assert_no_secret(repr(r.args), *hidden)
    assert_no_secret(caplog.text, *hidden)


# --------------------------------------------------------------------------------------------------
# 9. A secured member may use a non-loopback address
# --------------------------------------------------------------------------------------------------


def test_non_loopback_addresses_need_a_secret_or_insecure(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    exposed = {"receiver": {"address": "10.1.2.3"}, "membership": {"bind": "10.1.2.4"}}
    with pytest.raises(tribes.ConfigError) as info:
        tribes.ClusterConfig.local(**exposed).check_security()
    assert info.value.field in ("membership.bind", "receiver.address")

    with caplog.at_level(logging.WARNING, logger="tribes"):
        tribes.ClusterConfig.local(secret=SECRET, **exposed).check_security()  # allowed, silently
        core = json.loads(tribes.ClusterConfig.local(secret=SECRET, **exposed).to_core_json())
    assert caplog.records == []
    assert core["receiver"]["address"] == "10.1.2.3" and core["security"]["secrets"] == [SECRET]

    monkeypatch.setenv("TRIBES_SECRET", SECRET)  # the environment counts as well
    config = tribes.ClusterConfig.local(**exposed)
    config.check_security()
    assert config.secured
    monkeypatch.delenv("TRIBES_SECRET")
    with pytest.raises(tribes.ConfigError):
        config.check_security()

    with caplog.at_level(logging.WARNING, logger="tribes"):
        tribes.ClusterConfig.local(insecure=True, **exposed).check_security()  # allowed, with a warning
    assert any("insecure" in r.getMessage() for r in caplog.records)
