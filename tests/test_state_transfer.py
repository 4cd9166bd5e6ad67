"""State transfer: a member that joins a running cluster receives every session, in batches, and the
changes committed meanwhile are not lost; then it serves the sessions."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

import tribes
from support.lineproc import free_mcast_port
from support.waiting import EVENT_TIMEOUT, wait_for
from support.wire import FrameCapture

#: The ``start_cluster`` fixture (tests/conftest.py).
StartCluster = Callable[..., tribes.Cluster]

SESSIONS = 100_000


@pytest.mark.timeout(300)
def test_joining_member_receives_100k_sessions_and_serves_them(start_cluster: StartCluster) -> None:
    cfg = tribes.ClusterConfig.local(membership={"port": free_mcast_port(47000, 48999)})
    a = start_cluster(cfg)
    shop = a.manager("shop")
    ids = []
    for i in range(SESSIONS):
        s = shop.create()
        s["n"] = i
        s["user"] = f"user{i}"
        shop.commit(s)
        ids.append(s.id)

    # While the new member joins, the old one keeps committing: those changes must arrive too.
    stop = threading.Event()
    written: dict[str, int] = {}

    def writer() -> None:
        k = 0
        while not stop.is_set() and k < 20_000:
            sid = ids[k % 1000]
            s = shop.get(sid)
            assert s is not None
            s["late"] = k
            shop.commit(s)
            written[sid] = k
            k += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        b = start_cluster(cfg)
        joined = b.manager("shop")
    finally:
        stop.set()
        thread.join(60)
    assert joined.state_transfer == "complete"
    assert len(joined) == SESSIONS
    stats = joined.stats()
    assert stats["transfer_sessions_received"] == SESSIONS

    # Every change the writer made reached the new member (in the transfer or as a delta after it).
    def late_values_match() -> bool:
        return all((joined.peek(sid) or {}).get("late") == k for sid, k in written.items())

    wait_for(late_values_match, EVENT_TIMEOUT, "the changes made during the transfer")

    # It serves them: reads see the data, and its own commits replicate back.
    for i in range(0, SESSIONS, 997):
        s = joined.get(ids[i])
        assert s is not None and s["n"] == i and s["user"] == f"user{i}"
    s = joined.get(ids[5])
    assert s is not None
    s["from_b"] = True
    joined.commit(s)
    again = shop.peek(ids[5])
    assert again is not None and again["from_b"] is True


def test_a_member_without_the_manager_answers_no_manager(start_cluster: StartCluster) -> None:
    """The asked member runs no manager of that name: it says so and the joiner does not wait."""
    port = free_mcast_port(47000, 48999)
    old = start_cluster(tribes.ClusterConfig.local(membership={"port": port}))
    cfg = tribes.ClusterConfig.local(
        membership={"port": port}, managers={"shop": {"state_transfer_timeout": 60}}
    )
    new = start_cluster(cfg)
    assert new.members, "the new member must have seen the old one before asking"
    assert new.manager("shop").state_transfer == "complete"
    assert len(new.manager("shop")) == 0
    assert old.stats()["session_messages_unknown_manager"] >= 1


def test_transfer_gives_up_after_the_timeout(start_cluster: StartCluster) -> None:
    """A peer that acknowledges the request but never answers: the joiner goes on after
    ``state_transfer_timeout`` and reports it."""
    with FrameCapture() as silent:
        cfg = tribes.ClusterConfig.local(
            membership={"static_members": [{"host": "127.0.0.1", "port": silent.port}]},
            managers={"shop": {"state_transfer_timeout": 1}},
        )
        cluster = start_cluster(cfg)
        wait_for(lambda: cluster.members, EVENT_TIMEOUT, "the static peer to be seen")
        manager = cluster.manager("shop")
        assert manager.state_transfer == "timed_out"
        assert manager.stats()["transfer_timeouts"] == 1
        silent.wait_frame(lambda f: b"TRSM" in f)
        # Still usable.
        s = manager.create()
        s["x"] = 1
        manager.commit(s)
