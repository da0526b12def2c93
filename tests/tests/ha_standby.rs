//! Active-standby (issue 17, docs/ha.md): two `gatehoused` share a floating address that
//! keepalived (VRRP) moves; the active one copies its tunnels to etcd every second, the
//! standby takes them over when keepalived makes it the master (`notify_master` runs
//! `gatehoused ctl takeover`).
//!
//! ```text
//!   c0 (stock openvpn, UDP)  10.250.226.10 ┐                      ┌ gwa pub0 .2 ┐ gwa lan0 .2 ┐
//!   c1 (charon-cmd, IKEv2)   10.250.226.11 ┤                      │                           │
//!   s0 (swanctl site)        10.250.226.20 ┴ br0 (ns sw) ─────────┴ gwb pub0 .3 ┘             │
//!      its LAN 10.252.226.1/24 (a veth device in s0)
//!   floating 10.250.226.1 (clients dial it) and 10.251.226.1 (the LAN's router), on the master
//!   br1 (ns sw): gwa lan0 .2, gwb lan0 .3, etcd 10.251.226.5, LAN host 10.251.226.10
//! ```
//!
//! `standby_takes_over_when_the_active_gateway_dies`: both clients ping the LAN host every
//! 0.1 s, and the LAN host pings the strongSwan site's LAN (a policy-based PSK site whose IKE
//! SA the active gateway started from the floating address: the standby copies the
//! initiator's state too); gatehoused on the master is killed with SIGKILL; keepalived there notices (its
//! track script asks `gatehoused ctl status`) and gives the address up; the standby becomes
//! master and takes the tunnels over from etcd. Asserted: the floating addresses moved, the
//! longest gap between replies is under 5 s for both clients and the site, none handshakes
//! again (OpenVPN: one `Initialization Sequence Completed`, no new `TLS: Initial packet`;
//! strongSwan client and site: no new IKE_SA_INIT), the standby logs that it took 3 tunnels
//! over and renegotiates the OpenVPN session (its TLS session could not move).
//!
//! `a_standby_takes_over_on_command_and_the_old_active_gateway_stops`: the same without
//! keepalived: gwa (`ha.role = "active"`) holds the floating addresses (set by hand) and
//! serves a stock OpenVPN client; `gatehoused ctl takeover` on gwb takes the session over
//! from etcd; gwa, fenced out by the `active` key, stops at its next copy (without a word to
//! the client); the addresses are moved by hand; the client pings on through gwb without a new
//! handshake.
//!
//! Tags `ha` and `ha-f`, subnet index 226 (separate namespaces, so the same addresses).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use gatehouse_tests::cidr::Ipv4Cidr;
use gatehouse_tests::etcd::start_etcd;
use gatehouse_tests::gatehouse_site::{GhConnection, add_connections};
use gatehouse_tests::gatehoused::{
    Gatehoused, GatewayDir, RENEGOTIATED, issue_rsa_client, spawn_stock_client, times_up, toml_str,
    wait_client_up,
};
use gatehouse_tests::net::wait_ping;
use gatehouse_tests::netns::bridge_port;
use gatehouse_tests::openvpn::UP_TIMEOUT;
use gatehouse_tests::ping_log::BackgroundPing;
use gatehouse_tests::strongswan::{CharonCmd, CharonCmdConfig};
use gatehouse_tests::swan_site::{StartAction, SwanAuth, SwanSite, SwanSiteConfig};
use gatehouse_tests::{Netns, Proc, require_commands, require_root};

