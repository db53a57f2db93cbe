#!/usr/bin/env bash
# The whole side-by-side comparison of README's "Sluice against PgBouncer" section, in one
# run, with `sluice loadtest` as the client:
#
#   1. pgbench's select-only in the simple, extended and prepared protocols at 1, 8, 32 and
#      128 connections against PostgreSQL directly, PgBouncer (session pooling, Debian's
#      package, TLS on) and Sluice: the demo's gateway with everything on (io_uring, policy,
#      bob's masking profile, recording, metrics), the same on epoll, and one with recording,
#      masking and metrics off (statement policy stays on). Targets are interleaved in
#      rounds; the table gives median TPS, the ratio to direct, p50/p99, and each proxy's
#      CPU per transaction (utime+stime from /proc); the 1-connection rows give the latency
#      each proxy adds (p50 minus direct's p50).
#   2. Idle connections: N client connections opened and held against PgBouncer (logged
#      in) and against a fresh Sluice gateway (accepted, before their startup packet: every
#      Sluice session is a backend connection, and PostgreSQL here takes 200), plus 150
#      logged-in Sluice sessions; memory per connection from the proxy's RSS.
#   3. Handshakes: `--reconnect-every 1` over TLS (sslmode=require) through both proxies:
#      connections per second and connect+TLS+auth latency.
#
#   bash bench/compare.sh [--clients "1 8 32 128"] [--modes "simple extended prepared"]
#                         [--seconds 5] [--rounds 2] [--scale 10] [--idle 10000]
#
# Prints markdown tables (the README's) on stdout; progress and each round on stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

clients_list="1 8 32 128" modes="simple extended prepared" seconds=5 rounds=2 scale=10 idle=10000
while [ $# -gt 0 ]; do
    case "$1" in
        --clients) clients_list=$2; shift 2 ;;
        --modes) modes=$2; shift 2 ;;
        --seconds) seconds=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        --scale) scale=$2; shift 2 ;;
        --idle) idle=$2; shift 2 ;;
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
# 128 connections through PgBouncer (whose pool keeps its server connections open) and then
# through Sluice need more than the 200 the demo's cluster allows: raise it and restart.
PGPASSWORD=$direct_pw psql -qX "host=127.0.0.1 port=$direct_port dbname=shop user=$direct_user" \
    -c "ALTER SYSTEM SET max_connections = 800" >/dev/null
pgdata="$demo_dir/pg/data"
pg_ctl=("$(ls -d /usr/lib/postgresql/*/bin | tail -n 1)/pg_ctl" -D "$pgdata" -w -m fast -l "$demo_dir/pg/restart.log" restart)
if [ "$(id -un)" = "$(stat -c %U "$pgdata")" ]; then "${pg_ctl[@]}" >&2; else runuser -u "$(stat -c %U "$pgdata")" -- "${pg_ctl[@]}" >&2; fi
echo "creating pgbench's tables (scale $scale)" >&2
init_pgbench_tables "$bin" "$scale"

# Extra gateways from the demo's config: no metrics endpoint of their own, their own
# recording directory, and the changes each variant names.
start_variant() { # NAME DRIVER PORT EXTRA-SED
    local c="$demo_dir/compare-$1.toml"
    { sed '/^\[metrics\]$/,/^\[/{/^listen = /d}' "$SLUICE_CONFIG"; printf '\n[recording]\ndir = "recordings-%s"\n' "$1"; } >"$c"
    [ -n "$4" ] && sed -i "$4" "$c"
    SLUICE_LOG=warn "$bin" proxy --config "$c" --driver "$2" --listen "127.0.0.1:$3" >"$work/$1.log" 2>&1 &
    bench_pids+=($!)
    variant_pid=$!
    for _ in $(seq 1 60); do port_open "$3" && break; sleep 0.25; done
}
start_variant epoll epoll $((port + 10)) ""
epoll_pid=$variant_pid
start_variant bare io_uring $((port + 11)) 's/^\[recording\]$/[recording]\nenabled = false/; s/^latency = true$/latency = false/'
bare_pid=$variant_pid
# A gateway that serves no load before the idle-connection count, so its RSS is a baseline.
start_variant idle io_uring $((port + 12)) ""
idle_pid=$variant_pid

