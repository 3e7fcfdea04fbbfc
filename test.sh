#!/usr/bin/env bash
# Runs Sluice's whole test suite on a fresh Debian machine with Go: installs
# what the tests need when it is missing, checks formatting, go vet and
# staticcheck, then runs every package's tests (the end-to-end tests build
# the custom Caddy once and send it real HTTP).
set -euo pipefail
cd "$(dirname "$0")"

# Debian packages the tests use, as "command:package" pairs. Installed only
# when the command is missing.
NEEDED=("keepalived:keepalived" "ip:iproute2" "sysctl:procps")

missing=()
for pair in "${NEEDED[@]+"${NEEDED[@]}"}"; do
	command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
if ((${#missing[@]})); then
	echo "== installing ${missing[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

STATICCHECK_VERSION=0.8.2 # the module version; staticcheck calls it 2026.2.2
staticcheck="$(go env GOPATH)/bin/staticcheck"
if ! "$staticcheck" -version 2>/dev/null | grep -qF "($STATICCHECK_VERSION)"; then
	echo "== installing staticcheck $STATICCHECK_VERSION"
	go install "honnef.co/go/tools/cmd/staticcheck@v$STATICCHECK_VERSION"
fi

echo "== gofmt"
unformatted="$(gofmt -l .)"
if [[ -n "$unformatted" ]]; then
	echo "not gofmt-ed:" "$unformatted"
	exit 1
fi
echo "== go vet"
go vet ./...
echo "== staticcheck"
"$staticcheck" ./...
echo "== go test"
# One package at a time: the failover, L4 and Caddy end-to-end tests time
# real networks on two cores, and must not steal each other's CPU.
go test -count=1 -p 1 -timeout 15m ./...
