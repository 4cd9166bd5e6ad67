#!/usr/bin/env bash
# Fuzz smoke run: builds the cargo-fuzz targets in fuzz/ and runs each one briefly (libFuzzer),
# starting from the kept corpus in tests/vectors/fuzz/<target>/. Exits non-zero when a target
# crashes (panic, timeout, out of memory); the crashing input is kept in fuzz/artifacts/<target>/.
#
#   bash .ci/fuzz-smoke.sh                 # every target, 20 s each, two at a time (~2.5 min)
#   FUZZ_SECONDS=5 bash .ci/fuzz-smoke.sh frame ack   # some targets, 5 s each
#
# Environment: FUZZ_SECONDS (per target, default 20), FUZZ_JOBS (targets run at once, default 2),
# FUZZ_RUNS (stop each target after this many inputs instead of FUZZ_SECONDS; for long runs),
# FUZZ_WORK (keep the grown corpus and the logs in this folder instead of a temporary one).
# Installs cargo-fuzz from crates.io when missing. cargo-fuzz passes nightly -Z flags to rustc;
# RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them (no nightly toolchain is needed).
# New inputs found are written to the work folder (temporary unless FUZZ_WORK is set): the kept
# corpus only changes by hand (see fuzz/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"

CARGO_FUZZ_VERSION=0.13.2
SECONDS_PER_TARGET="${FUZZ_SECONDS:-20}"
JOBS="${FUZZ_JOBS:-2}"
RUNS="${FUZZ_RUNS:-}"
export RUSTC_BOOTSTRAP=1
# Keep freed large blocks in the heap: the compression interceptor allocates a fresh deflate state
# (a few hundred KiB) per message, and mapping it anew each time costs the stack target 4x speed.
export GLIBC_TUNABLES="${GLIBC_TUNABLES:-glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=268435456}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz-smoke: installing cargo-fuzz ${CARGO_FUZZ_VERSION}"
    cargo install -q cargo-fuzz --version "${CARGO_FUZZ_VERSION}" --locked
fi

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list --fuzz-dir fuzz)
fi

# No sanitizer: the core forbids unsafe code, and this doubles the inputs per second. Release
# build with debug assertions and overflow checks (cargo-fuzz's default).
FLAGS="--fuzz-dir $ROOT/fuzz --sanitizer none"
echo "fuzz-smoke: building ${#targets[@]} targets"
# shellcheck disable=SC2086
cargo fuzz build $FLAGS >/dev/null

if [ -n "${FUZZ_WORK:-}" ]; then
    work="$FUZZ_WORK"   # kept: corpus/<target>/ and <target>.log
    mkdir -p "$work"
else
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
fi

run_one() {
    local t="$1" limit guard=()
    mkdir -p "$work/corpus/$t" "$ROOT/fuzz/artifacts/$t"
    if [ -n "$RUNS" ]; then
        limit=(-runs="$RUNS")
    else
        limit=(-max_total_time="$SECONDS_PER_TARGET")
        # Belt and braces: libFuzzer stops itself, this bounds a wedged build or run.
        guard=(timeout --kill-after=10 "$((SECONDS_PER_TARGET + 120))")
    fi
    local dict=()
    [ -f "$ROOT/fuzz/dicts/$t.dict" ] && dict=(-dict="$ROOT/fuzz/dicts/$t.dict")
    # Start from the kept corpus, less crash-* inputs (tests/fuzz_corpus.rs replays those).
    mkdir -p "$work/seeds/$t"
    if [ -d "$ROOT/tests/vectors/fuzz/$t" ]; then
        find "$ROOT/tests/vectors/fuzz/$t" -maxdepth 1 -type f ! -name 'crash-*' \
            -exec cp -t "$work/seeds/$t" {} +
    fi
    # shellcheck disable=SC2086
    if "${guard[@]}" cargo fuzz run $FLAGS "$t" "$work/corpus/$t" "$work/seeds/$t" -- \
        "${limit[@]}" "${dict[@]}" -timeout=10 -rss_limit_mb=2048 -max_len=4096 \
        -print_final_stats=1 -artifact_prefix="$ROOT/fuzz/artifacts/$t/" >"$work/$t.log" 2>&1; then
        echo "ok" >"$work/$t.status"
    else
        echo "FAILED" >"$work/$t.status"
    fi
}
export -f run_one
export ROOT FLAGS work RUNS SECONDS_PER_TARGET

printf '%s\n' "${targets[@]}" | xargs -P "$JOBS" -I{} bash -c 'run_one "$1"' _ {}

failed=0
for t in "${targets[@]}"; do
    status="$(cat "$work/$t.status" 2>/dev/null || echo FAILED)"
    runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$t.log" | tail -n 1)"
    secs="$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$work/$t.log" | tail -n 1)"
    cov="$(grep -o 'cov: [0-9]*' "$work/$t.log" | tail -n 1 | cut -d' ' -f2)"
    printf 'fuzz-smoke: %-20s %-6s %12s inputs in %s s, coverage %s\n' "$t" "$status" "${runs:-?}" "${secs:-?}" "${cov:-?}"
    if [ "$status" != ok ]; then
        failed=1
        echo "---- $t: last lines of the libFuzzer log (crash input in fuzz/artifacts/$t/) ----"
        tail -n 40 "$work/$t.log"
    fi
done
exit "$failed"
