#!/usr/bin/env python3
"""Channel throughput benchmark: one sender, two receivers in separate processes, loopback only.

Measures, for 100 B, 1 KiB and 10 KiB payloads:

* ``async`` sends: the send-loop rate seen from Python, and the end-to-end rate (until both
  receivers delivered every message), as messages/s (one message = one ``send()`` to both receivers)
  and MB/s of payload per receiver;
* ``use_ack`` sends (each waits for both ACKs): messages/s and the median/p99 round trip; plus the
  ``use_ack,sync`` round trip for 1 KiB.

Baselines measured in the same run with plain Python sockets between the same processes: 1 KiB
``sendall`` writes to both receivers (MB/s, writes/s), and a 1 KiB → 3 B ping-pong to both receivers
(sequential, as the issue asks, and parallel, which is what a ``use_ack`` send does).

Usage::

    python benches/channel_throughput.py                  # full run: 5 rounds, under 2 minutes on 2 cores
    python benches/channel_throughput.py --quick          # smoke run: 2 short rounds, about 20 s (CI)
    python benches/channel_throughput.py --json out.json  # also save every round's numbers
    python benches/channel_throughput.py --only use_ack   # only the cases whose name contains this

The table shows medians over the rounds, the round-to-round spread, and the CPU each process used.
Round trips and rates on a small VM move by tens of percent with scheduling; the script measures the
CPU other processes used meanwhile and warns when the machine was not quiet.

Everything stays on 127.0.0.1 (``ClusterConfig.local()``: multicast on loopback with TTL 0). The
receivers are this same script run with ``--receiver``; they take one command per line on stdin
and answer one JSON line on stdout. They have no message listener, so received messages are
counted by the core and never cross into Python.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import socket
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

from bench_common import JsonChild, json_replier, log, percentile, start_watchdog

PAYLOADS = (100, 1024, 10 * 1024)
RAW_CHUNK = 1024
ECHO_REPLY = b"ACK"

# References from the issue (other machine: 3 Tomcat 10.1 JVMs; iperf3 on loopback, 1 KiB writes).
TOMCAT_ASYNC_MSGS = 59_000
TOMCAT_SYNC_MEDIAN_US = 113.0
IPERF3_MBPS = 300.0
# Targets from the issue.
TARGET_ASYNC_MSGS = 180_000  # async 1 KiB to 2 receivers, msgs/s sent from Python (3x Tomcat)
TARGET_ACK_MEDIAN_US = 60.0  # use_ack 1 KiB round trip to 2 receivers, median

BUSY_WARNING_CORES = 0.15  # other processes (or the hypervisor) busier than this: warn
RECEIVER_LIFETIME_S = 900.0  # a receiver process exits after this, whatever happens
CMD_TIMEOUT_S = 15.0
SAMPLE_INTERVAL_S = 0.001  # receiver-side polling of its delivered counter (end-to-end timing)
MAX_SAMPLES = 400_000


def now_ns() -> int:
    """CLOCK_MONOTONIC in ns: the same clock in every process on this machine."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def cpu_seconds() -> float:
    """User + system CPU time of this process (all threads, the core's included)."""
    t = os.times()
    return t.user + t.system


def machine_cpu() -> tuple[float, float]:
    """(CPU seconds busy in user + nice + system, CPU seconds stolen by the hypervisor) of the
    whole machine, from /proc/stat; (0, 0) where that is missing."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            values = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0, 0.0
    hz = os.sysconf("SC_CLK_TCK")
    steal = values[7] if len(values) > 7 else 0
    return (values[0] + values[1] + values[2]) / hz, steal / hz


@dataclass
class CpuSnapshot:
    t_ns: int
    procs: list[float]  # CPU seconds of the sender and each receiver
    busy: float  # of the whole machine
    steal: float


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------------------------------------
# Receiver process
# ------------------------------------------------------------------------------------------------


class _Sampler:
    """Polls the cluster's delivered-message counter, so the time a count was reached is known."""

    def __init__(self, read: Callable[[], int], max_seconds: float) -> None:
        self._read = read
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.samples: list[tuple[int, int]] = []
        self._deadline = time.monotonic() + max_seconds
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            sample = (now_ns(), self._read())
            with self._lock:
                if len(self.samples) >= MAX_SAMPLES:  # keep the first and the latest
                    self.samples[-1] = sample
                else:
                    self.samples.append(sample)
            time.sleep(SAMPLE_INTERVAL_S)

    def last(self) -> int:
        with self._lock:
            return self.samples[-1][1] if self.samples else -1

    def stop(self) -> list[tuple[int, int]]:
        self._stop.set()
        self._thread.join(timeout=5)
        with self._lock:
            return list(self.samples)


