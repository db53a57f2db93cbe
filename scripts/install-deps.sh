#!/usr/bin/env bash
# Installs what Sluice's demo, tests and benchmarks need on a fresh Debian machine with
# Rust, and nothing when it is all there already (so re-running it is cheap).
#   - a PostgreSQL server (initdb, pg_ctl, postgres) for `sluice demo` and the tests
#   - psql and pgbench, the real clients the tests and benchmarks drive
#   - the C libraries and headers the SAML login builds against (samael binds xmlsec1 with
#     bindgen): libclang-dev, libxmlsec1-dev, libxml2-dev, libssl-dev, pkg-config
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
# "ok installed", not merely known to dpkg (a removed package can leave its config behind).
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'ok installed'; }
for pkg in libclang-dev libxmlsec1-dev libxml2-dev libssl-dev pkg-config; do
    installed "$pkg" || need+=("$pkg")
done

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
