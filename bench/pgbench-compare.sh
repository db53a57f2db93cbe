#!/usr/bin/env bash
# Side-by-side pgbench: direct to PostgreSQL vs through Sluice (io_uring and epoll drivers),
# interleaved in rounds so machine noise hits every target alike. Reports median TPS, the
# ratio to direct, and the gateway's CPU time per transaction (utime+stime from /proc).
#
# sluice-norec-w2 is the same gateway as sluice-io_uring-w2 with session recording off;
# sluice-metrics-w2 has its metrics endpoint scraped every second (like the demo's own
# gateway) and sluice-nometrics-w2 has none and times no round trips.
#
#   bash bench/pgbench-compare.sh [--clients 8] [--seconds 8] [--rounds 3] [--modes "simple prepared"] [--scale 10] [--no-pgbouncer]
#                                 [--policy-off] [--targets "direct sluice-io_uring-w2 ..."]
#
# --policy-off also builds a benchmark-only gateway without statement policy (cargo feature
# bench-no-statement-policy: no classification, no statement rules, no statement audit) and
# adds it as sluice-nopolicy-w1/-w2, so the cost of statement policy is measured in the same
# interleaved run. --targets restricts (and orders) the targets.
#
# Every target is reached over plain TCP on loopback (sslmode=disable), so the comparison is
# like for like; PgBouncer (session pooling, installed from Debian's packages when missing)
# is the pooler Sluice has to beat on CPU per transaction.
set -euo pipefail
cd "$(dirname "$0")/.."

clients=8 seconds=8 rounds=3 modes="simple extended prepared" scale=10 pgbouncer=1 policy_off=0 only_targets=""
while [ $# -gt 0 ]; do
    case "$1" in
        --clients) clients=$2; shift 2 ;;
        --seconds) seconds=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        --modes) modes=$2; shift 2 ;;
        --scale) scale=$2; shift 2 ;;
        --no-pgbouncer) pgbouncer=0; shift ;;
        --policy-off) policy_off=1; shift ;;
        --targets) only_targets=$2; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

bash scripts/install-deps.sh
cargo build --release -p sluice >&2
bin=target/release/sluice
if [ "$policy_off" = 1 ]; then
    cargo build --release -p sluice --features bench-no-statement-policy --target-dir target/bench-no-policy >&2
    nopolicy_bin=target/bench-no-policy/release/sluice
fi
# shellcheck source=bench/lib.sh
. bench/lib.sh
work=$bench_work

port_uring=$((20000 + RANDOM % 10000))
start_demo "$bin" "$port_uring"
# One gateway per (driver, workers) variant, all from the demo's config; idle ones cost
# nothing. The demo's own gateway (io_uring, one worker per core) is the first: the demo
# runs like `sluice up`, with the gateway as its child process (control stays in the demo
# process, so its CPU is not counted against the gateway).
declare -A proxy_port proxy_pid
proxy_port[sluice-io_uring-w2]=$port_uring
proxy_pid[sluice-io_uring-w2]=$demo_gateway_pid
next_port=$((port_uring + 10))
# Each extra gateway records into its own directory (a worker's segments take one writer).
variant_config() { # VARIANT -> path of a copy of the demo config, beside it
    local c
    c="$(dirname "$SLUICE_CONFIG")/bench-$1.toml"
    # No metrics endpoint of its own (the demo's gateway holds the port the config names)
    # unless the variant says otherwise below.
    { sed '/^\[metrics\]$/,/^\[/{/^listen = /d}' "$SLUICE_CONFIG"; printf '\n[recording]\ndir = "recordings-%s"\n' "$1"; } >"$c"
    echo "$c"
}
# Scrapes an endpoint every second for the whole run, as Prometheus would.
scraper_pids=()
scrape_every_second() { # PORT
    (while :; do curl -s -o /dev/null "http://127.0.0.1:$1/metrics"; sleep 1; done) &
    scraper_pids+=($!)
}
stop_scrapers() { for pid in "${scraper_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done; }
# norec: the demo's gateway with session recording off, to measure what recording costs.
# metrics / nometrics: the same gateway with its metrics endpoint scraped every second, and
# with no endpoint and no round-trip timing, to measure what metrics cost.
metrics_port=$((port_uring + 50))
for variant in io_uring-w1 epoll-w1 epoll-w2 norec-w2 metrics-w2 nometrics-w2; do
    driver=${variant%-w*}; workers=${variant##*-w}
    config=$(variant_config "$variant")
    case "$driver" in
        norec) sed -i 's/^\[recording\]$/[recording]\nenabled = false/' "$config" ;;
        metrics) sed -i "s/^\\[metrics\\]\$/[metrics]\\nlisten = \"127.0.0.1:$metrics_port\"/" "$config" ;;
        nometrics) sed -i 's/^latency = true$/latency = false/' "$config" ;;
    esac
    case "$driver" in norec|metrics|nometrics) driver=io_uring ;; esac
    SLUICE_LOG=warn "$bin" proxy --config "$config" --driver "$driver" --workers "$workers" \
        --listen "127.0.0.1:$next_port" >"$work/$variant.log" 2>&1 &
    bench_pids+=($!)
    proxy_pid[sluice-$variant]=$!
    proxy_port[sluice-$variant]=$next_port
    for _ in $(seq 1 60); do port_open "$next_port" && break; sleep 0.25; done
    next_port=$((next_port + 1))
