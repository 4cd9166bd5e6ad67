"""The channel end to end: membership, messaging with ACKs, failure detection, robustness.

Real processes (tests/support/member_proc.py, driven through stdin/stdout) and real sockets, all on
loopback: multicast on interface 127.0.0.1 with TTL 0 (``ClusterConfig.local``), TCP on 127.0.0.1, a
private multicast port per test. The test process usually takes part as one more member (a
``LocalNode`` from conftest.py). Every wait has a deadline; timing assertions are deadlines measured
from the triggering action, never benchmarks.
"""

from __future__ import annotations

import json
import os
import random
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tribes
from support.waiting import stop_process
from support.wire import (
    ACK_FRAME,
    FRAME_END,
    FRAME_START,
    LOOPBACK,
    MCAST_ADDRESS,
    NACK_FRAME,
    OPT_BYTE_MESSAGE,
    OPT_USE_ACK,
    VECTORS,
    channel_data,
    frame,
    mcast_sender,
    member_packet,
    raw_exchange,
)

pytestmark = pytest.mark.timeout(90)

#: A member that sent its shutdown heartbeat must be gone on the others this fast (drop time: 1 s).
STOP_GONE_S = 0.5
#: A SIGKILLed member must be reported gone this fast (its connections break; the probe is refused).
KILL_GONE_S = 1.0

KIB = 1024
MIB = 1024 * KIB

Factory = Callable[..., Any]


# --------------------------------------------------------------------------------------------------
# Helpers (frames, ChannelData and member packets come from support.wire)
# --------------------------------------------------------------------------------------------------


def msg_line_for(sender: Any, data: bytes) -> Callable[[str], bool]:
    """Predicate for ``MSG <host>:<port> <hex>`` from ``sender`` (a tribes.Member) with exactly ``data``."""
    expected = f"MSG {sender.host}:{sender.port} {data.hex()}"
    return lambda line: line.rstrip(" ") == expected.rstrip(" ")


def msg_payloads(proc: Any, since: int = 0) -> list[bytes]:
    """The payloads of every MSG line a member process printed."""
    out = []
    for line in proc.lines(since):
        if line.startswith("MSG "):
            parts = line.split(" ")
            out.append(bytes.fromhex(parts[2] if len(parts) > 2 else ""))
    return out


def connect_all(node: Any, *procs: Any) -> list[Any]:
    """Wait until ``node`` sees every process and every process saw ``node``; return the Members."""
    members = [node.wait_sees(p) for p in procs]
    for p in procs:
        p.wait_added(node.member)
    return members


def send_in_background(
    node: Any, target: Any, data: bytes, options: str, outcome: list[BaseException | None]
) -> threading.Thread:
    """A started thread sending ``data`` to ``target``; it appends None, or the exception, to ``outcome``."""

    def send() -> None:
        try:
            node.cluster.send(data, to=target, options=options)
        except BaseException as exc:
            outcome.append(exc)
        else:
            outcome.append(None)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def test_wire_helpers_match_vectors() -> None:
    """The support.wire helpers build exactly the golden vectors the Rust core is tested against."""
    packet = member_packet("10.0.0.5", 4000, bytes(range(16)), 0x1234, domain=b"d")
    assert packet.hex() == (VECTORS / "member_packet.hex").read_text().strip()
    data = channel_data(8, 1, bytes(range(0xA0, 0xB0)), packet, b"abc")
    assert frame(data).hex() == (VECTORS / "channel_data_frame.hex").read_text().strip()


# --------------------------------------------------------------------------------------------------
# Membership
# --------------------------------------------------------------------------------------------------


def test_three_members_see_each_other(mcast_port: int, member_process: Factory, local_node: Factory) -> None:
    observer = local_node(mcast_port)
    procs = [member_process(mcast_port, name=f"m{i}") for i in range(3)]
    assert len({p.unique_id for p in procs}) == 3
    assert len({p.port for p in procs}) == 3
    for p in procs:
        for other in procs:
            if other is not p:
                p.wait_added(other)
        p.wait_added(observer.member)
    for p in procs:
        observer.wait_sees(p)
    # MEMBERS agrees with the events: each lists exactly the other two and the observer.
    for p in procs:
        listed = set(json.loads(p.request("MEMBERS", "MEMBERS").split(" ", 1)[1]))
        expected = {f"{o.address} {o.unique_id.hex()}" for o in procs if o is not p}
        expected.add(f"{observer.member.host}:{observer.port} {observer.member.unique_id.hex()}")
        assert listed == expected
    assert sorted(m.port for m in observer.cluster.members) == sorted(p.port for p in procs)
    assert observer.cluster.stats()["members_added"] == 3


def _watched_member(
    mcast_port: int, member_process: Factory, local_node: Factory, name: str
) -> tuple[Any, Any, Any, Any, Any]:
    """An observer LocalNode and member processes ``a``, ``b`` and ``name``, once a, b and the observer
    all see ``name``: returns (observer, a, b, that process, its Member in the observer's view)."""
    observer = local_node(mcast_port)
    a, b, watched = (member_process(mcast_port, name=n) for n in ("a", "b", name))
    for p in (a, b):
        p.wait_added(watched)
    return observer, a, b, watched, observer.wait_sees(watched)


