#!/usr/bin/env bash
# Throughput driver: Sluice's Caddy load-balancing policies vs Caddy's own
# round_robin, all in one Caddy process, behind the same four loopback backends.
#
#   bash bench/throughput/run.sh
#   ROUNDS=3 DUR=8 POLICIES="two_choices source_ip_hash" bash bench/throughput/run.sh
#
# Knobs (environment):
#   POLICIES  Sluice lb_policy names to compare (default: all six; "" = baseline only)
#   ROUNDS=5 DUR=10 (seconds per wrk run) CONNS=64 THREADS=2 WARMUP=2 (seconds, 0 = none)
#   OUT       output directory (default: a new mktemp dir); gets caddy, backend, raw.tsv, ...
#   BACKEND_PORTS=9101,9102,9103,9104   LISTEN_BASE=9200 (round_robin; policies at +1, +2, ...)
#   BODY_BYTES=100
#   ARGS_<policy> lb_policy arguments for one policy (default: ARGS_consistent_hash=uri)
#   IDLE_CONNS  if set, adds "transport http { keepalive_idle_conns_per_host N }" to every
#               listener, baseline included (Caddy's default is 32; see README)
# Only 127.0.0.1 is used.  Caddy and the backends are stopped by PID on exit.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

DEFAULT_POLICIES="smooth_weighted_round_robin weighted_least_conn fast_response two_choices consistent_hash source_ip_hash"
POLICIES=${POLICIES-$DEFAULT_POLICIES}
ROUNDS=${ROUNDS:-5}
DUR=${DUR:-10}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
WARMUP=${WARMUP:-2}
BACKEND_PORTS=${BACKEND_PORTS:-9101,9102,9103,9104}
LISTEN_BASE=${LISTEN_BASE:-9200}
BODY_BYTES=${BODY_BYTES:-100}
IDLE_CONNS=${IDLE_CONNS:-}
OUT=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/sluice-throughput.XXXXXX")}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
RAW=$OUT/raw.tsv
DIST=$OUT/dist.tsv
WRKLOG=$OUT/wrk.log
echo "output dir: $OUT"

# Extra lb_policy arguments: "lb_policy NAME ARGS".  Override per policy with
# ARGS_<name>, e.g. ARGS_consistent_hash='header X-User' (one line; no blocks).
declare -A POLICY_ARGS=(
  [consistent_hash]=uri
)

# ------------------------------------------------------------------ tools
command -v go >/dev/null || { echo "go is not on PATH" >&2; exit 1; }
command -v python3 >/dev/null || { echo "python3 is not on PATH" >&2; exit 1; }
if ! command -v wrk >/dev/null; then
  echo "wrk not found; installing it from Debian"
  SUDO=()
  if [ "$(id -u)" != 0 ]; then SUDO=(sudo); fi
  "${SUDO[@]}" apt-get update && DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y wrk
fi

echo "building caddy (./cmd/caddy) and backend"
(cd "$ROOT" && go build -o "$OUT/caddy" ./cmd/caddy)
(cd "$ROOT" && go build -o "$OUT/backend" ./bench/throughput/backend)

# ------------------------------------------------------------------ targets
read -r -a POLS <<<"$POLICIES"
TARGETS=(round_robin)
declare -A PORT=([round_robin]=$LISTEN_BASE)
i=0
for p in "${POLS[@]}"; do
  i=$((i + 1))
  if [ "$p" = round_robin ] || [ -n "${PORT[$p]:-}" ]; then
    echo "policy '$p' listed twice (round_robin is always the baseline)" >&2
    exit 1
  fi
  TARGETS+=("$p")
  PORT[$p]=$((LISTEN_BASE + i))
  v="ARGS_$p"
  if [ -n "${!v+set}" ]; then POLICY_ARGS[$p]=${!v}; fi
done

missing=()
modules=$("$OUT/caddy" list-modules)
for p in "${POLS[@]}"; do
  grep -qx "http.reverse_proxy.selection_policies.$p" <<<"$modules" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "this caddy build lacks lb_policy module(s): ${missing[*]}" >&2
  echo "(run with POLICIES=\"...\" to pick a subset)" >&2
  exit 1
