#!/usr/bin/env bash
# What inline masking costs end to end: pgbench running a custom script, one SELECT of
# 100 rows x 6 text columns (about 100 bytes each, drawn from the demo's customers, so every
# row carries an email, a phone number and a card number), through the demo gateway as bob
# (group support: masking profile "pii", every value scanned by the detectors, named
# columns masked) and as carol (group dba: no masking), and directly against PostgreSQL,
# interleaved in rounds so machine noise hits every target alike. Reports median TPS, the
# ratio masked / unmasked, and the gateway's CPU time per transaction (utime+stime).
#
#   bash bench/masking-compare.sh [--clients 8] [--seconds 8] [--rounds 5]
set -euo pipefail
cd "$(dirname "$0")/.."

clients=8 seconds=8 rounds=5
while [ $# -gt 0 ]; do
    case "$1" in
        --clients) clients=$2; shift 2 ;;
        --seconds) seconds=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

bash scripts/install-deps.sh
cargo build --release -p sluice >&2
bin=target/release/sluice
# shellcheck source=bench/lib.sh
. bench/lib.sh
work=$bench_work
port=$((20000 + RANDOM % 10000))
start_demo "$bin" "$port"
gateway_pid=$demo_gateway_pid

PGPASSWORD=$direct_pw psql -qX -v ON_ERROR_STOP=1 "host=127.0.0.1 port=$direct_port dbname=shop user=$direct_user" >/dev/null <<'SQL'
CREATE TABLE wide_rows AS
SELECT id,
  rpad('Customer ' || full_name || ' opened the account in ' || (2010 + id % 14) || ' on standard terms', 100, '.') AS profile,
  rpad('Contact ' || email || ' is the primary address; newsletter opted out, language en-US', 100, '.') AS contact,
  rpad('Phone on file ' || phone || ', verified by the support desk during onboarding', 100, '.') AS phone_note,
  rpad('Payment card ' || card_number || ' expires 2027-0' || (1 + id % 9) || ', billing address matches', 100, '.') AS payment,
  rpad(coalesce(notes, 'No notes for this customer yet; see the CRM for the full history'), 100, '.') AS remarks,
  rpad('Order history: ' || (id * 7 % 100) || ' orders, lifetime value $' || (id * 13 % 5000) || '.00, last from DC-' || (id % 9), 100, '.') AS orders
FROM customers WHERE id <= 100;
GRANT SELECT ON wide_rows TO sluice_gateway;
SQL
echo 'SELECT profile, contact, phone_note, payment, remarks, orders FROM wide_rows;' >"$work/wide.sql"

# A third reader, erin (group analysts), whose profile has column rules only (3 of the 6
# columns redacted, no detectors): what masking costs when nothing has to be searched.
cat >>"$SLUICE_CONFIG" <<'TOML'

[[policy.rules]]
name = "analysts-bench"
groups = ["analysts"]
resources = ["shop"]
access = "allow"
masking = "columns-only"

[[policy.statements]]
name = "analysts-read"
groups = ["analysts"]
resources = ["*"]
classes = ["read", "session", "transaction"]
access = "allow"

[policy.masking.columns-only]
detectors = []

[[policy.masking.columns-only.columns]]
column = "contact"

[[policy.masking.columns-only.columns]]
column = "phone_note"

[[policy.masking.columns-only.columns]]
column = "payment"
TOML
"$bin" reload --config "$SLUICE_CONFIG" >&2
ERIN_TOKEN=$("$bin" token --config "$SLUICE_CONFIG" --user erin --groups analysts --ttl 2h)

# Masking is measured on a gateway with session recording off (a copy of the demo's config,
# beside it; same workers and driver as the demo's): recording every 60 KB result costs
# more than masking it, and is measured on its own as the "recorded" target, through the
# demo's own gateway (recording on) as carol.
norec_config="$(dirname "$SLUICE_CONFIG")/bench-norec.toml"
{ cat "$SLUICE_CONFIG"; printf '\n[recording]\nenabled = false\n'; } >"$norec_config"
recorded_port=$port
recorded_pid=$gateway_pid
port=$((port + 7))
SLUICE_LOG=warn "$bin" proxy --config "$norec_config" --listen "127.0.0.1:$port" >"$work/norec.log" 2>&1 &
gateway_pid=$!
bench_pids+=("$gateway_pid")
for _ in $(seq 1 60); do port_open "$port" && break; sleep 0.25; done

