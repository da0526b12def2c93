#!/usr/bin/env bash
# Multi-site at cloud scale (issue 13): SITES site-to-site connections on one gatehoused, each
# an IKEv2 peer of gatehouse-loadgen's site mode (the engine's IkeInitiator with a pre-shared
# key, from its own source address, with its own address space), in namespaces this script
# creates:
#
#   loadgen ns ghb-site<pid>-lg   up0 10.250.176.2/24 + 10.250.176.10..(10+SITES-1)/24 (one per site)
#        |
#   gateway ns ghb-site<pid>-gw   ul0 10.250.176.1/24, TUN ghb-site0, lan0 10.251.176.1/24
#        |
#   lan ns ghb-site<pid>-lan      eth0 10.251.176.10/24, default via 10.251.176.1
#
# Site i (connection lg-site-<iii>) sends from 10.250.176.(10+i) and owns 10.200.i.0/24; the
# gateway's `[[connection]]` entries and the sites' 0600 key files come from
# `gatehouse-loadgen sites-config`. Every site pings the LAN host from 10.200.i.1 through
# its tunnel (PPS per second) for HOLD seconds and rekeys its CHILD SA every ~CHILD_LIFETIME s
# and its IKE SA every ~IKE_LIFETIME s (the sites start the rekeys; the gateway answers).
# Checks `gatehoused status --json` near the end of the hold: every connection listed
# `connected`, with its byte counters moving both ways since a snapshot near the start.
# Prints the load generator's summary and the check, and appends a row to
# bench/results-sites.md (date, commit, machine). Traffic only goes to addresses in these
# namespaces; an EXIT trap stops what the script started (by pid) and deletes them.
#
# Usage (root): bench/sites.sh
# Knobs: SITES=100 HOLD=60 PPS=2 PACKET=100 CHILD_LIFETIME=20 IKE_LIFETIME=30 CONCURRENCY=32
#        THREADS=1 (loadgen threads)  PIN=0 (1: gateway on core 1, loadgen on core 0)
#        POLICY=0 (1: policy-based connections, selectors 10.200.i.0/24 <-> the LAN; default route-based)
#        BIN_DIR=target/release  NO_BUILD=1 (use existing binaries)  KEEP=1 (keep the work dir)
#        RESULTS=file (default bench/results-sites.md)  WAIT_IDLE=30 (0 = don't wait)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

SITES=${SITES:-100}
HOLD=${HOLD:-60}
PPS=${PPS:-2}
PACKET=${PACKET:-100}
CHILD_LIFETIME=${CHILD_LIFETIME:-20}
IKE_LIFETIME=${IKE_LIFETIME:-30}
CONCURRENCY=${CONCURRENCY:-32}
THREADS=${THREADS:-1}
PIN=${PIN:-0}
POLICY=${POLICY:-0}
WAIT_IDLE=${WAIT_IDLE:-30}
RESULTS=${RESULTS:-$ROOT/bench/results-sites.md}
BIN_DIR=${BIN_DIR:-$ROOT/target/release}

[ "$(id -u)" -eq 0 ] || { echo "needs root (network namespaces, TUN)" >&2; exit 1; }
for p in ip python3 taskset; do
  command -v $p >/dev/null || { echo "missing $p (apt-get install iproute2 python3 util-linux)" >&2; exit 1; }
done
[ "$SITES" -ge 1 ] && [ "$SITES" -le 200 ] || { echo "SITES must be 1..200 (10.250.176.10.. and 10.200.0-199.0/24)" >&2; exit 1; }
[ "$HOLD" -ge 15 ] || { echo "HOLD must be at least 15 s (status snapshots 5 s after its start and 5 s before its end)" >&2; exit 1; }

if [ "${NO_BUILD:-0}" != 1 ]; then
  case $BIN_DIR in
    */release)
      echo "== cargo build --release -p gatehouse-loadgen -p gatehouse-server (into $BIN_DIR)"
      (cd "$ROOT" && cargo build --release --target-dir "$(dirname "$BIN_DIR")" -p gatehouse-loadgen -p gatehouse-server);;
    *) echo "BIN_DIR=$BIN_DIR is not a cargo .../release dir: build the binaries yourself and set NO_BUILD=1" >&2; exit 1;;
  esac
fi
for b in gatehoused gatehouse-loadgen; do
  [ -x "$BIN_DIR/$b" ] || { echo "no $BIN_DIR/$b (cargo build --release -p gatehouse-server -p gatehouse-loadgen)" >&2; exit 1; }
done

