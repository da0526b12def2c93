#!/usr/bin/env bash
# OpenVPN-protocol throughput: the stock OpenVPN 2.6 client against
#   (a) a stock `openvpn` server and (b) `gatehoused`,
# with the same client, cipher, topology and iperf3 run, one after the other in one run.
# Prints both numbers and their ratio and appends a line to bench/results.md.
#
#   client ns  up0 10.250.200.2/30 ---- cl0 10.250.200.1/30  gateway ns  lan0 10.251.200.1/24 ---- gw0 10.251.200.10/24  lan ns
#
# iperf3 runs from the client to the LAN host through the tunnel (so the gateway decrypts and
# forwards, as in production). Every address lives in namespaces this script creates
# (ghb-<pid>-*); an EXIT trap kills what it started and deletes them.
#
# Usage (root): bench/openvpn-throughput.sh
# Knobs: SECS=10 PROTO=udp|tcp CIPHER=AES-256-GCM|CHACHA20-POLY1305 PARALLEL=1 REVERSE=0|1
#        WAIT_IDLE=60 (max seconds to wait for an idle machine before each run; 0 = don't)
#        GATEHOUSED=path (default target/release/gatehoused)
#        GATEHOUSE_CERTS=path (default: next to GATEHOUSED)
#        KEEP=1 (keep the work dir with configs and logs)  RESULTS=file (default bench/results-openvpn.md)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SECS=${SECS:-10}
PROTO=${PROTO:-udp}
CIPHER=${CIPHER:-AES-256-GCM}
PARALLEL=${PARALLEL:-1}
REVERSE=${REVERSE:-0}
WAIT_IDLE=${WAIT_IDLE:-60}
GATEHOUSED=${GATEHOUSED:-$ROOT/target/release/gatehoused}
GATEHOUSE_CERTS=${GATEHOUSE_CERTS:-$(dirname "$GATEHOUSED")/gatehouse-certs}
RESULTS=${RESULTS:-$ROOT/bench/results-openvpn.md}

[ "$(id -u)" -eq 0 ] || { echo "needs root (network namespaces, TUN)" >&2; exit 1; }
for p in ip openvpn iperf3 openssl python3 ss; do
  command -v $p >/dev/null || { echo "missing $p (apt-get install openvpn iperf3 iproute2 openssl python3)" >&2; exit 1; }
done
case $PROTO in
  udp) SPROTO=udp; CPROTO=udp; PORT=1194; SSFLAG=-Hlnu;;
  tcp) SPROTO=tcp-server; CPROTO=tcp-client; PORT=443; SSFLAG=-Hlnt;;
  *) echo "PROTO must be udp or tcp" >&2; exit 2;;
esac

TAG=ghb-$$
NS_GW=$TAG-gw; NS_CL=$TAG-cl; NS_LAN=$TAG-lan
GW_UL=10.250.200.1; CL_UL=10.250.200.2
GW_LAN=10.251.200.1; LAN_HOST=10.251.200.10; LAN_NET=10.251.200.0/24
POOL=10.8.200.0/24
IPERF_PORT=5201
WORK=$(mktemp -d /tmp/gh-bench.XXXXXX)

CREATED_NS=()   # only these are ever deleted
STARTED=()      # pids of processes this script started