def _assert_gone_within(
    limit: float,
    trigger: Callable[[], object],
    observer: Any,
    watchers: tuple[Any, ...],
    leaving: Any,
    leaving_member: Any,
) -> Any:
    """Call ``trigger`` (it makes member process ``leaving`` go); every watcher must print GONE for it
    and ``observer`` must get the "gone" event for ``leaving_member`` within ``limit`` s of that.
    Returns the Member of the observer's event."""
    marks = {p: p.mark() for p in watchers}
    since = observer.recorder.mark()

    t0 = time.monotonic()
    trigger()
    deadline = t0 + limit
    for p in watchers:
        ts, _ = p.wait_line_timed(
            "GONE", _is(leaving), timeout=max(0.0, deadline - time.monotonic()), since=marks[p]
        )
        assert ts - t0 <= limit
    ts, member, _ = observer.recorder.wait(
        "gone", lambda m, _d: m == leaving_member, timeout=max(0.0, deadline - time.monotonic()), since=since
    )
    assert ts - t0 <= limit
    return member


def test_stopped_member_disappears_at_once(
    mcast_port: int, member_process: Factory, local_node: Factory
) -> None:
    observer, a, b, leaving, leaving_member = _watched_member(
        mcast_port, member_process, local_node, "leaving"
    )
    member = _assert_gone_within(
        STOP_GONE_S, lambda: leaving.command("QUIT"), observer, (a, b), leaving, leaving_member
    )
    assert member == leaving_member
    assert observer.sees(leaving) is None
    assert leaving.proc.wait(timeout=10) == 0
    leaving.wait_line("BYE")
    # The two that stayed still see each other.
    assert not a.has_line("GONE", _is(b)) and not b.has_line("GONE", _is(a))


def test_killed_member_reported_gone_within_a_second(
    mcast_port: int, member_process: Factory, local_node: Factory
) -> None:
    observer, a, b, victim, victim_member = _watched_member(mcast_port, member_process, local_node, "victim")
    _assert_gone_within(
        KILL_GONE_S, lambda: os.kill(victim.pid, signal.SIGKILL), observer, (a, b), victim, victim_member
    )
    assert victim.proc.wait(timeout=10) == -signal.SIGKILL
    assert observer.cluster.stats()["members_disappeared"] == 1


def _is(proc: Any) -> Callable[[str], bool]:
    """Predicate for ``WORD <host>:<port> <uid>`` lines naming member process ``proc``."""
    return lambda line: line.split(" ")[1:3] == [proc.address, proc.unique_id.hex()]


def test_member_process_ends_on_eof_and_at_its_time_limit(
    mcast_port: int, member_process: Factory, local_node: Factory
) -> None:
    """The harness itself: a member process never outlives its input or --max-seconds."""
    node = local_node(mcast_port)
    closer = member_process(mcast_port, name="closer")
    limited = member_process(mcast_port, name="limited", args=["--max-seconds", "1.5"])
    closer_member = node.wait_sees(closer)
    node.wait_sees(limited)

    assert closer.proc.stdin is not None
    closer.proc.stdin.close()  # end of input acts like QUIT: clean stop, shutdown heartbeat
    assert closer.proc.wait(timeout=10) == 0
    closer.wait_line("BYE")
    node.recorder.wait("gone", lambda m, _d: m == closer_member)

    assert limited.proc.wait(timeout=15) == 3
    limited.wait_line("TIMEOUT")


# --------------------------------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 100 * KIB, 1 * MIB], ids=["0B", "1B", "100KiB", "1MiB"])
def test_ack_send_reaches_both_members(
    size: int, mcast_port: int, member_process: Factory, local_node: Factory
) -> None:
    node = local_node(mcast_port)
    receivers = [member_process(mcast_port, name=f"r{i}") for i in range(2)]
    connect_all(node, *receivers)
    data = os.urandom(size)
    marks = [r.mark() for r in receivers]
    acks_before = node.cluster.stats()["acks_received"]

    node.cluster.send(data, options="use_ack")  # to every member; returns once both acked

    assert node.cluster.stats()["acks_received"] - acks_before == 2
    for r, mark in zip(receivers, marks, strict=True):
        r.wait_line("MSG", msg_line_for(node.member, data), since=mark)
        assert msg_payloads(r, mark) == [data]


