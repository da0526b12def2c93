#!/usr/bin/env bash
# Sessions and handshakes: gatehouse-loadgen (bench/loadgen) against gatehoused, both release
# builds, in namespaces this script creates:
#
#   loadgen ns ghb-lg<pid>-cl  up0 10.250.175.2/24 ---- cl0 10.250.175.1/24  gateway ns ghb-lg<pid>-gw
#                                                        TUN ghb-lg0, client pool 10.178.0.0/16 (.0.1 = gateway)
#
# (1) IKEv2 handshake rate: HS_SESSIONS IKEv2 sessions started as fast as HS_CONCURRENCY
#     allows (ECDSA P-256 client certificates, x25519, AES-256-GCM), no hold.
# (2) Sessions held: SESSIONS sessions (half OpenVPN UDP, half IKEv2; OVPN_SHARE percent
#     OpenVPN), started at RATE per second, held HOLD seconds with keepalives and PPS echo
#     requests per second per session to the gateway's tunnel address; the gateway's VmRSS
#     before, with everyone up, at the end of the hold, per session.
# Each run gets a fresh gatehoused (same baseline memory). With PIN=1 (default) the gateway runs on core 1 and the load generator on core 0
# (taskset), so (1) is "handshakes per second on one gateway core". Prints the load
# generator's summaries and appends a row to bench/results-sessions.md (date, commit,
# machine load: other processes' share of the CPU during each run).
#
# Usage (root): bench/sessions.sh
# Knobs: SESSIONS=10000 OVPN_SHARE=50 RATE=0 CONCURRENCY=128 HOLD=90 PPS=1 PACKET=100
#        HS_SESSIONS=3000 HS_CONCURRENCY=64 (0 skips run 1)  PIN=1  THREADS=1 (loadgen threads)
#        SOURCES=64 (source addresses of the sessions, 10.250.175.100 on; 0 = all from .2: the
#        gateway's per-address handshake caps then throttle the load generator)
#        NO_BUILD=1 (use existing binaries)  BIN=dir (default target/release)  KEEP=1 (keep the work dir)
#        RESULTS=file (default bench/results-sessions.md)  WAIT_IDLE=60 (0 = don't wait)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

SESSIONS=${SESSIONS:-10000}
OVPN_SHARE=${OVPN_SHARE:-50}
RATE=${RATE:-0}
CONCURRENCY=${CONCURRENCY:-128}
HOLD=${HOLD:-90}
PPS=${PPS:-1}
PACKET=${PACKET:-100}
HS_SESSIONS=${HS_SESSIONS:-3000}
HS_CONCURRENCY=${HS_CONCURRENCY:-64}
PIN=${PIN:-1}
THREADS=${THREADS:-1}
SOURCES=${SOURCES:-64}
WAIT_IDLE=${WAIT_IDLE:-60}
RESULTS=${RESULTS:-$ROOT/bench/results-sessions.md}
BIN=${BIN:-$ROOT/target/release}

[ "$(id -u)" -eq 0 ] || { echo "needs root (network namespaces, TUN)" >&2; exit 1; }
for p in ip python3 taskset; do
  command -v $p >/dev/null || { echo "missing $p (apt-get install iproute2 python3 util-linux)" >&2; exit 1; }
done

if [ "${NO_BUILD:-0}" != 1 ]; then
  echo "== cargo build --release -p gatehouse-loadgen -p gatehouse-server -p gatehouse-certs"
  (cd "$ROOT" && cargo build --release -p gatehouse-loadgen -p gatehouse-server -p gatehouse-certs)
fi
for b in gatehoused gatehouse-loadgen; do
  [ -x "$BIN/$b" ] || { echo "no $BIN/$b (cargo build --release)" >&2; exit 1; }
done

# One UDP socket per session in the load generator.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" -gt $((SESSIONS + 100)) ] || { echo "open-file limit $(ulimit -n) is below $((SESSIONS + 100))" >&2; exit 1; }

TAG=ghb-lg$$
NS_GW=$TAG-gw; NS_CL=$TAG-cl
GW_UL=10.250.175.1; CL_UL=10.250.175.2
POOL=10.178.0.0/16; GW_TUN=10.178.0.1
WORK=$(mktemp -d /tmp/gh-bench-sessions.XXXXXX)
bench_traps

