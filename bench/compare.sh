#!/usr/bin/env bash
# One run, side by side: stock gateways vs gatehoused with the same stock clients, plus
# Gatehouse's own client to gatehoused; throughput, gateway CPU seconds per gigabit, TCP
# retransmits, out-of-order segments, UDP loss/reordering and idle ping latency. Prints one
# table and appends it to bench/results-compare.md. See bench/compare.md.
#
#   c0 ns up0 10.250.180.10/24 --+
#   c1 ns up0 10.250.180.11/24 --+-- br0 10.250.180.1/24  gateway ns  lan0 10.251.180.1/24 ---- gw0 10.251.180.10/24  lan ns
#   c2, c3 ...                 --+                                                        (iperf3 -s on ports 5201..5204)
#   VPN pool (every gateway): 10.251.184.0/24
#
# Namespaces are ghb-cmp-<pid>-*; an EXIT trap (also on Ctrl-C) stops what the script started,
# by pid, and deletes them. Traffic goes only to addresses inside them.
#
# Usage (root): bench/compare.sh
# Knobs: DURATION=10 (s per iperf3 run)  QUICK=1 (3 s runs, 10 pings, no idle wait, no record)
#        CLIENTS=4 (clients in the multi-client cases)  UDP_RATE=200M (iperf3 -u -b, per run)
#        PING_COUNT=200  PING_INTERVAL=0.02 (s)  WAIT_IDLE=30 (max s to wait for an idle machine before each measurement)
#        BIN_DIR=target/release  GATEHOUSED=$BIN_DIR/gatehoused  GATEHOUSE_CERTS=..  GH_CLIENT=$BIN_DIR/gatehouse
#        GHC_PROTOCOLS="openvpn-udp ikev2 quic" (gatehouse client runs; "default" = the profile's choice)
#        SKIP_OVPN_UDP=1 SKIP_OVPN_TCP=1 SKIP_MULTI=1 SKIP_IKEV2=1 SKIP_GHC=1 SKIP_WG=1 SKIP_PING=1
#        SKIP_UDP_IPERF=1 SKIP_STOCK=1 SKIP_GATEHOUSED=1  PING_ONLY=1 (idle pings only, no iperf3)
#        GH_TOML="workers = 1; handshake_threads = 0" (top-level gateway.toml keys for gatehoused)
#        GH_OPENVPN_TOML='listen = "0.0.0.0"' (keys of gateway.toml's [openvpn] table)
#        RECORD=0|1 (append to RESULTS; default 1, 0 with QUICK)  RESULTS=bench/results-compare.md
#        COMMIT=<what the binaries were built from> (default: git HEAD, "-dirty" if the tree is)
#        RESIDENCE=1 (during each idle ping, tshark on the gateway's cl0 and lan0: the gateway's own
#        time per round trip from kernel timestamps, request in + reply out, p50 in us; needs tshark)
#        KEEP=1 (keep the work dir with configs, logs and iperf3 JSON)
#        UNDERLAY_GRO=0|1 (1: GRO on every veth, as a physical NIC's driver has it; veth's default
#        is off. Needs ethtool. The same for every gateway in the run; recorded in the row)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
  DURATION=${DURATION:-3}; PING_COUNT=${PING_COUNT:-10}; WAIT_IDLE=${WAIT_IDLE:-0}; RECORD=${RECORD:-0}
fi
DURATION=${DURATION:-10}
PING_COUNT=${PING_COUNT:-200}
PING_INTERVAL=${PING_INTERVAL:-0.02}
WAIT_IDLE=${WAIT_IDLE:-30}
RECORD=${RECORD:-1}
UNDERLAY_GRO=${UNDERLAY_GRO:-0}
CLIENTS=${CLIENTS:-4}
UDP_RATE=${UDP_RATE:-200M}
GHC_PROTOCOLS=${GHC_PROTOCOLS:-openvpn-udp ikev2 quic}
BIN_DIR=${BIN_DIR:-$ROOT/target/release}
GATEHOUSED=${GATEHOUSED:-$BIN_DIR/gatehoused}
GATEHOUSE_CERTS=${GATEHOUSE_CERTS:-$(dirname "$GATEHOUSED")/gatehouse-certs}
GH_CLIENT=${GH_CLIENT:-$(dirname "$GATEHOUSED")/gatehouse}
RESULTS=${RESULTS:-$ROOT/bench/results-compare.md}
CIPHER=AES-256-GCM
RESIDENCE=${RESIDENCE:-0}
for k in SKIP_OVPN_UDP SKIP_OVPN_TCP SKIP_MULTI SKIP_IKEV2 SKIP_GHC SKIP_WG SKIP_PING SKIP_UDP_IPERF SKIP_STOCK SKIP_GATEHOUSED; do
  eval "$k=\${$k:-0}"
done
[ "$CLIENTS" -ge 1 ] && [ "$CLIENTS" -le 8 ] || { echo "CLIENTS must be 1..8" >&2; exit 2; }

[ "$(id -u)" -eq 0 ] || { echo "needs root (network namespaces, TUN)" >&2; exit 1; }
for p in ip openvpn iperf3 python3 ss ping swanctl git; do
  command -v $p >/dev/null || { echo "missing $p (apt-get install openvpn iperf3 iproute2 python3 iputils-ping strongswan-swanctl charon-systemd)" >&2; exit 1; }
done
[ "$RESIDENCE" != 1 ] || command -v tshark >/dev/null || { echo "RESIDENCE=1 needs tshark (apt-get install tshark)" >&2; exit 1; }
[ -x /usr/sbin/charon-systemd ] || [ "$SKIP_IKEV2" = 1 ] || { echo "missing /usr/sbin/charon-systemd (or SKIP_IKEV2=1)" >&2; exit 1; }
if [ "$SKIP_IKEV2" != 1 ]; then
  for r in /sbin/resolvconf /usr/sbin/resolvconf /usr/bin/resolvconf; do
    [ -e $r ] && { echo "$r exists: strongSwan would use it and change the host's DNS; refusing (or SKIP_IKEV2=1)" >&2; exit 1; }
  done
fi

