"""The session value codec against pickle, on the same values, in one run.

Encodes and decodes a typical session change (a user name, a cart of five items with Decimal prices,
an aware datetime, a set of flags, a counter) with ``tribes.codec`` and with ``pickle`` (protocol 5),
alternating the two in rounds so both see the same machine, and prints per-call times (median of the
rounds), sizes and the ratio pickle / codec for encode + decode.

    python benches/codec_vs_pickle.py            # 15 rounds (~20 s)
    python benches/codec_vs_pickle.py --quick    # 5 short rounds

Target (issue 3, section 6): codec at least 5x faster than pickle for encode + decode.
"""

from __future__ import annotations

import argparse
import pickle
import platform
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from tribes import codec


def typical_change() -> dict[str, Any]:
    """The attributes a request typically changed: what a session manager encodes at commit."""
    return {
        "user": "alice",
        "cart": [{"sku": f"A-{i}", "qty": 2, "price": Decimal("9.99")} for i in range(1, 6)],
        "last_seen": datetime.now(UTC),
        "flags": {"beta", "vip"},
        "visits": 42,
    }


def per_call_us(fn: Callable[[], object], calls: int) -> float:
    """Microseconds per call over ``calls`` calls."""
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 short rounds")
    args = parser.parse_args()
    rounds, calls = (5, 2_000) if args.quick else (15, 10_000)

    value = typical_change()
    data = codec.dumps(value)
    pickled = pickle.dumps(value, protocol=5)
    assert codec.loads(data) == value and pickle.loads(pickled) == value

    cases: dict[str, Callable[[], object]] = {
        "codec encode": lambda: codec.dumps(value),
        "codec decode": lambda: codec.loads(data),
        "pickle encode": lambda: pickle.dumps(value, protocol=5),
        "pickle decode": lambda: pickle.loads(pickled),
    }
    for fn in cases.values():  # warm up
        per_call_us(fn, calls // 10)
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            times[name].append(per_call_us(fn, calls))
    med = {name: statistics.median(t) for name, t in times.items()}

    codec_total = med["codec encode"] + med["codec decode"]
    pickle_total = med["pickle encode"] + med["pickle decode"]
    ratio = pickle_total / codec_total
    print(
        f"# {platform.python_implementation()} {platform.python_version()}, {platform.machine()}, "
        f"{rounds} rounds x {calls} calls, median per call"
    )
    print("| typical session change | encode µs | decode µs | encode + decode µs | bytes |")
    print("|---|---:|---:|---:|---:|")
    print(
        f"| pickle (protocol 5) | {med['pickle encode']:.2f} | {med['pickle decode']:.2f} "
        f"| {pickle_total:.2f} | {len(pickled)} |"
    )
    print(
        f"| tribes.codec | {med['codec encode']:.2f} | {med['codec decode']:.2f} "
        f"| {codec_total:.2f} | {len(data)} |"
    )
    print(
        f"| ratio pickle / codec | {med['pickle encode'] / med['codec encode']:.2f}x "
        f"| {med['pickle decode'] / med['codec decode']:.2f}x | **{ratio:.2f}x** "
        f"| {len(pickled) / len(data):.2f}x |"
    )
    print(f"target: codec >= 5x faster than pickle (encode + decode): {'met' if ratio >= 5 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