const X: u8 = 226;
/// The floating addresses: clients dial the first, the LAN host routes through the second.
const VIP: Ipv4Addr = Ipv4Addr::new(10, 250, X, 1);
const VIP_LAN: Ipv4Addr = Ipv4Addr::new(10, 251, X, 1);
const ETCD: Ipv4Addr = Ipv4Addr::new(10, 251, X, 5);
const LAN_HOST: Ipv4Addr = Ipv4Addr::new(10, 251, X, 10);
/// The strongSwan site's public address and its LAN (one address, on a veth device).
const SITE: Ipv4Addr = Ipv4Addr::new(10, 250, X, 20);
const SITE_LAN_HOST: Ipv4Addr = Ipv4Addr::new(10, 252, X, 1);
const SITE_LAN_HOST_CIDR: Ipv4Cidr = Ipv4Cidr::new(SITE_LAN_HOST, 24);
const SITE_PSK: &str = "ha site key 226: Vt8Qm3Lx7Rk2";
/// What the standby logs once it imported the tunnels.
const TOOK_OVER: &str = "ha: took over the cluster's sessions";
/// What charon-cmd logs for each IKE_SA_INIT it sends.
const IKE_SA_INIT: &str = "IKE_SA_INIT request";
const MAX_GAP: f64 = 5.0;
/// Pings at 0.1 s: 14 s in all, the kill 3 s in.
const PINGS: u32 = 140;

/// The namespaces (dropped last to first: processes in them are killed, then they go).
struct Net {
    sw: Netns,
    gwa: Netns,
    gwb: Netns,
    etcd: Netns,
    lan: Netns,
    c0: Netns,
    c1: Netns,
    s0: Netns,
}

impl Net {
    /// The namespaces `gh-<tag>-sw-<pid>` ...
    fn new(tag: &str) -> Result<Net> {
        let ns = |what: &str| Netns::new(&format!("{tag}-{what}"));
        let n = Net {
            sw: ns("sw")?,
            gwa: ns("gwa")?,
            gwb: ns("gwb")?,
            etcd: ns("etcd")?,
            lan: ns("lan")?,
            c0: ns("c0")?,
            c1: ns("c1")?,
            s0: ns("s0")?,
        };
        for br in ["br0", "br1"] {
            n.sw.exec_ok("ip", ["link", "add", br, "type", "bridge"])?;
            n.sw.exec_ok("ip", ["link", "set", br, "up"])?;
        }
        let p = |h: u8| format!("10.250.{X}.{h}/24");
        let l = |h: u8| format!("10.251.{X}.{h}/24");
        bridge_port(&n.sw, "br0", "pa", &n.gwa, "pub0", &p(2))?;
        bridge_port(&n.sw, "br0", "pb", &n.gwb, "pub0", &p(3))?;
        bridge_port(&n.sw, "br0", "pc0", &n.c0, "up0", &p(10))?;
        bridge_port(&n.sw, "br0", "pc1", &n.c1, "up0", &p(11))?;
        bridge_port(&n.sw, "br0", "ps0", &n.s0, "up0", &p(20))?;
        // The site's LAN: an address on a veth device (no `dummy` module everywhere),
        // answered by the site's own stack.
        n.s0.exec_ok(
            "ip",
            [
                "link", "add", "lan0", "type", "veth", "peer", "name", "lan1",
            ],
        )?;
        n.s0.exec_ok("ip", ["link", "set", "lan1", "up"])?;
        n.s0.exec_ok(
            "ip",
            [
                "addr",
                "add",
                &SITE_LAN_HOST_CIDR.to_string(),
                "dev",
                "lan0",
            ],
        )?;
        n.s0.exec_ok("ip", ["link", "set", "lan0", "up"])?;
        bridge_port(&n.sw, "br1", "la", &n.gwa, "lan0", &l(2))?;
        bridge_port(&n.sw, "br1", "lb", &n.gwb, "lan0", &l(3))?;
        bridge_port(&n.sw, "br1", "le", &n.etcd, "lan0", &l(5))?;
        bridge_port(&n.sw, "br1", "lh", &n.lan, "gw0", &l(10))?;
        n.lan.exec_ok(
            "ip",
            ["route", "add", "default", "via", &VIP_LAN.to_string()],
        )?;
        for g in [&n.gwa, &n.gwb] {
            // Forwarding between the tunnels and the LAN; the listeners bind the floating
            // address, which only the master has.
            g.exec_ok("sysctl", ["-q", "-w", "net.ipv4.ip_forward=1"])?;
            g.exec_ok("sysctl", ["-q", "-w", "net.ipv4.ip_nonlocal_bind=1"])?;
        }
        wait_ping(&n.gwa, LAN_HOST, Duration::from_secs(5))?;
        wait_ping(&n.gwb, ETCD, Duration::from_secs(5))?;
        wait_ping(&n.c0, Ipv4Addr::new(10, 250, X, 2), Duration::from_secs(5))?;
        wait_ping(&n.c1, Ipv4Addr::new(10, 250, X, 3), Duration::from_secs(5))?;
        wait_ping(&n.s0, Ipv4Addr::new(10, 250, X, 2), Duration::from_secs(5))?;
        Ok(n)
    }
}