def connect(port: int) -> socket.socket:
    """A blocking TCP connection to 127.0.0.1 (no timeout: CPython would poll before every send)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.settimeout(None)
    return sock


def _recv_exact(sock: socket.socket, buf: memoryview) -> bool:
    got = 0
    while got < len(buf):
        n = sock.recv_into(buf[got:])
        if n == 0:
            return False
        got += n
    return True


class _RawServer:
    """A one-connection TCP server on 127.0.0.1: a byte sink, or an echo answering 3 bytes per chunk."""

    def __init__(self, mode: str, chunk: int, max_seconds: float) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.listener.settimeout(CMD_TIMEOUT_S)
        self.port = int(self.listener.getsockname()[1])
        self.mode, self.chunk, self.max_seconds = mode, chunk, max_seconds
        self.bytes = 0
        self.t_first_ns = 0
        self.t_eof_ns = 0
        self.error = ""
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError as exc:
            self.error = f"accept: {exc}"
            return
        finally:
            self.listener.close()
        deadline = time.monotonic() + self.max_seconds
        with conn:
            # Blocking mode: with a timeout, CPython polls before every recv/send (twice the syscalls).
            # The sender closing its end (or dying) ends the loop; the process lifetime bounds the rest.
            conn.setblocking(True)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                if self.mode == "sink":
                    buf = bytearray(1 << 20)
                    while time.monotonic() < deadline:
                        n = conn.recv_into(buf)
                        if n == 0:
                            break
                        if not self.bytes:
                            self.t_first_ns = now_ns()
                        self.bytes += n
                else:
                    view = memoryview(bytearray(self.chunk))
                    while time.monotonic() < deadline and _recv_exact(conn, view):
                        conn.sendall(ECHO_REPLY)
                        self.bytes += self.chunk
            except OSError as exc:
                self.error = str(exc)
            self.t_eof_ns = now_ns()

    def result(self, timeout: float) -> dict[str, Any]:
        self.thread.join(timeout)
        return {
            "done": not self.thread.is_alive(),
            "bytes": self.bytes,
            "t_first_ns": self.t_first_ns,
            "t_eof_ns": self.t_eof_ns,
            "fault": self.error,
        }


def receiver_main() -> int:
    """The receiver process: one command per stdin line, one JSON answer per stdout line."""

    start_watchdog(RECEIVER_LIFETIME_S)
    import tribes

    cluster: tribes.Cluster | None = None
    sampler: _Sampler | None = None
    raw: _RawServer | None = None
    out = sys.stdout

    def delivered() -> int:
        assert cluster is not None
        return int(cluster.stats().get("messages_delivered", 0))

    reply = json_replier(out)

    for line in sys.stdin:
        if not line.strip():
            continue
        cmd, *args = line.split()
        try:
            if cmd == "start":
                group, mport, rport = args[0], int(args[1]), int(args[2])
                cfg = tribes.ClusterConfig.local(
                    name="bench-receiver",
                    membership={"address": group, "port": mport},
                    receiver={"port": rport, "auto_bind": 200},
                )
                cluster = tribes.Cluster(cfg)
                cluster.start()
                me = cluster.local_member
                reply({"port": me.port, "uid": me.unique_id.hex(), "version": tribes.__version__})
            elif cmd == "members":
                assert cluster is not None
                reply({"members": [[m.port, m.unique_id.hex()] for m in cluster.members]})
            elif cmd == "cpu":
                reply({"cpu": cpu_seconds()})
            elif cmd == "stats":
                assert cluster is not None
                reply({"stats": cluster.stats()})
            elif cmd == "arm":
                if sampler is not None:
                    sampler.stop()
                sampler = _Sampler(delivered, float(args[0]))
                reply({"ok": True})
            elif cmd == "wait":  # wait <target delivered count> <timeout s>
                assert sampler is not None
                target, deadline = int(args[0]), time.monotonic() + float(args[1])
                while sampler.last() < target and time.monotonic() < deadline:
                    time.sleep(0.002)
                samples = sampler.stop()
                sampler = None
                hit = next((t for t, c in samples if c >= target), None)
                reply({"reached": hit is not None, "t_ns": hit, "count": samples[-1][1] if samples else -1})
            elif cmd in ("sink", "echo"):
                raw = _RawServer(cmd, int(args[0]), float(args[1]))
                reply({"port": raw.port})
            elif cmd == "raw_result":
                assert raw is not None
                reply(raw.result(float(args[0])))
                raw = None
            elif cmd == "stop":
                if cluster is not None:
                    cluster.stop()
                    cluster = None
                reply({"ok": True})
            elif cmd == "quit":
                break
            else:
                reply({"error": f"unknown command {cmd!r}"})
        except Exception as exc:
            reply({"error": f"{type(exc).__name__}: {exc}"})
    if sampler is not None:
        sampler.stop()
    if cluster is not None:
        cluster.stop()
    return 0


class Receiver(JsonChild):
    """The parent's handle on one receiver process."""

    def __init__(self, index: int) -> None:
        super().__init__(__file__, "--receiver", f"receiver {index}", CMD_TIMEOUT_S, 15)
        self.index = index
        self.port = 0
        self.uid = ""