TAG=ghb-site$$
NS_GW=$TAG-gw; NS_LG=$TAG-lg; NS_LAN=$TAG-lan
GW_UL=10.250.176.1; LG_UL=10.250.176.2; SRC_BASE=10.250.176.10
GW_LAN=10.251.176.1; LAN_HOST=10.251.176.10; LAN_NET=10.251.176.0/24
SPACE_BASE=10.200.0.0/24
TUN=ghb-site0
WORK=$(mktemp -d /tmp/gh-bench-sites.XXXXXX)
bench_traps

CORE_GW=(); CORE_LG=()
if [ "$PIN" = 1 ] && [ "$(nproc)" -ge 2 ]; then CORE_GW=(taskset -c 1); CORE_LG=(taskset -c 0); fi

# --- topology -------------------------------------------------------------------------------
mkns "$NS_GW"; mkns "$NS_LG"; mkns "$NS_LAN"
ip link add up0 netns "$NS_LG" type veth peer name ul0 netns "$NS_GW"
ip -n "$NS_LG" addr add $LG_UL/24 dev up0
for i in $(seq 0 $((SITES - 1))); do
  ip -n "$NS_LG" addr add "10.250.176.$((10 + i))/24" dev up0
done
ip -n "$NS_LG" link set up0 up
ip -n "$NS_GW" addr add $GW_UL/24 dev ul0; ip -n "$NS_GW" link set ul0 up
ip link add eth0 netns "$NS_LAN" type veth peer name lan0 netns "$NS_GW"
ip -n "$NS_LAN" addr add $LAN_HOST/24 dev eth0; ip -n "$NS_LAN" link set eth0 up
ip -n "$NS_LAN" route add default via $GW_LAN
ip -n "$NS_GW" addr add $GW_LAN/24 dev lan0; ip -n "$NS_GW" link set lan0 up
inns "$NS_GW" sysctl -qw net.ipv4.ip_forward=1
inns "$NS_LG" ping -q -c1 -W2 $GW_UL >/dev/null || { echo "underlay broken" >&2; exit 1; }
inns "$NS_GW" ping -q -c1 -W2 $LAN_HOST >/dev/null || { echo "LAN broken" >&2; exit 1; }

# --- gateway ----------------------------------------------------------------------------------
DD=$WORK/gw
"$BIN_DIR/gatehoused" init --data-dir "$DD" --public-addr $GW_UL --address-space $LAN_NET >"$WORK/init.log" 2>&1 \
  || { echo "gatehoused init failed: $(tail -3 "$WORK/init.log")" >&2; exit 1; }
python3 - "$DD/gateway.toml" "$TUN" <<'PY'
import re, sys
path, tun = sys.argv[1:]
s = open(path).read()
s = re.sub(r'(?m)^tun_name = .*$', f'tun_name = "{tun}"', s)
s = re.sub(r'(?m)^tcp_port = .*$', 'tcp_port = 0', s)
open(path, "w").write(s)
PY
SITE_ARGS=(--sites "$SITES" --site-source-base $SRC_BASE --site-space-base $SPACE_BASE
           --site-psk-dir "$DD/site-keys" --site-child-lifetime "$CHILD_LIFETIME" --site-ike-lifetime "$IKE_LIFETIME")
[ "$POLICY" = 1 ] && SITE_ARGS+=(--site-gateway-space $LAN_NET)
{ echo; "$BIN_DIR/gatehouse-loadgen" sites-config "${SITE_ARGS[@]}"; } >>"$DD/gateway.toml"
"$BIN_DIR/gatehoused" check --config "$DD/gateway.toml" >"$WORK/check.log" 2>&1 \
  || { echo "gatehoused check failed:" >&2; tail -5 "$WORK/check.log" >&2; exit 1; }
echo "== gateway.toml: $(grep -c '^\[\[connection\]\]' "$DD/gateway.toml") connections (gatehoused check: OK)"

ip netns exec "$NS_GW" "${CORE_GW[@]}" env NO_COLOR=1 GATEHOUSE_LOG=info "$BIN_DIR/gatehoused" run --data-dir "$DD" >"$WORK/gatehoused.log" 2>&1 &
GW_PID=$!; STARTED+=($GW_PID)
wait_log "$WORK/gatehoused.log" "gateway ready" 20 $GW_PID \
  || { echo "gatehoused did not start:" >&2; tail -20 "$WORK/gatehoused.log" >&2; exit 1; }
grep -q gatehoused "/proc/$GW_PID/comm" || { echo "pid $GW_PID is not gatehoused" >&2; exit 1; }