def test_sync_ack_waits_for_the_listener(
    mcast_port: int, member_process: Factory, local_node: Factory
) -> None:
    """``use_ack,sync`` returns only after the receiver's listener ran; plain ``use_ack`` does not wait."""
    node = local_node(mcast_port)
    receiver = member_process(mcast_port, name="receiver")
    (target,) = connect_all(node, receiver)

    # 1. With sync, the listener printed MSG (and flushed) before the ACK left: it is there already.
    for i in range(5):
        mark = receiver.mark()
        node.cluster.send(b"sync-%d" % i, to=target, options="use_ack,sync")
        receiver.wait_line("MSG", msg_line_for(node.member, b"sync-%d" % i), timeout=0.5, since=mark)

    # 2. A listener held inside its call: the sync send cannot return until it is released.
    receiver.request("LISTENER hold", "OK")
    outcome: list[BaseException | None] = []

    mark = receiver.mark()
    sender = send_in_background(node, target, b"held-sync", "use_ack,sync", outcome)
    receiver.wait_line("MSG", msg_line_for(node.member, b"held-sync"), since=mark)
    sender.join(timeout=0.5)
    assert sender.is_alive(), "a sync send returned while the receiver's listener was still running"
    receiver.request("RELEASE", "OK")
    sender.join(timeout=5)
    assert not sender.is_alive()
    assert outcome == [None]

    # 3. Contrast: plain use_ack is acked on receipt, so it returns while the listener is held.
    outcome.clear()
    mark = receiver.mark()
    sender = send_in_background(node, target, b"held-ack", "use_ack", outcome)
    sender.join(timeout=5)
    assert not sender.is_alive(), "a use_ack send waited for the receiver's listener"
    assert outcome == [None]
    receiver.wait_line("MSG", msg_line_for(node.member, b"held-ack"), since=mark)
    receiver.request("RELEASE", "OK")
    receiver.request("LISTENER ok", "OK")
    assert receiver.send(b"still-fine", "use_ack") == "SENT"


def test_async_messages_arrive_in_order(
    mcast_port: int, member_process: Factory, local_node: Factory
) -> None:
    node = local_node(mcast_port)
    errors: list[tuple[Any, str]] = []
    node.cluster.add_error_listener(lambda m, cause: errors.append((m, cause)))
    receiver = member_process(mcast_port, name="receiver")
    (target,) = connect_all(node, receiver)
    count = 1000
    messages = [b"async-%04d-" % i + os.urandom(i % 50) for i in range(count)]
    mark = receiver.mark()

    t0 = time.monotonic()
    for data in messages:
        node.cluster.send(data, to=target, options="async")
    assert time.monotonic() - t0 < 10

    receiver.wait_line("MSG", msg_line_for(node.member, messages[-1]), timeout=20, since=mark)
    assert msg_payloads(receiver, mark) == messages
    assert errors == []


@pytest.mark.parametrize("detector", ["failure_detector", "no_detector"])
def test_channel_error_names_the_dead_member(
    detector: str, mcast_port: int, member_process: Factory, local_node: Factory
) -> None:
    """SIGKILL one of two receivers, then send to both at once.

    With the failure detector (the default stack) the broken connection gets the dead member removed
    within milliseconds, usually before the send: then the send is refused with "not a member". Without
    it the dead member stays in the view until its heartbeats are missed (1 s), so the send really
    fails for it (connection refused) and still reaches the other member.
    """
    interceptors = ["dispatch", "failure_detector"] if detector == "failure_detector" else ["dispatch"]
    node = local_node(mcast_port, interceptors=interceptors)
    dead_proc, alive_proc = member_process(mcast_port, name="dead"), member_process(mcast_port, name="alive")
    dead, alive = connect_all(node, dead_proc, alive_proc)
    mark = alive_proc.mark()

    dead_proc.kill()  # SIGKILL and reaped: its sockets are closed by now
    with pytest.raises(tribes.ChannelError) as info:
        node.cluster.send(b"after the kill", to=[dead, alive], options="use_ack")

    err = info.value
    assert [f.member for f in err.faulty] == [dead]
    assert err.members == (dead,)
    cause = err.faulty[0].cause
    assert isinstance(cause, str) and cause.strip()
    assert dead.name in str(err)
    assert alive not in err.members
    if detector == "no_detector":
        assert cause != "not a member"
    if cause != "not a member":
        # A real send failure for the dead member: the alive member got the message.
        alive_proc.wait_line("MSG", msg_line_for(node.member, b"after the kill"), since=mark)
    # Either way the dead member is reported gone (probe or expiry), and the alive one stays.
    node.recorder.wait("gone", lambda m, _d: m == dead, timeout=5)
    assert node.sees(alive_proc) == alive


def test_hung_member_times_out_and_is_removed(
    mcast_port: int, member_process: Factory, local_node: Factory, wait_for: Factory
) -> None:
    """A SIGSTOPped member still accepts connections (the kernel does) but never acks: a use_ack send
    fails for it once the sender timeout passes, and the failure detector's probe, unanswered, removes
    it after the drop time."""
    node = local_node(mcast_port, sender={"timeout_ms": 500})
    hung_proc, alive_proc = member_process(mcast_port, name="hung"), member_process(mcast_port, name="alive")
    hung, alive = connect_all(node, hung_proc, alive_proc)
    mark = alive_proc.mark()

    stop_process(hung_proc.pid)
    try:
        t0 = time.monotonic()
        with pytest.raises(tribes.ChannelError) as info:
            node.cluster.send(b"to a hung member", to=[hung, alive], options="use_ack")
        assert time.monotonic() - t0 < 5
        assert info.value.members == (hung,)
        assert info.value.faulty[0].cause.strip()
        alive_proc.wait_line("MSG", msg_line_for(node.member, b"to a hung member"), since=mark)
        node.recorder.wait("gone", lambda m, _d: m == hung, timeout=10)
        assert node.sees(alive_proc) == alive
        assert node.cluster.stats()["probes_failed"] >= 1
    finally:
        hung_proc.kill()