done
if [ "$policy_off" = 1 ]; then
    for workers in 1 2; do
        variant=nopolicy-w$workers
        SLUICE_LOG=warn "$nopolicy_bin" proxy --config "$(variant_config "$variant")" --driver io_uring --workers "$workers" \
            --listen "127.0.0.1:$next_port" >"$work/$variant.log" 2>&1 &
        bench_pids+=($!)
        proxy_pid[sluice-$variant]=$!
        proxy_port[sluice-$variant]=$next_port
        for _ in $(seq 1 60); do port_open "$next_port" && break; sleep 0.25; done
        next_port=$((next_port + 1))
    done
fi

export PGPASSWORD_DIRECT=$direct_pw
PGPASSWORD=$PGPASSWORD_DIRECT pgbench -q -i -s "$scale" "host=127.0.0.1 port=$direct_port dbname=shop user=$direct_user" >/dev/null 2>&1
PGPASSWORD=$PGPASSWORD_DIRECT psql -qX "host=127.0.0.1 port=$direct_port dbname=shop user=$direct_user" \
    -c "GRANT ALL ON pgbench_accounts, pgbench_branches, pgbench_tellers, pgbench_history TO sluice_gateway" >/dev/null

bouncer_pid=""
port_bouncer=$((port_uring + 5))
[ "$pgbouncer" = 1 ] && start_pgbouncer "$port_bouncer" 50 200
stop_bouncer() { [ -n "$bouncer_pid" ] && kill "$bouncer_pid" 2>/dev/null || true; }
trap 'stop_scrapers; stop_bouncer; bench_cleanup' EXIT
scrape_every_second "$((port_uring + 1))" # the demo's gateway
scrape_every_second "$metrics_port"

hz=$(getconf CLK_TCK)

run() { # target mode -> "tps cpu_us_per_txn"
    local target=$1 mode=$2 conn pid="" pw
    case "$target" in
        direct) conn="host=127.0.0.1 port=$direct_port dbname=shop user=$direct_user"; pw=$PGPASSWORD_DIRECT ;;
        pgbouncer) conn="host=127.0.0.1 port=$port_bouncer dbname=shop user=$direct_user"; pw=x; pid=$bouncer_pid ;;
        sluice-*) conn="host=127.0.0.1 port=${proxy_port[$target]} dbname=shop user=alice"; pw=$ALICE_TOKEN; pid=${proxy_pid[$target]} ;;
    esac
    local before=0 after=0 out tps txns
    [ -n "$pid" ] && before=$(cpu_ticks "$pid")
    out=$(PGPASSWORD=$pw pgbench -n -S -c "$clients" -j 2 -T "$seconds" -M "$mode" "$conn sslmode=disable" 2>&1)
    [ -n "$pid" ] && after=$(cpu_ticks "$pid")
    tps=$(awk '/^tps = /{print $3; exit}' <<<"$out")
    txns=$(awk '/number of transactions actually processed/{split($0,a,": "); split(a[2],b,"/"); print b[1]; exit}' <<<"$out")
    failed=$(awk '/number of failed transactions/{print $5; exit}' <<<"$out")
    if [ "${failed:-0}" != "0" ]; then echo "failed transactions on $target/$mode: $failed" >&2; fi
    local cpu="-"
    if [ -n "$pid" ] && [ -n "$txns" ] && [ "$txns" -gt 0 ]; then
        cpu=$(awk -v t=$((after - before)) -v hz="$hz" -v n="$txns" 'BEGIN{printf "%.1f", t / hz * 1e6 / n}')
    fi
    echo "$tps $cpu"
}


targets="direct sluice-io_uring-w1 sluice-io_uring-w2 sluice-norec-w2 sluice-epoll-w1 sluice-epoll-w2"
[ "$policy_off" = 1 ] && targets="$targets sluice-nopolicy-w1 sluice-nopolicy-w2"
[ -n "$bouncer_pid" ] && targets="$targets pgbouncer"
[ -n "$only_targets" ] && targets=$only_targets
results="$work/results"; : >"$results"
for mode in $modes; do
    for round in $(seq 1 "$rounds"); do
        for target in $targets; do
            read -r tps cpu < <(run "$target" "$mode")
            echo "$mode $target $round $tps $cpu" | tee -a "$results" >&2
        done
    done
done

echo
echo "pgbench -S -c $clients -j 2 -T $seconds, scale $scale, $rounds interleaved rounds, $(nproc) cores;"
echo "Sluice -wN = N workers, each pinned to its own core (pin_workers = true); PostgreSQL, PgBouncer and pgbench unpinned; sslmode=disable for all."
echo
echo "| mode | target | median TPS | ratio to direct | proxy CPU µs/txn (median) |"
echo "|---|---|---|---|---|"
for mode in $modes; do
    direct=$(awk -v m="$mode" '$1==m && $2=="direct"{print $4}' "$results" | median)
    for target in $targets; do
        tps=$(awk -v m="$mode" -v t="$target" '$1==m && $2==t{print $4}' "$results" | median)
        cpu=$(awk -v m="$mode" -v t="$target" '$1==m && $2==t && $5!="-"{print $5}' "$results" | median)
        ratio=$(awk -v a="$tps" -v b="$direct" 'BEGIN{printf "%.2f", a/b}')
        printf "| %s | %s | %.0f | %s | %s |\n" "$mode" "$target" "$tps" "$ratio" "$cpu"
    done
done
