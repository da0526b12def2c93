#!/usr/bin/env bash
# The engine must not depend on anything that does I/O: no async runtime, no sockets, no TUN.
set -euo pipefail
cd "$(dirname "$0")/.."
banned='^(tokio|mio|socket2|async-std|smol|tun|tun-rs|quinn-udp|nix|hyper|reqwest)$'
deps=$(cargo tree -p gatehouse-engine -e normal --prefix none --format '{p}' | awk '{print $1}' | sort -u)
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