hz=$(getconf CLK_TCK)

run() { # target -> "tps cpu_us_per_txn"
    local target=$1 conn pw pid=""
    case "$target" in
        direct) conn="host=127.0.0.1 port=$direct_port dbname=shop user=$direct_user"; pw=$direct_pw ;;
        masked) conn="host=127.0.0.1 port=$port dbname=shop user=bob"; pw=$BOB_TOKEN; pid=$gateway_pid ;;
        unmasked) conn="host=127.0.0.1 port=$port dbname=shop user=carol"; pw=$CAROL_TOKEN; pid=$gateway_pid ;;
        columns) conn="host=127.0.0.1 port=$port dbname=shop user=erin"; pw=$ERIN_TOKEN; pid=$gateway_pid ;;
        recorded) conn="host=127.0.0.1 port=$recorded_port dbname=shop user=carol"; pw=$CAROL_TOKEN; pid=$recorded_pid ;;
    esac
    local before=0 after=0 out tps txns
    [ -n "$pid" ] && before=$(cpu_ticks "$pid")
    out=$(PGPASSWORD=$pw pgbench -n -f "$work/wide.sql" -c "$clients" -j 2 -T "$seconds" -M prepared "$conn sslmode=disable" 2>&1)
    [ -n "$pid" ] && after=$(cpu_ticks "$pid")
    tps=$(awk '/^tps = /{print $3; exit}' <<<"$out")
    txns=$(awk '/number of transactions actually processed/{split($0,a,": "); split(a[2],b,"/"); print b[1]; exit}' <<<"$out")
    local cpu="-"
    if [ -n "$pid" ] && [ -n "$txns" ] && [ "$txns" -gt 0 ]; then
        cpu=$(awk -v t=$((after - before)) -v hz="$hz" -v n="$txns" 'BEGIN{printf "%.1f", t / hz * 1e6 / n}')
    fi
    echo "${tps:-0} $cpu"
}

# The masked target must really be masked, and the unmasked one not.
sample() { PGPASSWORD=$2 psql -XAt "host=127.0.0.1 port=$port dbname=shop user=$1 sslmode=disable" -c "SELECT contact FROM wide_rows WHERE id = 1"; }
case "$(sample bob "$BOB_TOKEN")" in *'*'*) ;; *) echo "bob's rows are not masked" >&2; exit 1 ;; esac
case "$(sample carol "$CAROL_TOKEN")" in *'*'*) echo "carol's rows are masked" >&2; exit 1 ;; *) ;; esac
case "$(sample erin "$ERIN_TOKEN")" in '****') ;; *) echo "erin's contact column is not redacted" >&2; exit 1 ;; esac

targets="direct unmasked columns masked recorded"
results="$work/results"; : >"$results"
for round in $(seq 1 "$rounds"); do
    for target in $targets; do
        read -r tps cpu < <(run "$target")
        echo "$target $round $tps $cpu" | tee -a "$results" >&2
    done
done

echo
echo "pgbench -f (SELECT of 100 rows x 6 text columns of ~100 bytes) -M prepared -c $clients -j 2 -T $seconds, $rounds interleaved rounds, $(nproc) cores;"
echo "gateway: the demo's config with recording off (io_uring, one pinned worker per core); masked = bob (profile pii: column rules and every detector), columns = erin (3 of 6 columns redacted, no detectors), unmasked = carol (dba); recorded = carol through the demo's own gateway, recording on (its CPU includes the writer threads)."
echo
echo "| target | median TPS | ratio to unmasked | gateway CPU µs/txn (median) |"
echo "|---|---|---|---|"
unmasked=$(awk '$1=="unmasked"{print $3}' "$results" | median)
for target in $targets; do
    tps=$(awk -v t="$target" '$1==t{print $3}' "$results" | median)
    cpu=$(awk -v t="$target" '$1==t && $4!="-"{print $4}' "$results" | median)
    ratio=$(awk -v a="$tps" -v b="$unmasked" 'BEGIN{printf "%.2f", a/b}')
    printf "| %s | %.0f | %s | %s |\n" "$target" "$tps" "$ratio" "$cpu"
done
