"""What encryption costs: the same sends with and without a cluster secret, in one run.

Two clusters run side by side on loopback, each one sender (this process) and two receiver
processes: one plain, one with a shared secret (AES-256-GCM messages, HMAC-tagged heartbeats).
Rounds alternate between them, so both see the same machine. Prints, for 1 KiB payloads, async
throughput and the use_ack round trip, and the ratio secured / plain.

    python benches/encryption_cost.py            # 5 rounds (~40 s)
    python benches/encryption_cost.py --quick    # 2 short rounds

Target (issue "Secure by default"): at most 15 % throughput cost for 1 KiB messages.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import channel_throughput as ct

SECRET = "benchmark-secret-0123456789"


def start_bench(secret: str | None, settings: ct.Settings) -> ct.Bench:
    # The config reads TRIBES_SECRET when the cluster starts; receivers inherit the environment.
    if secret is None:
        os.environ.pop("TRIBES_SECRET", None)
    else:
        os.environ["TRIBES_SECRET"] = secret
    bench = ct.Bench(settings)
    bench.start()
    os.environ.pop("TRIBES_SECRET", None)
    return bench


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 short rounds")
    args = parser.parse_args()
    settings = ct.QUICK if args.quick else ct.FULL
    plain = start_bench(None, settings)
    secured = start_bench(SECRET, settings)
    rows: dict[str, dict[str, list[float]]] = {
        name: {"async": [], "ack": []} for name in ("plain", "secured")
    }
    try:
        deadline = time.monotonic() + settings.budget_s
        for rnd in range(settings.rounds):
            if time.monotonic() > deadline:
                break
            for name, bench in (("plain", plain), ("secured", secured)):
                a: dict[str, Any] = bench.async_round(1024)
                k: dict[str, Any] = bench.ack_round(1024, "use_ack")
                rows[name]["async"].append(a["delivered_msgs_s"] or 0.0)
                rows[name]["ack"].append(k["median_us"])
                ct.log(
                    f"round {rnd + 1} {name:8} async {a['delivered_msgs_s'] or 0:,.0f} msgs/s, "
                    f"use_ack median {k['median_us']:.1f} µs"
                )
        secured_stats = secured.sender_stats()
    finally:
        plain.close()
        secured.close()

    med = {n: {k: statistics.median(v) for k, v in d.items()} for n, d in rows.items()}
    thr_ratio = med["secured"]["async"] / med["plain"]["async"]
    rtt_ratio = med["secured"]["ack"] / med["plain"]["ack"]
    print("| case (1 KiB, 2 receivers) | plain | with secret | secured / plain |")
    print("|---|---:|---:|---:|")
    print(
        f"| async, delivered msgs/s | {med['plain']['async']:,.0f} | {med['secured']['async']:,.0f} "
        f"| {thr_ratio:.2f}x |"
    )
    print(
        f"| use_ack round trip, median µs | {med['plain']['ack']:.1f} | {med['secured']['ack']:.1f} "
        f"| {rtt_ratio:.2f}x |"
    )
    cost = (1 - thr_ratio) * 100
    verdict = "PASS" if cost <= 15 else "MISS"
    print(
        f"\nThroughput cost of encryption: {cost:.1f} % (target ≤ 15 %): {verdict}. "
        f"Medians of {len(rows['plain']['async'])} alternating rounds. "
        f"Secured sender: rejected_auth={secured_stats.get('rejected_auth', 0)}."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
