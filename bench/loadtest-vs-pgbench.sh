#!/usr/bin/env bash
# `sluice loadtest` against pgbench on the same PostgreSQL (the demo's, reached directly),
# same settings, interleaved in rounds so machine noise hits both alike. Prints each
# tool's median TPS, its ratio to pgbench, and each tool's own CPU per transaction
# (utime+stime of the client process and its threads, from getrusage of waited children,
# divided by the transactions it reports). The load generator must not be the bottleneck:
# its TPS should be at least pgbench's and its CPU per transaction lower.
#
#   bash bench/loadtest-vs-pgbench.sh [--clients 8] [--threads 2] [--seconds 10] [--rounds 3]
#                                     [--modes "simple prepared"] [--scale 10]
set -euo pipefail
cd "$(dirname "$0")/.."

clients=8 threads=2 seconds=10 rounds=3 modes="simple prepared" scale=10
while [ $# -gt 0 ]; do
    case "$1" in
        --clients) clients=$2; shift 2 ;;
        --threads) threads=$2; shift 2 ;;
        --seconds) seconds=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        --modes) modes=$2; shift 2 ;;
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

start_demo "$bin" $((20000 + RANDOM % 10000))
init_pgbench_tables "$bin" "$scale"
url=$url_direct

# CPU seconds of every waited-for child of this shell so far (user + system). `times` must
# run in this shell, not in a $(...) subshell, whose own children's account starts at zero.
children_cpu() {
    times >"$work/times"
    awk 'NR==2 { for (i = 1; i <= 2; i++) { split($i, t, "m"); s += t[1] * 60 + t[2] } print s }' "$work/times"
}

run() { # tool mode -> "tps cpu_us_per_txn"
    local tool=$1 mode=$2 before after out tps txns
    children_cpu >"$work/before"; before=$(cat "$work/before")
    case "$tool" in
        pgbench)
            out=$(PGPASSWORD=$direct_pw pgbench -n -S -c "$clients" -j "$threads" -T "$seconds" -M "$mode" \
                "host=127.0.0.1 port=$direct_port dbname=shop user=$direct_user sslmode=disable" 2>&1)
            tps=$(awk '/^tps = /{print $3; exit}' <<<"$out")
            txns=$(awk '/number of transactions actually processed/{split($0,a,": "); split(a[2],b,"/"); print b[1]; exit}' <<<"$out")
            ;;
        loadtest)
            "$bin" loadtest -q --target direct="$url" -w select-only --connections "$clients" -j "$threads" \
                -T "${seconds}s" -M "$mode" --scale "$scale" --json "$work/lt.json" >"$work/lt.out"
            tps=$(awk -F'|' '$2 ~ /^ direct / { gsub(/ /, "", $3); print $3; exit }' "$work/lt.out")
            txns=$(grep -m1 -Eo '"transactions": [0-9]+' "$work/lt.json" | awk '{print $2}')
            ;;
    esac
    children_cpu >"$work/after"; after=$(cat "$work/after")
    awk -v b="$before" -v a="$after" -v n="$txns" -v t="$tps" 'BEGIN { printf "%s %.2f\n", t, (a - b) * 1e6 / n }'
}

results="$work/results"; : >"$results"
for mode in $modes; do
    for round in $(seq 1 "$rounds"); do
        for tool in pgbench loadtest; do
            read -r tps cpu < <(run "$tool" "$mode")
            echo "$mode $tool $round $tps $cpu" | tee -a "$results" >&2
        done
    done
done

echo
echo "select-only, -c $clients -j $threads, ${seconds}s per run, scale $scale, $rounds interleaved rounds, $(nproc) cores,"
echo "direct to PostgreSQL over TCP on 127.0.0.1 (sslmode=disable); nothing pinned."
echo
echo "| mode | client | median TPS | ratio to pgbench | client CPU µs/txn (median) | TPS per round |"
echo "|---|---|---|---|---|---|"
for mode in $modes; do
    base=$(awk -v m="$mode" '$1==m && $2=="pgbench"{print $4}' "$results" | median)
    for tool in pgbench loadtest; do
        tps=$(awk -v m="$mode" -v t="$tool" '$1==m && $2==t{print $4}' "$results" | median)
        cpu=$(awk -v m="$mode" -v t="$tool" '$1==m && $2==t{print $5}' "$results" | median)
        each=$(awk -v m="$mode" -v t="$tool" '$1==m && $2==t{printf "%.0f ", $4}' "$results")
        ratio=$(awk -v a="$tps" -v b="$base" 'BEGIN{printf "%.2f", a/b}')
        printf "| %s | %s | %.0f | %s | %s | %s|\n" "$mode" "$tool" "$tps" "$ratio" "$cpu" "$each"
    done
done