def call_all(
    receivers: Sequence[Receiver], command: str, timeout: float = CMD_TIMEOUT_S
) -> list[dict[str, Any]]:
    """Sends a command to every receiver first, then collects the answers (so they run concurrently)."""
    for r in receivers:
        r.send(command)
    return [r.answer(timeout) for r in receivers]


# ------------------------------------------------------------------------------------------------
# Measurements
# ------------------------------------------------------------------------------------------------


@dataclass
class Result:
    case: str
    kind: str  # "throughput" | "latency"
    payload: int
    rounds: list[dict[str, Any]] = field(default_factory=list)

    def med(self, key: str) -> float | None:
        values = [r[key] for r in self.rounds if r.get(key) is not None]
        return statistics.median(values) if values else None

    def spread(self) -> str:
        """Half the range over the rounds of the headline metric (median µs, or delivered msgs/s), as ±%
        of its median."""
        key = "median_us" if self.kind == "latency" else "delivered_msgs_s"
        values = [r[key] for r in self.rounds if r.get(key) is not None]
        if len(values) < 2:
            return "-"
        return f"±{(max(values) - min(values)) / 2 / statistics.median(values) * 100:.0f}%"

    def cpu(self) -> str:
        """Median CPU use of sender/receiver/receiver over the rounds, in cores."""
        values = [r["cpu_cores"] for r in self.rounds if r.get("cpu_cores")]
        if not values:
            return "-"
        return "/".join(f"{statistics.median(v):.2f}" for v in zip(*values, strict=True))


@dataclass
class Settings:
    rounds: int
    async_s: float
    ack_s: float
    raw_s: float
    pingpong_s: float
    warmup_s: float
    drain_s: float
    budget_s: float


FULL = Settings(
    rounds=5, async_s=2.5, ack_s=1.2, raw_s=2.5, pingpong_s=1.0, warmup_s=0.3, drain_s=20.0, budget_s=165.0
)
QUICK = Settings(
    rounds=2, async_s=1.0, ack_s=0.6, raw_s=1.0, pingpong_s=0.5, warmup_s=0.15, drain_s=8.0, budget_s=40.0
)


