#!/usr/bin/env bash
# IKEv2 throughput (and handshake rate): one strongSwan 5.9 swanctl road-warrior client against
#   (a) a strongSwan responder (charon-systemd, kernel-libipsec = userspace ESP, like the
#       interop lab's gw/) and (b) `gatehoused`,
# with the same client, certificates, ESP cipher (AES-256-GCM), topology and iperf3 run, one
# after the other in one run. Prints both numbers and their ratio and appends a row to
# bench/results.md.
#
#   client ns  up0 10.250.201.2/30 ---- cl0 10.250.201.1/30  gateway ns  lan0 10.251.201.1/24 ---- gw0 10.251.201.10/24  lan ns
#
# Both responders use the PKI of `gatehoused init` (ECDSA P-256 CA and gateway certificate with
# SAN 10.250.201.1); the client's certificate comes from `gatehouse-certs issue-client`.
# iperf3 runs from the client to the LAN host through the tunnel (the gateway decrypts and
# forwards). Every address lives in namespaces this script creates (ghi-<pid>-*); an EXIT trap
# stops what it started, by pid, and deletes them. strongSwan's resolve plugin writes only to a
# file in the work dir (the script refuses to run where a resolvconf program exists).
#
# Usage (root): bench/ikev2-throughput.sh
# Knobs: SECS=10 PARALLEL=1 REVERSE=0|1  HS=50 (sequential connect+disconnect cycles per
#        responder; 0 = skip)  WAIT_IDLE=60 (max seconds to wait for an idle machine first)
#        GATEHOUSED=path (default: the newer of target/release/gatehoused and target/debug/gatehoused)
#        GATEHOUSE_CERTS=path (default: next to GATEHOUSED)
#        KEEP=1 (keep the work dir)  RESULTS=file (default bench/results-ikev2.md)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SECS=${SECS:-10}
PARALLEL=${PARALLEL:-1}
REVERSE=${REVERSE:-0}
HS=${HS:-50}
WAIT_IDLE=${WAIT_IDLE:-60}
if [ -z "${GATEHOUSED:-}" ]; then
  # The newer of the release and the dev build (a stale release build may predate IKEv2).
  GATEHOUSED=$ROOT/target/release/gatehoused
  if [ ! -x "$GATEHOUSED" ] || [ "$ROOT/target/debug/gatehoused" -nt "$GATEHOUSED" ]; then
    GATEHOUSED=$ROOT/target/debug/gatehoused
  fi
fi
GATEHOUSE_CERTS=${GATEHOUSE_CERTS:-$(dirname "$GATEHOUSED")/gatehouse-certs}
RESULTS=${RESULTS:-$ROOT/bench/results-ikev2.md}

[ "$(id -u)" -eq 0 ] || { echo "needs root (network namespaces, TUN)" >&2; exit 1; }
for p in ip iperf3 python3 swanctl; do
  command -v $p >/dev/null || { echo "missing $p (apt-get install strongswan-swanctl charon-systemd iperf3 iproute2 python3)" >&2; exit 1; }
done
[ -x /usr/sbin/charon-systemd ] || { echo "missing /usr/sbin/charon-systemd (apt-get install charon-systemd)" >&2; exit 1; }
for r in /sbin/resolvconf /usr/sbin/resolvconf /usr/bin/resolvconf; do
  [ -e $r ] && { echo "$r exists: strongSwan would use it and change the host's DNS; refusing" >&2; exit 1; }
done
for b in "$GATEHOUSED" "$GATEHOUSE_CERTS"; do
  [ -x "$b" ] || { echo "no binary $b (cargo build --workspace --bins)" >&2; exit 1; }
done

