#!/usr/bin/env bash
# L4 benchmark: wrk from a client namespace through l4fwd in NAT and DR
# modes, HAProxy 2.6 (mode tcp) in the load balancer's namespace, and one
# real server directly, in the same run: rounds interleaved, medians
# reported. Two columns: keep-alive, and a new connection per request
# ("Connection: close").
#
#   bash bench/l4/run.sh
#   ROUNDS=5 DUR=10 bash bench/l4/run.sh
#
# Knobs (environment): ROUNDS=3 DUR=10 (seconds per wrk run) CONNS=8 THREADS=2
#   BACKENDS=one (one backend process serves every real server, a socket in each one's
#   namespace) or each (a process per real server, as before 2026-12-02 18:00 UTC)
#   BACKEND_PROCS (GOMAXPROCS of every backend process; default: a thread per CPU, and with
#   BACKENDS=each the CPUs shared among the servers the target reaches, so one server gets
#   them all and each of two gets half; 0: Go's default)
#   CSWITCH=1 (count the machine's context switches during each run with perf, per request)
#   TARGETS="nat-direct nat haproxy dr-direct dr"   OUT (output dir; default: mktemp)
#   (also available: nat-synproxy, l4fwd NAT with synproxy on, the "under attack" switch;
#   dr-proto-fwd and dr-proto-dup, the planning prototype's one-rule DR rulesets loaded with
#   nft -f, for comparison only: "fwd to" the device, which google/nftables cannot express,
#   and the "dup to" + drop that l4fwd uses; dr-one, l4fwd DR with only the real server that
#   dr-direct reaches, and dr-direct2, both real servers reached directly by two wrk at once
#   (half the threads and connections each): they tell the forwarding's cost from that of
#   spreading the load over two servers)
#
# Two topologies, as the modes need (namespaces named l4b-*, their interfaces l4t-*):
#   NAT: l4b-nc 10.81.1.2-4 ── l4b-nlb (10.81.1.1, VIP 10.81.1.100 | 10.81.2.1) ── l4b-nr1/2 10.81.2.11/12
#        the LB is the real servers' gateway; "nat-direct" is the client to 10.81.2.11, routed by
#        the same LB with no rules; HAProxy listens on 10.81.1.1:8080 in l4b-nlb.
#   DR:  l4b-dc 10.82.0.50, l4b-dlb 10.82.0.1 (VIP 10.82.0.100), l4b-dr1/2 10.82.0.11/12 (VIP on lo)
#        on one bridge (l4b-dsw); "dr-direct" is the client to 10.82.0.11 over the bridge.
# Every process this script starts is stopped by PID, and its namespaces are deleted, on exit.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
ROUNDS=${ROUNDS:-3}
DUR=${DUR:-10}
CONNS=${CONNS:-8}
THREADS=${THREADS:-2}
TARGETS=${TARGETS:-"nat-direct nat haproxy dr-direct dr"}
BACKENDS=${BACKENDS:-one}
case $BACKENDS in one | each) ;; *) echo "BACKENDS=$BACKENDS: want one or each" >&2; exit 1 ;; esac
OUT=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/sluice-l4.XXXXXX")}
mkdir -p "$OUT"
RAW=$OUT/raw.tsv
echo "output dir: $OUT"
echo "wrk -t$THREADS -c$CONNS, ${DUR}s per run, $ROUNDS rounds; real servers: BACKENDS=$BACKENDS, GOMAXPROCS=${BACKEND_PROCS-default}"

