#!/usr/bin/env bash
# Two gatehoused builds side by side in one run, each pinned to ONE core: "old" vs "new"
# (e.g. before and after a refactor), through the existing scripts:
#   - bench/openvpn-throughput.sh (PROTO=udp by default; stock openvpn server vs gatehoused)
#   - bench/ikev2-throughput.sh   (strongSwan responder vs gatehoused, plus HS handshake cycles)
# Each script is run ROUNDS times per build, old and new alternating in ABBA order (old,new /
# new,old / old,new ...) so drift in the machine's load hits both alike. Every invocation also
# measures the stock server again, which serves as the per-invocation reference.
#
# Pinning: GATEHOUSED points at a wrapper, `exec taskset -c $CORE <build>/gatehoused "$@"`; the
# pid the scripts measure is gatehoused itself (ip netns exec, env, taskset all exec). Its tokio
# runtime sizes its worker pool from the affinity mask, so it runs one worker on that core. A
# probe started by the wrapper records Cpus_allowed_list and the thread count 2 s after start.
# The client, iperf3 and the stock servers are not pinned (same as in the scripts).
#
# Usage (root): OLD=dir NEW=dir bench/core-compare.sh
#   OLD, NEW: directories holding gatehoused and gatehouse-certs
# Knobs: OLD_REV / NEW_REV (labels for the builds, e.g. commit hashes; default "old"/"new")
#        ROUNDS=3 SECS=10 CORE=1 PROTOS="udp ikev2" (udp, tcp = openvpn-throughput.sh PROTO;
#        ikev2 = ikev2-throughput.sh) HS=50 WAIT_IDLE=60 CIPHER=AES-256-GCM
#        RESULTS=file (default bench/results-core-compare.md); the per-invocation rows also go
#        to results-openvpn.md / results-ikev2.md with the commit column naming the build
#        (SCRIPT_RESULTS=0: don't).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
: "${OLD:?OLD=dir with the old gatehoused and gatehouse-certs}"
: "${NEW:?NEW=dir with the new gatehoused and gatehouse-certs}"
OLD_REV=${OLD_REV:-old}
NEW_REV=${NEW_REV:-new}
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-10}
CORE=${CORE:-1}
PROTOS=${PROTOS:-udp ikev2}
HS=${HS:-50}
WAIT_IDLE=${WAIT_IDLE:-60}
CIPHER=${CIPHER:-AES-256-GCM}
RESULTS=${RESULTS:-$ROOT/bench/results-core-compare.md}
SCRIPT_RESULTS=${SCRIPT_RESULTS:-1}

[ "$(id -u)" -eq 0 ] || { echo "needs root (the scripts make network namespaces)" >&2; exit 1; }
command -v taskset >/dev/null || { echo "missing taskset (util-linux)" >&2; exit 1; }
[ "$CORE" -lt "$(nproc)" ] || { echo "CORE=$CORE but only $(nproc) cores" >&2; exit 1; }
for d in "$OLD" "$NEW"; do
  for b in gatehoused gatehouse-certs; do
    [ -x "$d/$b" ] || { echo "no $d/$b" >&2; exit 1; }
  done
done

W=$(mktemp -d /tmp/gh-core-compare.XXXXXX)
trap 'rm -rf "$W"' EXIT
# wrapper dirs: the ikev2 script names the build by the wrapper's directory
mkwrap() {  # LABEL BUILD_DIR
  local dir=$W/$1-core$CORE
  mkdir -p "$dir"
  cat >"$dir/gatehoused" <<EOF
#!/bin/sh
if [ "\$1" = run ]; then
  ( sleep 2; printf '%s pid %s: %s threads %s\n' "$1" \$\$ \
      "\$(grep Cpus_allowed_list /proc/\$\$/status | tr -d '\t')" \
      "\$(grep '^Threads' /proc/\$\$/status | awk '{print \$2}')" >>"$W/affinity.log" ) </dev/null >/dev/null 2>&1 &
fi
exec taskset -c $CORE "$(cd "$2" && pwd)/gatehoused" "\$@"
EOF
  chmod +x "$dir/gatehoused"
  ln -s "$(cd "$2" && pwd)/gatehouse-certs" "$dir/gatehouse-certs"
}
mkwrap old "$OLD"; mkwrap new "$NEW"

