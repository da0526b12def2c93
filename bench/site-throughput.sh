#!/usr/bin/env bash
# Site-to-site throughput: iperf3 (TCP) from a host behind gateway 1 to a host behind gateway 2
# through an IKEv2 tunnel between the gateways (PSK, route-based, IKE
# aes256gcm16-prfsha384-x25519, ESP AES-256-GCM), one after the other in one run, with
#   (a) strongSwan <-> strongSwan (charon-systemd + swanctl, kernel-libipsec = userspace ESP)
#   (b) gatehoused <-> gatehoused (`[[connection]]` type vnet-to-vnet)
# on the same topology. Prints both numbers and their ratio (b)/(a) and appends a row to
# bench/results-site.md.
#
#   h1 ns eth0 10.90.1.10/24 -- lan0 10.90.1.1/24 [gw1 ns] ul0 10.90.0.1/24 ----
#   ---- ul0 10.90.0.2/24 [gw2 ns] lan0 10.90.2.1/24 -- eth0 10.90.2.10/24 h2 ns
#
# Hosts route everything via their gateway; the gateways forward but have no route to the
# other LAN except through the tunnel, so nothing crosses in clear. gw1 initiates, gw2
# responds. Route-based: traffic selectors 0.0.0.0/0 on both sides, the remote LAN routed into
# the tunnel device (strongSwan: `ip route replace 10.90.x.0/24 dev ipsec0` after deleting
# charon's `lookup 220` rule, as tests/src/swan_site.rs does; gatehoused: its TUN device).
# Every address lives in namespaces this script creates (ghs-<pid>-*); an EXIT trap stops what
# it started, by pid, and deletes them.
#
# Usage (root): bench/site-throughput.sh
# Knobs: SECS=10 PARALLEL=1 REVERSE=0|1  WAIT_IDLE=30 (max seconds to wait for an idle machine)
#        GATEHOUSED=path (default target/release/gatehoused)
#        KEEP=1 (keep the work dir)  RESULTS=file (default bench/results-site.md)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SECS=${SECS:-10}
PARALLEL=${PARALLEL:-1}
REVERSE=${REVERSE:-0}
WAIT_IDLE=${WAIT_IDLE:-30}
GATEHOUSED=${GATEHOUSED:-$ROOT/target/release/gatehoused}
RESULTS=${RESULTS:-$ROOT/bench/results-site.md}
IKE_PROPOSAL=aes256gcm16-prfsha384-x25519
ESP_PROPOSAL=aes256gcm16
PSK="gatehouse site bench $$"

[ "$(id -u)" -eq 0 ] || { echo "needs root (network namespaces, TUN)" >&2; exit 1; }
for p in ip iperf3 python3 swanctl; do
  command -v $p >/dev/null || { echo "missing $p (apt-get install strongswan-swanctl charon-systemd iperf3 iproute2 python3)" >&2; exit 1; }
done
[ -x /usr/sbin/charon-systemd ] || { echo "missing /usr/sbin/charon-systemd (apt-get install charon-systemd)" >&2; exit 1; }
[ -x "$GATEHOUSED" ] || { echo "no binary $GATEHOUSED (cargo build --release --bin gatehoused)" >&2; exit 1; }