CORE_GW=(); CORE_LG=()
if [ "$PIN" = 1 ] && [ "$(nproc)" -ge 2 ]; then CORE_GW=(taskset -c 1); CORE_LG=(taskset -c 0); fi

# --- topology -------------------------------------------------------------------------------
mkns "$NS_GW"; mkns "$NS_CL"
ip link add up0 netns "$NS_CL" type veth peer name cl0 netns "$NS_GW"
ip -n "$NS_CL" addr add $CL_UL/24 dev up0; ip -n "$NS_CL" link set up0 up
# The sessions' source addresses (SOURCES of them from .100): the gateway caps handshakes in
# progress per address (64 OpenVPN, 16 half-open IKE SAs), as a real population's many
# addresses never meet it.
SRC_FIRST=10.250.175.100
[ "$SOURCES" -le 150 ] || { echo "SOURCES must be at most 150" >&2; exit 1; }
for i in $(seq 0 $((SOURCES - 1))); do ip -n "$NS_CL" addr add 10.250.175.$((100 + i))/24 dev up0; done
SRC_ARGS=(); [ "$SOURCES" -gt 0 ] && SRC_ARGS=(--sources "$SOURCES" --source-first $SRC_FIRST)
ip -n "$NS_GW" addr add $GW_UL/24 dev cl0; ip -n "$NS_GW" link set cl0 up
inns "$NS_CL" ping -q -c1 -W2 $GW_UL >/dev/null || { echo "underlay broken" >&2; exit 1; }

# --- gateway ----------------------------------------------------------------------------------
DD=$WORK/gw
"$BIN/gatehoused" init --data-dir "$DD" --public-addr $GW_UL --client-pool $POOL >"$WORK/init.log" 2>&1 \
  || { echo "gatehoused init failed: $(tail -3 "$WORK/init.log")" >&2; exit 1; }
python3 - "$DD/gateway.toml" "$TAG" <<'PY'
import re, sys
path, tag = sys.argv[1:]
s = open(path).read()
s = re.sub(r'(?m)^tun_name = .*$', 'tun_name = "ghb-lg0"', s)
s = re.sub(r'(?m)^tcp_port = .*$', 'tcp_port = 0', s)
# Handshakes in flight come from one address at a rate far beyond a real client population:
# no COOKIE round trip (the threshold is a DoS guard, not what this measures).
s = re.sub(r'(?m)^cookie_threshold = .*$', 'cookie_threshold = 100000', s)
open(path, "w").write(s)
PY
TOTAL=$SESSIONS; [ "$HS_SESSIONS" -gt "$TOTAL" ] && TOTAL=$HS_SESSIONS
echo "== issuing $TOTAL client certificates (ECDSA P-256) into $DD/pki"
"$BIN/gatehouse-loadgen" issue --pki "$DD/pki" --count "$TOTAL" --prefix lg- 2>&1 | sed 's/^/  /'

start_gateway() {  # LABEL -> GW_PID; a fresh gatehoused, so each run's RSS starts from the same baseline
  local label=$1
  ip netns exec "$NS_GW" "${CORE_GW[@]}" env NO_COLOR=1 GATEHOUSE_LOG=info "$BIN/gatehoused" run --data-dir "$DD" >"$WORK/gatehoused-$label.log" 2>&1 &
  GW_PID=$!; STARTED+=($GW_PID)
  wait_log "$WORK/gatehoused-$label.log" "gateway ready" 20 $GW_PID \
    || { echo "gatehoused did not start:" >&2; tail -20 "$WORK/gatehoused-$label.log" >&2; exit 1; }
  # `ip netns exec`, `taskset` and `env` exec in place, so $! is gatehoused itself.
  grep -q gatehoused "/proc/$GW_PID/comm" || { echo "pid $GW_PID is not gatehoused" >&2; exit 1; }
}

clients_listed() {  # what `gatehoused status` (the admin API) reports, or "?"
  "$BIN/gatehoused" status --data-dir "$DD" --json 2>/dev/null \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["clients"])' 2>/dev/null || echo "?"
}

udp_rcvbuf_errors() {  # NS -> Udp RcvbufErrors of that namespace (/proc/net/snmp is per namespace)
  ip netns exec "$1" awk '/^Udp:/ { if (!h) { for (i = 1; i <= NF; i++) c[$i] = i; h = 1 } else print $c["RcvbufErrors"] }' /proc/net/snmp
}