def test_send_to_departed_member_still_reaches_the_others(
    mcast_port: int, member_process: Factory, local_node: Factory
) -> None:
    node = local_node(mcast_port)
    gone_proc, alive_proc = member_process(mcast_port, name="gone"), member_process(mcast_port, name="alive")
    gone, alive = connect_all(node, gone_proc, alive_proc)
    assert gone_proc.stop() == 0
    node.recorder.wait("gone", lambda m, _d: m == gone)
    mark = alive_proc.mark()

    with pytest.raises(tribes.ChannelError) as info:
        node.cluster.send(b"to both", to=[gone, alive], options="use_ack")
    assert info.value.members == (gone,)
    alive_proc.wait_line("MSG", msg_line_for(node.member, b"to both"), timeout=1.0, since=mark)


def test_raising_listener_nacks_sync_sends_only(
    mcast_port: int, member_process: Factory, local_node: Factory, wait_for: Factory
) -> None:
    node = local_node(mcast_port)
    receiver = member_process(mcast_port, name="receiver")
    (target,) = connect_all(node, receiver)
    receiver.request("LISTENER raise", "OK")
    mark = receiver.mark()

    with pytest.raises(tribes.ChannelError) as info:
        node.cluster.send(b"sync to a failing listener", to=target, options="use_ack,sync")
    assert [f.member for f in info.value.faulty] == [target]
    assert "NACK" in info.value.faulty[0].cause
    assert node.cluster.stats()["nacks_received"] == 1
    receiver.wait_line("MSG", msg_line_for(node.member, b"sync to a failing listener"), since=mark)

    node.cluster.send(b"plain ack", to=target, options="use_ack")  # acked on receipt: no error
    receiver.wait_line("MSG", msg_line_for(node.member, b"plain ack"), since=mark)
    assert node.cluster.stats()["nacks_received"] == 1
    wait_for(
        lambda: "listener failure requested by the test" in receiver.stderr_text(),
        5,
        "the receiver to log its listener's exception",
    )
    # A NACK is the application's failure, not the member's: it stays in the view.
    assert node.sees(receiver) == target


# --------------------------------------------------------------------------------------------------
# Lifecycle
# --------------------------------------------------------------------------------------------------


def _os_threads() -> int:
    return len(os.listdir("/proc/self/task"))


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_start_stop_cycles_leak_nothing(mcast_port: int, member_process: Factory, wait_for: Factory) -> None:
    peer = member_process(mcast_port, name="peer")
    config = tribes.ClusterConfig.local(name="cycler", membership={"port": mcast_port})

    def cycle(exchange: bool) -> None:
        cluster = tribes.Cluster(config)
        cluster.add_message_listener(lambda m, d: None)
        cluster.start()
        try:
            if exchange:  # now and then: join fully, open connections, send and receive
                me = cluster.local_member
                target = wait_for(
                    lambda: next((m for m in cluster.members if peer.is_member(m)), None), 10, "peer seen"
                )
                mark = peer.mark()
                cluster.send(b"cycle", to=target, options="use_ack")
                peer.wait_line("MSG", msg_line_for(me, b"cycle"), since=mark)
        finally:
            cluster.stop()
        assert not cluster.running
        assert cluster.members == []

    cycle(exchange=True)  # warm-up: one-time initialisation of the core and the interpreter
    py_threads, os_threads, fds = threading.active_count(), _os_threads(), _fds()

    for i in range(100):
        cycle(exchange=i % 10 == 0)

    def settled() -> bool:
        return threading.active_count() <= py_threads and _os_threads() <= os_threads and _fds() <= fds

    wait_for(
        settled,
        5,
        lambda: (
            f"threads {py_threads}->{threading.active_count()} ({[t.name for t in threading.enumerate()]}), "
            f"OS threads {os_threads}->{_os_threads()}, fds {fds}->{_fds()}"
        ),
    )
    assert peer.proc.poll() is None