TAG=ghs-$$
NS_GW1=$TAG-gw1; NS_GW2=$TAG-gw2; NS_H1=$TAG-h1; NS_H2=$TAG-h2
UL1=10.90.0.1; UL2=10.90.0.2
LAN1=10.90.1.0/24; LAN2=10.90.2.0/24
GWL1=10.90.1.1; GWL2=10.90.2.1
H1=10.90.1.10; H2=10.90.2.10
POOL1=10.90.101.0/24; POOL2=10.90.102.0/24   # gatehoused init wants a client pool
IPERF_PORT=5201
WORK=$(mktemp -d /tmp/gh-site-bench.XXXXXX)

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
mkns "$NS_GW1"; mkns "$NS_GW2"; mkns "$NS_H1"; mkns "$NS_H2"
ip link add ul0 netns "$NS_GW1" type veth peer name ul0 netns "$NS_GW2"
ip link add lan0 netns "$NS_GW1" type veth peer name eth0 netns "$NS_H1"
ip link add lan0 netns "$NS_GW2" type veth peer name eth0 netns "$NS_H2"
ip -n "$NS_GW1" addr add $UL1/24 dev ul0;   ip -n "$NS_GW1" link set ul0 up
ip -n "$NS_GW2" addr add $UL2/24 dev ul0;   ip -n "$NS_GW2" link set ul0 up
ip -n "$NS_GW1" addr add $GWL1/24 dev lan0; ip -n "$NS_GW1" link set lan0 up
ip -n "$NS_GW2" addr add $GWL2/24 dev lan0; ip -n "$NS_GW2" link set lan0 up
ip -n "$NS_H1" addr add $H1/24 dev eth0;    ip -n "$NS_H1" link set eth0 up
ip -n "$NS_H2" addr add $H2/24 dev eth0;    ip -n "$NS_H2" link set eth0 up
ip -n "$NS_H1" route add default via $GWL1
ip -n "$NS_H2" route add default via $GWL2
inns "$NS_GW1" sysctl -q -w net.ipv4.ip_forward=1
inns "$NS_GW2" sysctl -q -w net.ipv4.ip_forward=1
inns "$NS_GW1" ping -q -c1 -W2 $UL2 >/dev/null || { echo "underlay broken" >&2; exit 1; }
inns "$NS_H1" ping -q -c1 -W2 $GWL1 >/dev/null || { echo "LAN 1 broken" >&2; exit 1; }
inns "$NS_H2" ping -q -c1 -W2 $GWL2 >/dev/null || { echo "LAN 2 broken" >&2; exit 1; }
if inns "$NS_H1" ping -q -c1 -W1 $H2 >/dev/null 2>&1; then
  echo "h1 reaches h2 without a tunnel: refusing to measure" >&2; exit 1
fi

ip netns exec "$NS_H2" iperf3 -s --forceflush -B $H2 -p $IPERF_PORT >"$WORK/iperf3-server.log" 2>&1 &
STARTED+=($!)

# --- measurement (as ikev2-throughput.sh) ------------------------------------------------------
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
# wait_ping NS ADDR SECS: the first ping through a fresh tunnel may be lost
wait_ping() {
  for _ in $(seq "$3"); do inns "$1" ping -q -c1 -W1 "$2" >/dev/null 2>&1 && return 0; done
  return 1
}
# measure LABEL GW1_PID GW2_PID -> prints "MBITS GW1_CPU% GW2_CPU% BOX_BUSY% RETRANSMITS"
measure() {
  local label=$1 p1=$2 p2=$3 hz b0 t0 b1 t1 a0 a1 c0 c1 s0 s1 flags=()
  hz=$(getconf CLK_TCK)
  [ "$REVERSE" = 1 ] && flags+=(-R)
  wait_ping "$NS_H1" $H2 20 || { echo "  $label: h2 unreachable through the tunnel" >&2; return 1; }
  wait_idle
  read -r b0 t0 < <(sysjiffies); a0=$(proc_jiffies "$p1"); c0=$(proc_jiffies "$p2"); s0=$(date +%s.%N)
  inns "$NS_H1" iperf3 -J --connect-timeout 3000 -c $H2 -p $IPERF_PORT -t "$SECS" \
      -P "$PARALLEL" "${flags[@]}" >"$WORK/iperf3-$label.json" 2>&1 || true
  s1=$(date +%s.%N); a1=$(proc_jiffies "$p1"); c1=$(proc_jiffies "$p2"); read -r b1 t1 < <(sysjiffies)
  python3 - "$WORK/iperf3-$label.json" "$a0" "$a1" "$c0" "$c1" "$s0" "$s1" "$hz" $((b1 - b0)) $((t1 - t0)) <<'PY'
import json, sys
path, a0, a1, c0, c1, s0, s1, hz, busy, total = sys.argv[1:]
try:
    j = json.load(open(path))
except ValueError:
    sys.exit("iperf3 output is not JSON: " + open(path).read()[:300])
if "error" in j:
    sys.exit("iperf3: " + j["error"])
end = j["end"]
bps = end.get("sum_received", end.get("sum", {})).get("bits_per_second", 0)
retr = end.get("sum_sent", {}).get("retransmits", "-")
wall = float(s1) - float(s0)
cpu = lambda x0, x1: (float(x1) - float(x0)) / float(hz) / wall * 100
print(f"{bps / 1e6:.0f} {cpu(a0, a1):.0f} {cpu(c0, c1):.0f} {100 * int(busy) / max(int(total), 1):.0f} {retr}")
PY
}

