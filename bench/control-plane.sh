#!/usr/bin/env bash
# Control plane vs data plane (issue 13: "the control plane (handshakes, rekeys, admission) does
# not block the workers"): one established stock OpenVPN client's ping and iperf3 through
# gatehoused, idle and during an OpenVPN handshake storm from gatehouse-loadgen, with
# handshake_threads = 0 (TLS handshakes on the workers, the old behaviour) and 1 (handed to a
# handshake thread at nice +10), alternated in one run. Prints a table with the ratios between
# the modes and appends one row per round and mode to bench/results-control-plane.md.
#
#   cl ns  up0 10.250.191.10/24 --+
#                                 +-- br0 10.250.191.1/24  gateway ns  lan0 10.251.191.1/24 ---- gw0 10.251.191.10/24  lan ns
#   lg ns  up0 10.250.191.x/24  --+        TUN ghb191, pool 10.192.0.0/16                      (iperf3 -s, ping target)
#   (x in 20..39: see SAME_WORKER)
#
# Namespaces are ghb191-<pid>-*; an EXIT trap (also on Ctrl-C and on any failure) resumes the
# paused fuzzers, stops what the script started, by pid, and deletes the namespaces.
#
# Per round, mode (order 0, 1, 0, 1, ...) and kind (ping, iperf): a fresh copy of one
# `gatehoused init` data dir (certificates issued once, beforehand), handshake_threads set in
# gateway.toml, gatehoused started, one stock `openvpn` 2.6 client (UDP, AES-256-GCM, no DCO)
# connected from cl, then
#   ping idle:   ping -i 0.01 for SECS s from cl to the LAN host;
#   ping storm:  the same while gatehouse-loadgen in lg opens up to STORM_SESSIONS OpenVPN
#                sessions as fast as STORM_CONCURRENCY handshakes in flight allow; the window
#                starts when it has loaded its credentials, and it is killed when the window
#                ends (the gateway, with its sessions, is stopped next);
#   iperf idle / iperf storm: one iperf3 TCP stream cl -> LAN host, SECS s, the same way.
# Handshakes/s = sessions up at the load generator's last progress line (every 2 s) inside
# the window / its seconds since the start; if every session was up before the window ended,
# its summary's rate, and the row says so.
#
# Usage (root): bench/control-plane.sh
# The gateway steers every packet of one source address to one worker
# (engine/src/gateway/shard.rs worker_of_ip); the load generator's address is picked so that the
# storm lands on the stock client's worker (SAME_WORKER=1, the case where handshakes on the
# workers hold up a tunnel) or on another one (SAME_WORKER=0: only CPU is shared). The gateway
# refuses more than 64 OpenVPN handshakes in progress from one address, hence 48 in flight.
#
# STORM_KIND=ikev2 storms with IKEv2 sessions instead (IKE_SA_INIT + IKE_AUTH, x25519, ECDSA
# P-256): the gateway holds at most 16 half-open IKE SAs per address, hence 16 in flight, and
# cookie_threshold is raised so that the storm's handshakes skip the COOKIE round trip.
#
# Knobs: ROUNDS=2  SECS=10  MODES="0 1"  STORM_KIND=openvpn  STORM_SESSIONS=9000
#        STORM_CONCURRENCY=48 (openvpn) / 16 (ikev2)  SAME_WORKER=1
#        LG_THREADS=1 (load generator threads)  WORKERS=0 (gateway workers; 0 = one per core)
#        POOL=10.192.0.0/16 (client pool; it must hold every storm session the window reaches)
#        BIN_DIR=target/release (built first unless NO_BUILD=1; CARGO_TARGET_DIR = its parent)
#        FUZZ_PAUSE=1  FUZZ_PATTERN='fuzz/target|/fuzzwork/' (pgrep -f ERE: processes SIGSTOPped
#        during the measurements and SIGCONTed afterwards, always)
#        WAIT_IDLE=20 (max s to wait for a quiet machine before each measurement)
#        PERF=1 (perf record -g of gatehoused during each storm window -> WORK/perf-*.data; KEEP=1)
#        RECORD=1 (append to RESULTS)  RESULTS=bench/results-control-plane.md  KEEP=1 (keep work dir)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

ROUNDS=${ROUNDS:-2}
SECS=${SECS:-10}
MODES=${MODES:-0 1}
STORM_KIND=${STORM_KIND:-openvpn}
case $STORM_KIND in
  openvpn) STORM_CONCURRENCY=${STORM_CONCURRENCY:-48};;
  ikev2) STORM_CONCURRENCY=${STORM_CONCURRENCY:-16};;
  *) echo "STORM_KIND must be openvpn or ikev2" >&2; exit 1;;
