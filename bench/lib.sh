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

# Starts PgBouncer (session pooling, trust auth, Debian's package, installed when missing) in
# front of the demo's PostgreSQL on 127.0.0.1:PORT; sets `bouncer_pid`. With a TLS directory
# (holding server.crt and server.key), clients may use TLS (client_tls_sslmode = allow).
start_pgbouncer() { # PORT POOL_SIZE MAX_CLIENTS [TLS_DIR]
    command -v pgbouncer >/dev/null 2>&1 || { apt-get install -y -qq pgbouncer >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq pgbouncer >/dev/null; }; }
    local dir="$bench_work/bouncer" runas=()
    mkdir -m 777 "$dir"
    {
        printf '[databases]\nshop = host=127.0.0.1 port=%s dbname=shop user=%s password=%s\n' "$direct_port" "$direct_user" "$direct_pw"
        printf '[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = %s\nunix_socket_dir =\n' "$1"
        printf 'auth_type = trust\nauth_file = %s/users.txt\npool_mode = session\n' "$dir"
        printf 'max_client_conn = %s\ndefault_pool_size = %s\n' "$3" "$2"
        printf 'logfile = %s/pgbouncer.log\npidfile = %s/pgbouncer.pid\n' "$dir" "$dir"
        if [ -n "${4:-}" ]; then
            cp "$4/server.crt" "$4/server.key" "$dir/"
            printf 'client_tls_sslmode = allow\nclient_tls_cert_file = %s/server.crt\nclient_tls_key_file = %s/server.key\n' "$dir" "$dir"
        fi
    } >"$dir/pgbouncer.ini"
    echo "\"$direct_user\" \"\"" >"$dir/users.txt"
    chmod 644 "$dir/"*
    [ "$(id -u)" -eq 0 ] && runas=(-u postgres)
    pgbouncer -d "${runas[@]}" "$dir/pgbouncer.ini"
    for _ in $(seq 1 40); do port_open "$1" && break; sleep 0.25; done
    bouncer_pid=$(cat "$dir/pgbouncer.pid")
}

# After `start_demo BIN PORT`: pgbench's tables at SCALE, created by `sluice loadtest --init`
# straight on the demo's PostgreSQL and readable by the gateway's backend role; sets
# `url_direct` (that PostgreSQL as a URL).
init_pgbench_tables() { # BIN SCALE
    url_direct="postgres://$direct_user:$direct_pw@127.0.0.1:$direct_port/shop"
    "$1" loadtest -q --target direct="$url_direct" --init --init-only --scale "$2" >&2
    PGPASSWORD=$direct_pw psql -qX "host=127.0.0.1 port=$direct_port dbname=shop user=$direct_user" \
        -c "GRANT SELECT ON pgbench_accounts, pgbench_branches, pgbench_tellers TO sluice_gateway" >/dev/null
}
