#!/usr/bin/env bash
# Balancing-quality benchmark: four loopback backends of unequal capacity
# (service 2/5/10/20 ms, 8 requests at once each, queueing beyond; ideal
# capacity 6,800 req/s split 59/24/12/6 %), driven by wrk through Sluice's
# Caddy policies, Caddy's own round_robin and least_conn, HAProxy and nginx.
#
#   bash bench/balance/run.sh                                    # all targets, 5 rounds x 15 s
#   ROUNDS=1 DUR=3 TARGETS="haproxy:leastconn fast_response" bash bench/balance/run.sh
#
# Knobs (environment):
#   TARGETS   targets to run, space-separated (default: all). A word selects every
#             target whose id, proxy or policy it equals, or "sluice" (Sluice's
#             policies) or "all". Ids:
#               haproxy:roundrobin haproxy:leastconn nginx:round_robin nginx:least_conn
#               caddy:round_robin caddy:least_conn caddy:weighted_least_conn
#               caddy:fast_response caddy:two_choices caddy:load_feedback
#             caddy:load_feedback runs only if this Caddy build has the module.
#   ROUNDS=5 DUR=15 (seconds per wrk run) CONNS=64 THREADS=2 WARMUP=3 (seconds, 0 = none)
#   OUT       output directory (default: a new mktemp dir)
#   SERVICE=2ms,5ms,10ms,20ms LIMIT=8 BACKEND_PORTS=9301,9302,9303,9304
#   LISTEN_BASE=9310 (targets listen on LISTEN_BASE+0..9, in the id order above)
#   CADDY     a prebuilt custom Caddy to use instead of building ./cmd/caddy
#   IDLE_CONNS if set, "transport http { keepalive_idle_conns_per_host N }" on every
#             Caddy listener (Caddy's default keeps 32 idle connections per backend)
#   CADDY_SHARED=1 serves every Caddy target from one Caddy process. By default each
#             Caddy target gets its own process: Sluice keeps per-backend state (in
#             flight, response-time average) per address, shared by every listener of
#             a process, so one policy's run would otherwise bias the next one's.
#   NGINX_WORKERS=2 HAPROXY_THREADS=2
# Only 127.0.0.1 is used.  Every process started here is stopped by PID on exit.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

ROUNDS=${ROUNDS:-5}
DUR=${DUR:-15}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
WARMUP=${WARMUP:-3}
TARGETS=${TARGETS:-all}
SERVICE=${SERVICE:-2ms,5ms,10ms,20ms}
LIMIT=${LIMIT:-8}
BACKEND_PORTS=${BACKEND_PORTS:-9301,9302,9303,9304}
LISTEN_BASE=${LISTEN_BASE:-9310}
CADDY=${CADDY:-}
IDLE_CONNS=${IDLE_CONNS:-}
CADDY_SHARED=${CADDY_SHARED:-0}
NGINX_WORKERS=${NGINX_WORKERS:-2}
HAPROXY_THREADS=${HAPROXY_THREADS:-2}

# ------------------------------------------------------------------ targets
ALL_IDS=(haproxy:roundrobin haproxy:leastconn nginx:round_robin nginx:least_conn
  caddy:round_robin caddy:least_conn caddy:weighted_least_conn
  caddy:fast_response caddy:two_choices caddy:load_feedback)
SLUICE_POLICIES=" weighted_least_conn fast_response two_choices load_feedback "
declare -A PORT=()
i=0
for id in "${ALL_IDS[@]}"; do PORT[$id]=$((LISTEN_BASE + i)); i=$((i + 1)); done

