#!/usr/bin/env bash
# What each tuning profile does to throughput, latency and the gateway's CPU: one gateway per
# profile (`sluice proxy --profile NAME`, all from the demo's config, each recording into its
# own directory), loaded in the same interleaved rounds by `sluice loadtest` with pgbench's
# select-only as carol (statement policy and recording on, no masking), beside PostgreSQL
# directly.
#
#   bash bench/profiles.sh [--clients 8] [--modes "simple prepared"] [--seconds 5] [--rounds 3] [--scale 10]
#
# Prints one markdown table per mode on stdout; progress on stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

clients=8 modes="simple prepared" seconds=5 rounds=3 scale=10
while [ $# -gt 0 ]; do
    case "$1" in
        --clients) clients=$2; shift 2 ;;
        --modes) modes=$2; shift 2 ;;
        --seconds) seconds=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        --scale) scale=$2; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

bash scripts/install-deps.sh
cargo build --release -p sluice >&2
bin=${CARGO_TARGET_DIR:-target}/release/sluice
# shellcheck source=bench/lib.sh
. bench/lib.sh
work=$bench_work

port=$((20000 + RANDOM % 10000))
start_demo "$bin" "$port"
demo_dir=$(dirname "$SLUICE_CONFIG")
init_pgbench_tables "$bin" "$scale"

targets=(--target "direct=$url_direct")
pids=()
next=$((port + 10))
for profile in $("$bin" tune profiles | awk '$1 ~ /^[a-z-]+$/ && $1 != "sluice" {print $1}'); do
    c="$demo_dir/profile-$profile.toml"
    { sed '/^\[metrics\]$/,/^\[/{/^listen = /d}' "$SLUICE_CONFIG"; printf '\n[recording]\ndir = "recordings-%s"\n' "$profile"; } >"$c"
    SLUICE_LOG=warn "$bin" proxy --config "$c" --profile "$profile" --listen "127.0.0.1:$next" >"$work/$profile.log" 2>&1 &
    bench_pids+=($!)
    pids+=(--pid "$profile=$!")
    for _ in $(seq 1 60); do port_open "$next" && break; sleep 0.25; done
    targets+=(--target "$profile=postgres://carol:$CAROL_TOKEN@127.0.0.1:$next/shop")
    next=$((next + 1))
done

for mode in $modes; do
    echo "== $mode" >&2
    "$bin" loadtest -q -w select-only -M "$mode" --connections "$clients" -T "${seconds}s" --warmup 1s \
        --rounds "$rounds" --scale "$scale" "${targets[@]}" "${pids[@]}" --json "$work/$mode.json" >&2
done

python3 - "$work" "$modes" "$clients" "$seconds" "$rounds" <<'PY'
import json, sys
work, modes, clients, seconds, rounds = sys.argv[1:6]
print(f"select-only, {clients} connections, {seconds} s per run after 1 s warm-up, {rounds} interleaved rounds; "
      "each gateway from the demo's config with `--profile NAME`, as carol (policy and recording on).\n")
print("| mode | target | median TPS | ratio to direct | p50 | p99 | gateway CPU µs/txn |")
print("|---|---|---|---|---|---|---|")
for mode in modes.split():
    report = json.load(open(f"{work}/{mode}.json"))
    for t in report["targets"]:
        cpu = t["process_cpu_us_per_txn"].get(t["name"])
        cpu = "–" if cpu is None else f"{cpu:.1f}"
        lat = t["latency"]
        print(f"| {mode} | {t['name']} | {t['median_tps']:.0f} | {t['ratio']:.2f} | {lat['p50_us']:.0f} µs | "
              f"{lat['p99_us']:.0f} µs | {cpu} |")
PY