port_bouncer=$((port + 5))
ulimit -n $((idle * 2 + 4096)) 2>/dev/null || ulimit -n "$(ulimit -Hn)"
start_pgbouncer "$port_bouncer" 150 $((idle + 500)) "$demo_dir"
trap 'kill "$bouncer_pid" 2>/dev/null || true; bench_cleanup' EXIT

bob="postgres://bob:$BOB_TOKEN@127.0.0.1"
carol="postgres://carol:$CAROL_TOKEN@127.0.0.1"
targets=(
    --target "direct=$url_direct"
    --target "pgbouncer=postgres://$direct_user:x@127.0.0.1:$port_bouncer/shop"
    --target "sluice-all-on=$bob:$port/shop"
    --target "sluice-all-on-epoll=$bob:$((port + 10))/shop"
    --target "sluice-policy-only=$carol:$((port + 11))/shop"
)
pids=(--pid "pgbouncer=$bouncer_pid" --pid "sluice-all-on=$demo_gateway_pid"
    --pid "sluice-all-on-epoll=$epoll_pid" --pid "sluice-policy-only=$bare_pid")

for mode in $modes; do
    for clients in $clients_list; do
        echo "== $mode, $clients connections" >&2
        "$bin" loadtest -q -w select-only -M "$mode" --connections "$clients" -T "${seconds}s" \
            --warmup 1s --rounds "$rounds" --scale "$scale" "${targets[@]}" "${pids[@]}" \
            --json "$work/run-$mode-$clients.json" >&2
    done
done

echo "== idle connections" >&2
sessions=150 # PostgreSQL here takes 200 connections; every Sluice session is one of them
idle_report=$(python3 - "$idle" "$port_bouncer" "$bouncer_pid" "$((port + 12))" "$idle_pid" "$direct_user" "$sessions" "$CAROL_TOKEN" <<'PY'
import socket, struct, sys, time

n, bouncer_port, bouncer_pid, sluice_port, sluice_pid, user, sessions, token = sys.argv[1:9]
n, sessions = int(n), int(sessions)

def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0

def recv_until(s, marker):
    got = b""
    while marker not in got:
        chunk = s.recv(65536)
        if not chunk:
            raise SystemExit(f"connection closed before {marker!r}: {got[:200]!r}")
        got += chunk
    return got

def login(port, who, password):
    s = socket.create_connection(("127.0.0.1", int(port)))
    s.settimeout(30)
    params = b"user\0" + who.encode() + b"\0database\0shop\0\0"
    s.sendall(struct.pack("!II", 8 + len(params), 196608) + params)
    if password is not None:
        recv_until(s, b"R\0\0\0\x08\0\0\0\x03")  # cleartext password asked
        body = password.encode() + b"\0"
        s.sendall(b"p" + struct.pack("!I", 4 + len(body)) + body)
    recv_until(s, b"Z\0\0\0\x05")
    return s

def hold(pid, count, connect):
    before = rss_kib(pid)
    held = [connect() for _ in range(count)]
    time.sleep(1.0)
    after = rss_kib(pid)
    for s in held:
        s.close()
    time.sleep(1.0)
    return before, after

# The logged-in sessions first, on the fresh gateway: RSS only shows growth reliably while
# the allocator has nothing freed to hand back.
rows = [("Sluice, %d sessions logged in (each with its backend connection)" % sessions,
         hold(sluice_pid, sessions, lambda: login(sluice_port, "carol", token)), sessions)]
rows.append(("Sluice, %d clients accepted, before their startup packet" % n,
             hold(sluice_pid, n, lambda: socket.create_connection(("127.0.0.1", int(sluice_port)))), n))
rows.append(("PgBouncer, %d clients logged in" % n,
             hold(bouncer_pid, n, lambda: login(bouncer_port, user, None)), n))
for label, (before, after), count in rows:
    print(f"| {label} | {before} | {after} | {(after - before) / count:.2f} |")
PY
)