tun_tx_dropped() {  # TX drops of the gateway's TUN device (kernel -> gatehoused direction)
  ip -n "$NS_GW" -s link show ghb-lg0 2>/dev/null | awk '/TX:/ { getline; print $4; exit }'
}

# loadgen LABEL ARGS... -> WORK/LABEL.json; LOAD_OTHER = % of the machine used by other processes
loadgen() {
  local label=$1; shift
  local b0 t0 b1 t1 g0 g1 l0 l1 pid
  wait_idle
  read -r b0 t0 < <(sysjiffies); g0=$(proc_jiffies $GW_PID)
  ip netns exec "$NS_CL" "${CORE_LG[@]}" "$BIN/gatehouse-loadgen" --gateway $GW_UL --pki "$DD/pki" \
      --gateway-pid $GW_PID --threads "$THREADS" "${SRC_ARGS[@]}" --json "$@" >"$WORK/$label.json" 2> >(tee "$WORK/$label.log" | sed 's/^/  /' >&2) &
  pid=$!; STARTED+=($pid)
  l1=0
  while kill -0 $pid 2>/dev/null; do l1=$(proc_jiffies $pid); sleep 0.5; done
  wait $pid || { echo "gatehouse-loadgen ($label) failed" >&2; return 1; }
  read -r b1 t1 < <(sysjiffies); g1=$(proc_jiffies $GW_PID)
  LOAD_OTHER=$(( ((b1 - b0) - (g1 - g0) - l1) * 100 / (t1 - t0 + 1) ))
  [ "$LOAD_OTHER" -lt 0 ] && LOAD_OTHER=0
  LOAD_ALL=$(( (b1 - b0) * 100 / (t1 - t0 + 1) ))
  echo "  machine: ${LOAD_ALL}% busy during the run, ${LOAD_OTHER}% of it other processes (builds, tests)"
  echo "  UDP receive-buffer drops (kernel, whole run so far): gateway $(udp_rcvbuf_errors "$NS_GW"), load generator $(udp_rcvbuf_errors "$NS_CL"); TUN ghb-lg0 queue drops (packets the kernel could not queue for gatehoused): $(tun_tx_dropped)"
}

HS_ROW="-"; HS_LOAD="-"
if [ "$HS_SESSIONS" -gt 0 ]; then
  start_gateway hs
  echo "== (1) IKEv2 handshake rate: $HS_SESSIONS sessions, $HS_CONCURRENCY in flight"
  loadgen hs --ikev2 "$HS_SESSIONS" --concurrency "$HS_CONCURRENCY" --hold 0 --linger 3
  HS_LOAD="$LOAD_OTHER%"
  python3 - "$WORK/hs.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
p = r["phases"][0]
print(f"ikev2 handshakes: {p['established']}/{p['requested']} in {p['seconds']:.2f} s = {p['handshakes_per_sec']:.0f}/s, "
      f"gateway {p['gateway_cpu_percent'] or 0:.0f}% of its core, {p['gateway_cpu_ms_per_handshake'] or 0:.3f} ms CPU per handshake "
      f"(= {p['gateway_handshakes_per_core_sec'] or 0:.0f}/s per core); load generator {p['loadgen_cpu_ms_per_handshake'] or 0:.3f} ms per handshake")
PY
  HS_ROW=$(python3 - "$WORK/hs.json" <<'PY'
import json, sys
p = json.load(open(sys.argv[1]))["phases"][0]
print(f"{p['handshakes_per_sec']:.0f} ({p['gateway_cpu_percent'] or 0:.0f}%, {p['gateway_cpu_ms_per_handshake'] or 0:.2f} ms)")
PY
)
  stop_pid $GW_PID
fi

N_OVPN=$((SESSIONS * OVPN_SHARE / 100)); N_IKE=$((SESSIONS - N_OVPN))
start_gateway held
echo "== (2) $SESSIONS sessions held ($N_OVPN OpenVPN, $N_IKE IKEv2), rate ${RATE}/s (0 = unlimited), $CONCURRENCY in flight, hold ${HOLD}s, $PPS pps x $PACKET B each"
# The most clients `gatehoused status` listed during the run, asked every 2 s (the load
# generator ends its sessions when it exits).
( most=0; while sleep 2; do c=$(clients_listed); [ "$c" != "?" ] && [ "$c" -gt "$most" ] && most=$c && echo "$most" >"$WORK/listed"; done ) &
LISTER=$!; STARTED+=($LISTER)
loadgen held --openvpn "$N_OVPN" --ikev2 "$N_IKE" --rate "$RATE" --concurrency "$CONCURRENCY" \
  --hold "$HOLD" --pps "$PPS" --packet-size "$PACKET" --target $GW_TUN --handshake-timeout 60