stop_pid() {  # SIGTERM, up to 3 s, then SIGKILL
  local p=$1
  kill "$p" 2>/dev/null || return 0
  for _ in $(seq 30); do kill -0 "$p" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$p" 2>/dev/null || true
}
cleanup() {
  set +e
  for p in "${STARTED[@]}"; do stop_pid "$p"; done
  for ns in "${CREATED_NS[@]}"; do
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill "$p" 2>/dev/null; done
    sleep 0.3
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
    ip netns del "$ns" 2>/dev/null
  done
  if [ "${KEEP:-0}" = 1 ]; then echo "work dir kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkns() { ip netns add "$1"; CREATED_NS+=("$1"); ip -n "$1" link set lo up; }
# Foreground only: a function sent to the background with & forks a subshell, so $! would be
# the subshell's pid; background starts use `ip netns exec` directly (it execs the program).
inns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

# --- topology -------------------------------------------------------------------------------
mkns "$NS_GW"; mkns "$NS_CL"; mkns "$NS_LAN"
ip link add up0 netns "$NS_CL" type veth peer name cl0 netns "$NS_GW"
ip link add lan0 netns "$NS_GW" type veth peer name gw0 netns "$NS_LAN"
ip -n "$NS_CL" addr add $CL_UL/30 dev up0;  ip -n "$NS_CL" link set up0 up
ip -n "$NS_GW" addr add $GW_UL/30 dev cl0;  ip -n "$NS_GW" link set cl0 up
ip -n "$NS_GW" addr add $GW_LAN/24 dev lan0; ip -n "$NS_GW" link set lan0 up
ip -n "$NS_LAN" addr add $LAN_HOST/24 dev gw0; ip -n "$NS_LAN" link set gw0 up
ip -n "$NS_LAN" route add default via $GW_LAN
inns "$NS_GW" sysctl -q -w net.ipv4.ip_forward=1
inns "$NS_CL" ping -q -c1 -W2 $GW_UL >/dev/null || { echo "underlay broken" >&2; exit 1; }

ip netns exec "$NS_LAN" iperf3 -s --forceflush -B $LAN_HOST -p $IPERF_PORT >"$WORK/iperf3-server.log" 2>&1 &
STARTED+=($!)

# --- helpers ----------------------------------------------------------------------------------
wait_log() {  # FILE PATTERN SECONDS PID -> 0 when FILE has PATTERN; 1 on timeout or exit of PID
  local f=$1 pat=$2 t=$3 pid=$4
  for _ in $(seq $((t * 10))); do
    grep -q "$pat" "$f" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}
sysjiffies() { awk '/^cpu /{b=$2+$3+$4+$7+$8+$9; print b, b+$5+$6}' /proc/stat; }
proc_jiffies() { awk '{print $14+$15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
wait_idle() {  # other builds share these 2 cores: wait (bounded) for them to quiet down
  local b0 t0 b1 t1
  for _ in $(seq 1 $((WAIT_IDLE / 2))); do
    read -r b0 t0 < <(sysjiffies); sleep 2; read -r b1 t1 < <(sysjiffies)
    [ $(((b1 - b0) * 100 / (t1 - t0 + 1))) -le 15 ] && return 0
  done
  [ "$WAIT_IDLE" -gt 0 ] && echo "  (machine not idle after ${WAIT_IDLE}s; measuring anyway)" >&2
  return 0
}

# measure LABEL GATEWAY_PID -> prints "MBITS GW_CPU% BOX_BUSY%" on stdout
measure() {
  local label=$1 gwpid=$2 hz b0 t0 b1 t1 g0 g1 s0 s1 flags=()
  hz=$(getconf CLK_TCK)
  [ "$REVERSE" = 1 ] && flags+=(-R)
  inns "$NS_CL" ping -q -c1 -W2 $LAN_HOST >/dev/null || { echo "  $label: LAN host unreachable through the tunnel" >&2; return 1; }
  wait_idle
  read -r b0 t0 < <(sysjiffies); g0=$(proc_jiffies "$gwpid"); s0=$(date +%s.%N)
  inns "$NS_CL" iperf3 -J --connect-timeout 3000 -c $LAN_HOST -p $IPERF_PORT -t "$SECS" \
      -P "$PARALLEL" "${flags[@]}" >"$WORK/iperf3-$label.json" 2>&1 || true
  s1=$(date +%s.%N); g1=$(proc_jiffies "$gwpid"); read -r b1 t1 < <(sysjiffies)
  python3 - "$WORK/iperf3-$label.json" "$g0" "$g1" "$s0" "$s1" "$hz" $((b1 - b0)) $((t1 - t0)) <<'PY'
import json, sys
path, g0, g1, s0, s1, hz, busy, total = sys.argv[1:]
try:
    j = json.load(open(path))
except ValueError:
    sys.exit("iperf3 output is not JSON: " + open(path).read()[:300])
if "error" in j:
    sys.exit("iperf3: " + j["error"])
end = j["end"]
bps = end.get("sum_received", end.get("sum", {})).get("bits_per_second", 0)
wall = float(s1) - float(s0)
gw_cpu = (float(g1) - float(g0)) / float(hz) / wall * 100
print(f"{bps / 1e6:.0f} {gw_cpu:.0f} {100 * int(busy) / max(int(total), 1):.0f}")
PY
}

start_client() {  # LABEL CONFIG EXTRA_ARGS... -> sets CLIENT_PID; 0 when the tunnel is up
  local label=$1 conf=$2; shift 2
  ip netns exec "$NS_CL" openvpn --config "$conf" --dev-type tun --dev ghb-tun --disable-dco \
      --data-ciphers "$CIPHER" --verb 3 "$@" >"$WORK/client-$label.log" 2>&1 &
  CLIENT_PID=$!; STARTED+=($CLIENT_PID)
  wait_log "$WORK/client-$label.log" "Initialization Sequence Completed" 20 $CLIENT_PID
}

# --- PKI for the stock server (throwaway, ECDSA P-256) ----------------------------------------
PKI=$WORK/pki; mkdir -p "$PKI"
cat >"$PKI/ext.cnf" <<EOF
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
[server]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature, keyAgreement
extendedKeyUsage = serverAuth
subjectAltName = IP:$GW_UL
[client]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature, keyAgreement
extendedKeyUsage = clientAuth
EOF
(
  cd "$PKI"
  for n in ca server client; do openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out $n.key 2>/dev/null; done
  openssl req -new -key ca.key -subj /CN=ghb-ca -out ca.csr
  openssl x509 -req -in ca.csr -signkey ca.key -days 2 -extfile ext.cnf -extensions ca -out ca.crt 2>/dev/null
  for n in server client; do
    openssl req -new -key $n.key -subj /CN=$n -out $n.csr
    openssl x509 -req -in $n.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
      -extfile ext.cnf -extensions $n -out $n.crt 2>/dev/null
  done
)

# --- (a) stock openvpn server -----------------------------------------------------------------
cat >"$WORK/server.conf" <<EOF
dev-type tun
dev ghb-stun
topology subnet
server ${POOL%/*} 255.255.255.0
proto $SPROTO
port $PORT
local $GW_UL
push "route ${LAN_NET%/*} 255.255.255.0"
ca $PKI/ca.crt
cert $PKI/server.crt
key $PKI/server.key
dh none
tls-version-min 1.3
data-ciphers AES-256-GCM:CHACHA20-POLY1305
disable-dco
keepalive 10 60
verb 3
EOF
cat >"$WORK/client.conf" <<EOF
client
proto $CPROTO
remote $GW_UL $PORT
nobind
ca $PKI/ca.crt
cert $PKI/client.crt
key $PKI/client.key
remote-cert-tls server
EOF

echo "== $PROTO $CIPHER, ${SECS}s, $PARALLEL stream(s)$([ "$REVERSE" = 1 ] && echo ", reverse"): stock openvpn server"
ip netns exec "$NS_GW" openvpn --config "$WORK/server.conf" >"$WORK/server-openvpn.log" 2>&1 &
OVPN_PID=$!; STARTED+=($OVPN_PID)
wait_log "$WORK/server-openvpn.log" "Initialization Sequence Completed" 10 $OVPN_PID \
  || { echo "stock openvpn server did not start:" >&2; tail -20 "$WORK/server-openvpn.log" >&2; exit 1; }
start_client openvpn "$WORK/client.conf" \
  || { echo "client did not connect to the stock server:" >&2; tail -20 "$WORK/client-openvpn.log" >&2; exit 1; }
grep -q "Data Channel: cipher '$CIPHER'" "$WORK/client-openvpn.log" \
  || echo "  warning: client log does not show data cipher $CIPHER" >&2
read -r OVPN_MBIT OVPN_CPU OVPN_BUSY < <(measure openvpn $OVPN_PID) || { echo "openvpn run failed" >&2; exit 1; }
echo "openvpn:    $OVPN_MBIT Mbit/s  (server process ${OVPN_CPU}% of a core, machine ${OVPN_BUSY}% busy)"
stop_pid $CLIENT_PID; stop_pid $OVPN_PID

# --- (b) gatehoused ---------------------------------------------------------------------------
echo "== same client, same run: gatehoused ($GATEHOUSED)"
GH_MBIT=""; GH_CPU=""; GH_BUSY=""; GH_NOTE=""
gatehoused_run() {
  local dd=$WORK/gatehoused pid
  [ -x "$GATEHOUSED" ] || { GH_NOTE="no binary at $GATEHOUSED (cargo build --release)"; return 1; }
  [ -x "$GATEHOUSE_CERTS" ] || { GH_NOTE="no binary at $GATEHOUSE_CERTS"; return 1; }
  inns "$NS_GW" "$GATEHOUSED" init --data-dir "$dd" --public-addr $GW_UL \
      --address-space $LAN_NET --client-pool $POOL >"$WORK/gatehoused-init.log" 2>&1 \
    || { GH_NOTE="init failed: $(tail -1 "$WORK/gatehoused-init.log")"; return 1; }
  ip netns exec "$NS_GW" "$GATEHOUSED" run --data-dir "$dd" >"$WORK/gatehoused.log" 2>&1 &
  pid=$!; STARTED+=($pid); GH_PID=$pid
  # Started = still running and listening on the OpenVPN port within 10 s.
  local up=0
  for _ in $(seq 100); do
    kill -0 $pid 2>/dev/null || break
    [ -n "$(inns "$NS_GW" ss $SSFLAG "sport = :$PORT" 2>/dev/null)" ] && { up=1; break; }
    sleep 0.1
  done
  if [ $up = 0 ]; then
    if kill -0 $pid 2>/dev/null; then GH_NOTE="not listening on $PROTO port $PORT within 10 s"
    else wait $pid; GH_NOTE="gatehoused run exited with status $?"; fi
    GH_NOTE="$GH_NOTE: $(tail -1 "$WORK/gatehoused.log")"
    return 1
  fi
  "$GATEHOUSE_CERTS" --pki "$dd/pki" issue-client bench >"$WORK/certs.log" 2>&1 \
    && "$GATEHOUSE_CERTS" --pki "$dd/pki" export bench --gateway $GW_UL --format ovpn \
         -o "$WORK/bench.ovpn" >>"$WORK/certs.log" 2>&1 \
    || { GH_NOTE="client profile: $(tail -1 "$WORK/certs.log")"; return 1; }
  local extra=()
  # The exported profile is for UDP (`proto udp`, `remote HOST 1194`); options on the command
  # line would only add a second remote, so rewrite the profile itself for TCP.
  if [ "$PROTO" = tcp ]; then
    sed -i -e 's/^proto udp$/proto tcp-client/' -e "s/^remote $GW_UL 1194\$/remote $GW_UL $PORT/" "$WORK/bench.ovpn"
    grep -q "^proto tcp-client" "$WORK/bench.ovpn" && grep -q "^remote $GW_UL $PORT\$" "$WORK/bench.ovpn" \
      || { GH_NOTE="could not turn the exported profile into a TCP one"; return 1; }
  fi
  start_client gatehoused "$WORK/bench.ovpn" "${extra[@]}" \
    || { GH_NOTE="client did not connect: $(tail -1 "$WORK/client-gatehoused.log")"; return 1; }
  read -r GH_MBIT GH_CPU GH_BUSY < <(measure gatehoused $pid) || { GH_NOTE="iperf3 run failed"; return 1; }
}
if gatehoused_run; then
  echo "gatehoused: $GH_MBIT Mbit/s  (gatehoused ${GH_CPU}% of a core, machine ${GH_BUSY}% busy)"
  RATIO=$(python3 -c "print(f'{$GH_MBIT / max($OVPN_MBIT, 1):.2f}')")
  echo "ratio gatehoused/openvpn: $RATIO"
else
  echo "gatehoused: not available ($GH_NOTE)"
  RATIO="n/a"
fi

# --- record -----------------------------------------------------------------------------------
if [ ! -f "$RESULTS" ]; then
  cat >"$RESULTS" <<'EOF'
# OpenVPN-protocol throughput: stock client -> gateway -> LAN host (bench/openvpn-throughput.sh)

Mbit/s received by iperf3 (TCP); CPU = the gateway process, % of one core; busy = whole machine.

| date (UTC) | host | cores | proto | cipher | run | openvpn Mbit/s (CPU) | gatehoused Mbit/s (CPU) | ratio | busy (a/b) | commit |
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |
EOF
fi
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "-")
RUN="${SECS}s P$PARALLEL"; [ "$REVERSE" = 1 ] && RUN="$RUN -R"
GH_COL="n/a"; [ -n "$GH_MBIT" ] && GH_COL="$GH_MBIT ($GH_CPU%)"
printf '| %s | %s | %s | %s | %s | %s | %s (%s%%) | %s | %s | %s%%/%s | %s |\n' \
  "$(date -u +%Y-%m-%dT%H:%MZ)" "$(hostname)" "$(nproc)" "$PROTO" "$CIPHER" "$RUN" \
  "$OVPN_MBIT" "$OVPN_CPU" "$GH_COL" "$RATIO" "$OVPN_BUSY" "${GH_BUSY:--}" "$COMMIT" >>"$RESULTS"
echo "appended to $RESULTS"