esac
STORM_SESSIONS=${STORM_SESSIONS:-9000}
SAME_WORKER=${SAME_WORKER:-1}
LG_THREADS=${LG_THREADS:-1}
WORKERS=${WORKERS:-0}
WAIT_IDLE=${WAIT_IDLE:-20}
RECORD=${RECORD:-1}
FUZZ_PAUSE=${FUZZ_PAUSE:-1}
FUZZ_PATTERN=${FUZZ_PATTERN:-fuzz/target|/fuzzwork/}
BIN_DIR=${BIN_DIR:-$ROOT/target/release}
RESULTS=${RESULTS:-$ROOT/bench/results-control-plane.md}
CIPHER=AES-256-GCM

[ "$(id -u)" -eq 0 ] || { echo "needs root (network namespaces, TUN)" >&2; exit 1; }
for p in ip openvpn iperf3 python3 ping pgrep git; do
  command -v $p >/dev/null || { echo "missing $p (apt-get install openvpn iperf3 iproute2 python3 iputils-ping procps git)" >&2; exit 1; }
done

# --- binaries ---------------------------------------------------------------------------------
if [ "${NO_BUILD:-0}" != 1 ]; then
  case $BIN_DIR in
    */release) TARGET_DIR=$(dirname "$BIN_DIR");;
    *) echo "BIN_DIR $BIN_DIR is not a cargo .../release dir; build there yourself and set NO_BUILD=1" >&2; exit 1;;
  esac
  echo "== cargo build --release -p gatehouse-server -p gatehouse-loadgen -p gatehouse-certs (CARGO_TARGET_DIR=$TARGET_DIR)"
  build=(env CARGO_TARGET_DIR="$TARGET_DIR" cargo build --release -p gatehouse-server -p gatehouse-loadgen -p gatehouse-certs)
  if [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ]; then
    # Not as root: keep the user's target dir user-owned; sudo's PATH may lack ~/.cargo/bin.
    (cd "$ROOT" && sudo -u "$SUDO_USER" env PATH="$PATH:$(getent passwd "$SUDO_USER" | cut -d: -f6)/.cargo/bin" "${build[@]}")
  else
    (cd "$ROOT" && "${build[@]}")
  fi
fi
for b in gatehoused gatehouse-loadgen gatehouse-certs; do
  [ -x "$BIN_DIR/$b" ] || { echo "no $BIN_DIR/$b (cargo build --release)" >&2; exit 1; }
done
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "-")
[ -n "$(git -C "$ROOT" status --porcelain -uno -- server engine 2>/dev/null)" ] && COMMIT="$COMMIT-dirty"

# One UDP socket per load-generator session.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" -gt $((STORM_SESSIONS + 100)) ] || { echo "open-file limit $(ulimit -n) is below $((STORM_SESSIONS + 100))" >&2; exit 1; }

