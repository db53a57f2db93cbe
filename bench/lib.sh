# Shared by the benchmark scripts (sourced, not run): a scratch directory that PostgreSQL
# can use when we are root, background processes stopped on exit, and `sluice demo` started
# and waited for. After `start_demo BIN PORT`: demo.env is sourced, `demo_pid` is the demo,
# `demo_gateway_pid` its gateway child, and `direct_user`/`direct_pw`/`direct_port` reach
# the demo's PostgreSQL directly (for the baseline only).

bench_work=$(mktemp -d /tmp/sluice-bench-XXXXXX)
chmod 755 "$bench_work" # PostgreSQL runs unprivileged below it when we are root
bench_pids=()
bench_cleanup() {
    for pid in "${bench_pids[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
    for pid in "${bench_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$bench_work"
}
trap bench_cleanup EXIT

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start_demo() { # BIN PORT
    SLUICE_LOG=warn "$1" demo --dir "$bench_work/demo" --port "$2" >"$bench_work/demo.log" 2>&1 &
    demo_pid=$!
    bench_pids+=("$demo_pid")
    for _ in $(seq 1 120); do [ -f "$bench_work/demo/demo.env" ] && port_open "$2" && break; sleep 0.5; done
    # shellcheck disable=SC1091
    . "$bench_work/demo/demo.env"
    demo_gateway_pid=$(pgrep -P "$demo_pid" -f "proxy --config" | head -n 1)
    direct_pw=${DEMO_BACKEND_URL#*://*:}; direct_pw=${direct_pw%@*}
    direct_user=${DEMO_BACKEND_URL#*://}; direct_user=${direct_user%%:*}
    direct_port=${DEMO_BACKEND_URL##*:}; direct_port=${direct_port%%/*}
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

median() { sort -g | awk '{a[NR]=$1} END{ if (NR==0) {print "-"; exit} if (NR%2) print a[(NR+1)/2]; else printf "%.1f\n", (a[NR/2]+a[NR/2+1])/2 }'; }