fi

# ------------------------------------------------------------------ Caddyfile
UPSTREAMS=""
IFS=, read -r -a BPORTS <<<"$BACKEND_PORTS"
for bp in "${BPORTS[@]}"; do UPSTREAMS+=" 127.0.0.1:$bp"; done
TRANSPORT=""
if [ -n "$IDLE_CONNS" ]; then
  TRANSPORT="transport http {
            keepalive_idle_conns_per_host $IDLE_CONNS
        }"
fi
{
  cat <<EOF
{
    admin off
    auto_https off
    persist_config off
}
EOF
  for t in "${TARGETS[@]}"; do
    cat <<EOF

# $t
http://:${PORT[$t]} {
    bind 127.0.0.1
    reverse_proxy${UPSTREAMS} {
        lb_policy $t ${POLICY_ARGS[$t]:-}
        $TRANSPORT
    }
}
EOF
  done
} >"$OUT/Caddyfile"
"$OUT/caddy" fmt --overwrite "$OUT/Caddyfile" >/dev/null 2>&1 || true
if ! "$OUT/caddy" validate --adapter caddyfile --config "$OUT/Caddyfile" >"$OUT/validate.log" 2>&1; then
  echo "Caddyfile does not validate ($OUT/Caddyfile):" >&2
  tail -n 5 "$OUT/validate.log" >&2
  exit 1
fi

# ------------------------------------------------------------------ processes (stopped by PID)
PIDS=()
WRK_PID=""
stop_all() {
  local p
  if [ -n "$WRK_PID" ]; then kill "$WRK_PID" 2>/dev/null || true; wait "$WRK_PID" 2>/dev/null || true; fi
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  PIDS=()
}
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # port pid
  local n
  for n in $(seq 1 200); do
    port_open "$1" && return 0
    kill -0 "$2" 2>/dev/null || { echo "process $2 exited before port $1 opened" >&2; return 1; }
    sleep 0.05
  done
  echo "port $1 did not open" >&2
  return 1
}

for p in "${BPORTS[@]}" "${PORT[@]}"; do
  if port_open "$p"; then echo "port $p is already in use; aborting" >&2; exit 1; fi
done

"$OUT/backend" -ports "$BACKEND_PORTS" -body-bytes "$BODY_BYTES" >"$OUT/backend.log" 2>&1 &
BACKEND_PID=$!
PIDS+=("$BACKEND_PID")
"$OUT/caddy" run --adapter caddyfile --config "$OUT/Caddyfile" >"$OUT/caddy.log" 2>&1 &
CADDY_PID=$!
PIDS+=("$CADDY_PID")
for p in "${BPORTS[@]}"; do wait_port "$p" "$BACKEND_PID"; done
for t in "${TARGETS[@]}"; do
  wait_port "${PORT[$t]}" "$CADDY_PID" || { tail -n 20 "$OUT/caddy.log" >&2; exit 1; }
done