class Bench:
    def __init__(self, settings: Settings) -> None:
        import tribes

        self.tribes = tribes
        self.s = settings
        self.t_start = time.monotonic()
        self.group = f"228.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(1, 254)}"
        self.mport = random.randint(46000, 60000)
        self.receivers = [Receiver(i) for i in range(2)]
        self.cluster: Any = None
        self.async_failures = 0
        self.anomalies: list[str] = []

    # -- set-up ---------------------------------------------------------------------------------

    def start(self) -> None:
        tribes = self.tribes
        for r in self.receivers:
            info = r.call(f"start {self.group} {self.mport} {free_port()}", timeout=60)
            r.port, r.uid = info["port"], info["uid"]
        cfg = tribes.ClusterConfig.local(
            name="bench-sender",
            membership={"address": self.group, "port": self.mport},
            receiver={"port": free_port(), "auto_bind": 200},
        )
        self.cluster = tribes.Cluster(cfg)
        self.cluster.add_error_listener(self._on_send_error)
        self.cluster.start()
        me = self.cluster.local_member
        want = {(r.port, r.uid) for r in self.receivers}
        deadline = time.monotonic() + 15
        while True:
            seen = {(m.port, m.unique_id.hex()) for m in self.cluster.members}
            others = [{(p, u) for p, u in a["members"]} for a in call_all(self.receivers, "members")]
            ok = seen == want and all((me.port, me.unique_id.hex()) in o for o in others)
            if ok:
                break
            if seen - want:
                raise RuntimeError(f"unexpected members on {self.group}:{self.mport}: {sorted(seen - want)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"membership incomplete after 15 s: sender sees {sorted(seen)}")
            time.sleep(0.05)
        log(
            f"membership complete after {time.monotonic() - self.t_start:.1f} s "
            f"(group {self.group}:{self.mport}, receivers on ports {[r.port for r in self.receivers]})"
        )

    def _on_send_error(self, member: Any, cause: str) -> None:
        self.async_failures += 1

    def close(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()
        for r in self.receivers:
            r.close()

    def remaining(self) -> float:
        return self.s.budget_s - (time.monotonic() - self.t_start)

    def drain_timeout(self) -> float:
        """How long to wait for receivers to catch up: drain_s, less when the time budget runs out."""
        return round(min(self.s.drain_s, max(2.0, self.remaining())), 1)

    # -- helpers --------------------------------------------------------------------------------

    def delivered(self) -> list[int]:
        return [int(a["stats"]["messages_delivered"]) for a in call_all(self.receivers, "stats")]

    def drain(self, targets: Sequence[int], timeout: float) -> list[int]:
        """Polls the receivers until each delivered its target count (or the timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            counts = self.delivered()
            if all(c >= t for c, t in zip(counts, targets, strict=True)) or time.monotonic() > deadline:
                return counts
            time.sleep(0.02)

    def cpu(self) -> CpuSnapshot:
        answers = call_all(self.receivers, "cpu")
        busy, steal = machine_cpu()
        return CpuSnapshot(now_ns(), [cpu_seconds()] + [a["cpu"] for a in answers], busy, steal)

    @staticmethod
    def cores(before: CpuSnapshot, after: CpuSnapshot) -> dict[str, Any]:
        """CPU used between two snapshots, in cores (1.0 = one core busy): by each of our processes
        (sender, receiver 0, receiver 1; all threads), by every other process, and stolen by the host."""
        wall = (after.t_ns - before.t_ns) / 1e9
        ours = [(a - b) / wall for a, b in zip(after.procs, before.procs, strict=True)]
        others = (after.busy - before.busy) / wall - sum(ours)
        return {
            "cpu_cores": [round(c, 3) for c in ours],
            "other_cores": round(max(0.0, others), 3),
            "steal_cores": round((after.steal - before.steal) / wall, 3),
        }

    def sender_stats(self) -> dict[str, int]:
        return dict(self.cluster.stats())

    # -- tribes cases ---------------------------------------------------------------------------

    def async_round(self, size: int) -> dict[str, Any]:
        payload = os.urandom(size)
        send = self.cluster.send
        # Warm-up (connections open, buffers grown), then let it drain.
        base = self.delivered()
        n = 0
        stop = time.perf_counter() + self.s.warmup_s
        while n < 1_000_000 and time.perf_counter() < stop:
            for _ in range(64):
                send(payload, None, "async")
            n += 64
        drain_s = self.drain_timeout()
        base = self.drain([b + n for b in base], drain_s)
        before = self.sender_stats()
        failures_before = self.async_failures
        call_all(self.receivers, f"arm {self.s.async_s + self.s.drain_s + 10:g}")
        cpu0 = self.cpu()

        max_msgs = int(self.s.async_s * 3_000_000)  # the time bound stops it first
        sent = 0
        t0 = now_ns()
        deadline = time.perf_counter() + self.s.async_s
        while sent < max_msgs:
            for _ in range(256):
                send(payload, None, "async")
            sent += 256
            if time.perf_counter() >= deadline:
                break
        t1 = now_ns()
        for r, b in zip(self.receivers, base, strict=True):
            r.send(f"wait {b + sent} {drain_s:g}")
        answers = [r.answer(timeout=drain_s + 10) for r in self.receivers]
        cpu1 = self.cpu()
        after = self.sender_stats()
        counts = self.delivered()
        lost = [b + sent - c for b, c in zip(base, counts, strict=True)]
        reached = all(a["reached"] for a in answers)
        t_end = max(a["t_ns"] or 0 for a in answers)
        send_s = (t1 - t0) / 1e9
        e2e_s = (t_end - t0) / 1e9 if reached else None
        row: dict[str, Any] = {
            "messages": sent,
            "send_s": send_s,
            "sent_msgs_s": sent / send_s,
            "e2e_s": e2e_s,
            "delivered_msgs_s": sent / e2e_s if e2e_s else None,
            "mb_s": sent * size / e2e_s / 1e6 if e2e_s else None,
            "undelivered": lost,
            "async_bytes_lost": after["async_bytes_lost"] - before["async_bytes_lost"],
            "send_failures": after["send_failures"] - before["send_failures"],
            "async_failure_events": self.async_failures - failures_before,
            "sender_messages_sent": after["messages_sent"] - before["messages_sent"],
            **self.cores(cpu0, cpu1),
        }
        if not reached or any(lost) or row["async_bytes_lost"] or row["send_failures"]:
            self.anomalies.append(
                f"async {size} B: sent {sent}, undelivered per receiver {lost}, "
                f"async_bytes_lost {row['async_bytes_lost']}, send_failures {row['send_failures']}"
            )
        return row

    def ack_round(self, size: int, options: str) -> dict[str, Any]:
        payload = os.urandom(size)
        send = self.cluster.send
        channel_error = self.tribes.ChannelError
        pc = time.perf_counter_ns
        errors: list[str] = []
        stop = pc() + int(self.s.warmup_s * 1e9)
        for _ in range(100_000):
            if pc() >= stop:
                break
            try:
                send(payload, None, options)
            except channel_error as exc:
                errors.append(str(exc))
        before = self.sender_stats()
        base = self.delivered()
        cpu0 = self.cpu()
        lat: list[int] = []
        failed = 0
        t0 = pc()
        deadline = t0 + int(self.s.ack_s * 1e9)
        for _ in range(1_000_000):  # the time bound stops it first
            start = pc()
            if start >= deadline:
                break
            try:
                send(payload, None, options)
            except channel_error as exc:  # a timeout or NACK: counted, not timed
                failed += 1
                errors.append(str(exc))
                continue
            lat.append(pc() - start)
        elapsed = (pc() - t0) / 1e9
        cpu1 = self.cpu()
        after = self.sender_stats()
        counts = self.delivered()
        lat.sort()
        n = len(lat)
        acks = after["acks_received"] - before["acks_received"]
        if errors:
            self.anomalies.append(f"{options} {size} B: {len(errors)} send(s) failed, first: {errors[0]}")
        if not lat:
            raise RuntimeError(f"{options} {size} B: no send succeeded ({errors[:1]})")
        row = {
            "failed": failed,
            "messages": n,
            "send_s": elapsed,
            "sent_msgs_s": n / elapsed,
            "delivered_msgs_s": n / elapsed,
            "mb_s": n * size / elapsed / 1e6,
            "median_us": percentile(lat, 0.5) / 1e3,
            "p99_us": percentile(lat, 0.99) / 1e3,
            "max_us": lat[-1] / 1e3,
            "acks_received": acks,
            "undelivered": [b + n + failed - c for b, c in zip(base, counts, strict=True)],
            "send_failures": after["send_failures"] - before["send_failures"],
            **self.cores(cpu0, cpu1),
        }
        if acks != 2 * n or any(row["undelivered"]):
            self.anomalies.append(
                f"{options} {size} B: {n} sends, {acks} acks (expected {2 * n}), "
                f"undelivered per receiver {row['undelivered']}"
            )
        return row

    # -- raw TCP baselines ----------------------------------------------------------------------

    def raw_round(self) -> dict[str, Any]:
        ports = [a["port"] for a in call_all(self.receivers, f"sink {RAW_CHUNK} {self.s.raw_s + 30:g}")]
        socks = [connect(p) for p in ports]
        chunk = os.urandom(RAW_CHUNK)
        a, b = socks
        cpu0 = self.cpu()
        sa, sb = a.sendall, b.sendall
        max_chunks = int(self.s.raw_s * 3_000_000)
        n = 0
        t0 = now_ns()
        deadline = time.perf_counter() + self.s.raw_s
        while n < max_chunks:
            for _ in range(256):
                sa(chunk)
                sb(chunk)
            n += 256
            if time.perf_counter() >= deadline:
                break
        t1 = now_ns()
        for s in socks:
            s.shutdown(socket.SHUT_WR)
        results = call_all(self.receivers, "raw_result 30", timeout=40)
        cpu1 = self.cpu()
        for s in socks:
            s.close()
        got = [r["bytes"] for r in results]
        if any(g != n * RAW_CHUNK for g in got) or any(r["fault"] for r in results):
            self.anomalies.append(
                f"raw TCP: sent {n * RAW_CHUNK} B, received {got}, errors {[r['fault'] for r in results]}"
            )
        e2e_s = (max(r["t_eof_ns"] for r in results) - t0) / 1e9
        send_s = (t1 - t0) / 1e9
        return {
            "messages": n,
            "send_s": send_s,
            "sent_msgs_s": n / send_s,
            "e2e_s": e2e_s,
            "delivered_msgs_s": n / e2e_s,
            "mb_s": n * RAW_CHUNK / e2e_s / 1e6,
            **self.cores(cpu0, cpu1),
        }

    def pingpong_round(self, parallel: bool) -> dict[str, Any]:
        ports = [a["port"] for a in call_all(self.receivers, f"echo {RAW_CHUNK} {self.s.pingpong_s + 30:g}")]
        socks = [connect(p) for p in ports]
        for s in socks:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        chunk = os.urandom(RAW_CHUNK)
        answer = memoryview(bytearray(len(ECHO_REPLY)))
        pc = time.perf_counter_ns

        def once() -> None:
            if parallel:
                for s in socks:
                    s.sendall(chunk)
                for s in socks:
                    if not _recv_exact(s, answer):
                        raise RuntimeError("echo receiver closed the connection")
            else:
                for s in socks:
                    s.sendall(chunk)
                    if not _recv_exact(s, answer):
                        raise RuntimeError("echo receiver closed the connection")

        warm = time.perf_counter() + self.s.warmup_s
        for _ in range(100_000):
            once()
            if time.perf_counter() >= warm:
                break
        lat: list[int] = []
        cpu0 = self.cpu()
        t0 = pc()
        deadline = t0 + int(self.s.pingpong_s * 1e9)
        for _ in range(1_000_000):  # the time bound stops it first
            start = pc()
            if start >= deadline:
                break
            once()
            lat.append(pc() - start)
        elapsed = (pc() - t0) / 1e9
        cpu1 = self.cpu()
        for s in socks:
            s.close()
        call_all(self.receivers, "raw_result 10", timeout=20)
        lat.sort()
        n = len(lat)
        return {
            "messages": n,
            "send_s": elapsed,
            "sent_msgs_s": n / elapsed,
            "delivered_msgs_s": n / elapsed,
            "mb_s": n * RAW_CHUNK / elapsed / 1e6,
            "median_us": percentile(lat, 0.5) / 1e3,
            "p99_us": percentile(lat, 0.99) / 1e3,
            "max_us": lat[-1] / 1e3,
            **self.cores(cpu0, cpu1),
        }

    # -- the run --------------------------------------------------------------------------------

    def run(self, only: str | None = None) -> list[Result]:
        s = self.s
        results = [
            Result("raw TCP, 1 KiB sendall → 2 receivers", "throughput", RAW_CHUNK),
            Result("raw TCP ping-pong 1 KiB → 2 receivers, sequential", "latency", RAW_CHUNK),
            Result("raw TCP ping-pong 1 KiB → 2 receivers, parallel", "latency", RAW_CHUNK),
        ]
        results += [Result(f"tribes async {fmt_size(n)}", "throughput", n) for n in PAYLOADS]
        results += [Result(f"tribes use_ack {fmt_size(n)}", "latency", n) for n in PAYLOADS]
        results.append(Result("tribes use_ack,sync 1 KiB", "latency", 1024))
        steps: list[tuple[Result, Callable[[], dict[str, Any]]]] = [
            (results[0], self.raw_round),
            (results[1], partial(self.pingpong_round, parallel=False)),
            (results[2], partial(self.pingpong_round, parallel=True)),
        ]
        for i, size in enumerate(PAYLOADS):
            steps.append((results[3 + i], partial(self.async_round, size)))
        for i, size in enumerate(PAYLOADS):
            steps.append((results[6 + i], partial(self.ack_round, size, "use_ack")))
        steps.append((results[9], partial(self.ack_round, 1024, "use_ack,sync")))

        if only:
            steps = [(r, f) for r, f in steps if only.lower() in r.case.lower()]
            if not steps:
                raise SystemExit(f"--only {only!r} matches no case")
        round_times: list[float] = []
        for rnd in range(s.rounds):
            started = time.monotonic()
            # Do not start a round that would not fit the time budget (1.3x the slowest so far).
            if round_times and self.remaining() < 1.3 * max(round_times):
                log(f"skipping round {rnd + 1}: {self.remaining():.0f} s of the time budget left")
                break
            for result, step in steps:
                row = step()
                result.rounds.append(row)
                log(f"round {rnd + 1}/{s.rounds}  {result.case:<52} " + brief(row))
            round_times.append(time.monotonic() - started)
        return results


def fmt_size(n: int) -> str:
    return f"{n // 1024} KiB" if n % 1024 == 0 else f"{n} B"


def brief(row: dict[str, Any]) -> str:
    parts = [f"sent {row['sent_msgs_s']:,.0f}/s"]
    if row.get("delivered_msgs_s") is not None:
        parts.append(f"delivered {row['delivered_msgs_s']:,.0f}/s")
    if row.get("mb_s") is not None:
        parts.append(f"{row['mb_s']:,.1f} MB/s")
    if "median_us" in row:
        parts.append(f"median {row['median_us']:.1f} µs p99 {row['p99_us']:.1f} µs")
    if "cpu_cores" in row:
        parts.append("CPU " + "/".join(f"{c:.2f}" for c in row["cpu_cores"]))
        parts.append(f"other processes {row['other_cores']:.2f}, steal {row['steal_cores']:.2f}")
    return ", ".join(parts)


# ------------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 0
    return {
        "nproc": cpus,
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def num(v: float | None, fmt: str = ",.0f") -> str:
    return "-" if v is None else format(v, fmt)


def report(results: list[Result], meta: dict[str, Any], anomalies: list[str]) -> dict[str, Any]:
    by = {r.case: r for r in results}
    raw = by["raw TCP, 1 KiB sendall → 2 receivers"]
    raw_mb = raw.med("mb_s")
    raw_rtt = by["raw TCP ping-pong 1 KiB → 2 receivers, parallel"].med("median_us")

    lines = [
        "| case | sent msgs/s | delivered msgs/s | MB/s | median µs | p99 µs | vs raw TCP | spread "
        "| CPU s/r/r |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    summary: list[dict[str, Any]] = []
    for r in results:
        if not r.rounds:  # left out with --only
            continue
        mb, median = r.med("mb_s"), r.med("median_us")
        if r.case.startswith("raw TCP ping-pong"):
            ratio = "baseline RTT" if r.case.endswith("parallel") else "-"
        elif r.case.startswith("raw TCP"):
            ratio = "baseline MB/s"
        elif r.kind == "throughput":
            ratio = f"{mb / raw_mb:.2f}x MB/s" if mb and raw_mb else "-"
        else:
            ratio = f"{median / raw_rtt:.2f}x RTT" if median and raw_rtt else "-"
        cells = [
            r.case,
            num(r.med("sent_msgs_s")),
            num(r.med("delivered_msgs_s")),
            num(mb, ",.1f"),
            num(median, ",.1f"),
            num(r.med("p99_us"), ",.1f"),
            ratio,
            r.spread(),
            r.cpu(),
        ]
        lines.append("| " + " | ".join(cells) + " |")
        summary.append(
            {
                "case": r.case,
                "payload": r.payload,
                **{k: r.med(k) for k in ("sent_msgs_s", "delivered_msgs_s", "mb_s", "median_us", "p99_us")},
                "vs_raw_tcp": ratio,
                "rounds": r.rounds,
            }
        )

    async_1k = by["tribes async 1 KiB"]
    ack_1k = by["tribes use_ack 1 KiB"]
    sync_1k = by["tribes use_ack,sync 1 KiB"]
    sent = async_1k.med("sent_msgs_s")
    delivered = async_1k.med("delivered_msgs_s")
    ack_median = ack_1k.med("median_us")
    sync_median = sync_1k.med("median_us")
    targets = {
        "async_1k_sent_msgs_s": {
            "value": sent,
            "target": TARGET_ASYNC_MSGS,
            "pass": sent is not None and sent >= TARGET_ASYNC_MSGS,
        },
        "use_ack_1k_median_us": {
            "value": ack_median,
            "target": TARGET_ACK_MEDIAN_US,
            "pass": ack_median is not None and ack_median <= TARGET_ACK_MEDIAN_US,
        },
    }

    def verdict(key: str) -> str:
        t = targets[key]
        return "not measured" if t["value"] is None else "PASS" if t["pass"] else "MISS"

    print()
    print("\n".join(lines))
    print()
    print(
        "MB/s = 10^6 bytes of payload per second per receiver; a message = one send() to both receivers; "
        "delivered = until both receivers counted every message (receiver-side clock, ±1 ms); "
        "values are medians over "
        f"{max(len(r.rounds) for r in results)} round(s). Ratios: throughput vs raw TCP 1 KiB writes (MB/s), "
        "round trips vs raw TCP parallel ping-pong (median). CPU s/r/r = cores busy in the sender and "
        "each receiver process (all threads) during the measurement; spread = half the range over the rounds "
        "(of the median µs, or of delivered msgs/s), relative to the median."
    )
    m = meta["machine"]
    print(
        f"Machine: nproc={m['nproc']}, CPU {m['cpu']}, Linux {m['kernel']}; Python {m['python']}; "
        f"tribes {meta['tribes_version']}; mode {meta['mode']}."
    )
    print(
        f"Targets: async 1 KiB → 2 receivers ≥ {TARGET_ASYNC_MSGS:,} msgs/s sent from Python: "
        f"{num(sent)} → {verdict('async_1k_sent_msgs_s')} "
        f"(delivered end to end: {num(delivered)}/s); "
        f"use_ack 1 KiB → 2 receivers median ≤ {TARGET_ACK_MEDIAN_US:g} µs: {num(ack_median, '.1f')} µs → "
        f"{verdict('use_ack_1k_median_us')}."
    )
    print(
        f"References (issue, other machine): Tomcat 10.1 async 1 KiB {TOMCAT_ASYNC_MSGS:,} msgs/s "
        f"(ours sent {num(sent / TOMCAT_ASYNC_MSGS if sent else None, '.2f')}x, delivered "
        f"{num(delivered / TOMCAT_ASYNC_MSGS if delivered else None, '.2f')}x); Tomcat use_ack,sync median "
        f"{TOMCAT_SYNC_MEDIAN_US:g} µs (ours {num(sync_median, '.1f')} µs); iperf3 loopback 1 KiB writes "
        f"≈{IPERF3_MBPS:g} MB/s (raw Python TCP here: {num(raw_mb, '.1f')} MB/s per receiver)."
    )
    others = [row["other_cores"] for r in results for row in r.rounds if "other_cores" in row]
    steals = [row["steal_cores"] for r in results for row in r.rounds if "steal_cores" in row]
    background = {
        "other_cores_median": statistics.median(others) if others else None,
        "other_cores_max": max(others, default=None),
        "steal_cores_max": max(steals, default=None),
    }
    if others:
        print(
            "Background during the measurements: other processes used median "
            f"{statistics.median(others):.2f} / max {max(others):.2f} cores; "
            f"the hypervisor stole max {max(steals):.2f} cores."
        )
        if max(others) > BUSY_WARNING_CORES or max(steals) > BUSY_WARNING_CORES:
            print(
                "WARNING: the machine was not quiet (builds, tests, other VMs?): results are low and noisy; "
                "rerun on an idle machine."
            )
    if anomalies:
        print("Anomalies:")
        for a in anomalies:
            print(f"  - {a}")
    return {
        "meta": meta,
        "cases": summary,
        "targets": targets,
        "background": background,
        "anomalies": anomalies,
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="smoke run (~20 s): 2 short rounds")
    p.add_argument("--json", metavar="FILE", help="also save the results as JSON")
    p.add_argument("--rounds", type=int, help="rounds of every case (default 5, quick 2); medians are shown")
    p.add_argument("--only", metavar="TEXT", help="run only the cases whose name contains TEXT")
    p.add_argument("--receiver", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.receiver:
        return receiver_main()

    settings = QUICK if args.quick else FULL
    if args.rounds is not None:
        settings = Settings(**{**asdict(settings), "rounds": max(1, min(args.rounds, 20))})
    import tribes

    def overrun(signum: int, frame: Any) -> None:
        raise TimeoutError(f"the benchmark exceeded its hard time limit ({hard_limit} s)")

    # Every loop is bounded by count and time; this catches a blocking call that never returns.
    hard_limit = int(settings.budget_s * 1.5) + 30
    signal.signal(signal.SIGALRM, overrun)
    signal.alarm(hard_limit)
    bench = Bench(settings)
    try:
        bench.start()
        results = bench.run(args.only)
    finally:
        bench.close()
        signal.alarm(0)
    meta = {
        "machine": machine(),
        "tribes_version": tribes.__version__,
        "mode": "quick" if args.quick else "full",
        "settings": asdict(settings),
        "elapsed_s": round(time.monotonic() - bench.t_start, 1),
    }
    doc = report(results, meta, bench.anomalies)
    log(f"total {meta['elapsed_s']} s")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