status_json() { "$BIN_DIR/gatehoused" status --data-dir "$DD" --json >"$1" 2>"$1.err" || true; }

# --- the run ----------------------------------------------------------------------------------
wait_idle
echo "== $SITES sites, hold ${HOLD}s, $PPS echo requests/s each to $LAN_HOST, CHILD rekey ~${CHILD_LIFETIME}s, IKE rekey ~${IKE_LIFETIME}s"
read -r B0 T0 < <(sysjiffies); G0=$(proc_jiffies $GW_PID); W0=$(date +%s.%N)
ip netns exec "$NS_LG" "${CORE_LG[@]}" "$BIN_DIR/gatehouse-loadgen" --gateway $GW_UL "${SITE_ARGS[@]}" \
    --concurrency "$CONCURRENCY" --hold "$HOLD" --pps "$PPS" --packet-size "$PACKET" --target $LAN_HOST \
    --gateway-pid $GW_PID --threads "$THREADS" --json >"$WORK/sites.json" 2> >(tee "$WORK/loadgen.log" | sed 's/^/  /' >&2) &
LG_PID=$!; STARTED+=($LG_PID)
# Status snapshots 5 s into the hold and 5 s before its end (the sites disconnect after it).
wait_log "$WORK/loadgen.log" "holding" 120 $LG_PID || { echo "the sites never reached the hold" >&2; }
sleep 5; status_json "$WORK/status-start.json"
sleep $((HOLD - 10)); status_json "$WORK/status-end.json"
L1=0
while kill -0 $LG_PID 2>/dev/null; do L1=$(proc_jiffies $LG_PID); sleep 0.5; done
wait $LG_PID || { echo "gatehouse-loadgen failed" >&2; tail -20 "$WORK/loadgen.log" >&2; exit 1; }
read -r B1 T1 < <(sysjiffies); G1=$(proc_jiffies $GW_PID); W1=$(date +%s.%N)
LOAD_OTHER=$(( ((B1 - B0) - (G1 - G0) - L1) * 100 / (T1 - T0 + 1) )); [ "$LOAD_OTHER" -lt 0 ] && LOAD_OTHER=0
# gatehoused CPU over the whole run (handshakes, hold, teardown), % of one core.
GW_CPU=$(awk -v g=$((G1 - G0)) -v w0="$W0" -v w1="$W1" 'BEGIN { printf "%.1f", g / (w1 - w0) }')
echo "  machine: other processes used ${LOAD_OTHER}% of it during the run; gatehoused ${GW_CPU}% of one core"

echo "== summary"
RC=0
python3 - "$WORK/sites.json" "$WORK/status-start.json" "$WORK/status-end.json" "$SITES" "$WORK/summary.txt" "$GW_CPU" <<'PY' || RC=$?
import json, sys
rep_path, s0_path, s1_path, n, out, gw_cpu = sys.argv[1:]
n = int(n)
r = json.load(open(rep_path))
def load(p):
    try:
        return {c["name"]: c for c in json.load(open(p))["connections"]}
    except Exception:
        return {}
s0, s1 = load(s0_path), load(s1_path)
connected = [c for c in s1.values() if c["state"] == "connected"]
moving = [c for c in connected if c["name"] in s0
          and c["rx_bytes"] > s0[c["name"]]["rx_bytes"] and c["tx_bytes"] > s0[c["name"]]["tx_bytes"]]
p = next(p for p in r["phases"] if p["proto"] == "site")
s = r["sites"]
m = r.get("gateway_memory") or {}
kib = lambda k: f"{m[k]/1024:.1f} MiB" if m.get(k) is not None else "-"
t = r.get("traffic") or {}
sp = lambda x: f"min {x['min']} / median {x['median']} / max {x['max']}"
lines = [
    f"sites up: {p['established']}/{p['requested']} ({p['failed']} failed) in {p['seconds']:.2f} s = {p['handshakes_per_sec']:.0f} handshakes/s "
    f"(p50 {p['latency_ms']['p50']:.0f} ms, max {p['latency_ms']['max']:.0f} ms; gateway CPU {p['gateway_cpu_ms_per_handshake'] or 0:.2f} ms each)",
    f"still up at the end of the {r['hold_seconds']:.0f} s hold: {s['held']}/{n} (lost {p['lost']})",
    f"echo replies per site: {sp(s['replies'])} ({s['replies']['total']} of {s['sent']['total']} requests answered; {s['replies']['sites_with_any']} sites with replies)",
    f"CHILD SA rekeys per site: {sp(s['child_rekeys'])} (total {s['child_rekeys']['total']}); IKE SA rekeys per site: {sp(s['ike_rekeys'])} (total {s['ike_rekeys']['total']})",
    f"gatehoused status near the end of the hold: {len(s1)} connections listed, {len(connected)} connected, {len(moving)} with bytes moving both ways",
    f"gateway RSS: {kib('before_kib')} before, {kib('established_kib')} all up, {kib('end_of_hold_kib')} end of hold, peak {kib('peak_sampled_kib')}; "
    f"gateway CPU over the run {gw_cpu}% of one core",
]
ok = p["established"] == n and s["held"] == n and s["replies"]["sites_with_any"] == n \
    and s["child_rekeys"]["sites_with_any"] == n and s["ike_rekeys"]["sites_with_any"] == n \
    and len(s1) == n and len(moving) == n
