//! Harness for end-to-end tests: locating the built binaries, running commands, and (for the
//! gateway tests) network namespaces with veth links that are always cleaned up.
//!
//! - [`netns`]: a [`Netns`] guard per namespace, veth links, routes, forwarding.
//! - [`proc`]: a [`Proc`] guard per started process, with its log.
//! - [`net`]: ping and iperf3 inside a namespace.
//! - [`topology`]: clients <-> gateway <-> LAN, the network gateway tests share.
//! - [`openvpn`]: the stock OpenVPN 2.6 server and client.
//! - [`gatehoused`]: Gatehouse's gateway daemon and `gatehouse-certs`, driven for the tests.
//! - [`openssl_pki`]: a throwaway PKI made with the openssl CLI.
//! - [`client`]: Gatehouse's own client, `gatehouse` (service and front-end commands).
//! - [`desktop`]: a private desktop session (Xvfb, session D-Bus, AT-SPI) for the desktop app.
//! - [`strongswan`]: strongSwan (`charon-cmd`, `charon-systemd` + `swanctl`) as an IKEv2 peer.
//! - [`sites`]: three sites (gateway, LAN, host) and a client on one underlay.
//! - [`swan_site`]: a strongSwan site-to-site gateway (policy- or route-based, PSK or certs).
//! - [`nat`]: a NAT (nftables) in front of a client, whose mapping a test changes (rebinding).
//! - [`bystanders`]: real OpenVPN and strongSwan clients kept connected through a flood.
//!
//! Every test that touches the network calls [`require_root`] first: the tests must fail, not
//! skip, where they cannot run.

pub mod bystanders;
pub mod cidr;
pub mod client;
pub mod desktop;
pub mod etcd;
pub mod frr;
pub mod gatehouse_site;
pub mod gatehoused;
pub mod ipv6;
pub mod nat;
pub mod net;
pub mod netns;
pub mod openssl_pki;
pub mod openvpn;
pub mod ping_log;
pub mod proc;
pub mod setup;
pub mod sites;
pub mod strongswan;
pub mod swan_site;
pub mod topology;
pub mod wireguard;

pub use cidr::Ipv4Cidr;
pub use netns::Netns;
pub use proc::Proc;
pub use setup::GatewaySetup;
pub use topology::GatewayTopology;

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Path of a binary built from this workspace (`target/<profile>/<name>`), next to the test
/// executable's `deps/` folder.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("test binary lives in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not built; run `cargo build --workspace --bins` first (scripts/test.sh does)",
        path.display()
    );
    path
}

/// Panics unless the test runs as root (network namespaces, veth links and TUN devices need
/// it), and unless `/dev/net/tun` exists. CI runs as root, so an end-to-end test never
/// silently passes without having run.
pub fn require_root() {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    // "Uid:\treal\teffective\tsaved\tfs": the effective uid decides.
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|id| id.parse::<u32>().ok());
    assert_eq!(
        euid,
        Some(0),
        "end-to-end tests create network namespaces and TUN devices and must run as root: \
         sudo scripts/test.sh (or sudo -E cargo test -p gatehouse-tests)"
    );
    assert!(
        fs::metadata("/dev/net/tun").is_ok(),
        "/dev/net/tun is missing: mkdir -p /dev/net && mknod /dev/net/tun c 10 200"
    );
}

/// Panics, naming the package to install, unless every program in `programs` is on PATH.
pub fn require_commands(programs: &[&str]) {
    let missing: Vec<&str> = programs
        .iter()
        .copied()
        .filter(|p| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {p}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .collect();
    assert!(
        missing.is_empty(),
        "missing programs {missing:?}; scripts/test.sh installs them \
         (apt-get install openvpn iperf3 iputils-ping iproute2 openssl procps)"
    );
}