[ "$(id -u)" = 0 ] || { echo "run as root: the benchmark builds network namespaces" >&2; exit 1; }
missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v haproxy >/dev/null || missing+=(haproxy)
command -v ip >/dev/null || missing+=(iproute2)
case " $TARGETS " in *" dr-proto-"*) command -v nft >/dev/null || missing+=(nftables) ;; esac
[ "${CSWITCH:-0}" = 0 ] || command -v perf >/dev/null || missing+=(linux-perf)
if ((${#missing[@]})); then
  echo "installing ${missing[*]} from Debian"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
haproxy -v | sed -n 1p

echo "building l4fwd and the backend"
(cd "$ROOT" && go build -o "$OUT/l4fwd" ./cmd/l4fwd && go build -o "$OUT/backend" ./bench/l4/backend)

NS="ip netns exec"
PIDS=()
REALS=() # the real servers of the target being measured
cleanup() {
  for p in "${PIDS[@]}" "${REALS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}" "${REALS[@]}"; do wait "$p" 2>/dev/null || true; done
  for ns in $(ip netns list | awk '{print $1}' | grep '^l4b-' || true); do ip netns del "$ns"; done
}
trap cleanup EXIT
cleanup # leftovers of a run that died

# ------------------------------------------------------------------ topologies
addns() { ip netns add "$1"; ip -n "$1" link set lo up; }

addns l4b-nc; addns l4b-nlb
ip link add l4t-c netns l4b-nc type veth peer name l4t-lc netns l4b-nlb
ip -n l4b-nc addr add 10.81.1.2/24 dev l4t-c
ip -n l4b-nc addr add 10.81.1.3/24 dev l4t-c
ip -n l4b-nc addr add 10.81.1.4/24 dev l4t-c
ip -n l4b-nc link set l4t-c up
ip -n l4b-nc route add default via 10.81.1.1
# Each target gets a client address of its own (.2 the VIP, .3 direct, .4 HAProxy): the real
# servers then never see one target's connections land on another's TIME_WAIT sockets, whose
# timestamps (offset per destination) would make them refuse the SYN for a second.
ip -n l4b-nc route add 10.81.2.11/32 via 10.81.1.1 src 10.81.1.3
ip -n l4b-nc route replace 10.81.1.1/32 dev l4t-c src 10.81.1.4
ip -n l4b-nlb addr add 10.81.1.1/24 dev l4t-lc
ip -n l4b-nlb addr add 10.81.1.100/32 dev l4t-lc
ip -n l4b-nlb link set l4t-lc up
ip -n l4b-nlb link add l4t-br type bridge
ip -n l4b-nlb addr add 10.81.2.1/24 dev l4t-br
ip -n l4b-nlb link set l4t-br up
$NS l4b-nlb sysctl -qw net.ipv4.ip_forward=1
for i in 1 2; do
  addns l4b-nr$i
  ip link add l4t-e netns l4b-nr$i type veth peer name l4t-p$i netns l4b-nlb
  ip -n l4b-nlb link set l4t-p$i master l4t-br up
  ip -n l4b-nr$i addr add 10.81.2.1$i/24 dev l4t-e
  ip -n l4b-nr$i link set l4t-e up
  ip -n l4b-nr$i route add default via 10.81.2.1
done

addns l4b-dsw
ip -n l4b-dsw link add l4t-br type bridge
ip -n l4b-dsw link set l4t-br up
drnode() { # name address
  addns "l4b-d$1"
  ip link add l4t-e netns "l4b-d$1" type veth peer name "l4t-$1" netns l4b-dsw
  ip -n l4b-dsw link set "l4t-$1" master l4t-br up
  ip -n "l4b-d$1" addr add "$2/24" dev l4t-e
  ip -n "l4b-d$1" link set l4t-e up
}
drnode c 10.82.0.50
drnode lb 10.82.0.1
ip -n l4b-dlb addr add 10.82.0.100/32 dev l4t-e
for i in 1 2; do
  drnode r$i 10.82.0.1$i
  ip -n l4b-dr$i addr add 10.82.0.100/32 dev lo
  $NS l4b-dr$i sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2
done
# Without it, wrk's closed connections pile up in TIME_WAIT and connect() becomes the bottleneck.
$NS l4b-nc sysctl -qw net.ipv4.tcp_tw_reuse=1
$NS l4b-dc sysctl -qw net.ipv4.tcp_tw_reuse=1
# The bridges stand for switches. Where the host has br_netfilter loaded (Docker loads it), each
# namespace starts with bridge-nf-call-* on, and every IPv4 frame a bridge forwards would go
# through that namespace's IP hooks, which no switch does and which DR, whose client packets
# cross the bridge twice, would pay twice.
# BRIDGE_NF=1 leaves them as the host has them, for comparison.
for ns in l4b-nlb l4b-dsw; do
  if [ "${BRIDGE_NF:-0}" = 0 ] && $NS $ns test -e /proc/sys/net/bridge/bridge-nf-call-iptables; then
    $NS $ns sysctl -qw net.bridge.bridge-nf-call-iptables=0 net.bridge.bridge-nf-call-ip6tables=0 net.bridge.bridge-nf-call-arptables=0
  fi
done

cat > "$OUT/nat.conf" <<EOF
service web {
	vip 10.81.1.100
	port 80
	mode nat
	real 10.81.2.11
	real 10.81.2.12
}
EOF
sed 's/mode nat/mode nat\n\tsynproxy/' "$OUT/nat.conf" > "$OUT/nat-synproxy.conf"
cat > "$OUT/dr.conf" <<EOF
service web {
	vip 10.82.0.100
	port 80
	mode dr
	interface l4t-e
	real 10.82.0.11
	real 10.82.0.12
}
EOF
grep -v 10.82.0.12 "$OUT/dr.conf" > "$OUT/dr-one.conf"
cat > "$OUT/haproxy.cfg" <<EOF
global
	maxconn 4000
defaults
	mode tcp
	timeout connect 5s
	timeout client 30s
	timeout server 30s
frontend vip
	bind 10.81.1.1:8080
	default_backend reals
backend reals
	balance roundrobin
	server r1 10.81.2.11:80
	server r2 10.81.2.12:80
EOF

# ------------------------------------------------------------------ targets
client() { case $1 in dr*) echo l4b-dc ;; *) echo l4b-nc ;; esac; }
url() {
  case $1 in
    nat-direct) echo http://10.81.2.11/ ;;
    nat|nat-synproxy) echo http://10.81.1.100/ ;;
    haproxy) echo http://10.81.1.1:8080/ ;;
    dr-direct|dr-direct2) echo http://10.82.0.11/ ;;
    dr|dr-one|dr-proto-*) echo http://10.82.0.100/ ;;
  esac
}
mac() { ip -n "$1" -br link show l4t-e | awk '{print $3}'; }
# proto fwd|dup: the prototype's DR ruleset, the flow's hash choosing the real server's MAC.
proto() {
  local out='fwd to "l4t-e"'
  [ "$1" = dup ] && out='dup to "l4t-e" drop'
  $NS l4b-dlb nft -f - <<EOF
table netdev l4proto {
	chain ingress {
		type filter hook ingress device "l4t-e" priority 0; policy accept;
		ip daddr 10.82.0.100 tcp dport 80 ether saddr set $(mac l4b-dlb) ether daddr set jhash ip saddr . tcp sport mod 2 map { 0 : $(mac l4b-dr1), 1 : $(mac l4b-dr2) } $out
	}
}
EOF
}
# The real servers stand for machines of their own but share this one's CPUs. By default
# (BACKENDS=one) one backend process serves them all, a socket in each server's namespace: each
# keeps its address and network stack, and however many a target reaches, they share one Go
# runtime with a thread per CPU, as the one server of a direct target does. BACKENDS=each runs a
# process per server instead, the CPUs shared among the servers the target reaches (one server
# gets a thread per CPU, each of two half as many): there, spreading over two servers cost
# more by itself, two runtimes going idle and waking up apart on the same two CPUs.
reals() { # target
  local topo=n n=2 procs
  case $1 in dr*) topo=d ;; esac
  if [ "$BACKENDS" = one ]; then
    env GOMAXPROCS="${BACKEND_PROCS-$(nproc)}" "$OUT/backend" -listen :80 -in l4b-${topo}r1=r1 -in l4b-${topo}r2=r2 &
    REALS+=($!)
  else
    case $1 in *-direct | dr-one) n=1 ;; esac
    procs=${BACKEND_PROCS-$(($(nproc) / n > 0 ? $(nproc) / n : 1))}
    for i in 1 2; do
      $NS l4b-${topo}r$i env GOMAXPROCS="$procs" "$OUT/backend" -listen :80 -name r$i & REALS+=($!)
    done
  fi
  for i in 1 2; do
    for _ in $(seq 50); do $NS l4b-${topo}r$i curl -s -m 1 -o /dev/null http://127.0.0.1/ && break; sleep 0.1; done
  done
}
SERVER=
setup() {
  reals "$1"
  case $1 in
    nat | nat-synproxy) $NS l4b-nlb "$OUT/l4fwd" -config "$OUT/$1.conf" 2>>"$OUT/l4fwd.log" & SERVER=$! ;;
    dr | dr-one) $NS l4b-dlb "$OUT/l4fwd" -config "$OUT/$1.conf" 2>>"$OUT/l4fwd.log" & SERVER=$! ;;
    dr-proto-fwd) proto fwd; SERVER= ;;
    dr-proto-dup) proto dup; SERVER= ;;
    haproxy) $NS l4b-nlb haproxy -db -f "$OUT/haproxy.cfg" 2>>"$OUT/haproxy.log" & SERVER=$! ;;
    *) SERVER= ;;
  esac
  [ -n "$SERVER" ] && PIDS+=("$SERVER")
  for _ in $(seq 50); do # until the path answers
    $NS "$(client "$1")" curl -s -m 1 -o /dev/null "$(url "$1")" && return 0
    sleep 0.1
  done
  echo "$1 does not answer" >&2; exit 1
}
teardown() {
  if [ -n "$SERVER" ]; then kill "$SERVER"; wait "$SERVER" 2>/dev/null || true; fi
  kill "${REALS[@]}" 2>/dev/null || true; wait "${REALS[@]}" 2>/dev/null || true; REALS=()
  $NS l4b-nlb sysctl -qw net.netfilter.nf_conntrack_tcp_loose=1 # synproxy's l4fwd set it to 0
  if $NS l4b-dlb nft list table netdev l4proto >/dev/null 2>&1; then $NS l4b-dlb nft delete table netdev l4proto; fi
}