def test_stopped_cluster_raises_not_started(mcast_port: int) -> None:
    cluster = tribes.Cluster(tribes.ClusterConfig.local(membership={"port": mcast_port}))

    def check_stopped() -> None:
        assert not cluster.running
        assert cluster.members == []
        with pytest.raises(tribes.NotStartedError):
            cluster.send(b"x")
        with pytest.raises(tribes.NotStartedError):
            _ = cluster.local_member
        with pytest.raises(RuntimeError):  # NotStartedError is also a RuntimeError
            cluster.send(b"x", options="async")

    check_stopped()  # never started
    with cluster:
        assert cluster.running
        assert cluster.local_member.host == LOOPBACK
        cluster.send(b"nobody to send to")  # no members: nothing to do, no error
    check_stopped()  # stopped
    cluster.stop()  # stopping again does nothing
    check_stopped()


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"receiver": {"address": "10.1.2.3"}}, "receiver.address"),
        ({"membership": {"bind": "10.1.2.3"}}, "membership.bind"),
        (
            {"membership": {"static_members": [{"host": "10.1.2.3", "port": 4000}]}},
            "membership.static_members[0].host",
        ),
    ],
    ids=["receiver", "mcast-bind", "static-member"],
)
def test_non_loopback_address_is_a_config_error_at_start(
    overrides: dict[str, Any], field: str, mcast_port: int
) -> None:
    overrides = {**overrides, "membership": {"port": mcast_port, **overrides.get("membership", {})}}
    config = tribes.ClusterConfig.local(**overrides)  # a valid value...
    cluster = tribes.Cluster(config)
    with pytest.raises(tribes.ConfigError) as info:  # ...refused at start: traffic is not encrypted
        cluster.start()
    assert info.value.field == field
    assert isinstance(info.value, ValueError)
    assert not cluster.running
    assert cluster.members == []


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"membership": {"port": 70000}}, "membership.port"),
        ({"membership": {"address": "10.0.0.1"}}, "membership.address"),
        ({"interceptors": ["order", "nonsense"]}, "interceptors"),
        ({"send_options": "use_ack,bogus"}, "send_options"),
    ],
)
def test_invalid_values_are_config_errors_with_field(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(tribes.ConfigError) as info:
        tribes.ClusterConfig.local(**overrides)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")


# --------------------------------------------------------------------------------------------------
# Garbage on the wire
# --------------------------------------------------------------------------------------------------


def _valid_ack_frame(message: bytes) -> bytes:
    sender = member_packet(LOOPBACK, 9, os.urandom(16))  # port 9: nothing to answer a probe
    return frame(channel_data(OPT_BYTE_MESSAGE | OPT_USE_ACK, 1, os.urandom(16), sender, message))


def test_garbage_on_the_receiver_port_is_counted_and_ignored(
    mcast_port: int, member_process: Factory, local_node: Factory
) -> None:
    node = local_node(mcast_port)
    peer = member_process(mcast_port, name="peer")
    (peer_member,) = connect_all(node, peer)
    port = node.port

    def stats() -> dict[str, int]:
        return node.cluster.stats()

    def delta(before: dict[str, int]) -> dict[str, int]:
        after = stats()
        keys = ("rejected_frames", "rejected_oversized", "rejected_channel_data", "messages_delivered")
        return {k: after[k] - before[k] for k in keys}

    # Control: a hand-made valid frame is acked and delivered, so the rejections below are real.
    before = stats()
    assert raw_exchange(port, _valid_ack_frame(b"hand-made")) == ACK_FRAME
    node.recorder.wait("msg", lambda _m, d: d == b"hand-made")
    assert delta(before) == {
        "rejected_frames": 0,
        "rejected_oversized": 0,
        "rejected_channel_data": 0,
        "messages_delivered": 1,
    }

    cases: list[tuple[str, bytes, dict[str, int] | None]] = [
        # (what, bytes, exact counter changes; None: only "nothing delivered" is checked)
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
        # A frame cut short by the end of the connection is dropped and counted.
        ("truncated frame", FRAME_START + struct.pack(">i", 100) + b"x" * 10, {"rejected_frames": 1}),
        ("undecodable channel data", frame(b"\x00" * 5), {"rejected_channel_data": 1}),
        (
            "channel data, sender not a member packet",
            frame(channel_data(OPT_BYTE_MESSAGE, 1, os.urandom(16), b"not a member", b"x")),
            {"rejected_channel_data": 1},
        ),
    ]
    for what, data, expected in cases:
        before = stats()
        reply = raw_exchange(port, data)
        assert reply == b"", what
        changes = delta(before)
        assert changes["messages_delivered"] == 0, what
        if expected is not None:
            want = {"rejected_frames": 0, "rejected_oversized": 0, "rejected_channel_data": 0}
            want.update(expected)
            assert {k: v for k, v in changes.items() if k != "messages_delivered"} == want, what

    # A sender that asked for an ACK but whose sender packet is garbage gets a NACK.
    bad_sender = frame(channel_data(OPT_BYTE_MESSAGE | OPT_USE_ACK, 1, os.urandom(16), b"junk", b"x"))
    assert raw_exchange(port, bad_sender) == NACK_FRAME

    # Garbage in front of a valid frame on the same connection: skipped, the frame still delivered.
    before = stats()
    assert raw_exchange(port, b"garbage!" + _valid_ack_frame(b"after garbage")) == ACK_FRAME
    assert delta(before)["rejected_frames"] == 1
    node.recorder.wait("msg", lambda _m, d: d == b"after garbage")

    # The member kept working throughout: a real member's ack send still succeeds both ways.
    mark = node.recorder.mark()
    assert peer.send(b"from the real member", "use_ack") == "SENT"
    node.recorder.wait("msg", lambda _m, d: d == b"from the real member", since=mark)
    mark = peer.mark()
    node.cluster.send(b"to the real member", to=peer_member, options="use_ack")
    peer.wait_line("MSG", msg_line_for(node.member, b"to the real member"), since=mark)
    assert node.sees(peer) == peer_member
    assert stats()["connections_refused"] == 0


@pytest.fixture
def lone_node(mcast_port: int, local_node: Factory) -> Any:
    """One started in-process member, alone on its multicast port (shared by a property's examples)."""
    return local_node(mcast_port)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(junk=st.binary(min_size=0, max_size=3000))
def test_random_bytes_on_the_receiver_port(junk: bytes, lone_node: Any) -> None:
    """Property: bytes that do not start a frame are rejected, and the receiver stays usable."""
    port = lone_node.port
    before = lone_node.cluster.stats()
    assert raw_exchange(port, b"\xff" + junk) == b""  # cannot start a frame: at least one rejection
    after = lone_node.cluster.stats()
    assert after["rejected_frames"] - before["rejected_frames"] >= 1
    assert after["messages_delivered"] == before["messages_delivered"]
    # Then, on a new connection, a valid frame is acked at once.
    assert raw_exchange(port, _valid_ack_frame(b"ok")) == ACK_FRAME
    assert lone_node.cluster.members == []


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(datagram=st.binary(min_size=0, max_size=2000))
def test_random_datagrams_on_the_multicast_port(
    datagram: bytes, lone_node: Any, mcast_port: int, wait_for: Factory
) -> None:
    """Property: any random datagram on the membership port is counted as rejected, never a member."""
    expected = lone_node.cluster.stats()["rejected_membership_packets"] + 1
    with mcast_sender() as s:
        s.sendto(datagram, (MCAST_ADDRESS, mcast_port))
    wait_for(lambda: lone_node.cluster.stats()["rejected_membership_packets"] >= expected, 5, "the rejection")
    stats = lone_node.cluster.stats()
    assert stats["rejected_membership_packets"] == expected
    assert stats["heartbeats_received"] == 0
    assert lone_node.cluster.members == []


@pytest.fixture
def node_pair(mcast_port: int, local_node: Factory) -> tuple[Any, Any, Any]:
    """Two started in-process members that see each other: (sender, receiver, receiver as a Member)."""
    a, b = local_node(mcast_port), local_node(mcast_port)
    target = a.wait_sees(b)
    b.wait_sees(a)
    return a, b, target


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.one_of(
        st.binary(max_size=300),
        # Large payloads from a seed: Hypothesis cannot draw this many bytes itself.
        st.builds(
            lambda size, seed: random.Random(seed).randbytes(size),
            st.integers(60_000, 300_000),
            st.integers(0, 2**32),
        ),
    ),
    options=st.sampled_from(["use_ack", "use_ack,sync", "async", 2, 6]),
)
def test_payloads_arrive_exactly(data: bytes, options: str | int, node_pair: tuple[Any, Any, Any]) -> None:
    """Property: whatever the bytes and the send options, the receiver gets exactly those bytes."""
    a, b, target = node_pair
    mark = b.recorder.mark()
    a.cluster.send(data, to=target, options=options)
    assert b.recorder.wait_messages(1, since=mark) == [data]