rev_of() { [ "$1" = old ] && echo "$OLD_REV" || echo "$NEW_REV"; }
: >"$W/rows.tsv"
run_one() {  # ROUND LABEL PROTO
  local r=$1 label=$2 proto=$3 out=$W/r$1-$2-$3 la0 la1 rc=0 script
  local gh=$W/$label-core$CORE/gatehoused
  la0=$(cut -d' ' -f1-3 /proc/loadavg)
  echo "--- round $r, $label ($(rev_of "$label")), $proto, load before: $la0"
  if [ "$proto" = ikev2 ]; then
    script=$ROOT/bench/ikev2-throughput.sh
    env GATEHOUSED="$gh" RESULTS="$out.md" SECS="$SECS" HS="$HS" WAIT_IDLE="$WAIT_IDLE" \
      "$script" >"$out.log" 2>&1 || rc=$?
  else
    script=$ROOT/bench/openvpn-throughput.sh
    env GATEHOUSED="$gh" RESULTS="$out.md" SECS="$SECS" PROTO="$proto" CIPHER="$CIPHER" \
      WAIT_IDLE="$WAIT_IDLE" "$script" >"$out.log" 2>&1 || rc=$?
  fi
  la1=$(cut -d' ' -f1-3 /proc/loadavg)
  grep -E '^(openvpn|strongSwan|gatehoused):|machine not idle' "$out.log" | sed 's/^/    /' || true
  [ $rc = 0 ] || { echo "    (script exited $rc; log: $out.log)"; tail -5 "$out.log" | sed 's/^/    /'; }
  local row; row=$(grep '^| 20' "$out.md" 2>/dev/null | tail -1 || true)
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$label" "$proto" "$la0" "$la1" "$row" >>"$W/rows.tsv"
  # the scripts' own results file, with the commit column naming the build that was measured
  if [ -n "$row" ] && [ "$SCRIPT_RESULTS" = 1 ]; then
    local dest=$ROOT/bench/results-openvpn.md
    [ "$proto" = ikev2 ] && dest=$ROOT/bench/results-ikev2.md
    if [ -f "$dest" ]; then
      echo "$row" | sed -E "s/\| [^|]* \|\$/| $(rev_of "$label") ($label, taskset -c $CORE, core-compare.sh) |/" >>"$dest"
    fi
  fi
}

START=$(date -u +%Y-%m-%dT%H:%MZ)
echo "== core-compare: old=$OLD ($OLD_REV) new=$NEW ($NEW_REV), gatehoused pinned to core $CORE"
echo "   $ROUNDS rounds x {$PROTOS}, ${SECS}s each, HS=$HS, WAIT_IDLE=$WAIT_IDLE; uptime: $(uptime)"
for r in $(seq "$ROUNDS"); do
  if [ $((r % 2)) = 1 ]; then order="old new"; else order="new old"; fi
  for p in $PROTOS; do
    for l in $order; do run_one "$r" "$l" "$p"; done
  done
done
END=$(date -u +%Y-%m-%dT%H:%MZ)
echo "== affinity of the measured gatehoused processes (2 s after start):"
sort "$W/affinity.log" | uniq -c | sed 's/^/   /' || true

python3 - "$W/rows.tsv" "$RESULTS" "$START" "$END" "$OLD_REV" "$NEW_REV" "$CORE" "$SECS" "$HS" <<'PY'
import os, re, statistics as st, sys
rows_path, results, start, end, old_rev, new_rev, core, secs, hs = sys.argv[1:]
num = lambda s: float(re.match(r"\s*([\d.]+)", s).group(1))
pct = lambda s: float(re.search(r"\(([\d.]+)%?\)", s).group(1)) if "(" in s else float("nan")
data = {}   # proto -> label -> list of dicts
loads = []
for line in open(rows_path):
    r, label, proto, la0, la1, row = line.rstrip("\n").split("\t")
    loads += [float(la0.split()[0]), float(la1.split()[0])]
    if not row:
        continue
    c = [x.strip() for x in row.strip().strip("|").split("|")]
    d = {"round": int(r), "load": la0.split()[0]}
    if proto == "ikev2":
        stock, gh, hs_stock, hs_gh, busy = c[4], c[5], c[7], c[8], c[10]
        if gh == "n/a":
            continue
        d.update(mbit=num(gh), cpu=pct(gh), stock=num(stock) if stock != "n/a" else float("nan"))
        if hs_gh != "n/a":
            d.update(hs=num(hs_gh), hs_ms=float(re.search(r"\(([\d.]+)\)", hs_gh).group(1)),
                     hs_stock=num(hs_stock) if hs_stock != "n/a" else float("nan"))
    else:
        stock, gh, busy = c[6], c[7], c[9]
        if gh == "n/a":
            continue
        d.update(mbit=num(gh), cpu=pct(gh), stock=num(stock))
    d["busy"] = busy
    data.setdefault(proto, {}).setdefault(label, []).append(d)