/// keepalived for gateway `name` (data directory `data`): VRRP v3 on `pub0` every 0.2 s,
/// both floating addresses, a track script asking gatehoused whether it runs, and
/// `gatehoused ctl takeover` when it becomes the master.
fn start_keepalived(ns: &Netns, dir: &Path, name: &str, priority: u8, data: &Path) -> Result<Proc> {
    use std::os::unix::fs::PermissionsExt;
    let gatehoused = gatehouse_tests::bin("gatehoused");
    let script = |file: &str, body: &str| -> Result<PathBuf> {
        let path = dir.join(format!("{name}-{file}"));
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n"))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))?;
        Ok(path)
    };
    let check = script(
        "check.sh",
        &format!(
            "exec timeout 2 {} ctl --data-dir {} status >/dev/null 2>&1",
            gatehoused.display(),
            data.display()
        ),
    )?;
    // The gateway may still be starting when keepalived makes it master: try for 10 s.
    let notify = script(
        "notify-master.sh",
        &format!(
            "for i in $(seq 50); do\n  {} ctl --data-dir {} takeover >>{}/{name}-takeover.log 2>&1 && exit 0\n  sleep 0.2\ndone\nexit 1",
            gatehoused.display(),
            data.display(),
            dir.display()
        ),
    )?;
    let conf = dir.join(format!("{name}-keepalived.conf"));
    std::fs::write(
        &conf,
        format!(
            "global_defs {{\n  router_id {name}\n  vrrp_version 3\n  script_user root\n}}\n\
             vrrp_script gatehoused {{\n  script \"{check}\"\n  interval 1\n  timeout 3\n  fall 1\n  rise 1\n}}\n\
             vrrp_instance gh{X} {{\n  state BACKUP\n  interface pub0\n  virtual_router_id {X}\n  priority {priority}\n  advert_int 0.2\n  nopreempt\n\
               virtual_ipaddress {{\n    {VIP}/24 dev pub0\n    {VIP_LAN}/24 dev lan0\n  }}\n\
               track_script {{\n    gatehoused\n  }}\n  notify_master \"{notify}\"\n}}\n",
            check = check.display(),
            notify = notify.display(),
        ),
    )?;
    let pid = |what: &str| dir.join(format!("{name}-{what}.pid")).display().to_string();
    ns.spawn(
        "keepalived",
        [
            "--dont-fork",
            "--log-console",
            "--log-detail",
            "--vrrp",
            "-f",
            &conf.display().to_string(),
            "-p",
            &pid("keepalived"),
            "-r",
            &pid("vrrp"),
            "-c",
            &pid("checkers"),
        ],
        &dir.join(format!("{name}-keepalived.log")),
    )
}

/// Whether `ns` holds `addr` on one of its interfaces.
fn holds(ns: &Netns, addr: Ipv4Addr) -> bool {
    ns.exec_ok("ip", ["-4", "-o", "addr", "show"])
        .is_ok_and(|s| s.contains(&format!(" {addr}/")))
}

