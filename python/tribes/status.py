"""``tribes status``: join a cluster briefly and print its members and, per manager, session counts and
replication counters (asked of every member over the channel)."""

from __future__ import annotations

import contextlib
import time
from typing import Any

from .cluster import Cluster
from .config import ClusterConfig

# The counters shown per manager, in this order (all are in cluster.stats() / manager.stats()).
_SHOWN = (
    ("sessions_primary", "primary"),
    ("sessions_copies", "copies"),
    ("sessions_proxies", "proxies"),
    ("deltas_sent", "deltas out"),
    ("deltas_received", "deltas in"),
    ("stale_writes", "stale"),
    ("sessions_expired", "expired"),
    ("transfer_sessions_received", "transferred in"),
    ("sessions_lost", "lost"),
    ("send_failures", "send failures"),
)


def collect(config: ClusterConfig, seconds: float) -> tuple[str, dict[str, dict[str, Any]]]:
    """Join with ``config`` (running no manager of its own), wait up to ``seconds`` for the members to
    be heard, ask each for its counters; returns this member's name and the answers by member."""
    quiet = config.with_overrides(managers={}, route=None)
    cluster = Cluster(quiet)
    with cluster:
        deadline = time.monotonic() + seconds
        # Heartbeats need a couple of periods to find everyone.
        settle = min(seconds, 2.5 * quiet.membership.frequency_ms / 1000.0)
        time.sleep(settle)
        if not cluster.members and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                cluster.wait_for_members(1, max(0.0, deadline - time.monotonic()))
        answers = cluster.cluster_stats(timeout=max(1.0, deadline - time.monotonic()))
        me = cluster.local_member.name
    return me, answers


def render(me: str, answers: dict[str, dict[str, Any]]) -> str:
    """The report as text."""
    others = {name: a for name, a in answers.items() if name != me}
    lines = [f"{len(others)} member(s) answered (asked from {me}, which runs no manager)", ""]
    lines.append(f"{'member':<28} {'route':<12} {'members seen':>12} {'msgs in':>10} {'msgs out':>10}")
    for name, a in sorted(others.items()):
        ch = a.get("channel", {})
        seen = ch.get("members_added", 0) - ch.get("members_disappeared", 0)
        lines.append(
            f"{name:<28} {a.get('route') or '-':<12} {seen:>12} "
            f"{ch.get('messages_received', 0):>10} {ch.get('messages_sent', 0):>10}"
        )
    managers = sorted({m for a in others.values() for m in a.get("managers", {})})
    for manager in managers:
        lines += ["", f"manager {manager!r}:"]
        header = f"  {'member':<28} {'kind':<7}" + "".join(f" {label:>14}" for _, label in _SHOWN)
        lines.append(header)
        totals = dict.fromkeys((k for k, _ in _SHOWN), 0)
        for name, a in sorted(others.items()):
            m = a.get("managers", {}).get(manager)
            if m is None:
                continue
            counters = m.get("counters", {})
            for key, _ in _SHOWN:
                totals[key] += int(counters.get(key, 0))
            row = "".join(f" {counters.get(key, 0):>14}" for key, _ in _SHOWN)
            lines.append(f"  {name:<28} {m.get('kind', '?'):<7}{row}")
        lines.append(f"  {'total':<28} {'':<7}" + "".join(f" {totals[key]:>14}" for key, _ in _SHOWN))
    if not managers:
        lines += ["", "no session manager runs on the members that answered"]
    return "\n".join(lines)