lines.append("RESULT: " + ("PASS - every site up, passing traffic, rekeyed, listed connected" if ok else "FAIL - see above"))
print("\n".join(lines))
row = {
    "up": f"{p['established']}/{n}", "hs": f"{p['handshakes_per_sec']:.0f}", "held": f"{s['held']}/{n}",
    "replies": f"{s['replies']['min']}/{s['replies']['median']}/{s['replies']['max']}",
    "answered": f"{s['replies']['total']}/{s['sent']['total']}",
    "child": f"{s['child_rekeys']['total']} (min {s['child_rekeys']['min']})",
    "ike": f"{s['ike_rekeys']['total']} (min {s['ike_rekeys']['min']})",
    "status": f"{len(moving)}/{len(s1)}",
    "rss": f"{m.get('before_kib', 0)/1024:.1f} -> {(m.get('end_of_hold_kib') or 0)/1024:.1f} (peak {m.get('peak_sampled_kib', 0)/1024:.1f})",
    "cpu": gw_cpu,
    "ok": "PASS" if ok else "FAIL",
}
json.dump(row, open(out, "w"))
sys.exit(0 if ok else 3)
PY
[ -s "$WORK/summary.txt" ] || { echo "no summary (see the load generator's output above)" >&2; exit 1; }
grep -E "connection (refused|attempt failed)" "$WORK/gatehoused.log" | head -5 | sed 's/^/  gateway: /' || true

# --- record -----------------------------------------------------------------------------------
if [ ! -f "$RESULTS" ]; then
  cat >"$RESULTS" <<'EOF'
# Many site-to-site connections on one gateway: gatehouse-loadgen --sites -> gatehoused (bench/sites.sh)

Release builds unless the build column says otherwise. Each site is an IKEv2 peer (PSK,
AES-256-GCM, x25519) from its own source address with its own /24, pinging a LAN host behind
the gateway through its tunnel and rekeying (CHILD and IKE SAs at the lifetimes given). Up =
sites established / configured, at hs/s handshakes per second; held = still up at the end of
the hold; replies = echo replies per site (min/median/max) and answered/sent overall; rekeys =
total (smallest per site); status = connections `connected` with byte counters moving both
ways in `gatehoused status --json` / connections listed; gateway VmRSS before -> end of hold
(peak), MiB; gw CPU = gatehoused's CPU over the whole run, % of one core; other load = CPU used by
other processes during the run, % of the machine.

| date (UTC) | host | cores | build | commit | sites | hold s | pps | CHILD/IKE lifetime s | up (hs/s) | held | replies/site | answered | CHILD rekeys | IKE rekeys | status | RSS MiB | gw CPU | other load | result |
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |
EOF
fi
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "-")
python3 - "$WORK/summary.txt" "$RESULTS" "$(date -u +%Y-%m-%dT%H:%MZ)" "$(hostname)" "$(nproc)" "$(basename "$BIN_DIR")" "$COMMIT" \
    "$SITES" "$HOLD" "$PPS" "$CHILD_LIFETIME/$IKE_LIFETIME" "$LOAD_OTHER%" <<'PY'
import json, sys
summary, results, date, host, cores, build, commit, sites, hold, pps, lifetimes, other = sys.argv[1:]
r = json.load(open(summary))
row = [date, host, cores, build, commit, sites, hold, pps, lifetimes, f"{r['up']} ({r['hs']})", r["held"],
       r["replies"], r["answered"], r["child"], r["ike"], r["status"], r["rss"], f"{r['cpu']}%", other, r["ok"]]
open(results, "a").write("| " + " | ".join(row) + " |\n")
PY
echo "appended to $RESULTS"
exit $RC