echo "== site-to-site, PSK, route-based, IKE $IKE_PROPOSAL, ESP $ESP_PROPOSAL in UDP 4500, ${SECS}s, $PARALLEL stream(s)$([ "$REVERSE" = 1 ] && echo ", reverse"), h1 -> h2"

# --- (a) strongSwan <-> strongSwan -------------------------------------------------------------
# swan_conf DIR LOCAL REMOTE START_ACTION: strongswan.conf + swanctl.conf (PSK, route-based)
swan_conf() {
  local d=$1 l=$2 r=$3 start=$4
  mkdir -p "$d/swanctl"
  cat >"$d/strongswan.conf" <<EOF
charon {
  load_modular = no
  load = random nonce openssl aes sha1 sha2 hmac kdf gcm chapoly curve25519 gmp pem pkcs1 pkcs8 x509 pubkey drbg kernel-libipsec kernel-netlink socket-default vici
  install_routes = yes
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
  cat >"$d/swanctl/swanctl.conf" <<EOF
connections {
  site {
    version = 2
    local_addrs = $l
    remote_addrs = $r
    proposals = $IKE_PROPOSAL
    rekey_time = 4h
    dpd_delay = 10s
    keyingtries = 0
    local {
      auth = psk
      id = $l
    }
    remote {
      auth = psk
      id = $r
    }
    children {
      site-net {
        local_ts = 0.0.0.0/0
        remote_ts = 0.0.0.0/0
        esp_proposals = $ESP_PROPOSAL
        rekey_time = 1h
        dpd_action = restart
        start_action = $start
      }
    }
  }
}
secrets {
  ike-site {
    id-local = $l
    id-remote = $r
    secret = "$PSK"
  }
}
EOF
}
# start_swan NS DIR REMOTE_LAN -> sets CHARON_PID; charon up, route-based plumbing, conn loaded
start_swan() {
  local ns=$1 d=$2 lan=$3
  rm -f "$d/charon.vici"
  ip netns exec "$ns" env STRONGSWAN_CONF="$d/strongswan.conf" SWANCTL_DIR="$d/swanctl" \
      setsid /usr/sbin/charon-systemd >"$d/stdout.log" 2>&1 </dev/null &
  CHARON_PID=$!; STARTED+=($CHARON_PID)
  local ok=0
  for _ in $(seq 100); do [ -S "$d/charon.vici" ] && { ok=1; break; }; sleep 0.1; done
  [ $ok = 1 ] || { echo "charon-systemd in $ns made no VICI socket" >&2; return 1; }
  # kernel-libipsec makes ipsec0 and adds `from all lookup 220` (with default dev ipsec0
  # there, decrypted packets would loop back into the tunnel): delete it, route by hand.
  ok=0
  for _ in $(seq 50); do
    if inns "$ns" ip link show ipsec0 >/dev/null 2>&1 && [ -n "$(inns "$ns" ip rule show table 220)" ]; then ok=1; break; fi
    sleep 0.1
  done
  [ $ok = 1 ] || { echo "no ipsec0 / table 220 rule in $ns" >&2; return 1; }
  while [ -n "$(inns "$ns" ip rule show table 220)" ]; do inns "$ns" ip rule del table 220; done
  inns "$ns" ip route replace "$lan" dev ipsec0
  STRONGSWAN_CONF="$d/strongswan.conf" SWANCTL_DIR="$d/swanctl" swanctl --load-all --noprompt \
      >"$d/load.log" 2>&1 || { echo "swanctl --load-all in $ns failed: $(tail -1 "$d/load.log")" >&2; return 1; }
}
SS1=$WORK/swan1; SS2=$WORK/swan2
swan_conf "$SS1" $UL1 $UL2 start
swan_conf "$SS2" $UL2 $UL1 none
SS_MBIT=""; SS_CPU1=""; SS_CPU2=""; SS_BUSY=""; SS_RETR=""; SS_NOTE=""
strongswan_run() {
  start_swan "$NS_GW2" "$SS2" $LAN1 || { SS_NOTE="gw2 did not start"; return 1; }
  SS_PID2=$CHARON_PID
  start_swan "$NS_GW1" "$SS1" $LAN2 || { SS_NOTE="gw1 did not start"; return 1; }
  SS_PID1=$CHARON_PID
  local up=0
  for _ in $(seq 200); do
    grep -q "CHILD_SA site-net{.*established with SPIs" "$SS1/charon.log" 2>/dev/null && { up=1; break; }
    sleep 0.1
  done
  [ $up = 1 ] || { SS_NOTE="no CHILD SA within 20 s"; return 1; }
  read -r SS_MBIT SS_CPU1 SS_CPU2 SS_BUSY SS_RETR < <(measure strongswan "$SS_PID1" "$SS_PID2") \
    || { SS_NOTE="iperf3 run failed"; return 1; }
  STRONGSWAN_CONF="$SS1/strongswan.conf" SWANCTL_DIR="$SS1/swanctl" swanctl --list-sas >"$WORK/strongswan-sas.txt" 2>&1 || true
}
if strongswan_run && [ -n "$SS_MBIT" ]; then
  echo "strongSwan <-> strongSwan: $SS_MBIT Mbit/s  (charon gw1 ${SS_CPU1}%, gw2 ${SS_CPU2}% of a core; machine ${SS_BUSY}% busy; $SS_RETR retransmits)"
else
  SS_MBIT=""
  echo "strongSwan <-> strongSwan: failed (${SS_NOTE:-no result})"
  tail -8 "$SS1/charon.log" "$SS2/charon.log" >&2 2>/dev/null || true
fi
[ -n "${SS_PID1:-}" ] && stop_pid "$SS_PID1"
[ -n "${SS_PID2:-}" ] && stop_pid "$SS_PID2"
# the routes into ipsec0 went with the device; nothing of (a) may carry (b)'s traffic
inns "$NS_GW1" ip route del $LAN2 2>/dev/null || true
inns "$NS_GW2" ip route del $LAN1 2>/dev/null || true
sleep 1
if inns "$NS_H1" ping -q -c1 -W1 $H2 >/dev/null 2>&1; then
  echo "h1 still reaches h2 after strongSwan stopped: refusing to measure gatehoused" >&2; exit 1
fi

# --- (b) gatehoused <-> gatehoused ---------------------------------------------------------------
echo "== same run: gatehoused <-> gatehoused, vnet-to-vnet ($GATEHOUSED)"
# gh_dir DIR PUBLIC LAN POOL NAME REMOTE REMOTE_LAN REMOTE_POOL INITIATE
gh_dir() {
  local d=$1
  "$GATEHOUSED" init --data-dir "$d" --public-addr "$2" --address-space "$3" --client-pool "$4" \
      >"$d.init.log" 2>&1 || { echo "gatehoused init failed: $(tail -3 "$d.init.log")" >&2; return 1; }
  printf '%s\n' "$PSK" >"$d/$5.psk"; chmod 600 "$d/$5.psk"
  cat >>"$d/gateway.toml" <<EOF

[[connection]]
name = "$5"
type = "vnet-to-vnet"
remote_gateway = "$6"
remote_address_space = ["$7", "$8"]
auth = "psk"
psk_file = "$5.psk"
policy_based = false
initiate = $9
ike_proposals = ["$IKE_PROPOSAL"]
esp_proposals = ["$ESP_PROPOSAL"]
EOF
}
start_gh() {  # NS DIR LOG -> sets GH_PID once "gateway ready"
  ip netns exec "$1" env RUST_LOG=info NO_COLOR=1 "$GATEHOUSED" run --data-dir "$2" >"$3" 2>&1 &
  GH_PID=$!; STARTED+=($GH_PID)
  for _ in $(seq 100); do
    kill -0 $GH_PID 2>/dev/null || break
    grep -q "gateway ready" "$3" && return 0
    sleep 0.1
  done
  echo "gatehoused in $1 not ready: $(tail -2 "$3")" >&2; return 1
}
GH_MBIT=""; GH_CPU1=""; GH_CPU2=""; GH_BUSY=""; GH_RETR=""; GH_NOTE=""
gatehoused_run() {
  gh_dir "$WORK/gh1" $UL1 $LAN1 $POOL1 gw1-gw2 $UL2 $LAN2 $POOL2 true || { GH_NOTE="init"; return 1; }
  gh_dir "$WORK/gh2" $UL2 $LAN2 $POOL2 gw2-gw1 $UL1 $LAN1 $POOL1 false || { GH_NOTE="init"; return 1; }
  start_gh "$NS_GW2" "$WORK/gh2" "$WORK/gatehoused-gw2.log" || { GH_NOTE="gw2 did not start"; return 1; }
  GH_PID2=$GH_PID
  start_gh "$NS_GW1" "$WORK/gh1" "$WORK/gatehoused-gw1.log" || { GH_NOTE="gw1 did not start"; return 1; }
  GH_PID1=$GH_PID
  local up=0
  for _ in $(seq 200); do
    grep -q "connection up" "$WORK/gatehoused-gw1.log" && grep -q "connection up" "$WORK/gatehoused-gw2.log" && { up=1; break; }
    sleep 0.1
  done
  [ $up = 1 ] || { GH_NOTE="no 'connection up' within 20 s"; return 1; }
  read -r GH_MBIT GH_CPU1 GH_CPU2 GH_BUSY GH_RETR < <(measure gatehoused "$GH_PID1" "$GH_PID2") \
    || { GH_NOTE="iperf3 run failed"; return 1; }
}
if gatehoused_run && [ -n "$GH_MBIT" ]; then
  echo "gatehoused <-> gatehoused: $GH_MBIT Mbit/s  (gatehoused gw1 ${GH_CPU1}%, gw2 ${GH_CPU2}% of a core; machine ${GH_BUSY}% busy; $GH_RETR retransmits)"
else
  GH_MBIT=""
  echo "gatehoused <-> gatehoused: failed (${GH_NOTE:-no result})"
  tail -8 "$WORK/gatehoused-gw1.log" "$WORK/gatehoused-gw2.log" >&2 2>/dev/null || true
fi

RATIO="n/a"
if [ -n "$SS_MBIT" ] && [ -n "$GH_MBIT" ]; then
  RATIO=$(python3 -c "print(f'{$GH_MBIT / max($SS_MBIT, 1):.2f}')")
  echo "ratio gatehoused/strongSwan: $RATIO"
fi

# --- record -----------------------------------------------------------------------------------
if ! grep -q '^# Site-to-site throughput' "$RESULTS" 2>/dev/null; then
  cat >>"$RESULTS" <<'EOF'
# Site-to-site throughput: host 1 -> gateway 1 == tunnel == gateway 2 -> host 2 (bench/site-throughput.sh)

Mbit/s received by iperf3 (TCP), IKEv2 PSK, route-based, ESP AES-256-GCM in UDP 4500; (a) strongSwan
5.9 charon-systemd + kernel-libipsec at both ends, (b) gatehoused at both ends (vnet-to-vnet), same
run; CPU = gateway 1 / gateway 2 process, % of one core; retr = TCP retransmits; busy = whole
machine (a/b).

| date (UTC) | host | cores | run | strongSwan Mbit/s (CPU gw1/gw2, retr) | gatehoused Mbit/s (CPU gw1/gw2, retr) | ratio (b)/(a) | busy (a/b) | gatehoused build | commit |
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |
EOF
fi
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "-")
RUN="${SECS}s P$PARALLEL"; [ "$REVERSE" = 1 ] && RUN="$RUN -R"
SS_COL="n/a"; [ -n "$SS_MBIT" ] && SS_COL="$SS_MBIT ($SS_CPU1%/$SS_CPU2%, $SS_RETR)"
GH_COL="n/a"; [ -n "$GH_MBIT" ] && GH_COL="$GH_MBIT ($GH_CPU1%/$GH_CPU2%, $GH_RETR)"
BUILD=$(basename "$(dirname "$GATEHOUSED")")
printf '| %s | %s | %s | %s | %s | %s | %s | %s%%/%s%% | %s | %s |\n' \
  "$(date -u +%Y-%m-%dT%H:%MZ)" "$(hostname)" "$(nproc)" "$RUN" "$SS_COL" "$GH_COL" "$RATIO" \
  "${SS_BUSY:--}" "${GH_BUSY:--}" "$BUILD" "$COMMIT" >>"$RESULTS"
echo "appended to $RESULTS"