# --- binaries ---------------------------------------------------------------------------------
if [ ! -x "$GATEHOUSED" ] || [ ! -x "$GATEHOUSE_CERTS" ] || [ ! -x "$GH_CLIENT" ]; then
  case $BIN_DIR in
    */release) TARGET_DIR=$(dirname "$BIN_DIR");;
    *) echo "missing binaries in $BIN_DIR and it is not a cargo .../release dir; build them first" >&2; exit 1;;
  esac
  echo "== building release binaries into $TARGET_DIR (cargo build --release, this takes a while)"
  build=(env CARGO_TARGET_DIR="$TARGET_DIR" cargo build --release -p gatehouse-server -p gatehouse-certs -p gatehouse-client)
  if [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ]; then
    # Not as root: keep the user's target dir user-owned; sudo's PATH may lack ~/.cargo/bin.
    (cd "$ROOT" && sudo -u "$SUDO_USER" env PATH="$PATH:$(getent passwd "$SUDO_USER" | cut -d: -f6)/.cargo/bin" "${build[@]}")
  else
    (cd "$ROOT" && "${build[@]}")
  fi
fi
for b in "$GATEHOUSED" "$GATEHOUSE_CERTS" "$GH_CLIENT"; do
  [ -x "$b" ] || { echo "no binary $b" >&2; exit 1; }
done
if [ -z "${COMMIT:-}" ]; then
  COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "-")
  [ -n "$(git -C "$ROOT" status --porcelain -uno 2>/dev/null)" ] && COMMIT="$COMMIT-dirty"
fi

# --- topology -----------------------------------------------------------------------------------
TAG=ghb-cmp-$$
NS_GW=$TAG-gw; NS_LAN=$TAG-lan
NS_C=(); for ((i = 0; i < CLIENTS; i++)); do NS_C+=("$TAG-c$i"); done
GW_UL=10.250.180.1; C0_UL=10.250.180.10
GW_LAN=10.251.180.1; LAN_HOST=10.251.180.10; LAN_NET=10.251.180.0/24
POOL=10.251.184.0/24
IPERF_PORT=5201
WORK=$(mktemp -d /tmp/ghb-cmp.XXXXXX)
RES=$WORK/results.jsonl; : >"$RES"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
STARTED_AT=$(date -u +%Y-%m-%dT%H:%MZ)
bench_traps

mkns "$NS_GW"; mkns "$NS_LAN"
for ns in "${NS_C[@]}"; do mkns "$ns"; done
ip -n "$NS_GW" link add br0 type bridge
ip -n "$NS_GW" addr add $GW_UL/24 dev br0; ip -n "$NS_GW" link set br0 up
for ((i = 0; i < CLIENTS; i++)); do
  ip link add up0 netns "${NS_C[$i]}" type veth peer name cl$i netns "$NS_GW"
  ip -n "$NS_GW" link set cl$i master br0; ip -n "$NS_GW" link set cl$i up
  ip -n "${NS_C[$i]}" addr add 10.250.180.$((10 + i))/24 dev up0; ip -n "${NS_C[$i]}" link set up0 up
done
ip link add lan0 netns "$NS_GW" type veth peer name gw0 netns "$NS_LAN"
ip -n "$NS_GW" addr add $GW_LAN/24 dev lan0; ip -n "$NS_GW" link set lan0 up
ip -n "$NS_LAN" addr add $LAN_HOST/24 dev gw0; ip -n "$NS_LAN" link set gw0 up
ip -n "$NS_LAN" route add default via $GW_LAN
inns "$NS_GW" sysctl -q -w net.ipv4.ip_forward=1
if [ "$UNDERLAY_GRO" = 1 ]; then
  # NAPI GRO on the veths (kernel >= 5.13 turns NAPI on with it): UDP datagrams of one flow
  # reach a socket that asked for UDP_GRO coalesced, TCP segments are merged, as behind a NIC.
  command -v ethtool >/dev/null || { echo "UNDERLAY_GRO=1 needs ethtool (apt-get install ethtool)" >&2; exit 1; }
  for ((i = 0; i < CLIENTS; i++)); do
    inns "$NS_GW" ethtool -K cl$i gro on; inns "${NS_C[$i]}" ethtool -K up0 gro on
  done
  inns "$NS_GW" ethtool -K lan0 gro on; inns "$NS_LAN" ethtool -K gw0 gro on
fi
for ns in "${NS_C[@]}"; do
  inns "$ns" ping -q -c1 -W2 $GW_UL >/dev/null || { echo "underlay broken ($ns)" >&2; exit 1; }
done
for ((i = 0; i < CLIENTS; i++)); do
  ip netns exec "$NS_LAN" iperf3 -s -J -B $LAN_HOST -p $((IPERF_PORT + i)) >"$WORK/iperf3-server-$i.log" 2>&1 &
  STARTED+=($!)
done

echo "== compare: ${DURATION}s per run, $CLIENTS clients in the multi-client cases, $CIPHER, load before: $LOAD_BEFORE ($(nproc) cores)"
echo "   gatehoused: $GATEHOUSED ($COMMIT)"

# --- measurement ----------------------------------------------------------------------------------
note() {  # CASE WHO TEXT: a failed measurement, shown in the table
  python3 -c 'import json,sys; print(json.dumps({"kind": "fail", "case": sys.argv[1], "who": sys.argv[2], "note": sys.argv[3]}))' \
    "$1" "$2" "$3" >>"$RES"
  echo "  $1 / $2: $3" >&2
}
netstat_ofo() {  # NS... -> sum of TcpExt TCPOFOQueue (segments queued out of order) in these namespaces
  local ns s=0 v
  for ns in "$@"; do
    v=$(ip netns exec "$ns" awk '/^TcpExt:/{ if (!h) { for (i = 1; i <= NF; i++) if ($i == "TCPOFOQueue") c = i; h = 1 } else print $c }' /proc/net/netstat)
    s=$((s + ${v:-0}))
  done
  echo $s
}
reach() {  # NS: the LAN host answers through the tunnel (a few tries: routes may come late)
  for _ in 1 2 3 4 5 6 7 8 9 10; do inns "$1" ping -q -c1 -W1 $LAN_HOST >/dev/null 2>&1 && return 0; done
  return 1
}