HELD_LOAD="$LOAD_OTHER%"
kill $LISTER 2>/dev/null; wait $LISTER 2>/dev/null || true
echo "  gateway listed at most $(cat "$WORK/listed" 2>/dev/null || echo "?") clients during the hold (gatehoused status)"
python3 - "$WORK/held.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
for p in r["phases"]:
    print(f"{p['proto']}: {p['established']}/{p['requested']} up ({p['failed']} failed) at {p['handshakes_per_sec']:.0f} handshakes/s, "
          f"{p['held']} held at the end ({p['silent']} silent, {p['lost']} lost)")
m = r.get("gateway_memory") or {}
kib = lambda k: f"{m[k]/1024:.1f} MiB" if m.get(k) is not None else "-"
print(f"held: {r['held']} sessions after {r['hold_seconds']:.0f} s; gateway RSS {kib('before_kib')} before, "
      f"{kib('established_kib')} all up, {kib('end_of_hold_kib')} end of hold, peak {kib('peak_sampled_kib')} "
      f"-> {m.get('per_session_kib') or 0:.1f} KiB per session")
t = r.get("traffic")
if t:
    mb = lambda b: b * 8 / max(t["seconds"], 1e-3) / 1e6
    print(f"traffic: {t['sent_packets']} echo requests, {t['echo_replies']} replies, "
          f"{mb(t['sent_bytes']):.2f} Mbit/s out, {mb(t['received_bytes']):.2f} Mbit/s back")
PY

# --- record -----------------------------------------------------------------------------------
if [ ! -f "$RESULTS" ]; then
  cat >"$RESULTS" <<'EOF'
# Sessions held and handshake rates: gatehouse-loadgen -> gatehoused (bench/sessions.sh)

Release builds (build column: the binaries' folder); gateway pinned to one core and the load generator to the other (PIN=1).
IKEv2 hs/s = run (1), HS_SESSIONS sessions started as fast as HS_CONCURRENCY allows, with
the gateway's CPU (% of its core, ms per handshake). Held = run (2): sessions up at the end of
the hold out of those requested (OpenVPN+IKEv2), OpenVPN and IKEv2 handshake rates of its two
phases, gateway VmRSS before / at the end of the hold and per held session, echo replies /
requests. Other load = CPU used by other processes during each run (1/2), % of the machine.

| date (UTC) | host | cores | build | commit | IKEv2 hs/s (gw CPU) | sessions | held | hold s | ovpn/ikev2 hs/s | RSS before -> end (MiB) | KiB/session | echo replies/sent | other load (1/2) | loadavg |
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |
EOF
fi
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "-")
LOADAVG=$(cut -d' ' -f1-3 /proc/loadavg)
ROW=$(python3 - "$WORK/held.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
req = sum(p["requested"] for p in r["phases"])
rates = "/".join(f"{p['handshakes_per_sec']:.0f}" for p in r["phases"])
m = r.get("gateway_memory") or {}
mem = f"{m.get('before_kib', 0)/1024:.1f} -> {(m.get('end_of_hold_kib') or 0)/1024:.1f}"
per = f"{m.get('per_session_kib') or 0:.1f}"
t = r.get("traffic") or {}
echo = f"{t.get('echo_replies', 0)}/{t.get('sent_packets', 0)}" if t else "-"
print(f"{req} | {r['held']} | {r['hold_seconds']:.0f} | {rates} | {mem} | {per} | {echo}")
PY
)
printf '| %s | %s | %s | %s | %s | %s | %s | %s/%s | %s |\n' \
  "$(date -u +%Y-%m-%dT%H:%MZ)" "$(hostname)" "$(nproc)" "$(basename "$BIN")" "$COMMIT" "$HS_ROW" "$ROW" \
  "$HS_LOAD" "$HELD_LOAD" "$LOADAVG" >>"$RESULTS"
echo "appended to $RESULTS"
