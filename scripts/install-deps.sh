#!/usr/bin/env bash
# Installs what Sluice's demo, tests and benchmarks need on a fresh Debian machine with
# Rust, and nothing when it is all there already (so re-running it is cheap).
#   - a PostgreSQL server (initdb, pg_ctl, postgres) for `sluice demo` and the tests
#   - psql and pgbench, the real clients the tests and benchmarks drive
set -euo pipefail

need=()
pg_bindir() {
    if command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ]; then
        pg_config --bindir
        return
    fi
    ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}
bindir=$(pg_bindir || true)
if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ] || [ ! -x "$bindir/pg_ctl" ]; then
    need+=(postgresql)
fi
command -v psql >/dev/null 2>&1 || need+=(postgresql-client)
if [ -z "$bindir" ] || [ ! -x "$bindir/pgbench" ]; then
    need+=(postgresql-contrib)
fi
command -v cc >/dev/null 2>&1 || need+=(build-essential)
command -v useradd >/dev/null 2>&1 || need+=(passwd)

if [ ${#need[@]} -gt 0 ]; then
    echo "install-deps: installing ${need[*]}" >&2
    sudo_cmd=()
    [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    export DEBIAN_FRONTEND=noninteractive
    "${sudo_cmd[@]}" apt-get update -qq
    # The Debian package starts a cluster of its own; Sluice never uses it.
    "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
echo "install-deps: PostgreSQL binaries in $(pg_bindir)" >&2
