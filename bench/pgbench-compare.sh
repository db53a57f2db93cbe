#!/usr/bin/env bash
# Side-by-side pgbench: direct to PostgreSQL vs through Sluice (io_uring and epoll drivers),
# interleaved in rounds so machine noise hits every target alike. Reports median TPS, the
# ratio to direct, and the gateway's CPU time per transaction (utime+stime from /proc).
#
#   bash bench/pgbench-compare.sh [--clients 8] [--seconds 8] [--rounds 3] [--modes "simple prepared"] [--scale 10]
set -euo pipefail
cd "$(dirname "$0")/.."

clients=8 seconds=8 rounds=3 modes="simple extended prepared" scale=10
while [ $# -gt 0 ]; do
    case "$1" in
        --clients) clients=$2; shift 2 ;;
        --seconds) seconds=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        --modes) modes=$2; shift 2 ;;
        --scale) scale=$2; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

bash scripts/install-deps.sh
cargo build --release -p sluice >&2
bin=target/release/sluice
work=$(mktemp -d /tmp/sluice-bench-XXXXXX)
chmod 755 "$work" # PostgreSQL runs unprivileged below it when we are root
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

port_uring=$((20000 + RANDOM % 10000)); port_epoll=$((port_uring + 1))
SLUICE_LOG=warn "$bin" demo --dir "$work/demo" --port "$port_uring" >"$work/demo.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 120); do [ -f "$work/demo/demo.env" ] && port_open "$port_uring" && break; sleep 0.5; done
# shellcheck disable=SC1091
. "$work/demo/demo.env"
SLUICE_LOG=warn "$bin" proxy --config "$SLUICE_CONFIG" --driver epoll --listen "127.0.0.1:$port_epoll" >"$work/epoll.log" 2>&1 &
pids+=($!)
epoll_pid=$!
uring_pid=$(pgrep -f "sluice demo --dir $work/demo" | head -n 1)
for _ in $(seq 1 60); do port_open "$port_epoll" && break; sleep 0.25; done

export PGPASSWORD_DIRECT=${DEMO_BACKEND_URL#*://*:}; PGPASSWORD_DIRECT=${PGPASSWORD_DIRECT%@*}
direct_user=${DEMO_BACKEND_URL#*://}; direct_user=${direct_user%%:*}
direct_port=${DEMO_BACKEND_URL##*:}; direct_port=${direct_port%%/*}
PGPASSWORD=$PGPASSWORD_DIRECT pgbench -q -i -s "$scale" "host=127.0.0.1 port=$direct_port dbname=shop user=$direct_user" >/dev/null 2>&1
PGPASSWORD=$PGPASSWORD_DIRECT psql -qX "host=127.0.0.1 port=$direct_port dbname=shop user=$direct_user" \
    -c "GRANT ALL ON pgbench_accounts, pgbench_branches, pgbench_tellers, pgbench_history TO sluice_gateway" >/dev/null

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

run() { # target mode -> "tps cpu_us_per_txn"
    local target=$1 mode=$2 conn pid="" pw
    case "$target" in
        direct) conn="host=127.0.0.1 port=$direct_port dbname=shop user=$direct_user"; pw=$PGPASSWORD_DIRECT ;;
        sluice-io_uring) conn="host=127.0.0.1 port=$port_uring dbname=shop user=carol"; pw=$CAROL_TOKEN; pid=$uring_pid ;;
        sluice-epoll) conn="host=127.0.0.1 port=$port_epoll dbname=shop user=carol"; pw=$CAROL_TOKEN; pid=$epoll_pid ;;
    esac
    local before=0 after=0 out tps txns
    [ -n "$pid" ] && before=$(cpu_ticks "$pid")
    out=$(PGPASSWORD=$pw pgbench -n -S -c "$clients" -j 2 -T "$seconds" -M "$mode" "$conn" 2>&1)
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

median() { sort -g | awk '{a[NR]=$1} END{ if (NR==0) {print "-"; exit} if (NR%2) print a[(NR+1)/2]; else printf "%.1f\n", (a[NR/2]+a[NR/2+1])/2 }'; }

targets="direct sluice-io_uring sluice-epoll"
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
echo "Sluice workers pinned one per core (pin_workers = true); PostgreSQL and pgbench unpinned."
echo
echo "| mode | target | median TPS | ratio to direct | gateway CPU µs/txn (median) |"
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