# iperf_case CASE WHO GWPID N MODE: N clients (c0..) at once, one iperf3 each to its own port on
# the LAN host. MODE: up (client -> LAN), down (-R), udp (-u -b UDP_RATE, client -> LAN).
iperf_case() {
  [ "${PING_ONLY:-0}" = 1 ] && return 0
  local case=$1 who=$2 gwpid=$3 n=$4 mode=$5 i hz b0 t0 b1 t1 g0 g1 s0 s1 o0 o1 flags=() pids=() files=() nss=("$NS_LAN")
  hz=$(getconf CLK_TCK)
  case $mode in down) flags=(-R);; udp) flags=(-u -b "$UDP_RATE" -l 1300 --get-server-output);; esac
  for ((i = 0; i < n; i++)); do
    nss+=("${NS_C[$i]}")
    reach "${NS_C[$i]}" || { note "$case" "$who" "LAN host unreachable through the tunnel from c$i"; return 1; }
  done
  kill -0 "$gwpid" 2>/dev/null || { note "$case" "$who" "gateway process $gwpid is gone"; return 1; }
  wait_idle
  o0=$(netstat_ofo "${nss[@]}")
  read -r b0 t0 < <(sysjiffies); g0=$(proc_jiffies "$gwpid"); s0=$(date +%s.%N)
  for ((i = 0; i < n; i++)); do
    files+=("$WORK/iperf-${case// /_}-$who-$i.json")
    ip netns exec "${NS_C[$i]}" iperf3 -J --connect-timeout 3000 -c $LAN_HOST -p $((IPERF_PORT + i)) \
        -t "$DURATION" "${flags[@]}" >"${files[$i]}" 2>&1 &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || true; done
  s1=$(date +%s.%N); g1=$(proc_jiffies "$gwpid"); read -r b1 t1 < <(sysjiffies)
  o1=$(netstat_ofo "${nss[@]}")
  python3 - "$case" "$who" "$mode" "$n" "$((g1 - g0))" "$hz" "$s0" "$s1" $((b1 - b0)) $((t1 - t0)) $((o1 - o0)) "${files[@]}" >>"$RES" <<'PY' || { note "$case" "$who" "iperf3 failed: $(tail -c 300 "${files[0]}" | tr '\n' ' ')"; return 1; }
import json, sys
case, who, mode, n, gj, hz, s0, s1, busy, total, ofo = sys.argv[1:12]
files = sys.argv[12:]
r = {"kind": "iperf", "case": case, "who": who, "mode": mode, "clients": int(n),
     "bytes": 0, "bps": 0.0, "retr": None, "lost": None, "packets": None, "udp_ooo": None}
for f in files:
    text = open(f).read()
    try:
        # iperf3 may print a warning before its JSON (e.g. "UDP block size 1300 exceeds TCP
        # MSS 1228" through a tunnel with a 1280-byte MTU, as QUIC's): skip to the object.
        j = json.loads(text[text.index("{"):])
    except ValueError:
        sys.exit(f"{f}: not JSON: " + text[:300])
    if "error" in j:
        sys.exit(f"{f}: iperf3: {j['error']}")
    end = j["end"]
    if mode == "udp":
        s = end.get("sum_received") or end.get("sum", {})
        r["bytes"] += s.get("bytes", 0)
        r["bps"] += s.get("bits_per_second", 0)
        # loss and reordering as the receiving iperf3 (the server, via --get-server-output) counted them
        srv = j.get("server_output_json", {}).get("end", {})
        u = srv.get("sum") or end.get("sum", {})
        r["lost"] = (r["lost"] or 0) + u.get("lost_packets", 0)
        r["packets"] = (r["packets"] or 0) + u.get("packets", 0)
        r["udp_ooo"] = (r["udp_ooo"] or 0) + sum(st.get("udp", {}).get("out_of_order", 0) for st in srv.get("streams", []))
    else:
        s = end["sum_received"]
        r["bytes"] += s["bytes"]
        r["bps"] += s["bits_per_second"]
        rt = end.get("sum_sent", {}).get("retransmits")
        if rt is not None:
            r["retr"] = (r["retr"] or 0) + rt
if r["bytes"] == 0:
    sys.exit("no bytes received")
cpu = int(gj) / float(hz)
wall = float(s1) - float(s0)
r.update(cpu_s=cpu, wall=wall, cpu_pct=100 * cpu / wall, mbit=r["bps"] / 1e6,
         cpu_per_gbit=cpu / (r["bytes"] * 8 / 1e9), ofo=int(ofo),
         busy=100 * int(busy) / max(int(total), 1))
print(json.dumps(r))
extra = f", {r['retr']} retransmits" if r["retr"] is not None else ""
if r["lost"] is not None:
    extra += f", lost {r['lost']}/{r['packets']}, {r['udp_ooo']} out of order"
print(f"  {case:<38} {who:<10} {r['mbit']:7.0f} Mbit/s  gateway {cpu:.2f} CPU s = {r['cpu_per_gbit']:.2f} s/Gbit "
      f"({r['cpu_pct']:.0f}% of a core){extra}, {r['ofo']} ofo segs, box {r['busy']:.0f}% busy", file=sys.stderr)
PY
}

