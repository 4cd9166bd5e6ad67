#!/usr/bin/env python3
"""Session replication benchmark: value codec, commits/s per send mode, state transfer, memory per session.

Measures, in one run and on 127.0.0.1 only:

1. **Codec**: encoding and decoding a typical session change (five attributes: a user name, a counter,
   a cart of three small dicts, an aware datetime, a dict of preferences) one attribute at a time, as a
   commit encodes each changed value and the receiving member decodes it, with ``tribes.codec`` and
   with ``pickle`` (``HIGHEST_PROTOCOL``) on the same values; best of N rounds, rounds alternating so
   both see the same machine. Per-attribute rows show where the time goes; the ``msgpack`` package
   (C extension, datetimes as timestamps) is a second reference when it is installed.
2. **Commits/s to 2 peers** for each send mode (``async``, ``ack``, ``sync``): three ``tribes.Cluster``
   members in this process (each its own Rust runtime with real sockets), a DeltaManager per mode; one
   member changes a counter attribute of one session and commits, in a loop bounded in count and
   time. Baseline, same clusters, same rounds: ``cluster.send`` of a payload as large as the delta
   message's, with the matching channel options (``async``, ``use_ack``, ``use_ack,sync``).
3. **State transfer**: this process holds ``--sessions`` sessions of one ``--value-bytes`` attribute
   each (populated while it is alone); a new member starts and ``cluster.manager()`` returns once it
   has them all: timed, as MB/s of attribute data. ``--transfer-rounds`` new members, one after the
   other, each a fresh child process; medians are shown. Baseline: the same number of bytes over a
   plain Python TCP connection between the same two processes, just before each transfer.
4. **Memory per session per replica**: the child's resident memory (``VmRSS``) just before and just
   after the transfer, divided by the sessions received, so the figure is the replica's table and not
   the Python objects of the creating side. Baseline: a fresh child process holding the same sessions
   in a plain Python dict (``{id: {"data": bytes}}``).

Usage::

    python benches/session_replication.py                    # defaults (100 000 sessions), about 60 s
    python benches/session_replication.py --quick            # smoke run (10 000 sessions), about 10 s
    python benches/session_replication.py --sessions 300000  # scale the transfer and memory sections
    python benches/session_replication.py --only transfer    # sections: codec, commits, transfer
    python benches/session_replication.py --json out.json    # also save every figure

Targets (issue: session managers): codec ≥ 5x faster than pickle (encode + decode); state transfer
≥ 100 MB/s; ≤ 1.5 KiB of replica memory per 1 KiB session. Commit rates have no target; their ratio
to a bare channel send is the cost of the manager. The three members of section 2 share this process
(and its interpreter lock only where Python runs: the commit loop), so rates are those of one machine
doing all the work of the sender and both receivers.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import pickle
import platform
import secrets
import signal
import socket
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from bench_common import JsonChild, free_mcast_port, json_replier, log, percentile, start_watchdog

# Targets from the issue.
TARGET_CODEC_RATIO = 5.0  # pickle / tribes.codec, encode + decode of a typical change
TARGET_TRANSFER_MB_S = 100.0  # attribute data, 10^6 bytes/s
TARGET_BYTES_PER_KIB = 1.5 * 1024  # replica RSS per session of 1 KiB of attribute data

MODES = (("async", "async"), ("ack", "use_ack"), ("sync", "use_ack,sync"))  # manager mode, channel options
CHILD_LIFETIME_S = 600.0  # a child process exits after this, whatever happens
CMD_TIMEOUT_S = 30.0
RAW_CHUNK = 1 << 20
BUSY_CORES = 0.25  # other processes busier than this (cores, on average over the run): warn


def rss_bytes() -> int:
    """Resident memory of this process (VmRSS), in bytes."""
    return _status_kib("VmRSS") * 1024


def peak_rss_bytes() -> int:
    """Highest resident memory of this process so far (VmHWM), in bytes."""
    return _status_kib("VmHWM") * 1024


def _status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def cpu_snapshot() -> tuple[float, float]:
    """(CPU seconds the whole machine spent busy, from /proc/stat; CPU seconds of this process and of its
    children that have been waited for)."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        busy = (values[0] + values[1] + values[2]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        busy = 0.0
    t = os.times()
    return busy, t.user + t.system + t.children_user + t.children_system


@dataclass
class Settings:
    codec_rounds: int
    codec_calls: int  # typical changes encoded and decoded per round and case
    commit_rounds: int
    commit_s: float  # per round, per case
    commit_max: int  # per round, per case
    sessions: int
    value_bytes: int
    transfer_rounds: int  # new members fetching every session, one after the other; medians shown
    budget_s: float  # the hard limit is 1.5x this plus 30 s


FULL = Settings(
    codec_rounds=7,
    codec_calls=10_000,
    commit_rounds=5,
    commit_s=1.5,
    commit_max=100_000,
    sessions=100_000,
    value_bytes=1024,
    transfer_rounds=3,
    budget_s=110.0,
)
QUICK = Settings(
    codec_rounds=3,
    codec_calls=2_000,
    commit_rounds=1,
    commit_s=0.5,
    commit_max=20_000,
    sessions=10_000,
    value_bytes=1024,
    transfer_rounds=1,
    budget_s=40.0,
)