def test_garbage_datagrams_on_the_multicast_port(
    mcast_port: int, local_node: Factory, member_process: Factory, wait_for: Factory
) -> None:
    node = local_node(mcast_port)
    group = (MCAST_ADDRESS, mcast_port)
    valid = member_packet(LOOPBACK, 9, os.urandom(16))
    garbage = [
        b"",
        b"hello",
        os.urandom(1000),
        FRAME_START + os.urandom(100),
        b"TRIBES-B\x01\x00",  # begin magic only
        valid[:40],  # a member packet cut in the middle of its body
        valid[:-10],  # ... without its end magic
        valid[:-10] + b"TRIBES-X\x01\x00",  # wrong end magic
        valid[:10] + struct.pack(">i", 10_000) + valid[14:],  # body length larger than the datagram
        valid[:10] + struct.pack(">i", -1) + valid[14:],  # negative body length
    ]
    with mcast_sender() as s:
        for datagram in garbage:
            s.sendto(datagram, group)
        wait_for(
            lambda: node.cluster.stats()["rejected_membership_packets"] >= len(garbage),
            5,
            lambda: f"{len(garbage)} rejections; stats: {node.cluster.stats()}",
        )
        stats = node.cluster.stats()
        assert stats["rejected_membership_packets"] == len(garbage)
        assert stats["heartbeats_received"] == 0
        assert stats["members_added"] == 0
        assert node.cluster.members == []

        # Control: the same socket's valid packet is heard (not rejected); its member does not answer
        # the failure detector's probe (nothing listens on port 9), so it is not added either.
        s.sendto(valid, group)
        wait_for(lambda: node.cluster.stats()["probes_failed"] >= 1, 5, "the probe of the forged member")
        stats = node.cluster.stats()
        assert stats["heartbeats_received"] >= 1
        assert stats["rejected_membership_packets"] == len(garbage)
        assert stats["members_added"] == 0
        assert node.cluster.members == []

    # Membership still works after all that.
    peer = member_process(mcast_port, name="peer")
    node.wait_sees(peer)
    peer.wait_added(node.member)