ping_case() {  # CASE WHO: idle ping c0 -> LAN host through the tunnel
  local case=$1 who=$2 f=$WORK/ping-${1// /_}-$2.txt
  reach "${NS_C[0]}" || { note "$case" "$who" "LAN host unreachable"; return 1; }
  wait_idle
  local cap=$WORK/ping-${1// /_}-$2.pcapng cpid=""
  if [ "$RESIDENCE" = 1 ]; then  # the gateway's own time: kernel timestamps at cl0 and lan0
    ip netns exec "$NS_GW" tshark -q -f "icmp or (host $C0_UL and (udp or tcp))" \
      -i cl0 -i lan0 -w "$cap" >"$cap.log" 2>&1 &
    cpid=$!; STARTED+=("$cpid")
    wait_log "$cap.log" "Capturing on" 10 "$cpid" || { note "$case" "$who" "tshark did not start"; cpid=""; }
  fi
  inns "${NS_C[0]}" ping -n -c "$PING_COUNT" -i "$PING_INTERVAL" -W 1 $LAN_HOST >"$f" 2>&1 || true
  if [ -n "$cpid" ]; then
    sleep 0.5; kill -INT "$cpid" 2>/dev/null; wait "$cpid" 2>/dev/null || true
    ip netns exec "$NS_GW" tshark -r "$cap" -T fields -E separator=, -e frame.interface_name \
      -e frame.time_epoch -e ip.src -e icmp.type -e udp.length -e tcp.len >"$cap.csv" 2>/dev/null || true
  fi
  python3 - "$case" "$who" "$f" "$PING_COUNT" "${cpid:+$cap.csv}" "$C0_UL" >>"$RES" <<'PY' || { note "$case" "$who" "ping failed"; return 1; }
import json, re, statistics, sys
case, who, f, count, csv, client = sys.argv[1:]
t = [float(m) for m in re.findall(r"time=([0-9.]+) ms", open(f).read())]
if not t:
    sys.exit(1)
t.sort()
r = {"kind": "ping", "case": case, "who": who, "n": len(t), "sent": int(count),
     "avg": statistics.mean(t), "p50": statistics.median(t),
     "p90": t[min(len(t) - 1, int(0.9 * len(t)))], "max": t[-1]}
extra = ""
if csv:
    # in: a client's datagram/segment with payload on cl0 -> the echo request it carried leaving
    # on lan0; out: the echo reply arriving on lan0 -> the next packet with payload to the client.
    # Each request is paired with the last client packet before it (pings are 20 ms apart).
    ev = []
    for line in open(csv):
        p = line.rstrip("\n").split(",")
        if len(p) < 6 or not p[1]:
            continue
        ifn, ts, src, icmp, udpl, tcpl = p[:6]
        ts = float(ts)
        if ifn == "lan0" and icmp in ("8", "0"):
            ev.append((ts, "req" if icmp == "8" else "rep"))
        elif ifn == "cl0" and (udpl or (tcpl and tcpl != "0")):
            ev.append((ts, "cin" if src == client else "cout"))
    ev.sort()
    ins, outs, last_in, rep_at = [], [], None, None
    for ts, k in ev:
        if k == "cin":
            last_in = ts
        elif k == "req" and last_in is not None:
            ins.append(ts - last_in); last_in = None
        elif k == "rep":
            rep_at = ts
        elif k == "cout" and rep_at is not None:
            outs.append(ts - rep_at); rep_at = None
    if ins and outs:
        r["res_in_us"] = statistics.median(ins) * 1e6
        r["res_out_us"] = statistics.median(outs) * 1e6
        r["res_pairs"] = min(len(ins), len(outs))
        extra = (f", gateway residence in {r['res_in_us']:.1f} + out {r['res_out_us']:.1f} us"
                 f" (p50 of {r['res_pairs']})")
print(json.dumps(r))
print(f"  {case:<38} {who:<10} ping avg {statistics.mean(t):.3f} p50 {statistics.median(t):.3f} max {t[-1]:.3f} ms "
      f"({len(t)}/{count} answered){extra}", file=sys.stderr)
PY
}

# --- PKI: gatehoused init; every gateway uses its CA and gateway certificate --------------------
DD=$WORK/gatehoused
"$GATEHOUSED" init --data-dir "$DD" --public-addr $GW_UL --address-space $LAN_NET \
    --client-pool $POOL >"$WORK/gatehoused-init.log" 2>&1 \
  || { echo "gatehoused init failed:" >&2; cat "$WORK/gatehoused-init.log" >&2; exit 1; }
# add_keys KNOB LINE_REGEX KEYS: "k = v; k2 = v2" into gateway.toml after the line LINE_REGEX
# matches (top-level keys after tun_name, a table's keys after its header), then check it
add_keys() {
  python3 - "$DD/gateway.toml" "$2" "$3" <<'PY'
import re, sys
path, after, extra = sys.argv[1:]
s = open(path).read()
lines = "\n".join(x.strip() for x in extra.split(";") if x.strip())
s, n = re.subn("(?m)^(" + after + ")$", lambda m: m.group(1) + "\n" + lines, s, count=1)
assert n == 1, "gateway.toml has no line matching " + after
open(path, "w").write(s)
PY
  "$GATEHOUSED" check --config "$DD/gateway.toml" >/dev/null || { echo "$1 made gateway.toml invalid" >&2; exit 1; }
  echo "   gateway.toml ($1): $3"
}
# top-level keys (e.g. "workers = 1; handshake_threads = 0"), before the first table
[ -z "${GH_TOML:-}" ] || add_keys GH_TOML 'tun_name = .*' "$GH_TOML"
# keys of the [openvpn] table (e.g. 'listen = "0.0.0.0"')
[ -z "${GH_OPENVPN_TOML:-}" ] || add_keys GH_OPENVPN_TOML '\[openvpn\]' "$GH_OPENVPN_TOML"
case " $GHC_PROTOCOLS " in
  *" quic "*)  # QUIC is off in what init writes; on here (before any profile is exported: it offers quic)
    python3 - "$DD/gateway.toml" <<'PY'
import re, sys
p = sys.argv[1]; s = open(p).read()
s, n = re.subn(r'(?m)^(\[quic\]\n(?:.*\n)*?)enabled = false$', r'\1enabled = true', s, count=1)
assert n == 1, "no [quic] enabled = false in gateway.toml"
open(p, "w").write(s)
PY
    "$GATEHOUSED" check --config "$DD/gateway.toml" >/dev/null || { echo "[quic] enabled = true made gateway.toml invalid" >&2; exit 1; }
    ;;
esac
certs() { "$GATEHOUSE_CERTS" --pki "$DD/pki" "$@" >>"$WORK/certs.log" 2>&1 || { echo "gatehouse-certs $*:" >&2; tail -5 "$WORK/certs.log" >&2; exit 1; }; }
for ((i = 0; i < CLIENTS; i++)); do
  certs issue-client bench$i
  certs export bench$i --gateway $GW_UL --format ovpn -o "$WORK/bench$i-udp.ovpn"
  # The exported profile is for UDP; the same profile, rewritten, for TCP 443 (both gateways).
  sed -e 's/^proto udp$/proto tcp-client/' -e "s/^remote $GW_UL 1194\$/remote $GW_UL 443/" \
      "$WORK/bench$i-udp.ovpn" >"$WORK/bench$i-tcp.ovpn"
  grep -q "^proto tcp-client" "$WORK/bench$i-tcp.ovpn" && grep -q "^remote $GW_UL 443\$" "$WORK/bench$i-tcp.ovpn" \
    || { echo "could not turn the exported profile into a TCP one" >&2; exit 1; }
done

# --- gateways -------------------------------------------------------------------------------------
start_gatehoused() {  # LABEL -> GH_PID, or 1 with GH_NOTE
  local up=0 log=$WORK/gatehoused-$1.log
  GH_NOTE=""
  ip netns exec "$NS_GW" env RUST_LOG=info NO_COLOR=1 "$GATEHOUSED" run --data-dir "$DD" >"$log" 2>&1 &
  GH_PID=$!; STARTED+=($GH_PID)
  for _ in $(seq 200); do
    kill -0 $GH_PID 2>/dev/null || break
    grep -q "gateway ready" "$log" 2>/dev/null && { up=1; break; }
    sleep 0.1
  done
  [ $up = 1 ] || { GH_NOTE="gatehoused not ready within 20 s: $(tail -1 "$log")"; return 1; }
  [ "$(cat /proc/$GH_PID/comm 2>/dev/null)" = gatehoused ] || { GH_NOTE="pid $GH_PID is not gatehoused"; return 1; }
}
start_stock_openvpn() {  # PROTO -> OVPN_PID, or 1 with OVPN_NOTE
  local proto=$1 log=$WORK/openvpn-server-$1.log
  stock_openvpn_conf "$WORK/server-$proto.conf" "$proto" ghb-stun "$DD/pki" $POOL $LAN_NET $GW_UL
  ip netns exec "$NS_GW" openvpn --config "$WORK/server-$proto.conf" >"$log" 2>&1 &
  OVPN_PID=$!; STARTED+=($OVPN_PID)
  wait_log "$log" "Initialization Sequence Completed" 10 $OVPN_PID \
    || { OVPN_NOTE="stock openvpn server did not start: $(tail -1 "$log")"; return 1; }
}
# ovpn_clients LABEL PROTO N -> CL_PIDS; stock openvpn 2.6 clients in c0..c(N-1), same profile
# (per client certificate) for both gateways, data cipher forced to $CIPHER
ovpn_clients() {
  local label=$1 proto=$2 n=$3 i
  CL_PIDS=()
  for ((i = 0; i < n; i++)); do
    ip netns exec "${NS_C[$i]}" openvpn --config "$WORK/bench$i-$proto.ovpn" --dev-type tun --dev ghb-tun \
        --disable-dco --data-ciphers "$CIPHER" --verb 3 >"$WORK/client-$label-$i.log" 2>&1 &
    CL_PIDS+=($!); STARTED+=($!)
  done
  for ((i = 0; i < n; i++)); do
    wait_log "$WORK/client-$label-$i.log" "Initialization Sequence Completed" 30 "${CL_PIDS[$i]}" \
      || { CL_NOTE="client c$i did not connect: $(tail -1 "$WORK/client-$label-$i.log")"; return 1; }
  done
  grep -q "Data Channel: cipher '$CIPHER'" "$WORK/client-$label-0.log" \
    || echo "  warning: client log does not show data cipher $CIPHER" >&2
}
stop_clients() { local p; for p in "${CL_PIDS[@]}"; do stop_pid "$p"; done; CL_PIDS=(); }

# openvpn_cases PROTO WHO GWPID: the cases one connected set of clients runs
openvpn_cases() {
  local proto=$1 who=$2 pid=$3 c="openvpn-$1"
  [ "$SKIP_PING" = 1 ] || ping_case "$c idle ping" "$who" || true
  iperf_case "$c 1 client up" "$who" "$pid" 1 up || true
  iperf_case "$c 1 client down" "$who" "$pid" 1 down || true
  if [ "$SKIP_MULTI" != 1 ] && [ "$CLIENTS" -gt 1 ]; then
    iperf_case "$c $CLIENTS clients up" "$who" "$pid" "$CLIENTS" up || true
    iperf_case "$c $CLIENTS clients down" "$who" "$pid" "$CLIENTS" down || true
  fi
  if [ "$proto" = udp ] && [ "$SKIP_UDP_IPERF" != 1 ]; then
    iperf_case "$c 1 client iperf-udp $UDP_RATE" "$who" "$pid" 1 udp || true
  fi
}

openvpn_phase() {  # PROTO
  local proto=$1 n=$CLIENTS
  [ "$SKIP_MULTI" = 1 ] && n=1
  if [ "$SKIP_STOCK" != 1 ]; then
    echo "== openvpn-$proto: stock openvpn server, $n stock client(s)"
    if ! start_stock_openvpn "$proto"; then note "openvpn-$proto 1 client up" stock "$OVPN_NOTE"
    elif ! ovpn_clients "stock-$proto" "$proto" "$n"; then note "openvpn-$proto 1 client up" stock "$CL_NOTE"
    else openvpn_cases "$proto" stock "$OVPN_PID"
    fi
    stop_clients; stop_pid "${OVPN_PID:-0}"; sleep 0.5
  fi
  if [ "$SKIP_GATEHOUSED" != 1 ]; then
    echo "== openvpn-$proto: gatehoused, same $n stock client(s)"
    if ! start_gatehoused "openvpn-$proto"; then note "openvpn-$proto 1 client up" gatehoused "$GH_NOTE"
    elif ! ovpn_clients "gh-$proto" "$proto" "$n"; then note "openvpn-$proto 1 client up" gatehoused "$CL_NOTE"
    else openvpn_cases "$proto" gatehoused "$GH_PID"
    fi
    stop_clients; stop_pid "${GH_PID:-0}"; sleep 0.5
  fi
}

[ "$SKIP_OVPN_UDP" = 1 ] || openvpn_phase udp
[ "$SKIP_OVPN_TCP" = 1 ] || openvpn_phase tcp

# --- IKEv2: strongSwan (charon + kernel-libipsec) vs gatehoused, same swanctl client in c0 ---------
ikev2_cases() {  # WHO PID
  [ "$SKIP_PING" = 1 ] || ping_case "ikev2 idle ping" "$1" || true
  iperf_case "ikev2 1 client up" "$1" "$2" 1 up || true
  iperf_case "ikev2 1 client down" "$1" "$2" 1 down || true
  [ "$SKIP_UDP_IPERF" = 1 ] || iperf_case "ikev2 1 client iperf-udp $UDP_RATE" "$1" "$2" 1 udp || true
}
ikev2_phase() {
  (cd "$WORK" && "$GATEHOUSE_CERTS" --pki "$DD/pki" issue-client swan -o "$WORK/swan.crt") >"$WORK/certs-swan.log" 2>&1 \
    || { note "ikev2 1 client up" both "issue-client: $(tail -1 "$WORK/certs-swan.log")"; return 1; }
  local key
  key=$(sed -n 's/^ *key: *//p' "$WORK/certs-swan.log")
  case $key in /*) ;; *) key=$WORK/$key;; esac
  [ -f "$key" ] || { note "ikev2 1 client up" both "no client key ($key)"; return 1; }
  CL=$WORK/swan-client
  write_charon_conf "$CL" "random nonce openssl aes sha1 sha2 md5 mgf1 hmac kdf gcm chapoly curve25519 gmp pem pkcs1 pkcs7 pkcs8 pkcs12 x509 revocation constraints pubkey drbg kernel-libipsec kernel-netlink resolve socket-default vici" ""
  cp "$DD/pki/ca.crt" "$CL/swanctl/x509ca/ca.crt"
  cp "$WORK/swan.crt" "$CL/swanctl/x509/swan.crt"
  cp "$key" "$CL/swanctl/private/swan.key"
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
      certs = swan.crt
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
  start_charon "${NS_C[0]}" "$CL" || { note "ikev2 1 client up" both "client charon did not start"; return 1; }
  CL_CHARON=$CHARON_PID
  swctl "$CL" --load-all --noprompt >"$WORK/swan-client-load.log" 2>&1 \
    || { note "ikev2 1 client up" both "client swanctl --load-all: $(tail -1 "$WORK/swan-client-load.log")"; return 1; }
  connect() { swctl "$CL" --initiate --child bench-child --timeout 20 >>"$WORK/swan-client-initiate.log" 2>&1; }
  disconnect() { swctl "$CL" --terminate --ike bench --timeout 10 >>"$WORK/swan-client-initiate.log" 2>&1 || true; }

  if [ "$SKIP_STOCK" != 1 ]; then
    echo "== ikev2: strongSwan responder (charon-systemd, kernel-libipsec), swanctl client"
    GW=$WORK/swan-gw
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
    addrs = ${POOL%.0/24}.2-${POOL%.0/24}.254
  }
}
EOF
    if ! start_charon "$NS_GW" "$GW"; then note "ikev2 1 client up" stock "responder did not start"
    else
      SS_PID=$CHARON_PID
      if ! swctl "$GW" --load-all --noprompt >"$WORK/swan-gw-load.log" 2>&1; then
        note "ikev2 1 client up" stock "swanctl --load-all: $(tail -1 "$WORK/swan-gw-load.log")"
      elif ! connect; then note "ikev2 1 client up" stock "client could not connect: $(tail -1 "$WORK/swan-client-initiate.log")"
      else ikev2_cases stock "$SS_PID"; disconnect
      fi
      stop_pid "$SS_PID"
    fi
    sleep 1
  fi
  if [ "$SKIP_GATEHOUSED" != 1 ]; then
    echo "== ikev2: gatehoused, same swanctl client"
    if ! start_gatehoused ikev2; then note "ikev2 1 client up" gatehoused "$GH_NOTE"
    elif [ -z "$(inns "$NS_GW" ss -Hlnu 'sport = :4500' 2>/dev/null)" ]; then note "ikev2 1 client up" gatehoused "no IKEv2 listener on UDP 4500"
    elif ! connect; then note "ikev2 1 client up" gatehoused "client could not connect: $(tail -1 "$WORK/swan-client-initiate.log")"
    else ikev2_cases gatehoused "$GH_PID"; disconnect
    fi
    stop_pid "${GH_PID:-0}"; sleep 0.5
  fi
}
if [ "$SKIP_IKEV2" != 1 ]; then
  CL_CHARON=""
  ikev2_phase || true
  # stop the client charon now (its ipsec0 and routes go with it), so c0 is clean for the next phase
  [ -n "$CL_CHARON" ] && stop_pid "$CL_CHARON"
fi

# --- Gatehouse's own client (gatehouse connect --foreground in c0) to gatehoused ------------------
# `gatehouse` sees only this environment: home, socket and a scratch resolv.conf in WORK (it never
# edits the host's /etc/resolv.conf).
GHC_ENV=(env -i PATH="$PATH" HOME="$WORK/ghc" GATEHOUSE_HOME="$WORK/ghc/home" GATEHOUSE_SOCKET="$WORK/ghc/client.sock"
         GATEHOUSE_RESOLV_CONF="$WORK/ghc/resolv.conf" GATEHOUSE_KEYSTORE=file NO_COLOR=1 GATEHOUSE_LOG=info)
ghc_phase() {
  mkdir -p "$WORK/ghc/home"; echo "nameserver 192.0.2.53" >"$WORK/ghc/resolv.conf"
  certs issue-client ghc
  certs export ghc --gateway $GW_UL --format gatehouse -o "$WORK/ghc.gatehouse"
  "${GHC_ENV[@]}" "$GH_CLIENT" import "$WORK/ghc.gatehouse" >"$WORK/ghc-import.log" 2>&1 \
    || { note "gatehouse client up" gatehoused "gatehouse import: $(tail -1 "$WORK/ghc-import.log")"; return 1; }
  echo "== gatehouse client -> gatehoused"
  start_gatehoused ghc || { note "gatehouse client up" gatehoused "$GH_NOTE"; return 1; }
  local proto args log pid over
  for proto in $GHC_PROTOCOLS; do
    args=(connect ghc --foreground); [ "$proto" = default ] || args+=(--protocol "$proto")
    log=$WORK/ghc-$proto.log
    # ip netns exec and env both exec: $! is gatehouse itself
    ip netns exec "${NS_C[0]}" "${GHC_ENV[@]}" "$GH_CLIENT" "${args[@]}" >"$log" 2>&1 &
    pid=$!; STARTED+=($pid)
    if ! wait_log "$log" "Connected: " 30 $pid; then
      note "gatehouse client $proto up" gatehoused "did not connect: $(grep -v '^\s*$' "$log" | tail -1)"
    else
      over=$(sed -n 's/.*Connected: .* over \([^,]*\),.*/\1/p' "$log" | head -1)
      [ "$proto" = default ] && proto=${over:-default}
      [ "$SKIP_PING" = 1 ] || ping_case "gatehouse client $proto idle ping" gatehoused || true
      iperf_case "gatehouse client $proto up" gatehoused "$GH_PID" 1 up || true
      iperf_case "gatehouse client $proto down" gatehoused "$GH_PID" 1 down || true
      [ "$SKIP_UDP_IPERF" = 1 ] || iperf_case "gatehouse client $proto iperf-udp $UDP_RATE" gatehoused "$GH_PID" 1 udp || true
    fi
    kill -INT $pid 2>/dev/null
    for _ in $(seq 100); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done
    stop_pid $pid
    grep -q "disconnecting" "$log" || echo "  (gatehouse connect --foreground did not log a clean disconnect on SIGINT)" >&2
    for _ in $(seq 50); do inns "${NS_C[0]}" ip link show gatehouse-c0 >/dev/null 2>&1 || break; sleep 0.1; done
  done
  stop_pid "$GH_PID"
}
if [ "$SKIP_GHC" != 1 ] && [ "$SKIP_GATEHOUSED" != 1 ]; then ghc_phase || true; fi

# --- WireGuard: wireguard-go as the gateway (the anchor) vs gatehoused, same wireguard-go client in c0 ---
# The client's interface and the anchor's have distinct names: wireguard-go's control sockets live in
# the one /var/run/wireguard of the host.
WG_C=ghbwg-c0; WG_S=ghbwg-s
wg_go() {  # NS IFACE SETCONF ADDR LOG -> WG_PID: wireguard-go IFACE in NS, configured by wg, up
  local ns=$1 ifc=$2 conf=$3 addr=$4 log=$5
  rm -f "/var/run/wireguard/$ifc.sock"
  ip netns exec "$ns" env WG_PROCESS_FOREGROUND=1 wireguard-go -f "$ifc" >"$log" 2>&1 &
  WG_PID=$!; STARTED+=($WG_PID)
  for _ in $(seq 100); do [ -S "/var/run/wireguard/$ifc.sock" ] && break; sleep 0.1; done
  [ -S "/var/run/wireguard/$ifc.sock" ] || return 1
  inns "$ns" wg setconf "$ifc" "$conf" && inns "$ns" ip addr add "$addr" dev "$ifc" && inns "$ns" ip link set "$ifc" up
}
wg_stop() {  # PID IFACE
  stop_pid "$1"; rm -f "/var/run/wireguard/$2.sock"
  for _ in $(seq 50); do inns "${NS_C[0]}" ip link show "$2" >/dev/null 2>&1 || break; sleep 0.1; done
}
wg_cases() {  # WHO PID
  [ "$SKIP_PING" = 1 ] || ping_case "wireguard idle ping" "$1" || true
  iperf_case "wireguard 1 client up" "$1" "$2" 1 up || true
  iperf_case "wireguard 1 client down" "$1" "$2" 1 down || true
  [ "$SKIP_UDP_IPERF" = 1 ] || iperf_case "wireguard 1 client iperf-udp $UDP_RATE" "$1" "$2" 1 udp || true
}
wg_phase() {
  local ck sk cpub spub
  ck=$(wg genkey); cpub=$(echo "$ck" | wg pubkey); sk=$(wg genkey); spub=$(echo "$sk" | wg pubkey)
  if [ "$SKIP_STOCK" != 1 ]; then
    echo "== wireguard: wireguard-go as the gateway (the anchor), wireguard-go client"
    printf '[Interface]\nPrivateKey = %s\nListenPort = 51820\n\n[Peer]\nPublicKey = %s\nAllowedIPs = %s.2/32\n' \
      "$sk" "$cpub" "${POOL%.0/24}" >"$WORK/wg-anchor-gw.conf"
    printf '[Interface]\nPrivateKey = %s\n\n[Peer]\nPublicKey = %s\nEndpoint = %s:51820\nAllowedIPs = %s\nPersistentKeepalive = 25\n' \
      "$ck" "$spub" "$GW_UL" "$LAN_NET" >"$WORK/wg-anchor-client.conf"
    if ! wg_go "$NS_GW" $WG_S "$WORK/wg-anchor-gw.conf" "${POOL%.0/24}.1/24" "$WORK/wireguard-go-gw.log"; then
      note "wireguard 1 client up" stock "wireguard-go (gateway) did not start: $(tail -1 "$WORK/wireguard-go-gw.log")"
    else
      local gwpid=$WG_PID
      if ! wg_go "${NS_C[0]}" $WG_C "$WORK/wg-anchor-client.conf" "${POOL%.0/24}.2/32" "$WORK/wireguard-go-c0-anchor.log"; then
        note "wireguard 1 client up" stock "wireguard-go (client) did not start"
      else
        inns "${NS_C[0]}" ip route replace "$LAN_NET" dev $WG_C
        wg_cases stock "$gwpid"
        wg_stop "$WG_PID" $WG_C
      fi
      wg_stop "$gwpid" $WG_S
    fi
  fi
  if [ "$SKIP_GATEHOUSED" != 1 ]; then
    echo "== wireguard: gatehoused, same wireguard-go client (exported wg-quick file)"
    certs issue-wireguard benchwg
    certs export benchwg --gateway $GW_UL --format wireguard -o "$WORK/benchwg.conf"
    local addr
    addr=$(sed -n 's/^Address *= *\([^,]*\).*/\1/p' "$WORK/benchwg.conf" | head -1)
    grep -Ev '^(Address|DNS|MTU) *=' "$WORK/benchwg.conf" >"$WORK/benchwg.setconf"
    if [ -z "$addr" ]; then note "wireguard 1 client up" gatehoused "no Address in the exported file"
    elif ! start_gatehoused wireguard; then note "wireguard 1 client up" gatehoused "$GH_NOTE"
    elif ! wg_go "${NS_C[0]}" $WG_C "$WORK/benchwg.setconf" "$addr" "$WORK/wireguard-go-c0-gh.log"; then
      note "wireguard 1 client up" gatehoused "wireguard-go (client) did not start"
    else
      inns "${NS_C[0]}" ip route replace "$LAN_NET" dev $WG_C
      wg_cases gatehoused "$GH_PID"
      wg_stop "$WG_PID" $WG_C
    fi
    stop_pid "${GH_PID:-0}"; sleep 0.5
  fi
}
if [ "$SKIP_WG" != 1 ]; then
  if command -v wireguard-go >/dev/null && command -v wg >/dev/null; then wg_phase || true
  else note "wireguard 1 client up" both "wireguard-go / wg missing (apt-get install wireguard-go wireguard-tools)"
  fi
fi

# --- report -----------------------------------------------------------------------------------------
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
python3 - "$RES" "$WORK/table.md" <<PY
import json, sys
res, out = sys.argv[1:]
rows = [json.loads(l) for l in open(res) if l.strip()]
meta = dict(date="$STARTED_AT", commit="$COMMIT", host="$(hostname)", nproc="$(nproc)",
            load_before="$LOAD_BEFORE", load_after="$LOAD_AFTER", duration="$DURATION",
            clients="$CLIENTS", gh="$GATEHOUSED", udp_rate="$UDP_RATE", gro="$UNDERLAY_GRO")
cases, pings = [], []
by = {}
for r in rows:
    by[(r["case"], r["who"])] = r
    lst = pings if (r["kind"] == "ping" or r["case"].endswith("idle ping")) else cases
    if r["case"] not in lst:
        lst.append(r["case"])

def get(case, who):
    r = by.get((case, who))
    if r is None and (case, "both") in by:
        r = by[(case, "both")]
    return r

def cell(r, f, fmt):
    if r is None:
        return "-"
    if r["kind"] == "fail":
        return "fail"
    return fmt.format(r[f])

def ratio(a, b, f):
    if not a or not b or a["kind"] == "fail" or b["kind"] == "fail" or not a.get(f):
        return "-"
    return f"{b[f] / a[f]:.2f}"

def extra(r):
    if r is None or r["kind"] == "fail":
        return "-"
    if r["mode"] == "udp":
        pct = 100 * r["lost"] / max(r["packets"], 1)
        return f"lost {r['lost']}/{r['packets']} ({pct:.2f}%), ooo {r['udp_ooo']}"
    return f"{r['retr'] if r['retr'] is not None else '?'} retr, {r['ofo']} ofo"

L = []
L.append(f"### {meta['date']}, commit {meta['commit']}, {meta['host']}, nproc {meta['nproc']}, "
         f"load average before {meta['load_before']} / after {meta['load_after']}")
L.append("")
L.append(f"{meta['duration']} s per iperf3 run, AES-256-GCM, {meta['clients']} clients in the multi-client cases, "
         f"iperf-udp = iperf3 -u -b {meta['udp_rate']} -l 1300; gatehoused = {meta['gh']}; "
         f"GRO on the veths: {'on (UNDERLAY_GRO=1)' if meta['gro'] == '1' else 'off (veth default)'}")
L.append("stock = the stock server of the protocol: openvpn 2.6, strongSwan (charon, kernel-libipsec), "
         "wireguard-go for the wireguard rows (the anchor); the client is the same stock client for both.")
L.append("")
L.append("| case | stock Mbit/s | gatehoused Mbit/s | ratio | stock CPU s/Gbit | gatehoused CPU s/Gbit | CPU ratio | stock retr/ofo (UDP: lost, ooo) | gatehoused retr/ofo (UDP: lost, ooo) | box busy % stock/gh |")
L.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | --- |")
for c in cases:
    a, b = get(c, "stock"), get(c, "gatehoused")
    busy = "/".join(cell(x, "busy", "{:.0f}") for x in (a, b))
    L.append(f"| {c} | {cell(a, 'mbit', '{:.0f}')} | {cell(b, 'mbit', '{:.0f}')} | {ratio(a, b, 'mbit')} | "
             f"{cell(a, 'cpu_per_gbit', '{:.2f}')} | {cell(b, 'cpu_per_gbit', '{:.2f}')} | {ratio(a, b, 'cpu_per_gbit')} | "
             f"{extra(a)} | {extra(b)} | {busy} |")
if pings:
    L.append("")
    L.append("| idle ping c0 -> LAN host, ms | stock avg / p50 / max | gatehoused avg / p50 / max | avg ratio | p50 ratio |")
    L.append("| --- | --- | --- | ---: | ---: |")
    def p(r):
        if r is None: return "-"
        if r["kind"] == "fail": return "fail"
        lost = "" if r["n"] == r["sent"] else f" ({r['sent'] - r['n']} lost)"
        return f"{r['avg']:.3f} / {r['p50']:.3f} / {r['max']:.3f}{lost}"
    for c in pings:
        a, b = get(c, "stock"), get(c, "gatehoused")
        L.append(f"| {c.replace(' idle ping', '')} | {p(a)} | {p(b)} | {ratio(a, b, 'avg')} | {ratio(a, b, 'p50')} |")
fails = [r for r in rows if r["kind"] == "fail"]
if fails:
    L.append("")
    for r in fails:
        L.append(f"- not measured: {r['case']} / {r['who']}: {r['note']}")

# the issue's targets, from the rows above
T = []
def val(case, who, f):
    r = get(case, who)
    return None if r is None or r["kind"] == "fail" else r[f]
for c in cases:
    s, g = val(c, "stock", "cpu_per_gbit"), val(c, "gatehoused", "cpu_per_gbit")
    if s and g and "iperf-udp" not in c and not c.startswith("wireguard"):
        goal = 1 / 5 if c.startswith("ikev2") else 1 / 3
        T.append(f"{c}: CPU/Gbit ratio {g / s:.2f} (target <= {goal:.2f}) {'ok' if g / s <= goal else 'MISSED'}")
    if "clients" in c and "iperf-udp" not in c:
        s, g = val(c, "stock", "mbit"), val(c, "gatehoused", "mbit")
        if s and g:
            T.append(f"{c}: throughput ratio {g / s:.2f} (target >= 2) {'ok' if g / s >= 2 else 'MISSED'}")
    if c.startswith("gatehouse client") and "iperf-udp" not in c:
        g = val(c, "gatehoused", "mbit")
        if g:
            T.append(f"{c}: {g:.0f} Mbit/s (target >= 5000) {'ok' if g >= 5000 else 'MISSED'}")
for c in pings:
    s, g = val(c, "stock", "p50"), val(c, "gatehoused", "p50")
    if s and g:
        T.append(f"{c}: p50 {g:.3f} vs stock {s:.3f} ms {'ok' if g <= s * 1.1 + 0.02 else 'WORSE'} (no worse than stock)")
if T:
    L.append("")
    L.append("Targets (issue 13):")
    L.append("")
    for t in T:
        L.append(f"- {t}")
open(out, "w").write("\n".join(L) + "\n")
PY
echo
cat "$WORK/table.md"
if [ "$RECORD" = 1 ]; then
  if [ ! -f "$RESULTS" ]; then
    cat >"$RESULTS" <<'EOF'
# Stock gateways vs gatehoused, one run each (bench/compare.sh)

Columns are described in bench/compare.md. Mbit/s = iperf3 receiver side (sum over clients);
CPU s/Gbit = the gateway process's utime+stime (all threads) during the iperf3 run divided by
the gigabits received; ratio and CPU ratio = gatehoused / stock; retr = TCP retransmits (iperf3
sender); ofo = TCP segments the receivers queued out of order (TcpExt TCPOFOQueue delta);
busy = whole machine during the run. Compare stock and gatehoused within one block only.
EOF
  fi
  { echo; cat "$WORK/table.md"; } >>"$RESULTS"
  echo "appended to $RESULTS"
fi