def expected_seconds(s: Settings) -> dict[str, float]:
    """Roughly how long each section takes on a small machine (2 cores), for the time budget."""
    scale = s.sessions / 100_000 * s.value_bytes / 1024
    return {
        "codec": s.codec_rounds * s.codec_calls / 10_000 * 1.2,
        "commits": s.commit_rounds * len(MODES) * 2 * (s.commit_s + 0.3) + 3,
        "transfer": 3 + scale * (1.5 + 2.5 * s.transfer_rounds + 1.5),
    }


# ------------------------------------------------------------------------------------------------
# 1. Codec
# ------------------------------------------------------------------------------------------------


def typical_change() -> dict[str, Any]:
    """The attributes a request typically changed, as a commit encodes them one by one."""
    return {
        "user": "alice@example.com",
        "counter": 42,
        "cart": [{"sku": f"A-{1000 + i}", "qty": i + 1, "price_cents": 999 * (i + 1)} for i in range(3)],
        "last_seen": datetime.now(UTC).replace(microsecond=123456),
        "prefs": {"lang": "en", "theme": "dark", "tz": "Europe/Paris", "newsletter": True},
    }


def _best_us(fn: Callable[[], object], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e6


def codec_section(s: Settings) -> dict[str, Any]:
    """µs per encode and per decode of the whole change and of each attribute, best of the rounds."""
    from tribes import _core, codec

    change = typical_change()
    items = list(change.items())
    proto = pickle.HIGHEST_PROTOCOL

    libs: dict[str, tuple[Callable[[Any, str], bytes], Callable[[bytes], Any]]] = {
        "tribes.codec": (codec.dumps, codec.loads),
        "pickle": (lambda v, _n: pickle.dumps(v, proto), pickle.loads),
        # What a commit calls (SessionManager._encode/_decode), without the tribes.codec wrapper.
        "_core": (_core.encode_value, _core.decode_value),
    }
    try:
        import msgpack  # type: ignore[import-untyped]

        libs["msgpack"] = (
            lambda v, _n: msgpack.packb(v, datetime=True),
            lambda b: msgpack.unpackb(b, timestamp=3, strict_map_key=False),
        )
    except ImportError:
        pass

    encoded: dict[str, list[bytes]] = {}
    for lib, (dumps, loads) in libs.items():
        encoded[lib] = [dumps(v, n) for n, v in items]
        back = [loads(b) for b in encoded[lib]]
        if lib != "msgpack":  # msgpack turns tuples into lists; the values here have none, but be lenient
            assert back == [v for _, v in items], f"{lib} did not round-trip the change"

    cases: dict[tuple[str, str, str], Callable[[], object]] = {}
    for lib, (dumps, loads) in libs.items():
        blobs = encoded[lib]
        cases[(lib, "change", "encode")] = lambda d=dumps: [d(v, n) for n, v in items]
        cases[(lib, "change", "decode")] = lambda ld=loads, bl=blobs: [ld(b) for b in bl]
        if lib not in ("tribes.codec", "pickle"):
            continue
        for (name, value), blob in zip(items, blobs, strict=True):
            cases[(lib, name, "encode")] = lambda d=dumps, v=value, n=name: d(v, n)
            cases[(lib, name, "decode")] = lambda ld=loads, b=blob: ld(b)

    # Whole-session serialisers pickle the whole mapping in one call: a reference row.
    whole = pickle.dumps(change, proto)
    cases[("pickle", "whole", "encode")] = lambda: pickle.dumps(change, proto)
    cases[("pickle", "whole", "decode")] = lambda: pickle.loads(whole)

    best: dict[tuple[str, str, str], float] = {}
    for fn in cases.values():  # warm-up
        _best_us(fn, max(1, s.codec_calls // 20))
    for _ in range(s.codec_rounds):
        for key, fn in cases.items():
            calls = s.codec_calls if key[1] in ("change", "whole") else s.codec_calls * 2
            t = _best_us(fn, calls)
            best[key] = min(best.get(key, t), t)
    sizes = {lib: {n: len(b) for (n, _), b in zip(items, encoded[lib], strict=True)} for lib in libs}
    for lib in libs:
        sizes[lib]["change"] = sum(sizes[lib].values())
    sizes["pickle"]["whole"] = len(whole)
    return {
        "us": {"/".join(k): v for k, v in best.items()},
        "bytes": sizes,
        "attributes": [n for n, _ in items],
        "libs": list(libs),
    }


# ------------------------------------------------------------------------------------------------
# 2. Commits/s to 2 peers, per send mode
# ------------------------------------------------------------------------------------------------


class CommitBench:
    """Three in-process members; one DeltaManager per send mode; member 0 commits."""

    def __init__(self, s: Settings, used_ports: set[int], deadline: float) -> None:
        import tribes

        self.tribes = tribes
        self.s = s
        self.deadline = deadline
        self.mport = free_mcast_port(used_ports)
        managers = {f"bench-{mode}": {"send_mode": mode} for mode, _ in MODES}
        self.cfg = tribes.ClusterConfig.local(
            name="bench-commits", membership={"port": self.mport}, managers=managers
        )
        self.clusters: list[Any] = []
        self.anomalies: list[str] = []

    def start(self) -> None:
        for _ in range(3):
            c = self.tribes.Cluster(self.cfg)
            self.clusters.append(c)
            c.start()
        for c in self.clusters:
            c.wait_for_members(2, timeout=20)

    def close(self) -> None:
        for c in reversed(self.clusters):
            with contextlib.suppress(Exception):
                c.stop()
        self.clusters.clear()

    def _wait(self, cond: Callable[[], bool], timeout: float) -> float | None:
        """perf_counter when ``cond()`` became true, polled every 0.5 ms; None if it did not in time."""
        end = min(
            time.perf_counter() + timeout, time.perf_counter() + max(0.0, self.deadline - time.monotonic())
        )
        while True:
            if cond():
                return time.perf_counter()
            if time.perf_counter() >= end:
                return None
            time.sleep(0.0005)

    def frame_overhead(self) -> int:
        """Bytes the channel adds to a payload, per message (from the sender's counters)."""
        a = self.clusters[0]
        seen = []
        for _ in range(20):  # the least of a few probes: other traffic may overlap one
            before = a.stats()
            a.send(b"", options="use_ack")
            after = a.stats()
            msgs = after["messages_sent"] - before["messages_sent"]
            if msgs > 0:
                seen.append((after["bytes_sent"] - before["bytes_sent"]) // msgs)
        return min(seen, default=0)

    def commit_round(self, mode: str) -> dict[str, Any]:
        name = f"bench-{mode}"
        managers = [c.manager(name) for c in self.clusters]
        m = managers[0]
        session = m.create()
        session["counter"] = -1
        m.commit(session)
        sid = session.id
        peers = managers[1:]
        if self._wait(lambda: all(sid in p for p in peers), 10) is None:
            self.anomalies.append(f"{mode}: the new session did not reach both peers within 10 s")
        a = self.clusters[0]
        st0 = a.stats()
        lat: list[int] = []
        n = 0
        limit, seconds = self.s.commit_max, self.s.commit_s
        clock = time.perf_counter_ns
        t0 = time.perf_counter()
        end = t0 + seconds
        while n < limit:
            c0 = clock()
            session["counter"] = n
            m.commit(session)
            lat.append(clock() - c0)
            n += 1
            if not n & 63 and time.perf_counter() >= end:
                break
        t1 = time.perf_counter()
        st1 = a.stats()
        last = n - 1

        def applied() -> bool:
            for p in peers:
                got = p.get(sid)
                if got is None or got.get("counter") != last:
                    return False
            return True

        t_applied = self._wait(applied, 20)
        if t_applied is None:
            self.anomalies.append(f"{mode}: both peers did not hold the last commit within 20 s")
        m.invalidate(sid)
        msgs = st1["messages_sent"] - st0["messages_sent"]
        lat.sort()
        return {
            "commits": n,
            "rate": n / (t1 - t0),
            "applied_rate": n / (t_applied - t0) if t_applied else None,
            "median_us": percentile(lat, 0.5) / 1000,
            "p99_us": percentile(lat, 0.99) / 1000,
            "bytes_per_msg": (st1["bytes_sent"] - st0["bytes_sent"]) / max(1, msgs),
            "msgs_per_commit": msgs / max(1, n),
            "send_failures": st1["send_failures"] - st0["send_failures"],
        }

    def channel_round(self, options: str, payload: bytes) -> dict[str, Any]:
        a = self.clusters[0]
        peers = self.clusters[1:]
        received0 = [p.stats()["messages_received"] for p in peers]
        st0 = a.stats()
        lat: list[int] = []
        n = 0
        limit, seconds = self.s.commit_max, self.s.commit_s
        clock = time.perf_counter_ns
        send = a.send
        t0 = time.perf_counter()
        end = t0 + seconds
        while n < limit:
            c0 = clock()
            send(payload, None, options)
            lat.append(clock() - c0)
            n += 1
            if not n & 63 and time.perf_counter() >= end:
                break
        t1 = time.perf_counter()
        st1 = a.stats()
        t_applied = self._wait(
            lambda: all(
                p.stats()["messages_received"] - r0 >= n for p, r0 in zip(peers, received0, strict=True)
            ),
            20,
        )
        if t_applied is None:
            self.anomalies.append(f"channel {options}: both peers did not receive every message within 20 s")
        lat.sort()
        return {
            "commits": n,
            "rate": n / (t1 - t0),
            "applied_rate": n / (t_applied - t0) if t_applied else None,
            "median_us": percentile(lat, 0.5) / 1000,
            "p99_us": percentile(lat, 0.99) / 1000,
            "send_failures": st1["send_failures"] - st0["send_failures"],
        }

    def run(self) -> dict[str, Any]:
        overhead = self.frame_overhead()
        out: dict[str, Any] = {"frame_overhead": overhead, "modes": {}}
        rounds_done = 0
        for rnd in range(self.s.commit_rounds):
            need = 2 * len(MODES) * (self.s.commit_s + 0.5)
            if rnd and self.deadline - time.monotonic() < need:
                log(f"commits: skipping round {rnd + 1}: time budget")
                break
            for mode, options in MODES:
                res = out["modes"].setdefault(mode, {"options": options, "commit": [], "channel": []})
                row = self.commit_round(mode)
                res["commit"].append(row)
                # The baseline sends as many payload bytes as a delta message carries.
                payload = b"\x00" * max(1, round(row["bytes_per_msg"]) - overhead)
                res["payload"] = len(payload)
                base = self.channel_round(options, payload)
                res["channel"].append(base)
                for what, r in ((f"commits {mode}", row), (f"channel {options}", base)):
                    if r["send_failures"]:
                        self.anomalies.append(f"{what}: {r['send_failures']} send failures, round {rnd + 1}")
                log(
                    f"round {rnd + 1}/{self.s.commit_rounds} {mode:<5} commit {row['rate']:>9,.0f}/s "
                    f"median {row['median_us']:6.1f} µs | channel {options:<12} {base['rate']:>9,.0f}/s "
                    f"median {base['median_us']:6.1f} µs"
                )
            rounds_done += 1
        out["rounds"] = rounds_done
        return out


# ------------------------------------------------------------------------------------------------
# 3 + 4. State transfer and memory: the child process
# ------------------------------------------------------------------------------------------------


def child_main() -> int:
    """A child: one command per stdin line, one JSON answer per stdout line."""

    start_watchdog(CHILD_LIFETIME_S)
    out = sys.stdout

    reply = json_replier(out)

    for line in sys.stdin:
        if not line.strip():
            continue
        cmd, *args = line.split()
        try:
            if cmd == "raw":
                reply(_child_raw(int(args[0]), reply))
            elif cmd == "join":
                reply(_child_join(int(args[0]), args[1], int(args[2]), float(args[3]), args[4:]))
            elif cmd == "dict":
                reply(_child_dict(int(args[0]), int(args[1])))
            elif cmd == "quit":
                break
            else:
                reply({"error": f"unknown command {cmd!r}"})
        except Exception as exc:
            reply({"error": f"{type(exc).__name__}: {exc}"})
    return 0


def _child_raw(nbytes: int, reply: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Receives ``nbytes`` on one TCP connection and answers one byte: the baseline transfer."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(CMD_TIMEOUT_S)
        reply({"port": listener.getsockname()[1]})
        conn, _ = listener.accept()
    with conn:
        conn.settimeout(CMD_TIMEOUT_S)
        buf = bytearray(RAW_CHUNK)
        got = 0
        while got < nbytes:
            n = conn.recv_into(buf)
            if n == 0:
                break
            got += n
        conn.sendall(b"k")
    return {"received": got}


def _child_join(
    mport: int, name: str, value_bytes: int, timeout: float, samples: list[str]
) -> dict[str, Any]:
    """Starts a member, waits for the other, then times ``cluster.manager(name)`` (the state transfer) and
    reads VmRSS around it."""
    import tribes

    cfg = tribes.ClusterConfig.local(
        name="bench-replica",
        membership={"port": mport},
        managers={"*": {"state_transfer_timeout": timeout}},
    )
    cluster = tribes.Cluster(cfg)
    cluster.start()
    try:
        cluster.wait_for_members(1, timeout=20)
        # Past the membership settling period, so manager() below waits for nothing but the transfer.
        time.sleep(2 * cfg.membership.frequency_ms / 1000 + 0.1)
        gc.collect()
        stats0 = cluster.stats()
        rss0 = rss_bytes()
        t0 = time.perf_counter()
        manager = cluster.manager(name)
        seconds = time.perf_counter() - t0
        rss1 = rss_bytes()
        peak = peak_rss_bytes()
        stats1 = cluster.stats()
        held = len(manager)
        checked = 0
        for entry in samples:
            sid, index = entry.split("=")
            session = manager.get(sid)
            data = None if session is None else session.get("data")
            if (
                isinstance(data, bytes)
                and len(data) == value_bytes
                and data[:8] == int(index).to_bytes(8, "big")
            ):
                checked += 1
        gc.collect()
        rss2 = rss_bytes()
        return {
            "seconds": seconds,
            "state": manager.state_transfer,
            "sessions": held,
            "rss_before": rss0,
            "rss_after": rss1,
            "rss_after_gc": rss2,
            "peak": peak,
            "bytes_received": stats1["bytes_received"] - stats0["bytes_received"],
            "messages_received": stats1["messages_received"] - stats0["messages_received"],
            "samples_ok": checked,
            "samples": len(samples),
            "manager_stats": manager.stats(),
        }
    finally:
        cluster.stop()


def _child_dict(n: int, value_bytes: int) -> dict[str, Any]:
    """The baseline: the same sessions in a plain Python dict, in a fresh process."""
    gc.collect()
    rss0 = rss_bytes()
    tail = os.urandom(value_bytes - 8)
    store: dict[str, dict[str, Any]] = {}
    for i in range(n):
        store[secrets.token_hex(16)] = {"data": i.to_bytes(8, "big") + tail}
    gc.collect()
    rss1 = rss_bytes()
    return {"sessions": len(store), "rss_before": rss0, "rss_after": rss1}


class Child(JsonChild):
    """The parent's handle on a child process."""

    def __init__(self) -> None:
        super().__init__(__file__, "--child", "child", CMD_TIMEOUT_S, 20)


def raw_tcp(child: Child, nbytes: int) -> dict[str, Any]:
    """``nbytes`` to the child over one plain TCP connection, in 1 MiB writes, until it acknowledges."""
    port = child.call(f"raw {nbytes}")["port"]
    chunk = os.urandom(RAW_CHUNK)
    with socket.create_connection(("127.0.0.1", port), timeout=CMD_TIMEOUT_S) as sock:
        t0 = time.perf_counter()
        left = nbytes
        view = memoryview(chunk)
        while left > 0:
            k = min(left, RAW_CHUNK)
            sock.sendall(view[:k])
            left -= k
        ack = sock.recv(1)
        seconds = time.perf_counter() - t0
    got = child.answer()["received"]
    if ack != b"k" or got != nbytes:
        raise RuntimeError(f"raw TCP baseline: {got} of {nbytes} bytes arrived")
    return {"seconds": seconds, "mb_s": nbytes / seconds / 1e6}


def transfer_section(s: Settings, used_ports: set[int], deadline: float) -> dict[str, Any]:
    """Populates a primary alone, then lets ``transfer_rounds`` new members (fresh child processes, one
    after the other) fetch every session; the raw TCP baseline runs in each child just before."""
    import tribes

    name = "bench-transfer"
    mport = free_mcast_port(used_ports)
    cfg = tribes.ClusterConfig.local(name="bench-primary", membership={"port": mport})
    out: dict[str, Any] = {"sessions_asked": s.sessions, "value_bytes": s.value_bytes, "rounds": []}
    primary = tribes.Cluster(cfg)
    try:
        primary.start()
        manager = primary.manager(name)
        gc.collect()
        rss0 = rss_bytes()
        tail = os.urandom(s.value_bytes - 8)
        samples: list[str] = []
        populate_end = time.monotonic() + max(5.0, (deadline - time.monotonic()) * 0.4)
        t0 = time.perf_counter()
        n = 0
        while n < s.sessions:
            session = manager.create()
            session["data"] = n.to_bytes(8, "big") + tail  # distinct values, as real sessions have
            manager.commit(session)
            if n % max(1, s.sessions // 4) == 0:
                samples.append(f"{session.id}={n}")
            n += 1
            if not n & 1023 and time.monotonic() >= populate_end:
                log(f"transfer: populating stopped at {n:,} sessions (time budget)")
                break
        samples.append(f"{session.id}={n - 1}")
        populate_s = time.perf_counter() - t0
        gc.collect()
        out.update(
            sessions=n,
            populate_s=populate_s,
            populate_rate=n / populate_s,
            primary_rss_per_session=(rss_bytes() - rss0) / n,
        )
        log(f"transfer: {n:,} sessions created and committed alone in {populate_s:.2f} s")

        nbytes = n * s.value_bytes
        round_s: list[float] = []
        for rnd in range(s.transfer_rounds):
            left = deadline - time.monotonic()
            if rnd and left < 1.5 * max(round_s) + 5:
                log(f"transfer: skipping round {rnd + 1}: time budget")
                break
            started = time.monotonic()
            child = Child()
            try:
                raw = raw_tcp(child, nbytes)
                timeout = max(10.0, min(60.0, left - 10))
                rep = child.call(
                    f"join {mport} {name} {s.value_bytes} {timeout:g} {' '.join(samples)}", timeout + 40
                )
            finally:
                child.close()
            rep["raw_mb_s"] = raw["mb_s"]
            rep["mb_s"] = nbytes / rep["seconds"] / 1e6
            rep["wire_mb_s"] = rep["bytes_received"] / rep["seconds"] / 1e6
            rep["rss_per_session"] = (rep["rss_after"] - rep["rss_before"]) / max(1, rep["sessions"])
            rep["peak_per_session"] = (rep["peak"] - rep["rss_before"]) / max(1, rep["sessions"])
            rep["ok"] = (
                rep["state"] == "complete" and rep["sessions"] == n and rep["samples_ok"] == rep["samples"]
            )
            out["rounds"].append(rep)
            round_s.append(time.monotonic() - started)
            log(
                f"transfer round {rnd + 1}/{s.transfer_rounds}: {rep['sessions']:,} sessions in "
                f"{rep['seconds']:.2f} s ({rep['state']}), {rep['mb_s']:,.0f} MB/s "
                f"(raw TCP {raw['mb_s']:,.0f}); "
                f"replica RSS +{rep['rss_per_session']:,.0f} B/session"
            )
    finally:
        primary.stop()
    baseline = Child()
    try:
        d = baseline.call(f"dict {out['sessions']} {s.value_bytes}", 60)
        d["rss_per_session"] = (d["rss_after"] - d["rss_before"]) / max(1, d["sessions"])
        out["dict"] = d
    finally:
        baseline.close()
    return out


# ------------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def fnum(v: float | None, fmt: str = ",.0f") -> str:
    return "-" if v is None else format(v, fmt)


def verdict(ok: bool | None) -> str:
    return "-" if ok is None else "PASS" if ok else "MISS"


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def _spread(values: Sequence[float]) -> str:
    """min-max over the rounds, when there were several."""
    return f"; rounds {min(values):,.0f}-{max(values):,.0f}" if len(values) > 1 else ""


def codec_rows(codec: dict[str, Any], rows: list[list[str]], targets: dict[str, dict[str, Any]]) -> None:
    us, size = codec["us"], codec["bytes"]

    def total(lib: str, what: str) -> float:
        return float(us[f"{lib}/{what}/encode"] + us[f"{lib}/{what}/decode"])

    tc, pk = total("tribes.codec", "change"), total("pickle", "change")
    ratio = pk / tc
    ok = ratio >= TARGET_CODEC_RATIO
    targets["codec_vs_pickle"] = {"value": ratio, "target": TARGET_CODEC_RATIO, "pass": ok}
    rows.append(
        [
            "codec",
            "typical change, 5 attributes one by one, encode + decode "
            f"({size['tribes.codec']['change']} B vs {size['pickle']['change']} B)",
            f"{tc:.2f} µs",
            f"pickle {pk:.2f} µs",
            f"**{ratio:.2f}x** faster",
            f"≥ {TARGET_CODEC_RATIO:g}x",
            verdict(ok),
        ]
    )
    for op in ("encode", "decode"):
        a, b = us[f"tribes.codec/change/{op}"], us[f"pickle/change/{op}"]
        rows.append(
            [
                "codec",
                f"typical change, {op} only",
                f"{a:.2f} µs",
                f"pickle {b:.2f} µs",
                f"{b / a:.2f}x",
                "",
                "",
            ]
        )
    for name in codec["attributes"]:
        a, b = total("tribes.codec", name), total("pickle", name)
        detail = (
            f"enc {us[f'tribes.codec/{name}/encode']:.2f} + dec {us[f'tribes.codec/{name}/decode']:.2f} "
            f"vs {us[f'pickle/{name}/encode']:.2f} + {us[f'pickle/{name}/decode']:.2f} µs"
        )
        rows.append(
            [
                "codec",
                f"· `{name}` ({size['tribes.codec'][name]} B vs {size['pickle'][name]} B; {detail})",
                f"{a:.2f} µs",
                f"pickle {b:.2f} µs",
                f"{b / a:.2f}x",
                "",
                "",
            ]
        )
    core = total("_core", "change")
    rows.append(
        [
            "codec",
            "typical change through `_core.encode_value`/`decode_value` "
            "(what commit calls; no `tribes.codec` wrapper)",
            f"{core:.2f} µs",
            f"pickle {pk:.2f} µs",
            f"{pk / core:.2f}x",
            "",
            "",
        ]
    )
    whole = total("pickle", "whole")
    rows.append(
        [
            "codec",
            f"reference: pickle of the whole change as one dict ({size['pickle']['whole']} B)",
            f"{tc:.2f} µs",
            f"pickle {whole:.2f} µs",
            f"{whole / tc:.2f}x",
            "",
            "",
        ]
    )
    if "msgpack" in codec["libs"]:
        mp = total("msgpack", "change")
        rows.append(
            [
                "codec",
                "reference: `msgpack` package (C extension), same 5 attributes one by one",
                f"{tc:.2f} µs",
                f"msgpack {mp:.2f} µs",
                f"{mp / tc:.2f}x",
                "",
                "",
            ]
        )


def commit_rows(commits: dict[str, Any], rows: list[list[str]]) -> None:
    for mode, res in commits["modes"].items():
        c_rates = [r["rate"] for r in res["commit"]]
        b_rates = [r["rate"] for r in res["channel"]]
        c_rate, b_rate = _median(c_rates), _median(b_rates)
        c_med = _median([r["median_us"] for r in res["commit"]])
        b_med = _median([r["median_us"] for r in res["channel"]])
        c_p99 = _median([r["p99_us"] for r in res["commit"]])
        b_p99 = _median([r["p99_us"] for r in res["channel"]])
        applied = [r["applied_rate"] for r in res["commit"] if r["applied_rate"]]
        b_applied = [r["applied_rate"] for r in res["channel"] if r["applied_rate"]]
        extra = ""
        if mode == "async" and applied and b_applied:
            extra = (
                f"; applied on both peers {_median(applied):,.0f}/s vs delivered {_median(b_applied):,.0f}/s"
            )
        rows.append(
            [
                "commits",
                f"`send_mode={mode}` commits/s to 2 peers{extra}{_spread(c_rates)}",
                f"{c_rate:,.0f}/s",
                f"send `{res['options']}` {res['payload']} B: {b_rate:,.0f}/s",
                f"{c_rate / b_rate:.2f}x",
                "",
                "",
            ]
        )
        rows.append(
            [
                "commits",
                f"`send_mode={mode}` commit latency, median (p99 {c_p99:,.1f} vs {b_p99:,.1f} µs)",
                f"{c_med:,.1f} µs",
                f"{b_med:,.1f} µs",
                f"{c_med / b_med:.2f}x",
                "",
                "",
            ]
        )


def transfer_rows(tr: dict[str, Any], rows: list[list[str]], targets: dict[str, dict[str, Any]]) -> None:
    reps, dct = tr["rounds"], tr.get("dict")
    if not reps:
        return
    ok = all(r["ok"] for r in reps)
    states = ", ".join(sorted({f"`{r['state']}`" for r in reps}))
    mb = [r["mb_s"] for r in reps]
    mb_s, raw = _median(mb), _median([r["raw_mb_s"] for r in reps])
    secs = _median([r["seconds"] for r in reps])
    wire = _median([r["wire_mb_s"] for r in reps])
    held = min(r["sessions"] for r in reps)
    intact = sum(r["samples_ok"] for r in reps), sum(r["samples"] for r in reps)
    passed = ok and mb_s >= TARGET_TRANSFER_MB_S
    targets["transfer_mb_s"] = {"value": mb_s, "target": TARGET_TRANSFER_MB_S, "pass": passed}
    rows.append(
        [
            "state transfer",
            f"{held:,} of {tr['sessions']:,} sessions x {tr['value_bytes']:,} B to a new member, {states}, "
            f"{intact[0]}/{intact[1]} samples intact, {secs:.2f} s (wire {wire:,.0f} MB/s){_spread(mb)}",
            f"{mb_s:,.0f} MB/s",
            f"raw TCP {raw:,.0f} MB/s",
            f"{mb_s / raw:.2f}x" if raw > 0 else "-",
            f"≥ {TARGET_TRANSFER_MB_S:g} MB/s",
            verdict(passed),
        ]
    )
    per_list = [r["rss_per_session"] for r in reps]
    per = _median(per_list)
    grow = _median([r["rss_after"] - r["rss_before"] for r in reps]) / 2**20
    peak = _median([r["peak_per_session"] for r in reps])
    limit = TARGET_BYTES_PER_KIB * tr["value_bytes"] / 1024
    passed = ok and per <= limit
    targets["replica_bytes_per_session"] = {"value": per, "target": limit, "pass": passed}
    rows.append(
        [
            "memory",
            f"replica RSS per {tr['value_bytes']:,} B session (+{grow:,.1f} MiB; peak +{peak:,.0f} B/session)"
            f"{_spread(per_list)}",
            f"{per:,.0f} B ({per / tr['value_bytes']:.2f} per data byte)",
            f"Python dict {dct['rss_per_session']:,.0f} B" if dct else "-",
            f"{per / dct['rss_per_session']:.2f}x" if dct and dct["rss_per_session"] > 0 else "-",
            f"≤ {limit:,.0f} B",
            verdict(passed),
        ]
    )
    rows.append(
        [
            "memory",
            "primary (this process): RSS per session while populating, Python garbage included",
            f"{tr['primary_rss_per_session']:,.0f} B",
            "",
            "",
            "",
            "",
        ]
    )
    rows.append(
        [
            "populate",
            "create + set 1 attribute + commit, member alone",
            f"{tr['populate_rate']:,.0f}/s",
            "",
            "",
            "",
            "",
        ]
    )


def report(doc: dict[str, Any]) -> None:
    rows: list[list[str]] = []
    targets: dict[str, dict[str, Any]] = {}
    if doc.get("codec"):
        codec_rows(doc["codec"], rows, targets)
    commits = doc.get("commits")
    if commits:
        commit_rows(commits, rows)
    tr = doc.get("transfer")
    if tr:
        transfer_rows(tr, rows, targets)

    print()
    print("| section | case | tribes | baseline (same run) | ratio | target | result |")
    print("|---|---|---:|---:|---:|---:|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    print()
    meta = doc["meta"]
    m = meta["machine"]
    st = meta["settings"]
    notes = []
    if doc.get("codec"):
        notes.append(
            "codec: µs per typical change (every attribute encoded, then every one decoded), best of "
            f"{st['codec_rounds']} rounds of {st['codec_calls']:,} "
            f"(per attribute: {2 * st['codec_calls']:,}); ratio = baseline time / tribes time."
        )
    if commits:
        notes.append(
            f"commits: medians over {commits['rounds']} round(s) of ≤ {st['commit_s']:g} s and "
            f"≤ {st['commit_max']:,} commits per mode, 3 members in this process; "
            "latency = one `session['counter'] = i; commit()`; baseline = `cluster.send` of a payload "
            "as large as the delta message's, same options; ratio = tribes / baseline."
        )
    if tr:
        notes.append(
            f"transfer and memory: medians over {len(tr['rounds'])} new member(s), each a fresh process; "
            "MB/s = 10^6 bytes of attribute data per second, from the new member calling `cluster.manager()` "
            "to its return (wire = every byte the new member received); memory = its VmRSS after - before "
            "the transfer (peak = VmHWM)."
        )
    print(" ".join(notes))
    print(
        f"Machine: nproc={m['nproc']}, CPU {m['cpu']}, Linux {m['kernel']}; Python {m['python']}; "
        f"tribes {meta['tribes_version']}; mode {meta['mode']}; elapsed {meta['elapsed_s']:.0f} s, during "
        f"which other processes kept {meta['other_cores']:.2f} cores busy on average."
    )
    if targets:
        print(
            "Targets: "
            + "; ".join(
                f"{k} {fnum(t['value'], ',.2f')} (target {fnum(t['target'], ',.2f')}) → {verdict(t['pass'])}"
                for k, t in targets.items()
            )
            + "."
        )
    if meta["other_cores"] > BUSY_CORES:
        print(
            "WARNING: the machine was not quiet (other processes were busy meanwhile): figures are low and "
            "noisy; rerun on an idle machine."
        )
    for a in doc.get("anomalies", []):
        print(f"ANOMALY: {a}")
    doc["targets"] = targets


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="smoke run: 10 000 sessions, short rounds (~10 s)")
    p.add_argument(
        "--sessions", type=int, help="sessions held by the primary for the transfer (default 100 000)"
    )
    p.add_argument(
        "--value-bytes", type=int, help="bytes of the one attribute of each session (default 1024)"
    )
    p.add_argument(
        "--rounds", type=int, help="commit rounds per mode (default 5, quick 1); medians are shown"
    )
    p.add_argument("--commit-seconds", type=float, help="time bound of each commit loop (default 1.5)")
    p.add_argument(
        "--transfer-rounds", type=int, help="new members fetching every session (default 3, quick 1)"
    )
    p.add_argument("--only", metavar="SECTIONS", help="comma-separated: codec, commits, transfer")
    p.add_argument("--json", metavar="FILE", help="also save every figure as JSON")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child_main()

    s = QUICK if args.quick else FULL
    over: dict[str, Any] = {}
    if args.sessions is not None:
        over["sessions"] = max(1, min(args.sessions, 5_000_000))
    if args.value_bytes is not None:
        over["value_bytes"] = max(16, min(args.value_bytes, 1 << 20))
    if args.rounds is not None:
        over["commit_rounds"] = max(1, min(args.rounds, 20))
    if args.transfer_rounds is not None:
        over["transfer_rounds"] = max(1, min(args.transfer_rounds, 10))
    if args.commit_seconds is not None:
        over["commit_s"] = max(0.05, min(args.commit_seconds, 30.0))
    if over:
        s = Settings(**{**asdict(s), **over})
    # Larger runs get a larger budget: 1.4x the expected time of each section.
    plan = expected_seconds(s)
    s.budget_s = max(s.budget_s, 1.4 * sum(plan.values()))
    sections = {"codec", "commits", "transfer"}
    if args.only:
        chosen = {x.strip() for x in args.only.split(",") if x.strip()}
        if not chosen or not chosen <= sections:
            raise SystemExit(f"--only takes a comma-separated list of {', '.join(sorted(sections))}")
        sections = chosen

    import tribes

    hard_limit = int(s.budget_s * 1.5) + 30

    def overrun(signum: int, frame: Any) -> None:
        raise TimeoutError(f"the benchmark exceeded its hard time limit ({hard_limit} s)")

    # Every loop is bounded by count and time; this catches a blocking call that never returns.
    signal.signal(signal.SIGALRM, overrun)
    signal.alarm(hard_limit)
    t_start = time.monotonic()
    deadline = t_start + s.budget_s
    used_ports: set[int] = set()
    doc: dict[str, Any] = {"anomalies": []}
    cpu0 = cpu_snapshot()
    try:
        if "codec" in sections:
            log("codec: tribes.codec vs pickle, per attribute")
            doc["codec"] = codec_section(s)
        if "commits" in sections:
            commits_by = time.monotonic() + 1.4 * plan["commits"] + 5
            bench = CommitBench(s, used_ports, commits_by)
            try:
                bench.start()
                doc["commits"] = bench.run()
            finally:
                bench.close()
                doc["anomalies"] += bench.anomalies
        if "transfer" in sections:
            doc["transfer"] = transfer_section(s, used_ports, deadline)
    finally:
        signal.alarm(0)
    cpu1 = cpu_snapshot()
    elapsed = time.monotonic() - t_start
    other_cores = max(0.0, (cpu1[0] - cpu0[0]) - (cpu1[1] - cpu0[1])) / elapsed
    doc["meta"] = {
        "machine": machine(),
        "tribes_version": tribes.__version__,
        "mode": "quick" if args.quick else "full",
        "settings": asdict(s),
        "other_cores": other_cores,
        "elapsed_s": elapsed,
    }
    report(doc)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