# --------------------------------------------------------------------------------------------------
# CLI, static membership, interceptors
# --------------------------------------------------------------------------------------------------


def _tribes_command() -> list[str]:
    script = Path(sys.executable).with_name("tribes")
    return [str(script)] if script.exists() else [sys.executable, "-m", "tribes.cli"]


def test_cli_members_lists_a_running_member(mcast_port: int, member_process: Factory) -> None:
    peer = member_process(mcast_port, name="peer")
    mark = peer.mark()
    result = subprocess.run(
        [*_tribes_command(), "members", "--local", "--mcast-port", str(mcast_port), "--seconds", "2"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"tcp://{peer.address}" in out
    assert peer.unique_id.hex() in out
    assert "1 member(s) besides this one:" in out
    # The CLI joined and left cleanly: the peer saw it come and go.
    added = peer.wait_line("ADDED", since=mark)
    gone_uid = added.split(" ")[2]
    peer.wait_line("GONE", lambda line: line.split(" ")[2] == gone_uid, since=mark)
    assert gone_uid in out  # the CLI's own "local" line shows the id the peer saw


def test_static_membership(
    mcast_port: int, local_node: Factory, free_tcp_port: Factory, wait_for: Factory
) -> None:
    p1, p2 = free_tcp_port(), free_tcp_port()
    static = {"static_members": [{"host": LOOPBACK, "port": p1}, {"host": LOOPBACK, "port": p2}]}
    a = local_node(mcast_port, membership=static, receiver={"port": p1, "auto_bind": 1})
    b = local_node(mcast_port, membership=static, receiver={"port": p2, "auto_bind": 1})
    assert (a.port, b.port) == (p1, p2)

    def peer_at(node: Any, port: int) -> Any:
        # Static entries without a configured unique_id get one derived from host:port, so the
        # member in the view has the peer's address but not the id the peer generated itself.
        return next((m for m in node.cluster.members if (m.host, m.port) == (LOOPBACK, port)), None)

    b_seen = wait_for(lambda: peer_at(a, p2), 10, lambda: f"a to list b; it lists {a.cluster.members}")
    a_seen = wait_for(lambda: peer_at(b, p1), 10, lambda: f"b to list a; it lists {b.cluster.members}")
    assert a.cluster.members == [b_seen] and b.cluster.members == [a_seen]  # not itself
    a.recorder.wait("added", lambda m, _d: m == b_seen)

    a.cluster.send(b"a to b", to=b_seen, options="use_ack")
    b.cluster.send(b"b to a", options="use_ack,sync")
    _, sender, _ = b.recorder.wait("msg", lambda _m, d: d == b"a to b")
    assert sender == a.member  # messages carry the sender's own member packet
    _, sender, _ = a.recorder.wait("msg", lambda _m, d: d == b"b to a")
    assert sender == b.member
    assert a.cluster.stats()["acks_received"] >= 1 and b.cluster.stats()["acks_received"] >= 1
    # Static membership sends no multicast heartbeats.
    assert a.cluster.stats()["heartbeats_sent"] == 0 == b.cluster.stats()["heartbeats_sent"]

    # A static peer that stops is reported gone.
    b.stop()
    a.recorder.wait("gone", lambda m, _d: m == b_seen)
    assert a.cluster.members == []


def test_static_member_can_answer_the_sender(
    mcast_port: int, local_node: Factory, free_tcp_port: Factory, wait_for: Factory
) -> None:
    p1, p2 = free_tcp_port(), free_tcp_port()
    static = {"static_members": [{"host": LOOPBACK, "port": p1}, {"host": LOOPBACK, "port": p2}]}
    a = local_node(mcast_port, membership=static, receiver={"port": p1, "auto_bind": 1})
    b = local_node(mcast_port, membership=static, receiver={"port": p2, "auto_bind": 1})
    wait_for(lambda: a.cluster.members and b.cluster.members, 10, "the static peers to see each other")
    a.cluster.send(b"question", options="use_ack")
    _, sender, _ = b.recorder.wait("msg", lambda _m, d: d == b"question")
    assert sender in b.cluster.members
    b.cluster.send(b"answer", to=sender, options="use_ack")
    a.recorder.wait("msg", lambda _m, d: d == b"answer")


INTERCEPTOR_STACKS = {
    "gzip": ["order", {"name": "compression", "codec": "gzip"}, {"name": "fragmentation", "max_size": 1024}],
    "lz4": ["order", {"name": "compression", "codec": "lz4"}, {"name": "fragmentation", "max_size": 1024}],
    "fragment-then-gzip": [
        "order",
        {"name": "fragmentation", "max_size": 1024},
        {"name": "compression", "codec": "gzip"},
    ],
}


@pytest.mark.parametrize("stack", list(INTERCEPTOR_STACKS))
def test_interceptor_stack(stack: str, mcast_port: int, local_node: Factory) -> None:
    interceptors = ["dispatch", "failure_detector", *INTERCEPTOR_STACKS[stack]]
    a = local_node(mcast_port, interceptors=interceptors)
    b = local_node(mcast_port, interceptors=interceptors)
    target = a.wait_sees(b)
    b.wait_sees(a)

    # 100 KiB of random bytes: split into ~100 pieces of at most 1 KiB, reassembled intact.
    big = os.urandom(100 * KIB)
    sent_before = a.cluster.stats()["messages_sent"]
    mark = b.recorder.mark()
    a.cluster.send(big, to=target, options="use_ack")
    assert b.recorder.wait_messages(1, since=mark) == [big]
    assert a.cluster.stats()["messages_sent"] - sent_before >= 100

    # A compressible 100 KiB message travels as far fewer bytes.
    text = b"tribes " * (100 * KIB // 7)
    bytes_before = a.cluster.stats()["bytes_sent"]
    mark = b.recorder.mark()
    a.cluster.send(text, to=target, options="use_ack")
    assert b.recorder.wait_messages(1, since=mark) == [text]
    assert a.cluster.stats()["bytes_sent"] - bytes_before < len(text) // 4

    # 200 small async messages, in order.
    mark = b.recorder.mark()
    small = [b"small-%03d" % i for i in range(200)]
    for data in small:
        a.cluster.send(data, to=target, options="async")
    assert b.recorder.wait_messages(200, since=mark) == small
    assert b.cluster.stats()["rejected_by_interceptors"] == 0


def test_sync_ack_of_a_fragmented_message_waits_for_the_last_fragment(
    mcast_port: int, member_process: Factory, local_node: Factory
) -> None:
    """Every fragment of a ``use_ack`` message is acknowledged; the send completes on the last one's ACK
    (the earlier fragments' ACKs are consumed, never taken for this message's or a later one's)."""
    interceptors = [{"name": "fragmentation", "max_size": 64}]
    node = local_node(mcast_port, interceptors=interceptors)
    receiver = member_process(
        mcast_port, name="receiver", args=["--config-json", json.dumps({"interceptors": interceptors})]
    )
    (target,) = connect_all(node, receiver)
    outcome: list[BaseException | None] = []

    receiver.request("LISTENER hold", "OK")
    for i in range(3):
        data = bytes([i]) * 1000  # 16 fragments
        mark = receiver.mark()
        sender = send_in_background(node, target, data, "use_ack,sync", outcome)
        receiver.wait_line("MSG", msg_line_for(node.member, data), since=mark)
        sender.join(timeout=0.5)
        assert sender.is_alive(), f"send {i} returned before the receiver's listener had run"
        receiver.request("RELEASE", "OK")
        sender.join(timeout=5)
        assert not sender.is_alive()
        assert outcome == [None] * (i + 1)
    receiver.request("LISTENER ok", "OK")


def test_a_process_restarted_at_the_same_address_replaces_the_old_member(
    mcast_port: int, member_process: Factory, local_node: Factory, wait_for: Factory
) -> None:
    """A member killed without a goodbye and restarted on the same port ends up in the view once, as the
    new process."""
    node = local_node(mcast_port)
    old = member_process(mcast_port, name="old")
    connect_all(node, old)
    old.kill()  # SIGKILL: no shutdown packet
    new = member_process(mcast_port, name="new", args=["--receiver-port", str(old.port)])
    assert new.port == old.port, "the restarted process should have its old port back"
    node.wait_sees(new)
    wanted = [(new.port, bytes(new.unique_id))]
    wait_for(
        lambda: [(m.port, bytes(m.unique_id)) for m in node.cluster.members] == wanted,
        10,
        lambda: f"only the new process in the view; it is {[str(m) for m in node.cluster.members]}",
    )


def test_a_restart_that_answers_the_old_members_probe_does_not_keep_it(
    mcast_port: int, member_process: Factory
) -> None:
    """The failure detector probes a member that fell silent; a process restarted on the same port answers
    that probe in its place. The old member must still go (within a few drop times), not stay a suspect
    for ``remove_suspects_timeout`` (300 s). The watcher is stopped while the old process dies and the new
    one starts, so its probe can only find the new process answering."""
    watcher = member_process(mcast_port, name="watcher")
    old = member_process(mcast_port, name="old")
    watcher.wait_added(old)
    mark = watcher.mark()
    stop_process(watcher.pid)
    try:
        old.kill()  # SIGKILL: no shutdown packet
        new = member_process(mcast_port, name="new", args=["--receiver-port", str(old.port)])
        assert new.port == old.port, "the restarted process should have its old port back"
    finally:
        os.kill(watcher.pid, signal.SIGCONT)
    watcher.wait_added(new, since=mark)
    # drop time 1 s: probed once it is silent, then again a drop time later if the new process's
    # heartbeat was not in yet.
    watcher.wait_line("GONE", _is(old), timeout=10, since=mark)
    members = watcher.request("MEMBERS", "MEMBERS")
    assert json.loads(members.split(" ", 1)[1]) == [f"{new.address} {new.unique_id.hex()}"]