# --- cleanup: fuzzers resumed first, then bench_cleanup ----------------------------------------
PAUSED=()
fuzz_pause() {
  [ "$FUZZ_PAUSE" = 1 ] || return 0
  local p
  # Children after parents would let a parent start a new child between the two signals:
  # pgrep lists in pid order; a campaign's driver script is older than its current fuzzer.
  for p in $(pgrep -f -- "$FUZZ_PATTERN" || true); do
    [ "$p" = $$ ] && continue
    kill -STOP "$p" 2>/dev/null && PAUSED+=("$p")
  done
  [ ${#PAUSED[@]} -gt 0 ] && echo "   paused (SIGSTOP) ${#PAUSED[@]} process(es) matching '$FUZZ_PATTERN': ${PAUSED[*]}"
  return 0
}
fuzz_resume() {
  local p
  [ ${#PAUSED[@]} -gt 0 ] || return 0
  for p in "${PAUSED[@]}"; do kill -CONT "$p" 2>/dev/null || true; done
  echo "   resumed (SIGCONT) ${PAUSED[*]}"
  PAUSED=()
}
on_exit() { set +e; fuzz_resume; bench_cleanup; }
trap on_exit EXIT
trap 'exit 130' INT TERM HUP

# --- topology -----------------------------------------------------------------------------------
TAG=ghb191-$$
NS_GW=$TAG-gw; NS_CL=$TAG-cl; NS_LG=$TAG-lg; NS_LAN=$TAG-lan
GW_UL=10.250.191.1; CL_UL=10.250.191.10
N_WORKERS=$WORKERS; [ "$N_WORKERS" -gt 0 ] || N_WORKERS=$(nproc)
worker_of() {  # IP N -> the worker gatehoused steers IP's packets to (shard.rs worker_of_ip)
  python3 -c 'import ipaddress, sys; v = int(ipaddress.IPv4Address(sys.argv[1])); print((((v * 0x9E3779B1) & 0xffffffff) >> 16) % int(sys.argv[2]))' "$1" "$2"
}
CL_WORKER=$(worker_of $CL_UL "$N_WORKERS")
LG_UL=""
for x in $(seq 20 39); do
  w=$(worker_of 10.250.191.$x "$N_WORKERS")
  if { [ "$SAME_WORKER" = 1 ] && [ "$w" = "$CL_WORKER" ]; } || { [ "$SAME_WORKER" != 1 ] && [ "$w" != "$CL_WORKER" ]; }; then
    LG_UL=10.250.191.$x; LG_WORKER=$w; break
  fi
done
[ -n "$LG_UL" ] || { echo "no load-generator address in 10.250.191.20-39 fits SAME_WORKER=$SAME_WORKER with $N_WORKERS workers" >&2; exit 1; }
GW_LAN=10.251.191.1; LAN_HOST=10.251.191.10; LAN_NET=10.251.191.0/24
POOL=${POOL:-10.192.0.0/16}
TUN=ghb191
WORK=$(mktemp -d /tmp/ghb-cp.XXXXXX)
RES=$WORK/results.jsonl; : >"$RES"
STARTED_AT=$(date -u +%Y-%m-%dT%H:%MZ)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

mkns "$NS_GW"; mkns "$NS_CL"; mkns "$NS_LG"; mkns "$NS_LAN"
ip -n "$NS_GW" link add br0 type bridge
ip -n "$NS_GW" addr add $GW_UL/24 dev br0; ip -n "$NS_GW" link set br0 up
i=0
for pair in "$NS_CL $CL_UL" "$NS_LG $LG_UL"; do
  set -- $pair
  ip link add up0 netns "$1" type veth peer name cl$i netns "$NS_GW"
  ip -n "$NS_GW" link set cl$i master br0; ip -n "$NS_GW" link set cl$i up
  ip -n "$1" addr add "$2/24" dev up0; ip -n "$1" link set up0 up
  i=$((i + 1))
done
set --
ip link add lan0 netns "$NS_GW" type veth peer name gw0 netns "$NS_LAN"
ip -n "$NS_GW" addr add $GW_LAN/24 dev lan0; ip -n "$NS_GW" link set lan0 up
ip -n "$NS_LAN" addr add $LAN_HOST/24 dev gw0; ip -n "$NS_LAN" link set gw0 up
ip -n "$NS_LAN" route add default via $GW_LAN
inns "$NS_GW" sysctl -q -w net.ipv4.ip_forward=1
for ns in "$NS_CL" "$NS_LG"; do
  inns "$ns" ping -q -c1 -W2 $GW_UL >/dev/null || { echo "underlay broken ($ns)" >&2; exit 1; }
done
ip netns exec "$NS_LAN" iperf3 -s -B $LAN_HOST -p 5201 >"$WORK/iperf3-server.log" 2>&1 &
STARTED+=($!)

echo "== control plane: ${ROUNDS} round(s) x modes [$MODES], ${SECS}s windows, storm $STORM_SESSIONS $STORM_KIND sessions," \
     "$STORM_CONCURRENCY in flight, load before: $LOAD_BEFORE ($(nproc) cores)"
echo "   binaries: $BIN_DIR ($COMMIT)"
echo "   $N_WORKERS workers; stock client $CL_UL -> worker $CL_WORKER, load generator $LG_UL -> worker $LG_WORKER"

# --- data dir template: init once, certificates once ----------------------------------------------
TEMPLATE=$WORK/template
"$BIN_DIR/gatehoused" init --data-dir "$TEMPLATE" --public-addr $GW_UL --address-space $LAN_NET \
    --client-pool $POOL >"$WORK/init.log" 2>&1 \
  || { echo "gatehoused init failed:" >&2; cat "$WORK/init.log" >&2; exit 1; }
"$BIN_DIR/gatehouse-certs" --pki "$TEMPLATE/pki" issue-client bench >"$WORK/certs.log" 2>&1 \
  && "$BIN_DIR/gatehouse-certs" --pki "$TEMPLATE/pki" export bench --gateway $GW_UL --format ovpn \
       -o "$WORK/bench.ovpn" >>"$WORK/certs.log" 2>&1 \
  || { echo "gatehouse-certs failed:" >&2; tail -5 "$WORK/certs.log" >&2; exit 1; }
echo "== issuing $STORM_SESSIONS load-generator certificates (ECDSA P-256) into the template PKI"
"$BIN_DIR/gatehouse-loadgen" issue --pki "$TEMPLATE/pki" --count "$STORM_SESSIONS" --prefix lg- 2>&1 | sed 's/^/  /'

# fresh_datadir MODE -> DD: a copy of the template with handshake_threads = MODE
fresh_datadir() {
  DD=$WORK/dd-$1-$2
  rm -rf "$DD"; cp -a "$TEMPLATE" "$DD"
  python3 - "$DD/gateway.toml" "$1" "$TUN" "$WORKERS" "$STORM_KIND" <<'PY'
import re, sys
path, hs, tun, workers, kind = sys.argv[1:]
s = open(path).read()
assert "handshake_threads" not in s and re.search(r'(?m)^tun_name = ', s), "unexpected gateway.toml"
# top-level keys: before the first [table]
s = re.sub(r'(?m)^tun_name = .*$', f'tun_name = "{tun}"\nhandshake_threads = {hs}\nworkers = {workers}', s)
s = re.sub(r'(?m)^tcp_port = .*$', 'tcp_port = 0', s)
if kind == "ikev2":
    # a storm from one address far beyond a real client population: no COOKIE round trip
    s, n = re.subn(r'(?m)^cookie_threshold = .*$', 'cookie_threshold = 100000', s)
    assert n == 1, "no cookie_threshold in gateway.toml"
open(path, "w").write(s)
PY
  "$BIN_DIR/gatehoused" check --config "$DD/gateway.toml" >"$WORK/check-$1-$2.log" 2>&1 \
    || { echo "gatehoused check failed for handshake_threads = $1:" >&2; cat "$WORK/check-$1-$2.log" >&2; exit 1; }
}

start_gatehoused() {  # MODE ROUND -> GH_PID
  local mode=$1 round=$2 log=$WORK/gatehoused-$1-$2.log
  fresh_datadir "$mode" "$round"
  ip netns exec "$NS_GW" env NO_COLOR=1 GATEHOUSE_LOG=info "$BIN_DIR/gatehoused" run --data-dir "$DD" >"$log" 2>&1 &
  GH_PID=$!; STARTED+=($GH_PID)
  wait_log "$log" "gateway ready" 20 $GH_PID \
    || { echo "gatehoused (handshake_threads = $mode) did not start:" >&2; tail -20 "$log" >&2; exit 1; }
  [ "$(cat /proc/$GH_PID/comm 2>/dev/null)" = gatehoused ] || { echo "pid $GH_PID is not gatehoused" >&2; exit 1; }
  grep "gateway ready" "$log" | grep -q "handshake_threads=$mode" \
    || { echo "gatehoused did not report handshake_threads=$mode: $(grep 'gateway ready' "$log")" >&2; exit 1; }
  grep "gateway ready" "$log" | grep -q "workers=$N_WORKERS " \
    || { echo "gatehoused does not run $N_WORKERS workers (the steering above assumed so): $(grep 'gateway ready' "$log")" >&2; exit 1; }
  grep "gateway ready" "$log" | grep -q 'steering="\?source-address' \
    || echo "  warning: gatehoused does not steer by source address; the storm's worker is the kernel's choice" >&2
  local hs
  for _ in $(seq 20); do  # a thread names itself once it runs
    hs=$(cat /proc/$GH_PID/task/*/comm 2>/dev/null | grep -c '^gatehoused-hs' || true)
    [ "$hs" = "$mode" ] && break; sleep 0.1
  done
  [ "$hs" = "$mode" ] || { echo "gatehoused has $hs handshake threads, expected $mode" >&2; exit 1; }
}

start_client() {  # LABEL -> CL_PID
  local log=$WORK/client-$1.log
  ip netns exec "$NS_CL" openvpn --config "$WORK/bench.ovpn" --dev-type tun --dev ghb191c \
      --disable-dco --data-ciphers "$CIPHER" --verb 3 >"$log" 2>&1 &
  CL_PID=$!; STARTED+=($CL_PID)
  wait_log "$log" "Initialization Sequence Completed" 30 $CL_PID \
    || { echo "stock openvpn client did not connect:" >&2; tail -10 "$log" >&2; exit 1; }
  grep -q "Data Channel: cipher '$CIPHER'" "$log" || echo "  warning: client log does not show data cipher $CIPHER" >&2
  for _ in $(seq 10); do inns "$NS_CL" ping -q -c1 -W1 $LAN_HOST >/dev/null 2>&1 && return 0; done
  echo "LAN host unreachable through the tunnel" >&2; exit 1
}

clients_listed() {  # what `gatehoused status` (the admin API) reports, or "?"
  "$BIN_DIR/gatehoused" status --data-dir "$DD" --json 2>/dev/null \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["clients"])' 2>/dev/null || echo "?"
}
settle() {  # wait (up to 30 s) until the gateway lists only the stock client again
  local c
  for _ in $(seq 60); do
    c=$(clients_listed); [ "$c" = 1 ] && return 0; sleep 0.5
  done
  echo "  (gateway still lists $c clients after 30 s; measuring anyway)" >&2
}

# "TOTAL_TICKS WORKER_TICKS HS_TICKS WORKER_WAIT_NS" of gatehoused's threads: utime+stime in
# clock ticks; WORKER_WAIT_NS = time the workers were runnable but waited for a CPU
# (/proc/.../schedstat, second field)
thread_ticks() {
  python3 - "$1" <<'PY'
import os, sys
pid = sys.argv[1]
tot = w = hs = wait = 0
d = f"/proc/{pid}/task"
for tid in os.listdir(d):
    try:
        comm = open(f"{d}/{tid}/comm").read().strip()
        f = open(f"{d}/{tid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        continue
    t = int(f[11]) + int(f[12])   # utime, stime (fields 14, 15)
    tot += t
    if comm.startswith("gatehoused-w"):
        w += t
        try:
            wait += int(open(f"{d}/{tid}/schedstat").read().split()[1])
        except (OSError, IndexError, ValueError):
            pass
    elif comm.startswith("gatehoused-hs"): hs += t
print(tot, w, hs, wait)
PY
}

# --- the storm --------------------------------------------------------------------------------------
# storm_start LABEL: gatehouse-loadgen in lg, its stderr lines time-stamped on arrival; returns
# once it has loaded its credentials and printed its header (its handshake phase starts then)
# -> LG_PID. It opens sessions until killed at the end of the window (storm_stop) or until all
# STORM_SESSIONS are up; the gateway with those sessions is stopped right after.
storm_start() {
  local label=$1
  LG_LOG=$WORK/storm-$label.log; LG_JSON=$WORK/storm-$label.json
  : >"$LG_LOG"
  ip netns exec "$NS_LG" "$BIN_DIR/gatehouse-loadgen" --gateway $GW_UL --pki "$DD/pki" --prefix lg- \
      --"$STORM_KIND" "$STORM_SESSIONS" --concurrency "$STORM_CONCURRENCY" --hold 0 --linger 1 \
      --threads "$LG_THREADS" --gateway-pid "$GH_PID" --json >"$LG_JSON" \
      2> >(while IFS= read -r l; do printf '%s %s\n' "$(date +%s.%N)" "$l"; done >>"$LG_LOG") &
  LG_PID=$!; STARTED+=($LG_PID)
  for _ in $(seq 1200); do
    grep -q 'gatehouse-loadgen: ' "$LG_LOG" && return 0
    kill -0 $LG_PID 2>/dev/null || { echo "gatehouse-loadgen ended before its storm started:" >&2; tail -5 "$LG_LOG" >&2; exit 1; }
    sleep 0.05
  done
  echo "gatehouse-loadgen did not start its storm within 60 s:" >&2; tail -5 "$LG_LOG" >&2; exit 1
}

# --- one measurement ---------------------------------------------------------------------------
# measure MODE ROUND KIND(ping|iperf) LOAD(idle|storm)
measure() {
  local mode=$1 round=$2 kind=$3 load=$4 label="$1-$2-$3-$4" out b0 t0 b1 t1 c0 c1 w0 w1 alive=1
  out=$WORK/$kind-$label.out
  settle
  wait_idle
  LG_LOG=""; LG_JSON=""
  [ "$load" = storm ] && storm_start "$label"
  read -r b0 t0 < <(sysjiffies); c0=$(thread_ticks $GH_PID); w0=$(date +%s.%N)
  local perf_pid=""
  if [ "${PERF:-0}" = 1 ] && [ "$load" = storm ]; then
    perf record -q -F 499 -g -p $GH_PID -o "$WORK/perf-$label.data" -- sleep "$SECS" >/dev/null 2>&1 &
    perf_pid=$!; STARTED+=($perf_pid)
  fi
  if [ "$kind" = ping ]; then
    inns "$NS_CL" ping -n -c $((SECS * 100)) -i 0.01 -W 1 $LAN_HOST >"$out" 2>&1 || true
  else
    inns "$NS_CL" iperf3 -J --connect-timeout 3000 -c $LAN_HOST -p 5201 -t "$SECS" >"$out" 2>&1 || true
  fi
  w1=$(date +%s.%N); c1=$(thread_ticks $GH_PID); read -r b1 t1 < <(sysjiffies)
  [ -n "$perf_pid" ] && { wait $perf_pid 2>/dev/null || true; }
  if [ "$load" = storm ]; then
    if kill -0 $LG_PID 2>/dev/null; then stop_pid $LG_PID; else alive=0; fi
    wait $LG_PID 2>/dev/null || true
    sleep 0.2  # the time-stamping reader drains
  fi
  kill -0 $GH_PID 2>/dev/null || { echo "gatehoused (handshake_threads = $mode) is gone: $(tail -3 "$WORK/gatehoused-$mode-$round-$kind.log")" >&2; exit 1; }
  python3 - "$mode" "$round" "$kind" "$load" "$out" "$w0" "$w1" "$((b1 - b0))" "$((t1 - t0))" \
      "$c0" "$c1" "$(getconf CLK_TCK)" "${LG_LOG:-}" "${LG_JSON:-}" "$alive" >>"$RES" <<'PY'
import json, re, statistics, sys
mode, rnd, kind, load, out, w0, w1, busy, total, c0, c1, hz, lglog, lgjson, alive = sys.argv[1:]
w0, w1, hz = float(w0), float(w1), int(hz)
wall = w1 - w0
c0 = [int(x) for x in c0.split()]; c1 = [int(x) for x in c1.split()]
cpu = [100 * (b - a) / hz / wall for a, b in zip(c0[:3], c1[:3])]
r = {"mode": int(mode), "round": int(rnd), "kind": kind, "load": load, "wall": wall,
     "busy": 100 * int(busy) / max(int(total), 1),
     "gw_cpu": cpu[0], "gw_workers_cpu": cpu[1], "gw_hs_cpu": cpu[2],
     "gw_workers_wait": 100 * (c1[3] - c0[3]) / 1e9 / wall}
text = open(out).read()
if kind == "ping":
    t = sorted(float(m) for m in re.findall(r"time=([0-9.]+) ms", text))
    sent = re.search(r"(\d+) packets transmitted", text)
    r["sent"] = int(sent.group(1)) if sent else 0
    r["n"] = len(t)
    if t:
        pct = lambda q: t[min(len(t) - 1, int(q * len(t)))]
        r.update(p50=statistics.median(t), p99=pct(0.99), max=t[-1], avg=statistics.mean(t))
else:
    try:
        j = json.loads(text)
        if "error" in j:
            r["error"] = j["error"]
            r["mbit"] = 0.0   # nothing got through the tunnel in the window
        else:
            r["mbit"] = j["end"]["sum_received"]["bits_per_second"] / 1e6
            r["retr"] = j["end"].get("sum_sent", {}).get("retransmits")
    except ValueError:
        r["error"] = "iperf3 output is not JSON: " + text[:200]
        r["mbit"] = 0.0
if load == "storm":
    # progress lines (every 2 s of the phase): "<epoch> <spaces>openvpn: UP/N up, F failed after S s (...)"
    pts = []
    for line in open(lglog):
        m = re.match(r"([0-9.]+)\s+(?:openvpn|ikev2): (\d+)/\d+ up, (\d+) failed after ([0-9.]+) s", line)
        if m and float(m.group(1)) <= w1:
            pts.append((int(m.group(2)), int(m.group(3)), float(m.group(4))))
    r["storm_covered_window"] = alive == "1"
    rep = None
    try:
        rep = json.load(open(lgjson))["phases"][0]
    except (ValueError, KeyError, IndexError, OSError):
        pass   # killed at the end of the window: no summary
    if rep and not r["storm_covered_window"]:
        # all sessions were up before the window ended: the summary has the rate
        r.update(hs_window=rep["handshakes_per_sec"], up=rep["established"], failed=rep["failed"], hs_secs=rep["seconds"])
    elif pts:
        up, failed, secs = pts[-1]   # the phase started with the window: up / s = the rate in it
        r.update(hs_window=up / max(secs, 1e-3), up=up, failed=failed, hs_secs=secs)
print(json.dumps(r))
desc = f"  hs_threads={mode} round {rnd} {kind:<5} {load:<5}"
if kind == "ping":
    if "p50" in r:
        desc += f" p50 {r['p50']:.3f} p99 {r['p99']:.3f} max {r['max']:.3f} ms ({r['n']}/{r['sent']} answered)"
    else:
        desc += " no replies"
else:
    desc += f" iperf3 failed: {r['error']}" if "error" in r else f" {r['mbit']:.0f} Mbit/s ({r['retr']} retr)"
desc += f"; {wall:.1f} s window"
desc += (f"; gatehoused {r['gw_cpu']:.0f}% (workers {r['gw_workers_cpu']:.0f}%, waiting for a CPU {r['gw_workers_wait']:.0f}%; "
         f"hs thread {r['gw_hs_cpu']:.0f}%), box {r['busy']:.0f}% busy")
if load == "storm":
    if "hs_window" in r:
        desc += f"; {r['hs_window']:.0f} handshakes/s ({r['up']} up, {r['failed']} failed in {r['hs_secs']:.1f} s)"
    if not r["storm_covered_window"]:
        desc += " [storm ended inside the window: raise STORM_SESSIONS]"
print(desc, file=sys.stderr)
PY
}

# --- the run -----------------------------------------------------------------------------------
# One fresh gatehoused (fresh data dir) and client per round, mode and kind: the storm's sessions
# (the load generator is killed at the end of the window) go with the gateway.
fuzz_pause
for ((round = 1; round <= ROUNDS; round++)); do
  for mode in $MODES; do
    for kind in ping iperf; do
      echo "== round $round, handshake_threads = $mode, $kind"
      start_gatehoused "$mode" "$round-$kind"
      start_client "$mode-$round-$kind"
      measure "$mode" "$round" "$kind" idle
      measure "$mode" "$round" "$kind" storm
      stop_pid "$CL_PID"; stop_pid "$GH_PID"; sleep 0.3
    done
  done
done
fuzz_resume

# --- report -----------------------------------------------------------------------------------
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
python3 - "$RES" "$WORK/table.md" "$WORK/rows.md" "$STARTED_AT" "$COMMIT" "$(hostname)" "$(nproc)" \
    "$LOAD_BEFORE" "$LOAD_AFTER" "$SECS" "$STORM_SESSIONS" "$STORM_CONCURRENCY" "$MODES" \
    "$([ "$SAME_WORKER" = 1 ] && echo same || echo other) ($N_WORKERS workers, pool $POOL)" "$STORM_KIND" <<'PY'
import json, statistics, sys
res, table, rowsf, date, commit, host, nproc, lb, la, secs, storm, conc, modes, placement, storm_kind = sys.argv[1:]
placement_row = placement if storm_kind == "openvpn" else f"{placement}, {storm_kind} storm"
rows = [json.loads(l) for l in open(res) if l.strip()]
modes = [int(m) for m in modes.split()]
def get(mode, kind, load, f):
    v = [r[f] for r in rows if r["mode"] == mode and r["kind"] == kind and r["load"] == load and r.get(f) is not None]
    return v
def med(v):
    return statistics.median(v) if v else None
def fmt(v, d):
    return "-" if v is None else f"{v:.{d}f}"
def cell(mode, kind, load, f, d):
    v = get(mode, kind, load, f)
    if not v:
        return "-", None
    s = ", ".join(fmt(x, d) for x in v)
    return (s if len(v) == 1 else f"{fmt(med(v), d)} ({s})"), med(v)
metrics = [
    ("ping p50 idle, ms", "ping", "idle", "p50", 3),
    ("ping p50 storm, ms", "ping", "storm", "p50", 3),
    ("ping p99 idle, ms", "ping", "idle", "p99", 3),
    ("ping p99 storm, ms", "ping", "storm", "p99", 3),
    ("ping max idle, ms", "ping", "idle", "max", 3),
    ("ping max storm, ms", "ping", "storm", "max", 3),
    ("iperf3 idle, Mbit/s", "iperf", "idle", "mbit", 0),
    ("iperf3 storm, Mbit/s", "iperf", "storm", "mbit", 0),
    ("handshakes/s during ping storm (window)", "ping", "storm", "hs_window", 0),
    ("handshakes/s during iperf3 storm (window)", "iperf", "storm", "hs_window", 0),
    ("gatehoused CPU % during ping storm: workers", "ping", "storm", "gw_workers_cpu", 0),
    ("gatehoused CPU % during ping storm: hs thread", "ping", "storm", "gw_hs_cpu", 0),
    ("gatehoused CPU % during iperf3 storm: workers", "iperf", "storm", "gw_workers_cpu", 0),
    ("gatehoused CPU % during iperf3 storm: hs thread", "iperf", "storm", "gw_hs_cpu", 0),
    ("workers waiting for a CPU during ping storm, % of the window", "ping", "storm", "gw_workers_wait", 0),
    ("machine busy % during ping storm", "ping", "storm", "busy", 0),
    ("ping storm window, s (late replies stretch it)", "ping", "storm", "wall", 1),
    ("iperf3 storm window, s", "iperf", "storm", "wall", 1),
]
L = [f"### {date}, commit {commit}, {host}, nproc {nproc}, load average before {lb} / after {la}", "",
     f"{secs} s windows; storm = gatehouse-loadgen --{storm_kind} {storm} --concurrency {conc}; "
     f"one stock openvpn client (UDP, AES-256-GCM); storm on the client's worker: {placement}; "
     f"median over rounds (each round's value in brackets)", ""]
hdr = "| metric | " + " | ".join(f"handshake_threads = {m}" for m in modes)
L.append(hdr + (f" | {modes[1]} / {modes[0]} |" if len(modes) == 2 else " |"))
L.append("| --- |" + " ---: |" * len(modes) + (" ---: |" if len(modes) == 2 else ""))
for name, kind, load, f, d in metrics:
    cells, meds = [], []
    for m in modes:
        if kind is None:
            a, ma = cell(m, "ping", "storm", f, d)
            b, mb = cell(m, "iperf", "storm", f, d)
            cells.append(f"{a} / {b}"); meds.append(None)
        else:
            c, mv = cell(m, kind, load, f, d); cells.append(c); meds.append(mv)
    line = f"| {name} | " + " | ".join(cells)
    if len(modes) == 2:
        a, b = meds
        # no ratio against a value that rounds to 0 at the shown precision
        line += " | " + (f"{b / a:.2f}" if a is not None and b is not None and round(a, d) != 0 else "-")
    L.append(line + " |")
lost = []
for m in modes:
    for load in ("idle", "storm"):
        for r in rows:
            if r["mode"] == m and r["kind"] == "ping" and r["load"] == load and r.get("sent") and r["n"] < r["sent"]:
                lost.append(f"hs_threads={m} round {r['round']} {load}: {r['sent'] - r['n']}/{r['sent']} pings lost")
short = [f"hs_threads={r['mode']} round {r['round']} {r['kind']}" for r in rows if r["load"] == "storm" and not r.get("storm_covered_window", True)]
fails = [f"hs_threads={r['mode']} round {r['round']} {r['load']}: {r['error']}" for r in rows if r["kind"] == "iperf" and "error" in r]
if fails:
    L += ["", "iperf3 failed (counted as 0 Mbit/s): " + "; ".join(fails) + "."]
if lost:
    L += ["", "Lost pings: " + "; ".join(lost) + "."]
if short:
    L += ["", "The storm ended inside the window in: " + "; ".join(short) + " (raise STORM_SESSIONS)."]
open(table, "w").write("\n".join(L) + "\n")
# one row per round and mode for the results file
R = []
for m in modes:
    for rnd in sorted({r["round"] for r in rows if r["mode"] == m}):
        g = {(r["kind"], r["load"]): r for r in rows if r["mode"] == m and r["round"] == rnd}
        def pp(k):
            r = g.get(("ping", k))
            if not r or "p50" not in r: return "-"
            loss = "" if r["n"] == r["sent"] else f", {r['sent'] - r['n']} lost"
            return f"{r['p50']:.3f} / {r['p99']:.3f} / {r['max']:.2f}{loss}"
        def ip(k):
            r = g.get(("iperf", k))
            if not r: return "-"
            return "0 (failed)" if "error" in r else fmt(r.get("mbit"), 0)
        def hs(k):
            r = g.get((k, "storm"))
            if not r: return "-"
            s = fmt(r.get('hs_window'), 0)
            return s + ("" if r.get("storm_covered_window", True) else " short")
        def cpu(k):
            r = g.get((k, "storm")); return f"{r['gw_workers_cpu']:.0f} / {r['gw_hs_cpu']:.0f}" if r else "-"
        def wait(k):
            r = g.get((k, "storm")); return fmt(r.get("gw_workers_wait"), 0) if r else "-"
        def win(k):
            r = g.get((k, "storm")); return fmt(r.get("wall"), 1) if r else "-"
        busy = "/".join(fmt(g[k]["busy"], 0) if k in g else "-" for k in (("ping", "idle"), ("ping", "storm"), ("iperf", "idle"), ("iperf", "storm")))
        R.append(f"| {date} | {host} | {nproc} | {commit} | {placement_row} | {rnd} | {m} | {pp('idle')} | {pp('storm')} | {ip('idle')} | {ip('storm')} | "
                 f"{hs('ping')} | {hs('iperf')} | {cpu('ping')} | {cpu('iperf')} | {wait('ping')} / {wait('iperf')} | {win('ping')} / {win('iperf')} | {busy} | {lb} |")
open(rowsf, "w").write("\n".join(R) + "\n")
PY
echo
cat "$WORK/table.md"
if [ "$RECORD" = 1 ]; then
  if [ ! -f "$RESULTS" ]; then
    cat >"$RESULTS" <<'EOF'
# Control plane vs established tunnels: handshake_threads 0 vs 1 (bench/control-plane.sh)

One row per round and mode; the modes alternate within a run (0, 1, 0, 1). Ping = one stock
openvpn client (UDP, AES-256-GCM) -> LAN host behind gatehoused, `ping -i 0.01` for the window,
p50 / p99 / max in ms; idle = nothing else, storm = while gatehouse-loadgen opens OpenVPN
sessions as fast as its concurrency allows. iperf3 = one TCP stream through the same tunnel,
Mbit/s (receiver). hs/s = handshakes per second of the storm (sessions up at the load
generator's last progress line inside the window / seconds since it started, with the window);
"short" = every session was up before the window ended (the rate is then its summary's).
Storm worker = whether the load generator's address is steered to the stock client's worker
(same) or another (other), with the gateway's worker count and client pool. CPU = gatehoused's workers / handshake thread during the storm, % of one core. Busy
= whole machine during ping idle / ping storm / iperf idle / iperf storm, %. Wait = time the
workers were runnable but waited for a CPU during the ping / iperf storm, % of the window (sum
over workers; /proc schedstat). Window = length of the ping / iperf storm window, s (ping waits
for late replies, iperf3 for its stream). Compare modes within one run only.

| date (UTC) | host | cores | commit | storm worker (workers, pool) | round | handshake_threads | ping idle p50/p99/max | ping storm p50/p99/max | iperf idle | iperf storm | hs/s ping storm | hs/s iperf storm | CPU w/hs ping storm | CPU w/hs iperf storm | wait % | window s | busy % | loadavg before |
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |
EOF
  fi
  cat "$WORK/rows.md" >>"$RESULTS"
  echo "appended $(wc -l <"$WORK/rows.md") rows to $RESULTS"
fi
