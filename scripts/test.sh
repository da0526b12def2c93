#!/usr/bin/env bash
# Runs every Gatehouse check and test, installing what they need first.
# Needs root: end-to-end tests create network namespaces, veth links and TUN devices.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/test.sh must run as root (network namespaces, TUN); try: sudo $0" >&2
  exit 1
fi

# Real peers and tools the end-to-end tests drive.
APT_PACKAGES=(openvpn iperf3 iputils-ping iproute2 openssl procps psmisc util-linux
  # FRR (zebra, bgpd, vtysh): the BGP speaker of tests/tests/bgp_sites.rs.
  frr
  strongswan-swanctl charon-systemd charon-cmd libcharon-extra-plugins
  libstrongswan-extra-plugins libstrongswan-standard-plugins strongswan-pki
  gcc-mingw-w64-x86-64
  # The desktop app end to end (tests/tests/gui_desktop.rs): X server, session D-Bus,
  # AT-SPI with Python bindings, screenshots, and Mesa's software OpenGL for the window.
  xvfb dbus-daemon libglib2.0-bin at-spi2-core python3-pyatspi imagemagick
  libgl1-mesa-dri libegl1 libxkbcommon-x11-0 libxcursor1 libxrandr2 libxi6 libx11-xcb1
  # Software Vulkan (lavapipe): the desktop app's snapshot tests render through it.
  mesa-vulkan-drivers libvulkan1
  # The desktop entry (tests/tests/installers.rs).
  desktop-file-utils
  # systemd-analyze verifies the systemd units (tests/tests/installers.rs).
  systemd
  # A NAT whose mapping changes under a client (tests/src/nat.rs, tests/tests/roaming.rs).
  nftables conntrack
  # cargo-deb's dependency scan (dpkg-shlibdeps) and strip (tests/tests/deb_packages.rs).
  dpkg-dev
  # The web console in a headless browser (tests/tests/admin_console.rs).
  chromium chromium-driver
  # The admin API on its Unix socket, and reading its pcap captures (tests/tests/admin_api.rs).
  curl tshark
  # Stock WireGuard peers (tests/tests/wireguard_*.rs): userspace wireguard-go (the kernel
  # here has no WireGuard module) configured by `wg`; zbarimg reads the exported QR code back.
  wireguard-go wireguard-tools zbar-tools
  # Active-standby (tests/tests/ha_standby.rs) and active-active (ha_active_active.rs, etcd
  # only): keepalived moves the floating address (VRRP),
  # etcd (etcd-server) holds the replicated tunnel state, etcdctl (etcd-client) reads it back.
  keepalived etcd-server etcd-client
  # The real Secret Service (client-core/tests/keyring_secret_service.rs): GNOME Keyring on a
  # private session bus (dbus-daemon, above), read back with secret-tool.
  gnome-keyring libsecret-tools
  # getent resolves names through the system resolver in the split-DNS test
  # (tests/tests/split_dns.rs); Debian always has libc-bin, listed so the check proves it.
  libc-bin)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
[ -e /dev/net/tun ] || { mkdir -p /dev/net && mknod /dev/net/tun c 10 200 && chmod 666 /dev/net/tun; }

echo "== the install list covers every program, plugin and library the tests use"
/usr/bin/python3 scripts/check-test-packages.py

rustup component add rustfmt clippy >/dev/null 2>&1 || true
# Windows is a first-class client target: the client core and the desktop app are
# cross-checked (the C parts of ring etc. need the mingw-w64 compiler installed above).
rustup target add x86_64-pc-windows-gnu
# The .deb packages (tests/tests/deb_packages.rs) are built with cargo-deb, pinned.
CARGO_DEB_VERSION=3.8.0
if [ "$(cargo deb --version 2>/dev/null)" != "cargo-deb $CARGO_DEB_VERSION" ]; then
  echo "== installing cargo-deb $CARGO_DEB_VERSION"
  cargo install cargo-deb --locked --version "$CARGO_DEB_VERSION"
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== Windows cross-check: client core and desktop app"
cargo check --target x86_64-pc-windows-gnu -p gatehouse-client -p gatehouse-gui
echo "== engine stays sans-IO"
scripts/check-engine-sans-io.sh
echo "== build binaries and test targets"
# Bins and test targets in one invocation: one feature resolution (dev-dependency features
# included), so `cargo test` below reuses every dependency instead of building them twice.
cargo build --workspace --all-targets
echo "== tests"
cargo test --workspace --no-fail-fast