SEL=()
for id in "${ALL_IDS[@]}"; do
  proxy=${id%%:*} pol=${id#*:}
  for w in $TARGETS; do
    if [ "$w" = all ] || [ "$w" = "$id" ] || [ "$w" = "$proxy" ] || [ "$w" = "$pol" ] ||
      { [ "$w" = sluice ] && [ "$proxy" = caddy ] && [[ $SLUICE_POLICIES == *" $pol "* ]]; }; then
      SEL+=("$id")
      break
    fi
  done
done
for w in $TARGETS; do
  ok=""
  for id in "${ALL_IDS[@]}"; do
    if [ "$w" = all ] || [ "$w" = sluice ] || [ "$w" = "$id" ] || [ "$w" = "${id%%:*}" ] || [ "$w" = "${id#*:}" ]; then ok=1; fi
  done
  [ -n "$ok" ] || { echo "TARGETS: '$w' matches no target (ids: ${ALL_IDS[*]})" >&2; exit 1; }
done
[ "${#SEL[@]}" -gt 0 ] || { echo "TARGETS selects nothing" >&2; exit 1; }
has_proxy() { local id; for id in "${SEL[@]}"; do [ "${id%%:*}" = "$1" ] && return 0; done; return 1; }
# unit_of id: the process that serves a target (its PID_OF key and log name).
unit_of() {
  case $1 in
  caddy:*) if [ "$CADDY_SHARED" = 1 ]; then echo caddy; else echo "caddy-${1#caddy:}"; fi ;;
  *) echo "${1%%:*}" ;;
  esac
}

OUT=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/sluice-balance.XXXXXX")}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
RAW=$OUT/raw.tsv
WARM=$OUT/warm.tsv
WRKLOG=$OUT/wrk.log
NOTES=$OUT/notes.txt
: >"$NOTES"
echo "output dir: $OUT"

# ------------------------------------------------------------------ tools
command -v go >/dev/null || { echo "go is not on PATH" >&2; exit 1; }
command -v python3 >/dev/null || { echo "python3 is not on PATH" >&2; exit 1; }
command -v curl >/dev/null || { echo "curl is not on PATH" >&2; exit 1; }
need=()
command -v wrk >/dev/null || need+=(wrk)
if has_proxy haproxy && ! command -v haproxy >/dev/null; then need+=(haproxy); fi
if has_proxy nginx && ! command -v nginx >/dev/null; then need+=(nginx); fi
if [ "${#need[@]}" -gt 0 ]; then
  echo "installing ${need[*]} from Debian"
  SUDO=()
  if [ "$(id -u)" != 0 ]; then SUDO=(sudo); fi
  "${SUDO[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq "${need[@]}" >/dev/null
fi

