#!/usr/bin/env bash
# The gateway's work per idle ping round trip, counted in instructions (valgrind callgrind),
# not seconds: the count is the same whatever else the machine is doing, so two builds (or
# gatehoused and the stock openvpn server) compare in one run without the machine's drift.
# Each gateway runs under callgrind with instrumentation off; a stock openvpn 2.6 client connects
# over OpenVPN UDP (or TCP); instrumentation is switched on for PING_COUNT pings (c0 -> LAN host,
# 20 ms apart) and off again. Prints instructions per round trip (whole process: every
# thread, timers included) and the functions that spent the most, and keeps the callgrind
# files when KEEP=1 (read them with callgrind_annotate).
#
#   c0 ns up0 10.250.195.10/24 ---- cl0 10.250.195.1/24  gateway ns  lan0 10.250.196.1/24 ---- gw0 10.250.196.10/24  lan ns
#   VPN pool: 10.250.197.0/24
#
# Usage (root): bench/ping-cost.sh [GATEHOUSED_BINARY...]   (default: target/release/gatehoused)
#   A binary may be given as LABEL=PATH. gatehouse-certs comes from the first binary's folder.
# Knobs: PING_COUNT=200  PROTO=udp|tcp  STOCK=1 (0: skip the stock openvpn server)  TOP=12
#        KEEP=1 (keep the work dir)
# Namespaces are ghb-pc-<pid>-*; an EXIT trap removes them and stops what the script started.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

PING_COUNT=${PING_COUNT:-200}
PROTO=${PROTO:-udp}
STOCK=${STOCK:-1}
TOP=${TOP:-12}
[ "$(id -u)" -eq 0 ] || { echo "needs root (network namespaces, TUN)" >&2; exit 1; }
for p in ip openvpn ping valgrind callgrind_control callgrind_annotate python3; do
  command -v $p >/dev/null || { echo "missing $p (apt-get install openvpn iputils-ping iproute2 valgrind python3)" >&2; exit 1; }
done
case $PROTO in udp|tcp) ;; *) echo "PROTO is udp or tcp" >&2; exit 2;; esac
[ $# -gt 0 ] || set -- "$ROOT/target/release/gatehoused"
LABELS=() BINS=()
for a in "$@"; do
  case $a in *=*) LABELS+=("${a%%=*}"); BINS+=("${a#*=}");; *) LABELS+=("$(basename "$(dirname "$(dirname "$a")")")"); BINS+=("$a");; esac
  [ -x "${BINS[-1]}" ] || { echo "not an executable: ${BINS[-1]}" >&2; exit 1; }
done
CERTS_BIN=$(dirname "${BINS[0]}")/gatehouse-certs
[ -x "$CERTS_BIN" ] || { echo "missing $CERTS_BIN (cargo build --release -p gatehouse-certs)" >&2; exit 1; }

P=ghb-pc-$$
NS_GW=$P-gw NS_C=$P-c0 NS_LAN=$P-lan
GW_UL=10.250.195.1 C_UL=10.250.195.10 GW_LAN=10.250.196.1 LAN_HOST=10.250.196.10
LAN_NET=10.250.196.0/24 POOL=10.250.197.0/24
WORK=$(mktemp -d /tmp/ghb-pc.XXXXXX)
bench_traps

mkns "$NS_GW"; mkns "$NS_C"; mkns "$NS_LAN"
ip link add up0 netns "$NS_C" type veth peer name cl0 netns "$NS_GW"
ip link add lan0 netns "$NS_GW" type veth peer name gw0 netns "$NS_LAN"
ip -n "$NS_GW" addr add $GW_UL/24 dev cl0; ip -n "$NS_GW" link set cl0 up
ip -n "$NS_C" addr add $C_UL/24 dev up0; ip -n "$NS_C" link set up0 up
ip -n "$NS_GW" addr add $GW_LAN/24 dev lan0; ip -n "$NS_GW" link set lan0 up
ip -n "$NS_LAN" addr add $LAN_HOST/24 dev gw0; ip -n "$NS_LAN" link set gw0 up
ip -n "$NS_LAN" route add default via $GW_LAN
inns "$NS_GW" sysctl -q -w net.ipv4.ip_forward=1
inns "$NS_C" ping -q -c1 -W2 $GW_UL >/dev/null || { echo "underlay broken" >&2; exit 1; }

# One PKI (gatehoused init of the first binary) for every gateway in the run.
DD=$WORK/gatehoused
"${BINS[0]}" init --data-dir "$DD" --public-addr $GW_UL --address-space $LAN_NET --client-pool $POOL \
    >"$WORK/init.log" 2>&1 || { echo "gatehoused init failed:" >&2; cat "$WORK/init.log" >&2; exit 1; }
"$CERTS_BIN" --pki "$DD/pki" issue-client pc0 >>"$WORK/certs.log" 2>&1
"$CERTS_BIN" --pki "$DD/pki" export pc0 --gateway $GW_UL --format ovpn -o "$WORK/pc0.ovpn" >>"$WORK/certs.log" 2>&1
if [ "$PROTO" = tcp ]; then
  sed -i -e 's/^proto udp$/proto tcp-client/' -e "s/^remote $GW_UL 1194\$/remote $GW_UL 443/" "$WORK/pc0.ovpn"
fi
stock_openvpn_conf "$WORK/stock.conf" "$PROTO" ghb-pcs "$DD/pki" $POOL $LAN_NET $GW_UL