/// The gateways' side of the strongSwan site: policy-based, PSK; the active gateway starts
/// the SA (a standby does not, docs/ha.md).
fn site_connection() -> GhConnection {
    GhConnection {
        name: "s0".into(),
        kind: "site-to-site",
        remote_gateway: SITE,
        remote_address_space: vec![SITE_LAN_HOST_CIDR],
        remote_address_space_v6: Vec::new(),
        psk: Some(SITE_PSK.into()),
        remote_id: None,
        policy_based: true,
        initiate: true,
        ike_proposals: None,
        esp_proposals: None,
        dpd: Some("60s".into()),
        child_lifetime: None,
        ike_lifetime: None,
    }
}

/// Writes the pair's `[ha]` section for node `node`.
fn configure_ha(dir: &GatewayDir, node: &str) -> Result<()> {
    dir.set("workers", "2")?;
    dir.set("openvpn.listen", &toml_str(&VIP.to_string()))?;
    dir.set("openvpn.tcp_port", "0")?;
    dir.set("ikev2.listen", &toml_str(&VIP.to_string()))?;
    dir.set("ha.enabled", "true")?;
    dir.set(
        "ha.etcd",
        &format!("[{}]", toml_str(&format!("http://{ETCD}:2379"))),
    )?;
    dir.set("ha.cluster", &toml_str("ha226"))?;
    dir.set("ha.node", &toml_str(node))?;
    dir.set("ha.interval", &toml_str("1s"))?;
    Ok(())
}