# cpu_us_per_req: the whole machine's busy CPU time over the run (/proc/stat: user, nice, system,
# irq, softirq) per request, wrk's and the kernel's included; idle_pct: the share of CPU time idle.
echo -e "round\ttarget\tmode\trps\tcswitch_per_req\tcpu_us_per_req\tidle_pct" > "$RAW"
cputicks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8, $5 + $6}' /proc/stat; } # busy idle
for round in $(seq "$ROUNDS"); do
  for t in $TARGETS; do
    setup "$t"
    for mode in keepalive close; do
      H=(); [ $mode = close ] && H=(-H 'Connection: close')
      if [ "${CSWITCH:-0}" != 0 ]; then
        perf stat -a -x, -e context-switches -o "$OUT/cswitch.csv" -- sleep "$DUR" & CS=$!
      fi
      read -r busy0 idle0 < <(cputicks)
      if [ "$t" = dr-direct2 ]; then
        # Half the threads and connections to each real server, at once; the req/s add up.
        half=(-t$((THREADS / 2 > 0 ? THREADS / 2 : 1)) -c$((CONNS / 2)) -d"${DUR}s" "${H[@]}")
        $NS l4b-dc wrk "${half[@]}" http://10.82.0.12/ >"$OUT/wrk2.out" 2>&1 &
        out=$($NS l4b-dc wrk "${half[@]}" http://10.82.0.11/ 2>&1)
        wait $!
        out+=$'\n'$(cat "$OUT/wrk2.out")
        rps=$(echo "$out" | awk '/Requests\/sec/ {s += $2} END {printf "%.2f", s}')
      else
        out=$($NS "$(client "$t")" wrk -t"$THREADS" -c"$CONNS" -d"${DUR}s" "${H[@]}" "$(url "$t")" 2>&1)
        rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
      fi
      read -r busy1 idle1 < <(cputicks)
      cpu=$(awk -v b=$((busy1 - busy0)) -v i=$((idle1 - idle0)) -v n="$rps" -v d="$DUR" -v hz="$(getconf CLK_TCK)" \
        'BEGIN {if (n > 0) printf "%.0f\t%.1f", b * 1e6 / hz / (n * d), 100 * i / (b + i)}')
      cs=
      if [ "${CSWITCH:-0}" != 0 ]; then
        wait "$CS"
        cs=$(awk -F, -v n="$rps" -v d="$DUR" '/context-switches/ && n > 0 {printf "%.2f", $1 / (n * d)}' "$OUT/cswitch.csv")
      fi
      errs=$(echo "$out" | grep -E 'Socket errors|Non-2xx' || true)
      echo -e "$round\t$t\t$mode\t$rps\t$cs\t$cpu" | tee -a "$RAW"
      [ -z "$errs" ] || echo "  $t $mode: $errs"
    done
    teardown
  done
done

# ------------------------------------------------------------------ summary
python3 - "$RAW" <<'EOF'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
med = {}
for t in dict.fromkeys(r["target"] for r in rows):
    for m in ("keepalive", "close"):
        v = [float(r["rps"]) for r in rows if r["target"] == t and r["mode"] == m and r["rps"]]
        med[t, m] = statistics.median(v) if v else float("nan")
def base(t):  # the real server reached directly in t's topology
    return "dr-direct" if t.startswith("dr") else "nat-direct"
print("\n| target | keep-alive req/s | × direct | × HAProxy | new conn/request req/s | × direct | × HAProxy |")
print("|---|---|---|---|---|---|---|")
for t in dict.fromkeys(r["target"] for r in rows):
    cells = [t]
    for m in ("keepalive", "close"):
        v = med[t, m]
        d = med.get((base(t), m), float("nan"))
        h = med.get(("haproxy", m), float("nan"))
        cells += [f"{v:,.0f}", f"{v / d:.2f}", f"{v / h:.2f}"]
    print("| " + " | ".join(cells) + " |")
print("\n(medians of", len({r['round'] for r in rows}), "interleaved rounds; × direct: against the real server reached directly in the same topology)")
# Each round runs every target within a few minutes, so a round's ratio to direct compares
# targets under the same load from the machine's other work; the README quotes these medians.
rps = {(r["round"], r["target"], r["mode"]): float(r["rps"]) for r in rows if r["rps"]}
print("\n| target | × direct per round, keep-alive: median [range] | new conn/request |\n|---|---|---|")
for t in dict.fromkeys(r["target"] for r in rows):
    if t == base(t):
        continue
    cells = [t]
    for m in ("keepalive", "close"):
        v = sorted(rps[k, t, m] / rps[k, base(t), m] for k, tt, mm in rps if tt == t and mm == m and (k, base(t), m) in rps)
        cells.append(f"{statistics.median(v):.2f} [{v[0]:.2f}–{v[-1]:.2f}]" if v else "")
    print("| " + " | ".join(cells) + " |")
print("\n| target | CPU µs per request, keep-alive | new conn/request | idle %, keep-alive | new conn/request |\n|---|---|---|---|---|")
for t in dict.fromkeys(r["target"] for r in rows):
    cells = [t]
    for col, fmt in (("cpu_us_per_req", "{:.0f}"), ("idle_pct", "{:.1f}")):
        for m in ("keepalive", "close"):
            v = [float(r[col]) for r in rows if r["target"] == t and r["mode"] == m and r.get(col)]
            cells.append(fmt.format(statistics.median(v)) if v else "")
    print("| " + " | ".join(cells) + " |")
if any(r["cswitch_per_req"] for r in rows):
    print("\n| target | context switches per request, keep-alive | new conn/request |\n|---|---|---|")
    for t in dict.fromkeys(r["target"] for r in rows):
        cells = [t]
        for m in ("keepalive", "close"):
            v = [float(r["cswitch_per_req"]) for r in rows if r["target"] == t and r["mode"] == m and r["cswitch_per_req"]]
            cells.append(f"{statistics.median(v):.2f}" if v else "")
        print("| " + " | ".join(cells) + " |")
EOF
