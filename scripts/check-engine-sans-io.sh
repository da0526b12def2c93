#!/usr/bin/env bash
# The engine must not depend on anything that does I/O: no async runtime, no sockets, no TUN.
set -euo pipefail
cd "$(dirname "$0")/.."
banned='^(tokio|mio|socket2|async-std|smol|tun|tun-rs|quinn-udp|nix|hyper|reqwest)$'
deps=$(cargo tree -p gatehouse-engine -e normal --prefix none --format '{p}' | awk '{print $1}' | sort -u)
# boringtun (WireGuard, without its `device` feature) reads the boot-time clock through nix
# (`clock_gettime`, for its own timers: see engine/src/wireguard/mod.rs); nix is allowed there
# and nowhere else: everything else boringtun pulls in, and every other path to nix, is checked.
others=$(cargo tree -p gatehouse-engine -e normal --prune boringtun --prefix none --format '{p}' | awk '{print $1}')
wg=$(cargo tree -p boringtun -e normal --prefix none --format '{p}' 2>/dev/null | awk '{print $1}' || true)
deps=$(printf '%s\n%s\n' "$others" "$(echo "$wg" | grep -vx nix || true)" | sort -u)
bad=$(echo "$deps" | grep -E "$banned" || true)
if [ -n "$bad" ]; then
  echo "engine/ depends on I/O crates, which breaks the sans-IO rule:" >&2
  echo "$bad" >&2
  exit 1
fi
# Its sources never open sockets or files. (Clocks and the OS random generator are banned by
# engine/clippy.toml; tests that need them say so with an explicit, visible allow.)
if grep -rnE 'std::net::(UdpSocket|TcpStream|TcpListener)|std::fs::' engine/src; then
  echo "engine/src opens sockets or files directly (see above)" >&2
  exit 1
fi
echo "engine is sans-IO: $(echo "$deps" | wc -l) crates, none does I/O"