echo "== TLS handshakes" >&2
"$bin" loadtest -q -w select-only -M simple --connections 8 -T "${seconds}s" --rounds "$rounds" --scale "$scale" \
    --reconnect-every 1 \
    --target "pgbouncer-tls=postgres://$direct_user:x@127.0.0.1:$port_bouncer/shop?sslmode=require" \
    --target "sluice-tls=$carol:$port/shop?sslmode=require" \
    --pid "pgbouncer=$bouncer_pid" --pid "sluice=$demo_gateway_pid" --json "$work/tls.json" >&2

python3 - "$work" "$modes" "$clients_list" "$rounds" "$seconds" "$scale" <<'PY'
import json, sys, os
work, modes, clients_list, rounds, seconds, scale = sys.argv[1:7]
own = {"pgbouncer": "pgbouncer", "sluice-all-on": "sluice-all-on",
       "sluice-all-on-epoll": "sluice-all-on-epoll", "sluice-policy-only": "sluice-policy-only"}
print(f"select-only, {seconds} s per run after 1 s warm-up, {rounds} interleaved rounds, scale {scale}, "
      f"{os.cpu_count()} cores, sluice loadtest with one thread per core; sslmode=disable.\n")
print("| mode | connections | target | median TPS | ratio to direct | p50 | p99 | proxy CPU µs/txn |")
print("|---|---|---|---|---|---|---|---|")
added = {}
for mode in modes.split():
    for clients in clients_list.split():
        report = json.load(open(f"{work}/run-{mode}-{clients}.json"))
        direct_p50 = report["targets"][0]["latency"]["p50_us"]
        for t in report["targets"]:
            cpu = t["process_cpu_us_per_txn"].get(own.get(t["name"], ""), None)
            cpu = "–" if cpu is None else f"{cpu:.1f}"
            lat = t["latency"]
            print(f"| {mode} | {clients} | {t['name']} | {t['median_tps']:.0f} | {t['ratio']:.2f} | "
                  f"{lat['p50_us']:.0f} µs | {lat['p99_us']:.0f} µs | {cpu} |")
            if clients == "1" and t["name"] != "direct":
                added[(mode, t["name"])] = lat["p50_us"] - direct_p50
if added:
    print("\nLatency added at 1 connection (p50 minus direct's p50):\n")
    print("| mode | target | added µs |")
    print("|---|---|---|")
    for (mode, name), us in added.items():
        print(f"| {mode} | {name} | {us:.0f} |")
tls = json.load(open(f"{work}/tls.json"))
print("\nTLS handshakes (`--reconnect-every 1`, sslmode=require, 8 connections):\n")
print("| target | connections/s | connect+TLS+auth p50 | p99 | proxy CPU µs/connection |")
print("|---|---|---|---|---|")
for t in tls["targets"]:
    name = "pgbouncer" if t["name"].startswith("pgbouncer") else "sluice"
    cpu = t["process_cpu_us_per_txn"].get(name)
    cpu = "–" if cpu is None else f"{cpu:.0f}"
    print(f"| {t['name']} | {t['median_tps']:.0f} | {t['connect']['p50_us'] / 1000:.2f} ms | "
          f"{t['connect']['p99_us'] / 1000:.2f} ms | {cpu} |")
PY
echo
echo "Idle connections (RSS of the proxy process):"
echo
echo "| held | RSS before (KiB) | RSS after (KiB) | KiB per connection |"
echo "|---|---|---|---|"
echo "$idle_report"
