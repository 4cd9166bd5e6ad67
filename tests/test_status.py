"""``tribes status`` and ``cluster.stats()`` / ``cluster.cluster_stats()``; a BackupManager never picks a
member that does not run it as a backup."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import tribes
from support.lineproc import free_mcast_port
from support.waiting import EVENT_TIMEOUT, wait_for

#: The ``start_cluster`` fixture (tests/conftest.py).
StartCluster = Callable[..., tribes.Cluster]


def test_status_prints_members_sessions_and_counters(start_cluster: StartCluster, tmp_path: Path) -> None:
    cfg = tribes.ClusterConfig.local(
        membership={"port": free_mcast_port(47000, 48999)}, managers={"shop": {"kind": "delta"}}
    )
    a = start_cluster(cfg.with_overrides(route="node1"))
    b = start_cluster(cfg.with_overrides(route="node2"))
    wait_for(lambda: a.members and b.members, EVENT_TIMEOUT, "the members to meet")
    shop = a.manager("shop")
    for i in range(7):
        s = shop.create()
        s["n"] = i
        shop.commit(s)
    assert a.stats()["manager.shop.sessions_primary"] == 7
    assert b.stats()["manager.shop.deltas_received"] == 7

    stats = a.cluster_stats()
    assert set(stats) == {a.local_member.name, b.local_member.name}
    remote = stats[b.local_member.name]
    assert remote["route"] == "node2"
    assert remote["managers"]["shop"]["counters"]["sessions_copies"] == 7

    path = tmp_path / "cluster.toml"
    path.write_text(cfg.to_toml())
    out = subprocess.run(
        [sys.executable, "-m", "tribes.cli", "status", "--config", str(path), "--seconds", "5"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "2 member(s) answered" in out.stdout
    assert "node1" in out.stdout and "node2" in out.stdout
    total = next(line for line in out.stdout.splitlines() if line.strip().startswith("total"))
    assert total.split()[1:3] == ["7", "7"]  # 7 primaries (node1), 7 copies (node2)
    # The status member ran no manager: nothing was replicated to it.
    assert b.stats()["session_messages_unknown_manager"] == 0


def test_backup_manager_skips_members_without_the_manager(start_cluster: StartCluster) -> None:
    port = free_mcast_port(47000, 48999)
    cfg = tribes.ClusterConfig.local(membership={"port": port}, managers={"shop": {"kind": "backup"}})
    a = start_cluster(cfg)
    b = start_cluster(cfg)
    plain = start_cluster(tribes.ClusterConfig.local(membership={"port": port}))  # no manager
    wait_for(lambda: len(a.members) == 2 and len(b.members) == 2, EVENT_TIMEOUT, "three members")
    shop = a.manager("shop")
    assert isinstance(shop, tribes.BackupManager)
    ids = []
    for i in range(20):  # round-robin over both others: half would pick the plain member
        s = shop.create()
        s["n"] = i
        shop.commit(s)
        ids.append(s.id)
    b_uid = b.local_member.unique_id
    locations = shop.locations()
    assert all(locations[sid][0] == "primary" and locations[sid][2] == b_uid for sid in ids)
    assert plain.stats()["session_messages_unknown_manager"] > 0  # it refused, and was skipped
    assert all(b.manager("shop").peek(sid) is not None for sid in ids)