#[test]
fn standby_takes_over_when_the_active_gateway_dies() -> Result<()> {
    require_root();
    require_commands(&[
        "ip",
        "ping",
        "openvpn",
        "openssl",
        "charon-cmd",
        "charon-systemd",
        "swanctl",
        "keepalived",
        "etcd",
        "etcdctl",
        "sysctl",
        "timeout",
        "cp",
    ]);
    let started = Instant::now();
    let dir = tempfile::tempdir()?;
    let net = Net::new("ha")?;
    let pool = Ipv4Cidr::new(Ipv4Addr::new(10, 8, X, 0), 24);
    let lan = Ipv4Cidr::new(Ipv4Addr::new(10, 251, X, 0), 24);
    let dir_a = GatewayDir::init(
        &dir.path().join("gwa"),
        &VIP.to_string(),
        &[lan],
        Some(pool),
    )?;
    dir_a.set("tun_name", &toml_str(&format!("ghd{X}")))?;
    let profile = dir_a.client_profile("alice", VIP, &dir.path().join("alice.ovpn"))?;
    // charon-cmd takes RSA keys only: a key and CSR from openssl, certified by the gateway.
    let (cert, key) = issue_rsa_client(dir.path(), &dir_a.pki(), "carol", &[])?;
    // The active gateway starts the site's IKE SA; the site answers (docs/ha.md).
    add_connections(&dir_a, &[site_connection()])?;
    let dir_b = dir_a.copy_to(&dir.path().join("gwb"))?;
    configure_ha(&dir_a, "gwa")?;
    configure_ha(&dir_b, "gwb")?;

    let etcd = start_etcd(&net.etcd, ETCD, "ha", dir.path())?;
    // The site answers only: the active gateway starts its SA (gwb, the standby, does not).
    let mut site_cfg = SwanSiteConfig::new(
        "s0",
        SITE,
        VIP,
        &[SITE_LAN_HOST_CIDR],
        &[lan],
        SwanAuth::Psk(SITE_PSK.into()),
    );
    site_cfg.start_action = StartAction::None;
    // Liveness checks after the copy move the message IDs past it (docs/ha.md, Limits).
    site_cfg.dpd_delay = "60s".into();
    let site = SwanSite::start(&net.s0, &dir.path().join("s0"), &site_cfg)?;
    let debug = [("GATEHOUSE_LOG", "debug")];
    let gwa = Gatehoused::start_with_env(&net.gwa, &dir_a, &dir.path().join("gwa.log"), &debug)?;
    let gwb = Gatehoused::start_with_env(&net.gwb, &dir_b, &dir.path().join("gwb.log"), &debug)?;
    // gwa's keepalived first: it becomes master and, through notify_master, gwa the active
    // gateway. gwb's joins once that is done, hears gwa's adverts and stays backup. (Started
    // together, the one whose track script passes first is master for a moment, and its
    // takeover fences the other gateway: every move of the address is a takeover.)
    let ka = start_keepalived(&net.gwa, dir.path(), "gwa", 150, dir_a.path())?;
    gwa.wait_event(
        "ha: active; etcd held no state",
        |_| true,
        Duration::from_secs(20),
    )
    .with_context(|| {
        format!(
            "gwa log:\n{}\nkeepalived gwa:\n{}",
            gwa.log_tail(30),
            ka.log_tail(20)
        )
    })?;
    let kb = start_keepalived(&net.gwb, dir.path(), "gwb", 100, dir_b.path())?;
    thread::sleep(Duration::from_secs(1));
    let logs = || {
        format!(
            "gwa log:\n{}\ngwb log:\n{}\nkeepalived gwa:\n{}\nkeepalived gwb:\n{}\netcd:\n{}",
            gwa.log_tail(30),
            gwb.log_tail(30),
            ka.log_tail(10),
            kb.log_tail(10),
            etcd.log_tail(5)
        )
    };
    ensure!(
        gwb.events("ha: active; etcd held no state").is_empty(),
        "gwb took over too\n{}",
        logs()
    );
    ensure!(
        holds(&net.gwa, VIP) && holds(&net.gwa, VIP_LAN),
        "gwa is master without the addresses\n{}",
        logs()
    );
    ensure!(
        !holds(&net.gwb, VIP),
        "both gateways hold the floating address\n{}",
        logs()
    );

    let udp = spawn_stock_client(
        &net.c0,
        &profile,
        "tun-ha",
        &[],
        &dir.path().join("openvpn.log"),
    )?;
    let mut config = CharonCmdConfig::new(VIP, "CN=carol", &dir_a.ca_cert(), &cert, &key);
    config.remote_identity = Some(VIP.to_string());
    let cmd =
        CharonCmd::start(&net.c1, &dir.path().join("charon-cmd"), &config).with_context(logs)?;
    let logs = || {
        format!(
            "{}\nopenvpn log:\n{}\ncharon-cmd log:\n{}",
            logs(),
            udp.log_tail(20),
            cmd.log_tail(20)
        )
    };
    wait_client_up(&udp, &gwa, 1, UP_TIMEOUT).with_context(logs)?;
    wait_ping(&net.c0, LAN_HOST, Duration::from_secs(10)).with_context(logs)?;
    wait_ping(&net.c1, LAN_HOST, Duration::from_secs(10)).with_context(logs)?;
    let logs = || format!("{}\nsite log:\n{}", logs(), site.log_tail(20));
    site.wait_child_installed(Duration::from_secs(20))
        .with_context(logs)?;
    wait_ping(&net.lan, SITE_LAN_HOST, Duration::from_secs(10)).with_context(logs)?;
    let initial_packets = udp.log_contents().matches("TLS: Initial packet").count();
    let inits = cmd.log().matches(IKE_SA_INIT).count();
    ensure!(
        inits >= 1,
        "no {IKE_SA_INIT:?} in charon-cmd's log\n{}",
        logs()
    );
    let site_inits = site.log().matches(IKE_SA_INIT).count();
    ensure!(
        site_inits >= 1,
        "no {IKE_SA_INIT:?} in the site's log\n{}",
        logs()
    );
    // The standby follows the state with all three tunnels in it (copied every second).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = net.etcd.exec_ok(
            "etcdctl",
            [
                "--endpoints",
                &format!("http://{ETCD}:2379"),
                "get",
                "--print-value-only",
                "/gatehouse/ha226/state",
            ],
        )?;
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_default();
        let sessions: usize = v["workers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|w| {
                w["openvpn"].as_array().map_or(0, Vec::len)
                    + w["ike"].as_array().map_or(0, Vec::len)
                    + w["initiated"].as_array().map_or(0, Vec::len)
            })
            .sum();
        if sessions == 3 {
            eprintln!(
                "the state in etcd: {} bytes for 2 sessions and a site SA",
                out.trim().len()
            );
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "etcd's state does not hold the three tunnels: {sessions}\n{}",
            logs()
        );
        thread::sleep(Duration::from_millis(200));
    }
    ensure!(
        gwb.events(TOOK_OVER).is_empty(),
        "the standby took over early\n{}",
        logs()
    );

    let ping_udp = BackgroundPing::start(
        &net.c0,
        LAN_HOST,
        "0.1",
        PINGS,
        &dir.path().join("ping-udp.log"),
    )?;
    let ping_ike = BackgroundPing::start(
        &net.c1,
        LAN_HOST,
        "0.1",
        PINGS,
        &dir.path().join("ping-ike.log"),
    )?;
    let ping_site = BackgroundPing::start(
        &net.lan,
        SITE_LAN_HOST,
        "0.1",
        PINGS,
        &dir.path().join("ping-site.log"),
    )?;
    thread::sleep(Duration::from_secs(3));
    let killed = Instant::now();
    gwa.kill_hard()?;
    let took = gwb
        .wait_event(TOOK_OVER, |_| true, Duration::from_secs(15))
        .with_context(logs)?;
    let took_after = killed.elapsed();
    eprintln!("{}", took.line);
    eprintln!(
        "the standby took over {:.2} s after SIGKILL",
        took_after.as_secs_f64()
    );
    ensure!(
        took.field("sessions") == Some("3"),
        "the standby took over {:?} tunnels, not 3\n{}",
        took.field("sessions"),
        logs()
    );
    ensure!(
        holds(&net.gwb, VIP) && holds(&net.gwb, VIP_LAN),
        "the floating addresses did not move to gwb\n{}",
        logs()
    );
    ensure!(
        !holds(&net.gwa, VIP),
        "gwa still holds the floating address\n{}",
        logs()
    );

    let (sent, got, gap) = ping_udp.finish(Duration::from_secs(30))?.counts_and_gap();
    eprintln!("OpenVPN UDP client: {got}/{sent} pings answered, longest gap {gap:.2} s");
    ensure!(
        gap < MAX_GAP,
        "a gap of {gap:.2} s in the UDP client's pings\n{}",
        logs()
    );
    ensure!(got + 50 >= sent, "{got}/{sent} pings answered\n{}", logs());
    let (sent, got, gap) = ping_ike.finish(Duration::from_secs(30))?.counts_and_gap();
    eprintln!("strongSwan IKEv2 client: {got}/{sent} pings answered, longest gap {gap:.2} s");
    ensure!(
        gap < MAX_GAP,
        "a gap of {gap:.2} s in the IKEv2 client's pings\n{}",
        logs()
    );
    ensure!(
        got + 50 >= sent,
        "{got}/{sent} IKEv2 pings answered\n{}",
        logs()
    );

    let (sent, got, gap) = ping_site.finish(Duration::from_secs(30))?.counts_and_gap();
    eprintln!(
        "LAN host to the strongSwan site: {got}/{sent} pings answered, longest gap {gap:.2} s"
    );
    ensure!(
        gap < MAX_GAP,
        "a gap of {gap:.2} s in the pings to the site\n{}",
        logs()
    );
    ensure!(
        got + 50 >= sent,
        "{got}/{sent} pings to the site answered\n{}",
        logs()
    );
    ensure!(
        site.log().matches(IKE_SA_INIT).count() == site_inits,
        "the site started a new IKE SA\n{}",
        logs()
    );
    ensure!(
        site.installed_child()?.is_some(),
        "the site has no CHILD SA\n{}",
        logs()
    );
    ensure!(
        cmd.log().matches(IKE_SA_INIT).count() == inits,
        "charon-cmd started a new IKE SA\n{}",
        logs()
    );
    ensure!(cmd.is_running(), "charon-cmd exited\n{}", logs());
    ensure!(
        times_up(&udp) == 1,
        "the UDP client connected again\n{}",
        logs()
    );
    ensure!(
        udp.log_contents().matches("TLS: Initial packet").count() == initial_packets,
        "the UDP client started a new session\n{}",
        logs()
    );
    // The TLS session could not move: the standby renegotiated at once.
    let reneg = gwb
        .wait_event(RENEGOTIATED, |_| true, Duration::from_secs(10))
        .with_context(logs)?;
    eprintln!("{}", reneg.line);
    ensure!(
        !udp.log_contents().contains("TLS Error"),
        "the UDP client logged a TLS error\n{}",
        logs()
    );
    eprintln!("test took {:.1} s", started.elapsed().as_secs_f64());
    drop((
        ping_udp, ping_ike, ping_site, udp, cmd, site, ka, kb, gwb, etcd,
    ));
    Ok(())
}