mean = lambda xs: st.mean(xs) if xs else float("nan")
fmt = lambda xs: ", ".join(f"{x['mbit']:.0f}" for x in xs)
out = []
print("\n== summary (means over rounds; ratio = new/old)")
for proto, by in data.items():
    o, n = by.get("old", []), by.get("new", [])
    if not o or not n:
        print(f"{proto}: missing runs (old {len(o)}, new {len(n)})")
        continue
    mo, mn = mean([x["mbit"] for x in o]), mean([x["mbit"] for x in n])
    co, cn = mean([x["cpu"] for x in o]), mean([x["cpu"] for x in n])
    so, sn = mean([x["stock"] for x in o]), mean([x["stock"] for x in n])
    pr = [b["mbit"] / a["mbit"] for a, b in zip(sorted(o, key=lambda x: x["round"]),
                                               sorted(n, key=lambda x: x["round"]))]
    eff_o, eff_n = mo / (co / 100), mn / (cn / 100)
    line = (f"{proto}: old {mo:.0f} Mbit/s ({co:.0f}% CPU) x{len(o)} [{fmt(o)}]"
            f" | new {mn:.0f} Mbit/s ({cn:.0f}% CPU) x{len(n)} [{fmt(n)}]"
            f" | new/old {mn / mo:.2f} (per round {', '.join(f'{x:.2f}' for x in pr)})"
            f" | Mbit/s per core: old {eff_o:.0f}, new {eff_n:.0f} ({eff_n / eff_o:.2f})"
            f" | stock server in the same invocations: {so:.0f} / {sn:.0f}")
    hs_part = ""
    if proto == "ikev2" and all("hs" in x for x in o + n):
        ho, hn = mean([x["hs"] for x in o]), mean([x["hs"] for x in n])
        mo_ms, mn_ms = mean([x["hs_ms"] for x in o]), mean([x["hs_ms"] for x in n])
        hs_part = f"{ho:.1f} / {hn:.1f} hs/s ({hn / ho:.2f}), {mo_ms:.2f} / {mn_ms:.2f} ms CPU per hs"
        line += f" | handshakes old/new: {hs_part}"
    print(line)
    out.append(f"| {start}-{end[11:]} | {proto} | {secs}s x{len(o)}+{len(n)} | {mo:.0f} ({co:.0f}%) | "
               f"{mn:.0f} ({cn:.0f}%) | **{mn / mo:.2f}** | {', '.join(f'{x:.2f}' for x in pr)} | "
               f"{eff_o:.0f} / {eff_n:.0f} | {so:.0f} / {sn:.0f} | {hs_part or '-'} | "
               f"{min(loads):.2f}-{max(loads):.2f} | {old_rev} | {new_rev} |")
print(f"load average (1 min) before/after each invocation: {min(loads):.2f}-{max(loads):.2f}")
if out:
    new_file = not os.path.exists(results)
    with open(results, "a") as f:
        if new_file:
            f.write("# Old vs new gatehoused, each pinned to one core (bench/core-compare.sh)\n\n"
                    "Means over the rounds (ABBA order); Mbit/s received by iperf3 (TCP) through the\n"
                    "gateway, gatehoused CPU in % of its one core; ratio = new/old (per round: paired\n"
                    "ratios); Mbit/s per core = Mbit/s / CPU share; stock = the stock server (openvpn or\n"
                    "strongSwan, not pinned) measured in the same invocations (old / new); hs = IKEv2\n"
                    "sequential connect+disconnect cycles, old / new, and gatehoused CPU per cycle;\n"
                    "load = 1-min load average before/after each invocation.\n\n"
                    "| date (UTC) | proto | runs | old Mbit/s (CPU) | new Mbit/s (CPU) | new/old | per round | Mbit/s per core old / new | stock old / new | hs/s old / new | load | old build | new build |\n"
                    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
        f.write("\n".join(out) + "\n")
    print(f"appended to {results}")
PY
