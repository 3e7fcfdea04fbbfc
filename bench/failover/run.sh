#!/usr/bin/env bash
# Failover benchmark: haagent against keepalived, same namespaces, same
# advert interval, interleaved runs. Needs root and keepalived
# (apt-get install keepalived). Usage, from the repository root:
#
#   bench/failover/run.sh [-reps 5] [-modes crash,stop] [-advert 100ms]
#
# Namespaces are named hat-b-*; they are removed at the end (and at the
# start, should an earlier run have died).
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v keepalived >/dev/null || { echo "keepalived is not installed (apt-get install keepalived)" >&2; exit 1; }
bin="$(mktemp -d)"
trap 'rm -rf "$bin"' EXIT
go build -o "$bin/haagent" ./cmd/haagent
go build -o "$bin/failover" ./bench/failover
"$bin/failover" -haagent "$bin/haagent" "$@"