/// Moves the floating addresses from `from` to `to` by hand (what keepalived does), and
/// makes the neighbours forget the old owner's MAC address.
fn move_addresses(net: &Net, from: &Netns, to: &Netns) -> Result<()> {
    for (addr, dev) in [(VIP, "pub0"), (VIP_LAN, "lan0")] {
        let cidr = format!("{addr}/24");
        let _ = from.exec("ip", ["addr", "del", cidr.as_str(), "dev", dev]);
        to.exec_ok("ip", ["addr", "add", cidr.as_str(), "dev", dev])?;
    }
    for ns in [&net.c0, &net.c1, &net.lan] {
        ns.exec_ok("ip", ["neigh", "flush", "all"])?;
    }
    Ok(())
}

#[test]
fn a_standby_takes_over_on_command_and_the_old_active_gateway_stops() -> Result<()> {
    require_root();
    require_commands(&["ip", "ping", "openvpn", "etcd", "etcdctl", "sysctl", "cp"]);
    let dir = tempfile::tempdir()?;
    let net = Net::new("ha-f")?;
    let pool = Ipv4Cidr::new(Ipv4Addr::new(10, 8, X, 0), 24);
    let lan = Ipv4Cidr::new(Ipv4Addr::new(10, 251, X, 0), 24);
    let dir_a = GatewayDir::init(
        &dir.path().join("gwa"),
        &VIP.to_string(),
        &[lan],
        Some(pool),
    )?;
    dir_a.set("tun_name", &toml_str(&format!("ghd{X}")))?;
    let profile = dir_a.client_profile("alice", VIP, &dir.path().join("alice.ovpn"))?;
    let dir_b = dir_a.copy_to(&dir.path().join("gwb"))?;
    configure_ha(&dir_a, "gwa")?;
    configure_ha(&dir_b, "gwb")?;
    // A long interval: the session is copied because it was set up (the workers wake the
    // replication), not by the periodic copy, which comes only after the takeover.
    for d in [&dir_a, &dir_b] {
        d.set("ha.interval", &toml_str("10s"))?;
    }
    dir_a.set("ha.role", &toml_str("active"))?;
    move_addresses(&net, &net.gwb, &net.gwa)?;

    let etcd = start_etcd(&net.etcd, ETCD, "ha", dir.path())?;
    let debug = [("GATEHOUSE_LOG", "debug")];
    let gwa = Gatehoused::start_with_env(&net.gwa, &dir_a, &dir.path().join("gwa.log"), &debug)?;
    let gwb = Gatehoused::start_with_env(&net.gwb, &dir_b, &dir.path().join("gwb.log"), &debug)?;
    let udp = spawn_stock_client(
        &net.c0,
        &profile,
        "tun-haf",
        &[],
        &dir.path().join("openvpn.log"),
    )?;
    let logs = || {
        format!(
            "gwa log:\n{}\ngwb log:\n{}\nopenvpn log:\n{}\netcd:\n{}",
            gwa.log_tail(30),
            gwb.log_tail(30),
            udp.log_tail(20),
            etcd.log_tail(5)
        )
    };
    gwa.wait_event(
        "ha: started as the active gateway",
        |_| true,
        Duration::from_secs(10),
    )
    .with_context(logs)?;
    wait_client_up(&udp, &gwa, 1, UP_TIMEOUT).with_context(logs)?;
    wait_ping(&net.c0, LAN_HOST, Duration::from_secs(10)).with_context(logs)?;
    let before = gatehouse_tests::wireguard::ctl_json(dir_a.path(), "sessions")?;
    let address = before
        .as_array()
        .and_then(|a| a.first())
        .and_then(|s| s["virtual_address"].as_str())
        .map(str::to_owned)
        .with_context(|| format!("no session listed on gwa: {before}"))?;
    let up_at = Instant::now();
    let ping = BackgroundPing::start(&net.c0, LAN_HOST, "0.1", 80, &dir.path().join("ping.log"))?;
    thread::sleep(Duration::from_secs(1));
    let copied = gwa.log();
    ensure!(
        copied.contains("ha: tunnels changed; copying the state now"),
        "gwa did not copy the state when the session came up\n{}",
        logs()
    );
    let out = std::process::Command::new(gatehouse_tests::bin("gatehoused"))
        .arg("ctl")
        .arg("--data-dir")
        .arg(dir_b.path())
        .args(["takeover", "--json"])
        .output()?;
    ensure!(
        out.status.success(),
        "ctl takeover failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        logs()
    );
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    eprintln!("ctl takeover: {answer}");
    ensure!(
        answer["sessions"] == 1 && answer["from"] == "gwa",
        "{answer}\n{}",
        logs()
    );
    ensure!(
        up_at.elapsed() < Duration::from_secs(8),
        "the takeover came {:?} after the session was up: a periodic copy may have run",
        up_at.elapsed()
    );
    move_addresses(&net, &net.gwa, &net.gwb)?;
    // gwa finds gwb's name in `active` at its next copy (the 10 s interval) and stops.
    let deadline = Instant::now() + Duration::from_secs(12);
    while gwa.is_running() {
        ensure!(
            Instant::now() < deadline,
            "gwa still runs 12 s after gwb took over\n{}",
            logs()
        );
        thread::sleep(Duration::from_millis(100));
    }
    ensure!(
        gwa.log()
            .contains("ha: another gateway is the active one now"),
        "gwa stopped without saying why\n{}",
        logs()
    );
    let (sent, got, gap) = ping.finish(Duration::from_secs(30))?.counts_and_gap();
    eprintln!(
        "OpenVPN UDP client, takeover by command: {got}/{sent} pings answered, longest gap {gap:.2} s"
    );
    ensure!(gap < MAX_GAP, "a gap of {gap:.2} s\n{}", logs());
    ensure!(
        times_up(&udp) == 1,
        "the client connected again\n{}",
        logs()
    );
    let log = udp.log_contents();
    ensure!(
        !log.contains("RESTART") && !log.contains("TLS Error"),
        "the client was told to restart or saw a TLS error\n{}",
        logs()
    );
    let after = gatehouse_tests::wireguard::ctl_json(dir_b.path(), "sessions")?;
    ensure!(
        after
            .as_array()
            .and_then(|a| a.first())
            .and_then(|s| s["virtual_address"].as_str())
            == Some(address.as_str()),
        "gwb lists {after}, not alice at {address}"
    );
    // A second takeover on the active gateway does nothing.
    let again = gatehouse_tests::wireguard::ctl_json(dir_b.path(), "takeover")?;
    ensure!(again["already_active"] == true, "{again}");
    Ok(())
}