TAG=ghi-$$
NS_GW=$TAG-gw; NS_CL=$TAG-cl; NS_LAN=$TAG-lan
GW_UL=10.250.201.1; CL_UL=10.250.201.2
GW_LAN=10.251.201.1; LAN_HOST=10.251.201.10; LAN_NET=10.251.201.0/24
POOL=10.8.201.0/24
IPERF_PORT=5201
WORK=$(mktemp -d /tmp/gh-ikev2-bench.XXXXXX)

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

# --- helpers (same measurement as openvpn-throughput.sh) ---------------------------------------
sysjiffies() { awk '/^cpu /{b=$2+$3+$4+$7+$8+$9; print b, b+$5+$6}' /proc/stat; }
proc_jiffies() { awk '{print $14+$15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
wait_idle() {
  local b0 t0 b1 t1
  for _ in $(seq 1 $((WAIT_IDLE / 2))); do
    read -r b0 t0 < <(sysjiffies); sleep 2; read -r b1 t1 < <(sysjiffies)
    [ $(((b1 - b0) * 100 / (t1 - t0 + 1))) -le 15 ] && return 0
  done
  [ "$WAIT_IDLE" -gt 0 ] && echo "  (machine not idle after ${WAIT_IDLE}s; measuring anyway)" >&2
  return 0
}
# measure LABEL GATEWAY_PID -> prints "MBITS GW_CPU% BOX_BUSY%"
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

# charon-systemd in a namespace: DIR/strongswan.conf, DIR/swanctl/, VICI socket DIR/charon.vici.
# write_charon_conf DIR PLUGINS EXTRA_CHARON_LINES
write_charon_conf() {
  local d=$1 plugins=$2 extra=$3
  mkdir -p "$d/swanctl/x509" "$d/swanctl/x509ca" "$d/swanctl/private"
  : >"$d/resolv.conf"
  cat >"$d/strongswan.conf" <<EOF
charon {
  load_modular = no
  load = $plugins
  install_routes = yes
$extra
  filelog {
    main {
      path = $d/charon.log
      time_format = %T
      append = yes
      flush_line = yes
      default = 0
      ike = 1
    }
  }
  plugins {
    resolve {
      file = $d/resolv.conf
    }
    vici {
      socket = unix://$d/charon.vici
    }
  }
}
charon-systemd {
  journal {
    default = -1
  }
}
swanctl {
  socket = unix://$d/charon.vici
}
EOF
}
# start_charon NS DIR -> sets CHARON_PID
start_charon() {
  local ns=$1 d=$2
  rm -f "$d/charon.vici"
  ip netns exec "$ns" env STRONGSWAN_CONF="$d/strongswan.conf" SWANCTL_DIR="$d/swanctl" \
      setsid /usr/sbin/charon-systemd >"$d/stdout.log" 2>&1 </dev/null &
  CHARON_PID=$!; STARTED+=($CHARON_PID)
  for _ in $(seq 100); do [ -S "$d/charon.vici" ] && return 0; sleep 0.1; done
  echo "charon-systemd in $ns made no VICI socket:" >&2; tail -20 "$d/stdout.log" "$d/charon.log" >&2
  return 1
}
swctl() {  # DIR swanctl-args...
  local d=$1; shift
  STRONGSWAN_CONF="$d/strongswan.conf" SWANCTL_DIR="$d/swanctl" swanctl "$@"
}

# --- PKI: gatehoused init (both responders use its CA and gateway certificate) ----------------
DD=$WORK/gatehoused
"$GATEHOUSED" init --data-dir "$DD" --public-addr $GW_UL --address-space $LAN_NET \
    --client-pool $POOL >"$WORK/gatehoused-init.log" 2>&1 \
  || { echo "gatehoused init failed:" >&2; cat "$WORK/gatehoused-init.log" >&2; exit 1; }
(cd "$WORK" && "$GATEHOUSE_CERTS" --pki "$DD/pki" issue-client bench -o "$WORK/bench.crt") \
    >"$WORK/certs.log" 2>&1 || { cat "$WORK/certs.log" >&2; exit 1; }
CLIENT_KEY=$(sed -n 's/^ *key: *//p' "$WORK/certs.log")
case $CLIENT_KEY in /*) ;; *) CLIENT_KEY=$WORK/$CLIENT_KEY;; esac
[ -f "$CLIENT_KEY" ] || { echo "no client key ($CLIENT_KEY)" >&2; cat "$WORK/certs.log" >&2; exit 1; }

# --- the client: swanctl road warrior, ECDSA ---------------------------------------------------
CL=$WORK/client
write_charon_conf "$CL" "random nonce openssl aes sha1 sha2 md5 mgf1 hmac kdf gcm chapoly curve25519 gmp pem pkcs1 pkcs7 pkcs8 pkcs12 x509 revocation constraints pubkey drbg kernel-libipsec kernel-netlink resolve socket-default vici" ""
cp "$DD/pki/ca.crt" "$CL/swanctl/x509ca/ca.crt"
cp "$WORK/bench.crt" "$CL/swanctl/x509/bench.crt"
cp "$CLIENT_KEY" "$CL/swanctl/private/bench.key"
cat >"$CL/swanctl/swanctl.conf" <<EOF
connections {
  bench {
    version = 2
    remote_addrs = $GW_UL
    vips = 0.0.0.0
    proposals = default
    fragmentation = yes
    rekey_time = 1h
    local {
      auth = pubkey
      certs = bench.crt
    }
    remote {
      auth = pubkey
      id = $GW_UL
    }
    children {
      bench-child {
        remote_ts = 0.0.0.0/0
        esp_proposals = aes256gcm16
        rekey_time = 1h
      }
    }
  }
}
EOF
start_charon "$NS_CL" "$CL"; CL_PID=$CHARON_PID
swctl "$CL" --load-all --noprompt >"$WORK/client-load.log" 2>&1 \
  || { echo "client swanctl --load-all failed:" >&2; cat "$WORK/client-load.log" >&2; exit 1; }

connect() { swctl "$CL" --initiate --child bench-child --timeout 20 >>"$WORK/client-initiate.log" 2>&1; }
disconnect() { swctl "$CL" --terminate --ike bench --timeout 10 >>"$WORK/client-initiate.log" 2>&1 || true; }

# handshakes LABEL RESPONDER_PID -> prints "RATE CPU_MS_PER_HS FAILS" (HS sequential cycles of
# IKE_SA_INIT + IKE_AUTH (certs, virtual IP, CHILD SA) + DELETE, each a swanctl call)
handshakes() {
  local label=$1 pid=$2 hz s0 s1 g0 g1 fails=0
  hz=$(getconf CLK_TCK)
  s0=$(date +%s.%N); g0=$(proc_jiffies "$pid")
  for _ in $(seq "$HS"); do
    connect || fails=$((fails + 1))
    disconnect
  done
  s1=$(date +%s.%N); g1=$(proc_jiffies "$pid")
  python3 -c "n=$HS-$fails; w=$s1-$s0; print(f'{n / w:.1f} {($g1-$g0) / $hz * 1000 / max(n, 1):.2f} $fails')"
}

echo "== IKEv2, AES-256-GCM ESP-in-UDP, ${SECS}s, $PARALLEL stream(s)$([ "$REVERSE" = 1 ] && echo ", reverse"), swanctl client (ECDSA P-256)"

# --- (a) strongSwan responder -----------------------------------------------------------------
GW=$WORK/strongswan-gw
write_charon_conf "$GW" "random nonce openssl aes sha1 sha2 hmac kdf gcm chapoly curve25519 gmp pem pkcs1 pkcs8 pkcs12 x509 revocation constraints pubkey kernel-libipsec kernel-netlink socket-default vici attr" \
"  port = 500
  port_nat_t = 4500
  cookie_threshold_ip = 100
  block_threshold = 200
  cookie_threshold = 200"
cp "$DD/pki/ca.crt" "$GW/swanctl/x509ca/ca.crt"
cp "$DD/pki/server/gateway.crt" "$GW/swanctl/x509/gateway.crt"
cp "$DD/pki/server/gateway.key" "$GW/swanctl/private/gateway.key"
cat >"$GW/swanctl/swanctl.conf" <<EOF
connections {
  rw {
    version = 2
    local_addrs = $GW_UL
    pools = pool
    proposals = aes256gcm16-prfsha384-x25519-ecp256, aes256-sha256-modp2048, default
    send_cert = always
    fragmentation = yes
    dpd_delay = 30s
    unique = replace
    local {
      auth = pubkey
      certs = gateway.crt
      id = $GW_UL
    }
    remote {
      auth = pubkey
      id = %any
    }
    children {
      rw {
        local_ts = $LAN_NET
        esp_proposals = aes256gcm16, default
        dpd_action = clear
        rekey_time = 1h
      }
    }
  }
}
pools {
  pool {
    addrs = 10.8.201.2-10.8.201.254
  }
}
EOF
SS_MBIT=""; SS_CPU=""; SS_BUSY=""; SS_HS=""; SS_HSCPU=""; SS_NOTE=""
strongswan_run() {
  start_charon "$NS_GW" "$GW" || { SS_NOTE="responder did not start"; return 1; }
  SS_PID=$CHARON_PID
  swctl "$GW" --load-all --noprompt >"$WORK/gw-load.log" 2>&1 \
    || { SS_NOTE="swanctl --load-all: $(tail -1 "$WORK/gw-load.log")"; return 1; }
  connect || { SS_NOTE="client could not connect: $(tail -1 "$WORK/client-initiate.log")"; return 1; }
  read -r SS_MBIT SS_CPU SS_BUSY < <(measure strongswan "$SS_PID") || { SS_NOTE="iperf3 run failed"; return 1; }
  disconnect
  if [ "$HS" -gt 0 ]; then read -r SS_HS SS_HSCPU SS_HSFAIL < <(handshakes strongswan "$SS_PID"); fi
}
if strongswan_run; then
  echo "strongSwan: $SS_MBIT Mbit/s  (responder charon ${SS_CPU}% of a core, machine ${SS_BUSY}% busy)"
  [ -n "$SS_HS" ] && echo "strongSwan: $SS_HS handshakes/s sequential ($HS cycles, $SS_HSFAIL failed), responder ${SS_HSCPU} ms CPU each"
else
  echo "strongSwan responder: failed ($SS_NOTE)"; tail -15 "$GW/charon.log" >&2 || true
fi
[ -n "${SS_PID:-}" ] && stop_pid "$SS_PID"
sleep 1

# --- (b) gatehoused ---------------------------------------------------------------------------
echo "== same client, same run: gatehoused ($GATEHOUSED)"
GH_MBIT=""; GH_CPU=""; GH_BUSY=""; GH_HS=""; GH_HSCPU=""; GH_NOTE=""
gatehoused_run() {
  local up=0
  ip netns exec "$NS_GW" env RUST_LOG=info NO_COLOR=1 "$GATEHOUSED" run --data-dir "$DD" \
      >"$WORK/gatehoused.log" 2>&1 &
  GH_PID=$!; STARTED+=($GH_PID)
  for _ in $(seq 100); do
    kill -0 $GH_PID 2>/dev/null || break
    grep -q "gateway ready" "$WORK/gatehoused.log" && { up=1; break; }
    sleep 0.1
  done
  [ $up = 1 ] || { GH_NOTE="not ready within 10 s: $(tail -1 "$WORK/gatehoused.log")"; return 1; }
  [ -n "$(inns "$NS_GW" ss -Hlnu 'sport = :4500' 2>/dev/null)" ] \
    || { GH_NOTE="no IKEv2 listener on UDP 4500 (a build without IKEv2?)"; return 1; }
  connect || { GH_NOTE="client could not connect: $(tail -1 "$WORK/client-initiate.log")"; return 1; }
  read -r GH_MBIT GH_CPU GH_BUSY < <(measure gatehoused "$GH_PID") || { GH_NOTE="iperf3 run failed"; return 1; }
  disconnect
  if [ "$HS" -gt 0 ]; then read -r GH_HS GH_HSCPU GH_HSFAIL < <(handshakes gatehoused "$GH_PID"); fi
}
if gatehoused_run; then
  echo "gatehoused: $GH_MBIT Mbit/s  (gatehoused ${GH_CPU}% of a core, machine ${GH_BUSY}% busy)"
  [ -n "$GH_HS" ] && echo "gatehoused: $GH_HS handshakes/s sequential ($HS cycles, $GH_HSFAIL failed), gatehoused ${GH_HSCPU} ms CPU each"
else
  echo "gatehoused: failed ($GH_NOTE)"; tail -15 "$WORK/gatehoused.log" >&2 || true
fi

RATIO="n/a"; HS_RATIO="n/a"
if [ -n "$SS_MBIT" ] && [ -n "$GH_MBIT" ]; then
  RATIO=$(python3 -c "print(f'{$GH_MBIT / max($SS_MBIT, 1):.2f}')")
  echo "ratio gatehoused/strongSwan: $RATIO"
fi
if [ -n "$SS_HS" ] && [ -n "$GH_HS" ]; then
  HS_RATIO=$(python3 -c "print(f'{$GH_HS / max($SS_HS, 0.1):.2f}')")
  echo "handshake-rate ratio gatehoused/strongSwan: $HS_RATIO"
fi

# --- record -----------------------------------------------------------------------------------
if ! grep -q '^# IKEv2 throughput' "$RESULTS" 2>/dev/null; then
  cat >>"$RESULTS" <<'EOF'

# IKEv2 throughput: strongSwan swanctl client -> gateway -> LAN host (bench/ikev2-throughput.sh)

Mbit/s received by iperf3 (TCP), ESP AES-256-GCM in UDP 4500; CPU = the responder process, % of
one core; hs/s = sequential connect+disconnect cycles per second (swanctl, certificates, virtual
IP, CHILD SA, DELETE) with the responder's CPU ms per cycle; busy = whole machine (a/b).

| date (UTC) | host | cores | run | strongSwan Mbit/s (CPU) | gatehoused Mbit/s (CPU) | ratio | strongSwan hs/s (ms) | gatehoused hs/s (ms) | hs ratio | busy (a/b) | gatehoused build | commit |
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |
EOF
fi
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "-")
RUN="${SECS}s P$PARALLEL"; [ "$REVERSE" = 1 ] && RUN="$RUN -R"
SS_COL="n/a"; [ -n "$SS_MBIT" ] && SS_COL="$SS_MBIT ($SS_CPU%)"
GH_COL="n/a"; [ -n "$GH_MBIT" ] && GH_COL="$GH_MBIT ($GH_CPU%)"
SS_HCOL="n/a"; [ -n "$SS_HS" ] && SS_HCOL="$SS_HS ($SS_HSCPU)"
GH_HCOL="n/a"; [ -n "$GH_HS" ] && GH_HCOL="$GH_HS ($GH_HSCPU)"
BUILD=$(basename "$(dirname "$GATEHOUSED")")
printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s%%/%s%% | %s | %s |\n' \
  "$(date -u +%Y-%m-%dT%H:%MZ)" "$(hostname)" "$(nproc)" "$RUN" "$SS_COL" "$GH_COL" "$RATIO" \
  "$SS_HCOL" "$GH_HCOL" "$HS_RATIO" "${SS_BUSY:--}" "${GH_BUSY:--}" "$BUILD" "$COMMIT" >>"$RESULTS"
echo "appended to $RESULTS"
