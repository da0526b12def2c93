# Shared shell helpers for bench/ scripts (sourced, not run). Same measurement code as
# openvpn-throughput.sh and ikev2-throughput.sh (which keep their own copies).
#
# A script that sources this file gets:
#   CREATED_NS / STARTED    namespaces and pids it made; bench_cleanup deletes / stops only these
#   bench_traps             EXIT trap -> bench_cleanup; INT/TERM -> exit 130 (so EXIT runs)
#   mkns NAME               ip netns add + lo up, remembered for cleanup
#   inns NS CMD...          foreground only (a function sent to the background forks a subshell,
#                           so $! would be the subshell; background starts use ip netns exec)
#   stop_pid PID            SIGTERM, up to 3 s, then SIGKILL
#   wait_log FILE PAT SECS PID
#   sysjiffies / proc_jiffies PID / wait_idle (uses WAIT_IDLE seconds)
#   write_charon_conf DIR PLUGINS EXTRA / start_charon NS DIR (-> CHARON_PID) / swctl DIR ARGS
#   stock_openvpn_conf FILE PROTO DEV PKI POOL LAN_NET LOCAL   the stock openvpn 2.6 server's config
# The caller sets WORK (its work dir) before bench_cleanup can run; KEEP=1 keeps it.

CREATED_NS=()   # only these are ever deleted
STARTED=()      # pids of processes the script started

stop_pid() {  # SIGTERM, up to 3 s, then SIGKILL
  local p=$1
  kill "$p" 2>/dev/null || return 0
  for _ in $(seq 30); do kill -0 "$p" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$p" 2>/dev/null || true
}

bench_cleanup() {
  set +e
  local p ns
  for p in "${STARTED[@]}"; do stop_pid "$p"; done
  for ns in "${CREATED_NS[@]}"; do
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill "$p" 2>/dev/null; done
  done
  sleep 0.3
  for ns in "${CREATED_NS[@]}"; do
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
    ip netns del "$ns" 2>/dev/null
  done
  if [ -n "${WORK:-}" ]; then
    if [ "${KEEP:-0}" = 1 ]; then echo "work dir kept: $WORK"; else rm -rf "$WORK"; fi
  fi
}

bench_traps() {
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
}

mkns() { ip netns add "$1"; CREATED_NS+=("$1"); ip -n "$1" link set lo up; }
inns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

wait_log() {  # FILE PATTERN SECONDS PID -> 0 when FILE has PATTERN; 1 on timeout or exit of PID
  local f=$1 pat=$2 t=$3 pid=$4
  for _ in $(seq $((t * 10))); do
    grep -q "$pat" "$f" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# "BUSY TOTAL" jiffies of the whole machine (busy = user+nice+system+irq+softirq+steal).
sysjiffies() { awk '/^cpu /{b=$2+$3+$4+$7+$8+$9; print b, b+$5+$6}' /proc/stat; }
# utime+stime of a whole process (all its threads, live and exited), in clock ticks.
proc_jiffies() { awk '{print $14+$15}' "/proc/$1/stat" 2>/dev/null || echo 0; }

wait_idle() {  # other builds share the cores: wait (up to WAIT_IDLE s) until the box is <= 15 % busy
  local b0 t0 b1 t1 limit=${WAIT_IDLE:-60}
  for _ in $(seq 1 $((limit / 2))); do
    read -r b0 t0 < <(sysjiffies); sleep 2; read -r b1 t1 < <(sysjiffies)
    [ $(((b1 - b0) * 100 / (t1 - t0 + 1))) -le 15 ] && return 0
  done
  [ "$limit" -gt 0 ] && echo "  (machine not idle after ${limit}s; measuring anyway)" >&2
  return 0
}

# charon-systemd in a namespace: DIR/strongswan.conf, DIR/swanctl/, VICI socket DIR/charon.vici,
# resolve plugin writing only to DIR/resolv.conf.
write_charon_conf() {  # DIR PLUGINS EXTRA_CHARON_LINES
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

start_charon() {  # NS DIR -> CHARON_PID (charon itself: ip netns exec, env and setsid all exec)
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

# The stock openvpn 2.6 server as the bench scripts run it: TUN device DEV, the gateway's PKI
# (gatehoused init's pki/ folder), clients from POOL (a /24), a route to LAN_NET pushed,
# listening on LOCAL (UDP 1194 or TCP 443), TLS 1.3, no DCO.
stock_openvpn_conf() {  # FILE PROTO(udp|tcp) DEV PKI POOL LAN_NET LOCAL
  local f=$1 proto=$2 dev=$3 pki=$4 pool=$5 lan=$6 local_addr=$7 sproto port
  case $proto in udp) sproto=udp; port=1194;; tcp) sproto=tcp-server; port=443;; *) return 2;; esac
  cat >"$f" <<EOF
dev-type tun
dev $dev
topology subnet
server ${pool%/*} 255.255.255.0
proto $sproto
port $port
local $local_addr
push "route ${lan%/*} 255.255.255.0"
ca $pki/ca.crt
cert $pki/server/gateway.crt
key $pki/server/gateway.key
dh none
tls-version-min 1.3
data-ciphers AES-256-GCM:CHACHA20-POLY1305
disable-dco
keepalive 10 60
verb 3
EOF
}