echo "building backend"
(cd "$ROOT" && go build -o "$OUT/backend" ./bench/balance/backend)
if has_proxy caddy; then
  if [ -n "$CADDY" ]; then
    cp "$CADDY" "$OUT/caddy"
  else
    echo "building caddy (./cmd/caddy)"
    (cd "$ROOT" && go build -o "$OUT/caddy" ./cmd/caddy)
  fi
  modules=$("$OUT/caddy" list-modules)
  keep=()
  for id in "${SEL[@]}"; do
    pol=${id#*:}
    if [ "${id%%:*}" = caddy ] && ! grep -qx "http.reverse_proxy.selection_policies.$pol" <<<"$modules"; then
      echo "skipped $id: this Caddy build has no http.reverse_proxy.selection_policies.$pol" | tee -a "$NOTES"
      continue
    fi
    keep+=("$id")
  done
  SEL=("${keep[@]+"${keep[@]}"}")
  [ "${#SEL[@]}" -gt 0 ] || { echo "no target left to run" >&2; exit 1; }
fi

# ------------------------------------------------------------------ configs
IFS=, read -r -a BPORTS <<<"$BACKEND_PORTS"
NB=${#BPORTS[@]}

if has_proxy caddy; then
  TRANSPORT=""
  if [ -n "$IDLE_CONNS" ]; then
    TRANSPORT="transport http {
            keepalive_idle_conns_per_host $IDLE_CONNS
        }"
  fi
  CADDY_UNITS=()
  for id in "${SEL[@]}"; do
    [ "${id%%:*}" = caddy ] || continue
    u=$(unit_of "$id")
    cf=$OUT/$u.Caddyfile
    if [ ! -f "$cf" ]; then
      CADDY_UNITS+=("$u")
      printf '{\n    admin off\n    auto_https off\n    persist_config off\n}\n' >"$cf"
    fi
    {
      printf '\n# %s\nhttp://:%s {\n    bind 127.0.0.1\n    reverse_proxy' "$id" "${PORT[$id]}"
      for bp in "${BPORTS[@]}"; do printf ' 127.0.0.1:%s' "$bp"; done
      printf ' {\n        lb_policy %s\n        %s\n    }\n}\n' "${id#*:}" "$TRANSPORT"
    } >>"$cf"
  done
  for u in "${CADDY_UNITS[@]}"; do
    cf=$OUT/$u.Caddyfile
    "$OUT/caddy" fmt --overwrite "$cf" >/dev/null 2>&1 || true
    if ! "$OUT/caddy" validate --adapter caddyfile --config "$cf" >"$OUT/$u-validate.log" 2>&1; then
      echo "Caddyfile does not validate ($cf):" >&2
      tail -n 5 "$OUT/$u-validate.log" >&2
      exit 1
    fi
  done
fi

if has_proxy haproxy; then
  {
    cat <<EOF
global
    nbthread $HAPROXY_THREADS
    maxconn 4000
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    http-reuse always
EOF
    for id in "${SEL[@]}"; do
      [ "${id%%:*}" = haproxy ] || continue
      pol=${id#*:}
      printf 'frontend fe_%s\n    bind 127.0.0.1:%s\n    default_backend be_%s\n' "$pol" "${PORT[$id]}" "$pol"
      printf 'backend be_%s\n    balance %s\n' "$pol" "$pol"
      n=0
      for bp in "${BPORTS[@]}"; do n=$((n + 1)); printf '    server b%d 127.0.0.1:%s\n' "$n" "$bp"; done
    done
  } >"$OUT/haproxy.cfg"
  haproxy -c -f "$OUT/haproxy.cfg" >"$OUT/haproxy-check.log" 2>&1 ||
    { echo "haproxy.cfg does not validate:" >&2; tail -n 5 "$OUT/haproxy-check.log" >&2; exit 1; }
fi

if has_proxy nginx; then
  NG=$OUT/nginx
  mkdir -p "$NG/logs" "$NG/tmp"
  {
    cat <<EOF
worker_processes $NGINX_WORKERS;
pid $NG/nginx.pid;
error_log $NG/logs/error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    client_body_temp_path $NG/tmp/body;
    proxy_temp_path $NG/tmp/proxy;
    fastcgi_temp_path $NG/tmp/fastcgi;
    uwsgi_temp_path $NG/tmp/uwsgi;
    scgi_temp_path $NG/tmp/scgi;
EOF
    for id in "${SEL[@]}"; do
      [ "${id%%:*}" = nginx ] || continue
      pol=${id#*:}
      printf '    upstream be_%s {\n' "$pol"
      [ "$pol" = least_conn ] && printf '        least_conn;\n'
      printf '        zone be_%s 64k;   # counts shared by the workers\n' "$pol"
      for bp in "${BPORTS[@]}"; do printf '        server 127.0.0.1:%s;\n' "$bp"; done
      printf '        keepalive 64;\n    }\n'
      printf '    server {\n        listen 127.0.0.1:%s;\n' "${PORT[$id]}"
      printf '        location / { proxy_pass http://be_%s; proxy_http_version 1.1; proxy_set_header Connection ""; }\n    }\n' "$pol"
    done
    echo "}"
  } >"$NG/nginx.conf"
  nginx -t -p "$NG/" -e "$NG/logs/error.log" -c "$NG/nginx.conf" >"$OUT/nginx-check.log" 2>&1 ||
    { echo "nginx.conf does not validate:" >&2; tail -n 5 "$OUT/nginx-check.log" >&2; exit 1; }
fi

# ------------------------------------------------------------------ processes (stopped by PID)
PIDS=()
WRK_PID=""
stop_all() {
  local p
  if [ -n "$WRK_PID" ]; then kill "$WRK_PID" 2>/dev/null || true; wait "$WRK_PID" 2>/dev/null || true; fi
  for p in "${PIDS[@]+"${PIDS[@]}"}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]+"${PIDS[@]}"}"; do wait "$p" 2>/dev/null || true; done
  PIDS=()
}
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() { # port pid name
  local n
  for n in $(seq 1 300); do
    port_open "$1" && return 0
    kill -0 "$2" 2>/dev/null || { echo "$3 (pid $2) exited before port $1 opened" >&2; return 1; }
    sleep 0.05
  done
  echo "port $1 ($3) did not open" >&2
  return 1
}

for p in "${BPORTS[@]}"; do
  if port_open "$p"; then echo "port $p is already in use; aborting" >&2; exit 1; fi
done
for id in "${SEL[@]}"; do
  if port_open "${PORT[$id]}"; then echo "port ${PORT[$id]} is already in use; aborting" >&2; exit 1; fi
done

declare -A PID_OF=()
"$OUT/backend" -ports "$BACKEND_PORTS" -service "$SERVICE" -limit "$LIMIT" >"$OUT/backend.log" 2>&1 &
BACKEND_PID=$!
PIDS+=("$BACKEND_PID")
if has_proxy caddy; then
  for u in "${CADDY_UNITS[@]}"; do
    "$OUT/caddy" run --adapter caddyfile --config "$OUT/$u.Caddyfile" >"$OUT/$u.log" 2>&1 &
    PID_OF[$u]=$!
    PIDS+=($!)
  done
fi
if has_proxy haproxy; then
  haproxy -db -f "$OUT/haproxy.cfg" >"$OUT/haproxy.log" 2>&1 &
  PID_OF[haproxy]=$!
  PIDS+=($!)
fi
if has_proxy nginx; then
  # The master stays in the foreground (daemon off); TERM to it stops the workers too.
  nginx -p "$NG/" -e "$NG/logs/error.log" -c "$NG/nginx.conf" -g 'daemon off;' >"$OUT/nginx.log" 2>&1 &
  PID_OF[nginx]=$!
  PIDS+=($!)
fi
for p in "${BPORTS[@]}"; do wait_port "$p" "$BACKEND_PID" backend; done
for id in "${SEL[@]}"; do
  u=$(unit_of "$id")
  wait_port "${PORT[$id]}" "${PID_OF[$u]}" "$u" || { tail -n 20 "$OUT/$u.log" >&2; exit 1; }
done

# utime+stime (clock ticks, all threads) of a process and its children
# (nginx's workers; haproxy and Caddy are one process each).
cpu_ticks() {
  local p s f t=0
  for p in "$1" $(pgrep -P "$1" || true); do
    s=$(<"/proc/$p/stat") || continue
    s=${s##*) }          # drop "pid (comm) "; fields now start at 3 (state)
    read -r -a f <<<"$s"
    t=$((t + f[11] + f[12]))
  done
  echo "$t"
}
HZ=$(getconf CLK_TCK)

# The backends' cumulative counters, one "name:served:wait_ns:resident_ns:inflight:conns" per backend, ';'-joined.
backend_stats() {
  curl -s --max-time 2 "http://127.0.0.1:${BPORTS[0]}/_stats" | tr ' ' ':' | paste -sd ';' -
}

# run_wrk round slot id seconds
run_wrk() {
  local round=$1 slot=$2 id=$3 dur=$4
  local proxy=${id%%:*} pol=${id#*:} port=${PORT[$id]} unit pid load c0 c1 s0 s1 t0 t1 out res dist
  unit=$(unit_of "$id")
  pid=${PID_OF[$unit]}
  kill -0 "$pid" 2>/dev/null || { echo "$unit died; see $OUT/$unit.log" >&2; exit 1; }
  kill -0 "$BACKEND_PID" 2>/dev/null || { echo "backend died; see $OUT/backend.log" >&2; exit 1; }
  load=$(cut -d' ' -f1 /proc/loadavg)
  s0=$(backend_stats); t0=$(date +%s%N); c0=$(cpu_ticks "$pid")
  # wrk runs in the background so that a signal stops the run at once.
  wrk -t"$THREADS" -c"$CONNS" -d"${dur}s" --timeout 5s --latency \
    -s "$HERE/count.lua" "http://127.0.0.1:$port/" >"$OUT/wrk.cur" 2>&1 &
  WRK_PID=$!
  wait "$WRK_PID" || true
  WRK_PID=""
  c1=$(cpu_ticks "$pid"); t1=$(date +%s%N); s1=$(backend_stats)
  out=$(<"$OUT/wrk.cur")
  printf '### round=%s slot=%s target=%s port=%s load1=%s\n%s\n' "$round" "$slot" "$id" "$port" "$load" "$out" >>"$WRKLOG"
  res=$(grep '^RESULT' <<<"$out" | cut -f2-) || true
  dist=$(grep '^DIST' <<<"$out" | cut -f2-) || true
  if [ -z "$res" ]; then
    echo "wrk gave no result for $id:" >&2
    echo "$out" >&2
    exit 1
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$slot" "$id" "$proxy" "$pol" "$port" "$load" \
    "$res" $((c1 - c0)) "$HZ" "${dist:--}" "$s0" "$s1" $((t1 - t0)) >>"$([ "$round" = warm ] && echo "$WARM" || echo "$RAW")"
  printf '  round %-4s %-28s %8s req/s  p99 %6.1f ms  load1=%s\n' "$round" "$id" "$(cut -f1 <<<"$res")" \
    "$(awk '{printf "%.1f", $5 / 1000}' <<<"$res")" "$load"
}

# ------------------------------------------------------------------ run
HEAD='round\tslot\ttarget\tproxy\tpolicy\tport\tload1\trps\trequests\tp50_us\tp90_us\tp99_us\tp999_us\tmax_us\tsock_errs\tstatus_errs\tdur_us\tproxy_ticks\thz\tresponses\tbackend_before\tbackend_after\twall_ns\n'
printf "$HEAD" >"$RAW"
printf "$HEAD" >"$WARM"
: >"$WRKLOG"
{
  echo "date: $(date -u +%FT%TZ)"
  echo "host: nproc=$(nproc) uptime: $(uptime)"
  if has_proxy caddy; then echo "caddy: $("$OUT/caddy" version)"; fi
  if has_proxy haproxy; then echo "haproxy: $(haproxy -v | head -n 1)"; fi
  if has_proxy nginx; then echo "nginx: $(nginx -v 2>&1)"; fi
  echo "go: $(go version)"
  echo "wrk: $(wrk -v 2>&1 | head -n 1)"
  echo "git: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo none)$(git -C "$ROOT" status --porcelain 2>/dev/null | grep -q . && echo ' (dirty)')"
  echo "params: ROUNDS=$ROUNDS DUR=$DUR CONNS=$CONNS THREADS=$THREADS WARMUP=$WARMUP SERVICE=$SERVICE LIMIT=$LIMIT IDLE_CONNS=${IDLE_CONNS:-default} CADDY_SHARED=$CADDY_SHARED NGINX_WORKERS=$NGINX_WORKERS HAPROXY_THREADS=$HAPROXY_THREADS"
  echo "targets: ${SEL[*]}"
} | tee "$OUT/env.txt"

N=${#SEL[@]}
if [ "$WARMUP" != 0 ]; then
  echo "warm-up (${WARMUP}s each)"
  for id in "${SEL[@]}"; do run_wrk warm 0 "$id" "$WARMUP"; sleep 1; done
fi
for r in $(seq 1 "$ROUNDS"); do
  for k in $(seq 0 $((N - 1))); do
    run_wrk "$r" "$k" "${SEL[$(((k + r - 1) % N))]}" "$DUR"
    sleep 1 # let the backends' queues drain
  done
done
echo "uptime at end: $(uptime)" | tee -a "$OUT/env.txt"

stop_all
rm -f "$OUT/wrk.cur"
echo
python3 -B "$HERE/summarize.py" --service "$SERVICE" --limit "$LIMIT" --backends "$NB" "$RAW" | tee "$OUT/table.txt"
echo
echo "raw data: $RAW   warm-up: $WARM   wrk output: $WRKLOG   table: $OUT/table.txt"