# utime+stime (clock ticks, all threads) of one process
cpu_ticks() {
  local s f
  s=$(<"/proc/$1/stat")
  s=${s##*) }          # drop "pid (comm) "; fields now start at 3 (state)
  read -r -a f <<<"$s"
  echo $((f[11] + f[12]))
}
HZ=$(getconf CLK_TCK)

# TCP connections opened actively in this network namespace so far (wrk's own
# plus Caddy's to the backends): shows keep-alive reuse towards the backends.
active_opens() { awk '/^Tcp: [0-9]/ {print $6}' /proc/net/snmp; }

# run_wrk round slot target seconds [count]
run_wrk() {
  local round=$1 slot=$2 t=$3 dur=$4 count=${5:-0}
  local port=${PORT[$t]} load c0 c1 b0 b1 o0 o1 out res
  kill -0 "$CADDY_PID" 2>/dev/null || { echo "caddy died; see $OUT/caddy.log" >&2; exit 1; }
  load=$(cut -d' ' -f1 /proc/loadavg)
  c0=$(cpu_ticks "$CADDY_PID"); b0=$(cpu_ticks "$BACKEND_PID"); o0=$(active_opens)
  # wrk runs in the background so that a signal stops the run at once.
  COUNT_BACKENDS=$count wrk -t"$THREADS" -c"$CONNS" -d"${dur}s" --timeout 5s --latency \
    -s "$HERE/result.lua" "http://127.0.0.1:$port/" >"$OUT/wrk.cur" 2>&1 &
  WRK_PID=$!
  wait "$WRK_PID" || true
  WRK_PID=""
  out=$(<"$OUT/wrk.cur")
  c1=$(cpu_ticks "$CADDY_PID"); b1=$(cpu_ticks "$BACKEND_PID"); o1=$(active_opens)
  printf '### round=%s slot=%s target=%s port=%s load1=%s\n%s\n' "$round" "$slot" "$t" "$port" "$load" "$out" >>"$WRKLOG"
  res=$(grep '^RESULT' <<<"$out" | cut -f2-) || true
  if [ -z "$res" ]; then
    echo "wrk gave no result for $t:" >&2
    echo "$out" >&2
    exit 1
  fi
  if [ "$round" = warm ]; then
    printf '%s\t%s\n' "$t" "$(grep '^DIST' <<<"$out" | cut -f2- || true)" >>"$DIST"
    return 0
  fi
  # round slot target port load1 | rps requests p50_us p99_us max_us sock_errs status_errs dur_us | caddy_ticks backend_ticks hz tcp_opens
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$slot" "$t" "$port" "$load" "$res" \
    $((c1 - c0)) $((b1 - b0)) "$HZ" $((o1 - o0)) >>"$RAW"
  printf '  round %s  %-28s %10s req/s  load1=%s\n' "$round" "$t" "$(cut -f1 <<<"$res")" "$load"
}

# ------------------------------------------------------------------ run
printf 'round\tslot\ttarget\tport\tload1\trps\trequests\tp50_us\tp99_us\tmax_us\tsock_errs\tstatus_errs\tdur_us\tcaddy_ticks\tbackend_ticks\thz\ttcp_opens\n' >"$RAW"
printf 'target\tresponses_per_backend\n' >"$DIST"
: >"$WRKLOG"
{
  echo "date: $(date -u +%FT%TZ)"
  echo "host: nproc=$(nproc) uptime: $(uptime)"
  echo "caddy: $("$OUT/caddy" version)"
  echo "go: $(go version)"
  echo "wrk: $(wrk -v 2>&1 | head -n 1)"
  echo "git: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo none)$(git -C "$ROOT" status --porcelain 2>/dev/null | grep -q . && echo ' (dirty)')"
  echo "params: ROUNDS=$ROUNDS DUR=$DUR CONNS=$CONNS THREADS=$THREADS WARMUP=$WARMUP BODY_BYTES=$BODY_BYTES IDLE_CONNS=${IDLE_CONNS:-default}"
  echo "targets: ${TARGETS[*]}"
} | tee "$OUT/env.txt"

N=${#TARGETS[@]}
if [ "$WARMUP" != 0 ]; then
  echo "warm-up (${WARMUP}s each, counting responses per backend)"
  for t in "${TARGETS[@]}"; do run_wrk warm 0 "$t" "$WARMUP" 1; sleep 0.5; done
fi
for r in $(seq 1 "$ROUNDS"); do
  for k in $(seq 0 $((N - 1))); do
    t=${TARGETS[$(((k + r - 1) % N))]}
    run_wrk "$r" "$k" "$t" "$DUR"
    sleep 1
  done
done
echo "uptime at end: $(uptime)" | tee -a "$OUT/env.txt"

stop_all
echo
rm -f "$OUT/wrk.cur"
python3 -B "$HERE/summarize.py" "$RAW" "$DIST" | tee "$OUT/table.txt"
echo
echo "raw data: $RAW   wrk output: $WRKLOG   table: $OUT/table.txt"