# measure LABEL READY_PATTERN CMD...: the gateway under callgrind, one client, PING_COUNT pings
RESULTS=()
measure() {
  local label=$1 ready=$2; shift 2
  local log=$WORK/gw-$label.log out=$WORK/callgrind-$label.out clog=$WORK/client-$label.log pid cpid
  ip netns exec "$NS_GW" env RUST_LOG=info NO_COLOR=1 valgrind --tool=callgrind --instr-atstart=no \
      --callgrind-out-file="$out" "$@" >"$log" 2>&1 &
  pid=$!; STARTED+=($pid)
  wait_log "$log" "$ready" 120 $pid || { echo "$label did not start: $(tail -3 "$log")" >&2; return 1; }
  ip netns exec "$NS_C" openvpn --config "$WORK/pc0.ovpn" --dev-type tun --dev ghb-pcc --disable-dco \
      --data-ciphers AES-256-GCM --verb 3 >"$clog" 2>&1 &
  cpid=$!; STARTED+=($cpid)
  wait_log "$clog" "Initialization Sequence Completed" 120 $cpid \
    || { echo "client to $label did not connect: $(tail -1 "$clog")" >&2; stop_pid $cpid; stop_pid $pid; return 1; }
  local ok=0
  for _ in $(seq 20); do inns "$NS_C" ping -q -c1 -W2 $LAN_HOST >/dev/null 2>&1 && { ok=1; break; }; done
  [ $ok = 1 ] || { echo "LAN host unreachable through $label" >&2; stop_pid $cpid; stop_pid $pid; return 1; }
  sleep 1
  callgrind_control -i on $pid >/dev/null
  inns "$NS_C" ping -n -c "$PING_COUNT" -i 0.02 -W 2 $LAN_HOST >"$WORK/ping-$label.txt" 2>&1 || true
  callgrind_control -i off $pid >/dev/null
  stop_pid $cpid
  kill $pid; for _ in $(seq 300); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done
  [ -s "$out" ] || { echo "$label: no callgrind output" >&2; return 1; }
  local got
  got=$(grep -c 'bytes from' "$WORK/ping-$label.txt" || true)
  RESULTS+=("$label $got $out")
}

for i in "${!BINS[@]}"; do
  echo "== ${LABELS[$i]}: ${BINS[$i]} (OpenVPN $PROTO)" >&2
  # Each build writes the configuration it knows (older builds refuse newer keys); all
  # share the one PKI, so one client profile serves them all.
  d=$WORK/gatehoused-$i
  "${BINS[$i]}" init --data-dir "$d" --public-addr $GW_UL --address-space $LAN_NET --client-pool $POOL \
      >"$WORK/init-$i.log" 2>&1 || { echo "${LABELS[$i]}: init failed: $(tail -1 "$WORK/init-$i.log")" >&2; continue; }
  rm -rf "$d/pki"; cp -a "$DD/pki" "$d/pki"
  measure "${LABELS[$i]}" "gateway ready" "${BINS[$i]}" run --data-dir "$d" || true
done
if [ "$STOCK" = 1 ]; then
  echo "== stock openvpn server (OpenVPN $PROTO)" >&2
  measure stock "Initialization Sequence Completed" openvpn --config "$WORK/stock.conf" || true
fi

[ ${#RESULTS[@]} -gt 0 ] || { echo "no gateway was measured" >&2; exit 1; }
for r in "${RESULTS[@]}"; do
  read -r label got out <<<"$r"
  callgrind_annotate --auto=no --inclusive=no --threshold=100 "$out" >"$out.txt" 2>/dev/null
done
# Per round trip: each gateway's total, then the functions (self cost, summed over source
# files) that differ most between the gateways measured, or spend most when there is one.
python3 - "$PROTO" "$PING_COUNT" "$TOP" "${RESULTS[@]}" <<'PY'
import re, sys
proto, count, top = sys.argv[1], sys.argv[2], int(sys.argv[3])
runs = []
for r in sys.argv[4:]:
    label, got, out = r.split(" ", 2)
    got = max(1, int(got))
    total, funcs, body = 0, {}, False
    for line in open(out + ".txt"):
        if "file:function" in line:
            body = True
        m = re.match(r"\s*([\d,]+) \(\s*[\d.]+%\)\s+(.*)$", line.rstrip("\n"))
        if not m:
            continue
        n, what = int(m.group(1).replace(",", "")), m.group(2)
        if what == "PROGRAM TOTALS":
            total = n
            continue
        if not body:
            continue
        name = re.sub(r" \[[^\]]*\]$", "", what)
        name = name.split(":", 1)[1] if ":" in name else name
        funcs[name] = funcs.get(name, 0) + n / got
    runs.append((label, got, total / got, funcs))
print()
print(f"Instructions per idle ping round trip (OpenVPN {proto}, stock openvpn 2.6 client, "
      f"{count} pings 20 ms apart; the whole gateway process, user space)")
for label, got, per, _ in runs:
    print(f"  {label:<14} {per:9.0f}  ({got} replies)")
names = set().union(*(f for *_, f in runs))
if len(runs) > 1:
    key = lambda n: max(f.get(n, 0) for *_, f in runs) - min(f.get(n, 0) for *_, f in runs)
    print(f"\nThe {top} functions that differ most (self instructions per round trip)")
else:
    key = lambda n: runs[0][3].get(n, 0)
    print(f"\nThe {top} functions that spend most (self instructions per round trip)")
print("  " + "".join(f"{label[:10]:>11}" for label, *_ in runs) + "  function")
for n in sorted(names, key=key, reverse=True)[:top]:
    print("  " + "".join(f"{f.get(n, 0):11.0f}" for *_, f in runs) + "  " + n[:110])
PY
